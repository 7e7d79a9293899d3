//! `lynxo-control`: the control plane's binary. Everything but startup lives in the library.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use clap::Parser as _;
use control::config::{
    AuditKeyringArgs, Cli, Command, CopyToPostgresArgs, KeyringCommand, LogFormat, RestoreArgs,
    ServeArgs, VerifyAuditArgs,
};
use control::publish::{CheckpointPublisher, LimitPublisher, Publisher};
use control::secret::Secret;
use control::signing::{self, RingText};
use control::store::retention::{self, STEP_ROWS};
use control::store::{Store, StoreError, audit};
use control::{AppState, Clock as _, Settings, SystemClock, app, auth};
use shared::audit::Checkpoint;
use shared::mac::Keyring;
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
        Command::Serve(args) => serve(*args),
        Command::Init(args) => {
            let audit_keyring = args.audit.load(None)?;
            let store = Store::open(&args.db.database, audit_keyring)?;
            let now = SystemClock.now();
            store
                .write_blocking(move |tx| audit::seal_legacy(tx, now))
                .context("sealing the audit trail")?;
            let created = auth::bootstrap(
                &store,
                &Settings::default(),
                &args.account_name,
                &args.email,
                args.password.expose(),
                now,
            )
            .context("init failed")?;
            println!("account_id={}", created.account_id);
            println!("user_id={}", created.user_id);
            println!("management_token={}", created.token);
            eprintln!("The management token is shown once: store it now.");
            Ok(())
        }
        Command::VerifyAudit(args) => verify_audit(&args),
        Command::Compact(args) => {
            let retention = args.retention.retention()?;
            let store = Store::open(&args.db.database, args.audit.load(None)?)?;
            let done = retention::compact_blocking(&store, retention, SystemClock.now(), STEP_ROWS)
                .context("compacting")?;
            println!(
                "compacted in {} transactions: {} minute rows deleted, {} hour rows rolled up \
                 into days, {} activity rows and {} batch names deleted",
                done.steps,
                done.minutes_deleted,
                done.hours_rolled,
                done.activity_deleted,
                done.batches_deleted
            );
            Ok(())
        }
        Command::ResetPassword(args) => {
            let store = Store::open(&args.db.database, args.audit.load(None)?)?;
            let now = SystemClock.now();
            store
                .write_blocking(move |tx| audit::seal_legacy(tx, now))
                .context("sealing the audit trail")?;
            let reset = auth::reset_password(
                &store,
                &Settings::default(),
                &args.email,
                args.password.expose(),
                now,
            )
            .context("reset-password failed")?;
            println!("user_id={}", reset.user_id);
            println!("sessions_ended={}", reset.sessions_ended.len());
            eprintln!(
                "The new password is set and every session of the user has ended. A running \
                 control plane may still refuse their sign-ins for a while if their failure \
                 budget is spent."
            );
            Ok(())
        }
        Command::Backup(args) => {
            let report = control::backup::backup(&args.db.database, &args.to)?;
            println!(
                "backup written: {} ({} bytes, schema {})",
                args.to.display(),
                report.bytes,
                report.schema
            );
            Ok(())
        }
        Command::Restore(args) => restore(&args),
        Command::CopyToPostgres(args) => copy_to_postgres(&args),
        Command::Keyring(command) => keyring(command),
        Command::GenerateKeyring => {
            let secret = auth::random_bytes().context("reading random bytes")?;
            println!("active=1;1:{}", hex::encode(secret));
            Ok(())
        }
    }
}

/// The retired kids of the database at `database`, if one is given.
fn retired_kids(
    database: Option<&std::path::Path>,
    audit: &AuditKeyringArgs,
) -> anyhow::Result<Vec<u8>> {
    let Some(path) = database else {
        return Ok(Vec::new());
    };
    let store = Store::open(path, audit.load(None)?)?;
    let retired = store.read_blocking(control::store::signing::retired)?;
    Ok(retired.iter().map(|r| r.kid).collect())
}

/// `control keyring ...`: prints the next keyring on stdout, what to do with it on stderr.
fn keyring(command: KeyringCommand) -> anyhow::Result<()> {
    match command {
        KeyringCommand::Add(args) => {
            let mut ring = RingText::parse(&args.keyring.text()?)?;
            let retired = retired_kids(args.database.as_deref(), &args.audit)?;
            let kid = ring.add(&retired)?;
            if args.activate {
                ring.activate(kid, &retired)?;
            }
            println!("{}", ring.render());
            eprintln!(
                "kid {kid} added{}. Install this keyring as the edge's LYNXO_KEYRING first \
                 (`npx wrangler secret put LYNXO_KEYRING --env <env>`), then as the control \
                 plane's, and restart it (docs/operations.md, \"Signing-key rollover\").",
                if args.activate {
                    " and active"
                } else {
                    " (not active)"
                }
            );
            Ok(())
        }
        KeyringCommand::Activate(args) => {
            let mut ring = RingText::parse(&args.keyring.text()?)?;
            let retired = retired_kids(args.database.as_deref(), &args.audit)?;
            ring.activate(args.kid, &retired)?;
            println!("{}", ring.render());
            eprintln!(
                "kid {} active. Every edge and control plane must already hold it: install this \
                 keyring on the edge, then on the control plane, and restart it.",
                args.kid
            );
            Ok(())
        }
        KeyringCommand::Retire(args) => {
            let mut ring = RingText::parse(&args.keyring.text()?)?;
            let store = Store::open(&args.db.database, args.audit.load(None)?)?;
            ring.remove(args.kid)?;
            let done = signing::retire(
                &store,
                ring.active,
                args.kid,
                args.reason,
                args.note.clone(),
                SystemClock.now(),
            )?;
            println!("{}", ring.render());
            if done.changed {
                eprintln!(
                    "kid {} retired ({}): {} working keys revoked, {} accounts told. Install \
                     this keyring (without kid {}) on the control plane and restart it; once it \
                     is ready (its first pass re-signs every revocation shard with kid {}), on \
                     the edge.",
                    args.kid,
                    done.record.reason.name(),
                    done.record.keys_revoked,
                    done.accounts,
                    args.kid,
                    ring.active
                );
            } else {
                eprintln!(
                    "kid {} was already retired ({}, at {}): nothing changed.",
                    args.kid,
                    done.record.reason.name(),
                    done.record.retired_at
                );
            }
            Ok(())
        }
        KeyringCommand::Status(args) => {
            let ring = RingText::parse(&args.keyring.text()?)?;
            let store = Store::open(&args.db.database, args.audit.load(None)?)?;
            let now = SystemClock.now();
            let (retired, working) = store.read_blocking(move |c| {
                Ok::<_, StoreError>((
                    control::store::signing::retired(c)?,
                    control::store::signing::working_by_kid(c, now)?,
                ))
            })?;
            let keys_of = |kid: u8| {
                working
                    .iter()
                    .find(|(k, _)| *k == kid)
                    .map_or(0, |(_, n)| *n)
            };
            for kid in ring.secrets.keys() {
                let role = if retired.iter().any(|r| r.kid == *kid) {
                    // serve refuses this keyring: say so.
                    "retired_but_in_keyring"
                } else if *kid == ring.active {
                    "active"
                } else {
                    "previous"
                };
                println!("kid={kid} state={role} working_keys={}", keys_of(*kid));
            }
            for r in &retired {
                println!(
                    "kid={} state=retired reason={} retired_at={} keys_revoked={}{}",
                    r.kid,
                    r.reason.name(),
                    r.retired_at,
                    r.keys_revoked,
                    r.note
                        .as_ref()
                        .map_or(String::new(), |n| format!(" note={n:?}"))
                );
            }
            Ok(())
        }
    }
}

/// Checks the keyed chain and, with a publisher configured, that the table still holds the
/// checkpoint anchored there. Any failure is an error: a non-zero exit.
fn verify_audit(args: &VerifyAuditArgs) -> anyhow::Result<()> {
    let audit_keyring = args.audit.load(args.keyring.as_ref().map(Secret::expose))?;
    let store = Store::open(&args.db.database, Arc::clone(&audit_keyring))?;
    let anchor = if args.publish.is_configured() {
        let keyring = args
            .keyring
            .as_ref()
            .map(|t| Keyring::from_config(t.expose()).map(Arc::new))
            .transpose()
            .context("parsing the keyring")?;
        let sink = args.publish.sink(keyring)?;
        let stored = sink
            .get_checkpoint(SystemClock.now())
            .with_context(|| format!("reading the audit checkpoint from {}", sink.name()))?;
        match stored {
            Some(bytes) => Some(
                Checkpoint::open(&bytes, &audit_keyring)
                    .context("the stored audit checkpoint does not verify")?,
            ),
            None => {
                println!("no audit checkpoint stored at {} yet", sink.name());
                None
            }
        }
    } else {
        None
    };
    let ring = Arc::clone(&audit_keyring);
    let report = store
        .read_blocking(move |c| Ok::<_, StoreError>(audit::verify_chain(c, &ring, anchor.as_ref())))
        .context("reading audit trail")??;
    println!(
        "audit chain intact: {} events, the first {} of them unkeyed (from before the chain was \
         keyed)",
        report.events, report.legacy_upto
    );
    if let Some(head) = report.head {
        println!("head: seq={} hash={}", head.seq, hex::encode(head.value));
    }
    match anchor {
        Some(a) => println!(
            "anchored: the table holds event {} as the checkpoint of {} (Unix s) records it",
            a.seq, a.at
        ),
        None if args.publish.is_configured() => {}
        None => println!(
            "not anchored: rows cut off the end cannot be detected without the checkpoint \
             (give --edge-sync-url or --kv-*, as serve has)"
        ),
    }
    Ok(())
}

/// Checks a backup and puts it in place (`control::backup::restore`), saying what it did and
/// what the operator must know.
fn restore(args: &RestoreArgs) -> anyhow::Result<()> {
    // Before the keyring is asked for: no keyring makes a PostgreSQL restore possible.
    control::backup::refuse_postgres(&args.db.database, "restore")?;
    let audit_keyring = args.audit.load(None)?;
    let report = control::backup::restore(
        &args.from,
        &args.db.database,
        audit_keyring,
        SystemClock.now_ms(),
    )?;
    let chain = &report.checked.chain;
    println!(
        "backup checked: integrity ok, schema {}, audit chain intact ({} events)",
        report.checked.schema, chain.events
    );
    if let Some(aside) = &report.replaced {
        println!("the database it replaced: {}", aside.display());
    }
    println!(
        "restored into {}: the next `serve` republishes every revocation shard (versions from \
         {} on) and {} rate-limit policies",
        args.db.database.display(),
        report.republish.list_version,
        report.republish.limits_queued
    );
    println!(
        "changes acknowledged after the backup was taken are not in it: revocations made since \
         must be made again (docs/operations.md, \"Backup and restore\")"
    );
    Ok(())
}

/// Copies the SQLite database into an empty PostgreSQL one (`control::pg_copy`) and says what
/// it copied; any failure leaves the target as it was and exits non-zero.
#[tokio::main]
async fn copy_to_postgres(args: &CopyToPostgresArgs) -> anyhow::Result<()> {
    let audit_keyring = args.audit.load(None)?;
    let copied =
        control::pg_copy::copy(&args.db.database, args.to.expose(), &audit_keyring).await?;
    for t in &copied.tables {
        println!(
            "table {}: {} rows, digest {}",
            t.name,
            t.rows,
            hex::encode(t.digest)
        );
    }
    for (table, column, next) in &copied.sequences {
        println!("identity {table}.{column}: next {next}");
    }
    let rows: u64 = copied.tables.iter().map(|t| t.rows).sum();
    println!(
        "copied {} tables, {rows} rows from {} into PostgreSQL (schema {}): counts and digests \
         equal, audit chain intact on PostgreSQL ({} events)",
        copied.tables.len(),
        args.db.database.display(),
        control::pg_copy::PG_SCHEMA_VERSION,
        copied.chain.events
    );
    if let Some(head) = copied.chain.head {
        println!("head: seq={} hash={}", head.seq, hex::encode(head.value));
    }
    Ok(())
}

#[tokio::main]
async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    args.validate()?;
    // Held until the process ends: `restore` refuses to replace a served database. A SQLite
    // file only: on PostgreSQL several replicas serving one database is the point.
    let _lock = if control::store::is_postgres(&args.db.database) {
        None
    } else {
        Some(control::backup::ServiceLock::acquire(&args.db.database)?)
    };
    let keyring_text = args.keyring.text()?;
    let keyring = Keyring::from_config(&keyring_text).context("parsing the keyring")?;
    let audit_keyring = args.audit.load(Some(&keyring_text))?;
    let store = Store::open(&args.db.database, Arc::clone(&audit_keyring)).with_context(|| {
        format!(
            "opening {}",
            control::store::display_database(&args.db.database)
        )
    })?;
    let now = SystemClock.now();
    let ring = keyring.clone();
    store
        .read(move |c| signing::check_keyring(c, &ring, now))
        .await
        .context("checking the keyring against the database")??;
    if let Some(seq) = store
        .write(move |tx| audit::seal_legacy(tx, now))
        .await
        .context("sealing the audit trail")?
    {
        tracing::info!(
            seq,
            "audit trail: the unkeyed events before this one are now sealed"
        );
    }
    let settings = Settings {
        shard_count: args.shard_count,
        public_origin: args.public_origin.clone(),
        max_body_bytes: args.max_body_bytes,
        sign_in_hashes: args
            .sign_in_concurrency
            .map_or_else(control::default_sign_in_hashes, usize::from),
        proxies: args.proxies(),
        session_ttl: args.session_ttl_secs,
        session_idle: args.session_idle_secs,
        sessions_per_user: args.sessions_per_user,
        verify_per_minute: args.verify_rate_limit,
        secret_scanning_path: args.secret_scanning_path.clone(),
        api_bases: args.api_bases(),
        github_keys_url: args.github_keys_url.clone(),
        gitlab_keys_url: args.gitlab_keys_url.clone(),
        reports_per_minute: args.secret_scanning_rate_limit,
        self_revoke_per_minute: args.self_revoke_rate_limit,
        // Only the edge's sync endpoint takes limits pushes: a rotation waits for it.
        limits_sync_wait: if args.publish.edge_sync_url.is_some() {
            LIMITS_SYNC_WAIT
        } else {
            Duration::ZERO
        },
        retention: args.retention.retention()?,
        metrics_token: args.metrics_token.clone(),
        skew_ready_secs: args.skew_ready_secs,
        skew_warn_secs: args.skew_warn_secs,
        ..Settings::default()
    };
    let clock = Arc::new(SystemClock);
    let state = AppState::new(store.clone(), keyring, clock.clone(), settings);
    let sink = control::metrics::MeteredSink::wrap(
        args.publish.sink(Some(Arc::clone(&state.keyring)))?,
        Arc::clone(&state.metrics),
    );
    let heartbeat = Duration::from_secs(args.heartbeat_secs);
    // One lease for the three publishing loops: on PostgreSQL only the replica holding it
    // publishes (docs/postgres.md, "The publisher lease"); on SQLite it is always held.
    let lease = store.publisher_lease();
    let limit_publisher = LimitPublisher::new(store.clone(), clock.clone(), Arc::clone(&sink))
        .with_lease(lease.clone());
    let publisher = Publisher::new(
        store.clone(),
        Arc::clone(&state.keyring),
        clock.clone(),
        Arc::clone(&sink),
        args.shard_count,
        args.list_lifetime_secs,
    )
    .with_heartbeat(heartbeat)
    .with_lease(lease.clone());
    if let Ok(Some((seq, hash))) = state.store.read(audit::head).await {
        tracing::info!(seq, hash, "audit chain head at start");
    }
    if args.publish.is_configured() {
        // The audit chain's head, anchored outside the database at every heartbeat.
        let checkpoints =
            CheckpointPublisher::new(store, audit_keyring, clock.clone(), sink, heartbeat)
                .with_lease(lease);
        tokio::spawn(checkpoints.run());
    }
    tokio::spawn(auth::sessions::purge_loop(
        state.store.clone(),
        clock.clone(),
        args.session_idle_secs,
    ));
    // The first pass also repairs what a crash left in the outbox.
    tokio::spawn(publisher.run(state.publish.clone()));
    // Its own loop: a failing limits push must not delay revocations.
    tokio::spawn(limit_publisher.run(state.publish.clone()));
    tokio::spawn(retention::run(
        state.store.clone(),
        clock.clone(),
        state.settings.retention,
        Duration::from_secs(args.retention.compact_every_secs),
    ));
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("binding {}", args.listen))?;
    tracing::info!(
        listen = %args.listen,
        shards = args.shard_count,
        sign_in_hashes = state.sign_in.hasher.max(),
        trusted_proxies = args.trusted_proxies.len(),
        "control plane listening"
    );
    let limits = control::server::Limits {
        header_timeout: Duration::from_secs(args.header_timeout_secs),
        max_connections: usize::try_from(args.max_connections).unwrap_or(usize::MAX),
        ..control::server::Limits::default()
    };
    control::server::serve(listener, app(state), limits, shutdown()).await;
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
