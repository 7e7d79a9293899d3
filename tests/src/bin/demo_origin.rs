//! The demo origin: stands in for the Lynxo API behind the edge, for local runs and tests.
//!
//!   ORIGIN_KEYRING='active=1;1:<64 hex>' cargo run -p e2e --bin demo_origin -- --port 8788
//!
//! Prints `demo-origin listening on http://<addr>` once it accepts connections (with `--port 0`,
//! the port the system chose), then serves until killed.

use std::sync::Arc;

use anyhow::Context as _;
use clap::Parser;
use shared::mac::Keyring;

/// Command line and environment.
#[derive(Debug, Parser)]
#[command(about = "Demo origin for Lynxo Keys: checks the edge's signed identity and echoes it")]
struct Args {
    /// Loopback port to listen on; 0 picks a free one.
    #[arg(long, env = "DEMO_ORIGIN_PORT", default_value_t = 8788)]
    port: u16,
    /// The identity keyring shared with the edge, `active=KID;KID:HEX,...`.
    #[arg(long, env = "ORIGIN_KEYRING", hide_env_values = true)]
    keyring: String,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let keyring =
        Keyring::from_config(&args.keyring).map_err(|e| anyhow::anyhow!("ORIGIN_KEYRING: {e}"))?;
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", args.port))
        .await
        .with_context(|| format!("binding 127.0.0.1:{}", args.port))?;
    println!("demo-origin listening on http://{}", listener.local_addr()?);
    axum::serve(listener, e2e::origin::app(Arc::new(keyring))).await?;
    Ok(())
}
