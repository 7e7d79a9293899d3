//! A trivial origin for throughput benchmarks (bench/throughput.sh): answers every request with
//! 200 `ok` and checks nothing, so the numbers measure the edge, not the origin.
//!
//!   cargo run --release -p e2e --bin bench_origin -- --port 0

use clap::Parser;

/// Command line.
#[derive(Debug, Parser)]
struct Args {
    /// Loopback port to listen on; 0 picks a free one.
    #[arg(long, default_value_t = 0)]
    port: u16,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", args.port)).await?;
    println!(
        "bench-origin listening on http://{}",
        listener.local_addr()?
    );
    let app = axum::Router::new().fallback(|| async { "ok" });
    axum::serve(listener, app).await?;
    Ok(())
}
