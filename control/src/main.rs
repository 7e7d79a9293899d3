//! `lynxo-control`: the control plane's binary. Everything but startup lives in the library.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use clap::Parser as _;
use control::config::{Cli, Command, LogFormat, ServeArgs};
use control::publish::{LimitPublisher, Publisher};
use control::store::{Store, audit};
use control::{AppState, Clock as _, Settings, SystemClock, app, auth};
use tracing_subscriber::EnvFilter;

/// How long a rotation waits for the edge to acknowledge the new key's rate-limit budget: a
/// push normally takes milliseconds; an edge that does not answer must not hold rotations up.
const LIMITS_SYNC_WAIT: Duration = Duration::from_secs(2);

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    match cli.log_format {
        LogFormat::Text => tracing_subscriber::fmt().with_env_filter(filter).init(),
        LogFormat::Json => tracing_subscriber::fmt()
            .json()
            .with_env_filter(filter)
            .init(),
    }
    match cli.command {
        Command::Serve(args) => serve(args),
        Command::Init(args) => {
            let store = Store::open(&args.db.database)?;
            let created = auth::bootstrap(
                &store,
                &Settings::default(),
                &args.account_name,
                &args.email,
                &args.password,
                SystemClock.now(),
            )
            .map_err(|e| anyhow::anyhow!("init failed: {}", e.code()))?;
            println!("account_id={}", created.account_id);
            println!("user_id={}", created.user_id);
            println!("management_token={}", created.token);
            eprintln!("The management token is shown once: store it now.");
            Ok(())
        }
        Command::VerifyAudit(args) => {
            let store = Store::open(&args.database)?;
            let (checked, head) = store
                .read_blocking(|c| Ok((audit::verify_chain(c), audit::head(c)?)))
                .map_err(|e| anyhow::anyhow!("reading audit trail: {}", e.code()))?;
            let checked = checked?;
            println!("audit chain intact: {checked} events");
            if let Some((seq, hash)) = head {
                // Compare with a head recorded earlier to detect rows cut from the end.
                println!("head: seq={seq} hash={hash}");
            }
            Ok(())
        }
        Command::GenerateKeyring => {
            let secret = auth::random_bytes().map_err(|e| anyhow::anyhow!("{}", e.code()))?;
            println!("active=1;1:{}", hex::encode(secret));
            Ok(())
        }
    }
}

#[tokio::main]
async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    args.validate()?;
    let keyring = args.keyring.load()?;
    let store = Store::open(&args.db.database)
        .with_context(|| format!("opening {}", args.db.database.display()))?;
    let settings = Settings {
        shard_count: args.shard_count,
        public_origin: args.public_origin.clone(),
        max_body_bytes: args.max_body_bytes,
        // Only the edge's sync endpoint takes limits pushes: a rotation waits for it.
        limits_sync_wait: if args.edge_sync_url.is_some() {
            LIMITS_SYNC_WAIT
        } else {
            Duration::ZERO
        },
        ..Settings::default()
    };
    let clock = Arc::new(SystemClock);
    let state = AppState::new(store.clone(), keyring, clock.clone(), settings);
    let sink = args.sink(Arc::clone(&state.keyring))?;
    let limit_publisher = LimitPublisher::new(store.clone(), clock.clone(), Arc::clone(&sink));
    let publisher = Publisher::new(
        store,
        Arc::clone(&state.keyring),
        clock,
        sink,
        args.shard_count,
        args.list_lifetime_secs,
    );
    if let Ok(Some((seq, hash))) = state.store.read(audit::head).await {
        // A record outside the database of where the chain stood: see `verify-audit`.
        tracing::info!(seq, hash, "audit chain head at start");
    }
    // The first pass also repairs what a crash left in the outbox.
    tokio::spawn(publisher.run(state.publish.clone()));
    // Its own loop: a failing limits push must not delay revocations.
    tokio::spawn(limit_publisher.run(state.publish.clone()));
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("binding {}", args.listen))?;
    tracing::info!(listen = %args.listen, shards = args.shard_count, "control plane listening");
    axum::serve(
        listener,
        app(state).into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown())
    .await?;
    Ok(())
}

async fn shutdown() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        if let Ok(mut s) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        {
            s.recv().await;
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
    tracing::info!("shutting down");
}
