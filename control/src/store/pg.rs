//! The store on PostgreSQL (docs/postgres.md): the connections, the migrations, the writer and
//! the readers. The store's functions run unchanged on it (through [`db::Db`]).
//!
//! Several control planes ("replicas") may share one database. Every write transaction takes
//! one transaction-scoped advisory lock first ([`WRITE_LOCK`]), so writes are serialised across
//! replicas exactly as SQLite's one writer serialises them within a process: the audit chain's
//! "previous row", the 50-key cap, idempotency records and the outboxes' id order keep their
//! guarantees, and a transaction in `READ COMMITTED` that took the lock sees every write
//! committed before it. Reads run in `REPEATABLE READ READ ONLY` transactions (one snapshot per
//! read, as SQLite's WAL readers have) and never wait for the lock.

use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Condvar, Mutex, PoisonError, mpsc};
use std::time::Duration;

use anyhow::Context as _;
use shared::audit::AuditKeyring;

use super::db::{self, Db, PgConn};
use super::{BatchFailure, Finish, Job, PG_MIGRATIONS, Result, StoreError};

/// The advisory lock key of write transactions ("Lynx" and 1): one per database.
pub const WRITE_LOCK: i64 = 0x4c79_6e78_0000_0001;
/// The advisory lock key held while migrating, so replicas starting together migrate once.
const MIGRATE_LOCK: i64 = 0x4c79_6e78_0000_0002;
/// The session advisory lock key of the publishers' lease ([`Lease`]): one replica at a time.
pub const PUBLISH_LOCK: i64 = 0x4c79_6e78_0000_0003;
/// The advisory lock key of [`super::Lane::SignIn`] transactions: the sign-in budgets' own.
const SIGN_IN_LOCK: i64 = 0x4c79_6e78_0000_0004;

impl super::Lane {
    fn lock(self) -> i64 {
        match self {
            Self::SignIn => SIGN_IN_LOCK,
        }
    }
}

/// The SQLite schema version PostgreSQL migration file `k` (1-based) reaches: the first holds
/// the whole of schema 13, each later one is one SQLite migration (0002 is SQLite's 0014).
fn reaches(k: usize) -> i64 {
    12 + k as i64
}

/// Parses and checks the URL: no TLS yet, so only loopback hosts or a unix socket
/// ([`crate::pg_copy::target_config`]).
fn config(url: &str) -> anyhow::Result<postgres::Config> {
    let mut config: postgres::Config = crate::pg_copy::target_config(url)?.into();
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(Duration::from_secs(10));
    }
    Ok(config)
}

fn connect(config: &postgres::Config) -> Result<PgConn> {
    let client = config
        .connect(postgres::NoTls)
        .map_err(|e| StoreError::Db(e.into()))?;
    Ok(PgConn::new(client))
}

/// Opens the store's PostgreSQL side: connects, migrates (under [`MIGRATE_LOCK`]) and starts
/// the writer thread. The connection is made on the writer's own thread: the blocking client
/// runs a runtime of its own, which cannot start on an async runtime's thread.
pub(super) fn open(
    url: &str,
    audit: Arc<AuditKeyring>,
) -> anyhow::Result<(mpsc::Sender<Job>, Readers, Arc<AtomicBool>)> {
    let config = config(url)?;
    let (jobs, queue) = mpsc::channel();
    let unwritable = Arc::new(AtomicBool::new(false));
    let (ready, started) = mpsc::channel();
    let (flag, writer_config) = (Arc::clone(&unwritable), config.clone());
    std::thread::Builder::new()
        .name("postgres-writer".into())
        .spawn(move || {
            let opened = connect(&writer_config)
                .map_err(anyhow::Error::from)
                .and_then(|conn| migrate(&conn).map(|()| conn));
            match opened {
                Ok(conn) => {
                    let _ = ready.send(Ok(()));
                    run_writer(conn, &writer_config, &queue, audit, &flag);
                }
                Err(e) => {
                    let _ = ready.send(Err(e));
                }
            }
        })?;
    started
        .recv()
        .context("the PostgreSQL writer thread stopped")?
        .context("opening the PostgreSQL database")?;
    Ok((
        jobs,
        Readers {
            config,
            pool: Mutex::new(Vec::new()),
            open: (Mutex::new(0), Condvar::new()),
        },
        unwritable,
    ))
}

/// Applies the migrations this database lacks, each in its own transaction, under a session
/// advisory lock (a replica starting at the same time waits, then finds them applied).
fn migrate(conn: &PgConn) -> anyhow::Result<()> {
    let db = Db::Postgres(conn);
    db.query_row("SELECT pg_advisory_lock(?1)", [MIGRATE_LOCK], |_| Ok(()))?;
    let result = (|| -> anyhow::Result<()> {
        let exists: bool = db.query_row(
            "SELECT to_regclass('schema_migrations') IS NOT NULL",
            [],
            |r| r.get(0),
        )?;
        let applied: i64 = if exists {
            db.query_row(
                "SELECT coalesce(max(version), 0) FROM schema_migrations",
                [],
                |r| r.get(0),
            )?
        } else {
            0
        };
        let newest = reaches(PG_MIGRATIONS.len());
        anyhow::ensure!(
            applied <= newest,
            "database schema {applied} is newer than this build knows ({newest})"
        );
        for (k, (name, sql)) in PG_MIGRATIONS.iter().enumerate() {
            let version = reaches(k + 1);
            if version <= applied {
                continue;
            }
            db.execute_batch(&format!("BEGIN;\n{sql}\nCOMMIT;"))
                .inspect_err(|_| {
                    let _ = db.execute_batch("ROLLBACK");
                })
                .with_context(|| format!("applying {name}"))?;
            let reached: i64 =
                db.query_row("SELECT max(version) FROM schema_migrations", [], |r| {
                    r.get(0)
                })?;
            anyhow::ensure!(
                reached == version,
                "{name} recorded schema {reached}, expected {version}"
            );
            tracing::info!(version, "applied PostgreSQL migration");
        }
        Ok(())
    })();
    db.query_row("SELECT pg_advisory_unlock(?1)", [MIGRATE_LOCK], |_| Ok(()))?;
    result
}

impl BatchFailure {
    fn from_db(stage: &str, e: &db::Error) -> Self {
        Self {
            message: format!("{stage}: {e}"),
            unwritable: e.is_unwritable(),
        }
    }
}

/// The writer thread on PostgreSQL: as SQLite's (`run_writer` in the parent module), every job
/// waiting runs in one transaction, each in its own savepoint, and is answered after the
/// commit; the transaction first takes [`WRITE_LOCK`], which serialises it with every other
/// replica's writes. A lost connection fails its batch and is made again for the next.
fn run_writer(
    mut conn: PgConn,
    config: &postgres::Config,
    jobs: &mpsc::Receiver<Job>,
    audit: Arc<AuditKeyring>,
    unwritable: &AtomicBool,
) {
    super::WRITER_AUDIT_KEYRING.set(Some(audit));
    while let Some(batch) = super::next_batch(jobs) {
        if conn.is_closed() {
            match connect(config) {
                Ok(fresh) => conn = fresh,
                Err(e) => {
                    tracing::error!(error = %e, "could not reconnect to PostgreSQL");
                    let failure = BatchFailure {
                        message: format!("connect: {e}"),
                        unwritable: false,
                    };
                    super::fail_batch(batch, &failure, unwritable);
                    continue;
                }
            }
        }
        let db = Db::Postgres(&conn);
        let begun = db.execute_batch("BEGIN").and_then(|()| {
            db.query_row("SELECT pg_advisory_xact_lock(?1)", [WRITE_LOCK], |_| Ok(()))
        });
        if let Err(e) = begun {
            tracing::error!(error = %e, "could not begin a write transaction");
            let _ = db.execute_batch("ROLLBACK");
            super::fail_batch(batch, &BatchFailure::from_db("begin", &e), unwritable);
            continue;
        }
        let finishers: Vec<Finish> = batch.into_iter().map(|job| job(Some(&db))).collect();
        // PostgreSQL answers COMMIT of a failed transaction with a rollback, not an error: a
        // statement first proves the transaction is still good (each job's failure was rolled
        // back to its savepoint; only a failed rollback leaves it aborted).
        let commit = db
            .query_row("SELECT 1", [], |_| Ok(()))
            .and_then(|()| db.execute_batch("COMMIT"))
            .map_err(|e| {
                let _ = db.execute_batch("ROLLBACK");
                BatchFailure::from_db("commit", &e)
            });
        super::settle(commit, finishers, unwritable);
    }
}

/// Most read connections one process holds at once: a flood of requests waits for one rather
/// than opening a connection each (the server's `max_connections` is shared by every replica).
const MAX_READERS: usize = 16;

/// The read connections: each read is one `REPEATABLE READ READ ONLY` transaction, on at most
/// [`MAX_READERS`] connections at once.
pub(super) struct Readers {
    config: postgres::Config,
    pool: Mutex<Vec<PgConn>>,
    /// Reads running, and the condition a read waits on when [`MAX_READERS`] are.
    open: (Mutex<usize>, Condvar),
}

/// A read's place among the [`MAX_READERS`]; given back on drop, panics included.
struct ReadPermit<'a>(&'a (Mutex<usize>, Condvar));

impl<'a> ReadPermit<'a> {
    fn take(open: &'a (Mutex<usize>, Condvar)) -> Self {
        let (count, freed) = open;
        let mut n = count.lock().unwrap_or_else(PoisonError::into_inner);
        while *n >= MAX_READERS {
            n = freed.wait(n).unwrap_or_else(PoisonError::into_inner);
        }
        *n += 1;
        Self(open)
    }
}

impl Drop for ReadPermit<'_> {
    fn drop(&mut self) {
        let (count, freed) = self.0;
        *count.lock().unwrap_or_else(PoisonError::into_inner) -= 1;
        freed.notify_one();
    }
}

/// A blocking client closes its connection through its own runtime, which cannot run on an
/// async runtime's thread, where the last clone of a store may well be dropped: the pooled
/// connections are closed on a thread of their own.
impl Drop for Readers {
    fn drop(&mut self) {
        close_off_runtime(std::mem::take(
            self.pool.get_mut().unwrap_or_else(|e| e.into_inner()),
        ));
    }
}

/// Closes `conns` on a thread of its own (see `Drop for Readers`).
fn close_off_runtime(conns: Vec<PgConn>) {
    if !conns.is_empty() {
        let _ = std::thread::Builder::new()
            .name("postgres-close".into())
            .spawn(move || drop(conns));
    }
}

/// The publishers' lease on PostgreSQL: the session advisory lock [`PUBLISH_LOCK`], taken with
/// `pg_try_advisory_lock` on a connection of its own and held as long as that connection lives.
/// PostgreSQL releases it when the session ends, so a replica that dies (SIGKILL, a lost host,
/// a cut connection) hands it over without saying so: the next replica to try takes it.
pub(super) struct Lease {
    config: postgres::Config,
    /// The lease's connection, and whether it holds the lock.
    session: Mutex<Option<(PgConn, bool)>>,
}

impl Lease {
    /// Whether this process holds the lock now: the connection that took it still answers, or
    /// the lock was free and is taken now (on that connection, or on a new one if it is gone).
    pub(super) fn hold(&self) -> Result<bool> {
        let mut session = self.session.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((conn, held)) = session.take() {
            let db = Db::Postgres(&conn);
            let now = if held {
                // A live session still holds its lock; a dead one has released it.
                db.query_row("SELECT 1", [], |_| Ok(())).map(|()| true)
            } else {
                db.query_row("SELECT pg_try_advisory_lock(?1)", [PUBLISH_LOCK], |r| {
                    r.get::<_, bool>(0)
                })
            };
            match now {
                Ok(held) => {
                    *session = Some((conn, held));
                    return Ok(held);
                }
                Err(e) => {
                    tracing::warn!(error = %e, held, "the publisher lease's connection failed");
                    drop(conn);
                }
            }
        }
        let conn = connect(&self.config)?;
        let db = Db::Postgres(&conn);
        // The server's side of the keepalives (ignored on a unix socket, where the kernel
        // tells the server at once).
        db.execute_batch(&format!(
            "SET tcp_keepalives_idle = {}; SET tcp_keepalives_interval = {}; \
             SET tcp_keepalives_count = {LEASE_KEEPALIVE_RETRIES}",
            LEASE_KEEPALIVE_IDLE.as_secs(),
            LEASE_KEEPALIVE_INTERVAL.as_secs()
        ))
        .map_err(StoreError::from)?;
        let held = db
            .query_row("SELECT pg_try_advisory_lock(?1)", [PUBLISH_LOCK], |r| {
                r.get::<_, bool>(0)
            })
            .map_err(StoreError::from)?;
        *session = Some((conn, held));
        Ok(held)
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        let session = self.session.get_mut().unwrap_or_else(|e| e.into_inner());
        close_off_runtime(session.take().map(|(conn, _)| conn).into_iter().collect());
    }
}

/// How fast a dead peer of the lease's connection is noticed, on both sides (TCP keepalives:
/// first probe after 10 s idle, then every 5 s, 3 unanswered end it): PostgreSQL releases the
/// lock of a holder whose host vanished without closing its connection within about 25 s, not
/// after the system's default of two hours, during which no replica could publish.
const LEASE_KEEPALIVE_IDLE: Duration = Duration::from_secs(10);
const LEASE_KEEPALIVE_INTERVAL: Duration = Duration::from_secs(5);
const LEASE_KEEPALIVE_RETRIES: u32 = 3;

impl Readers {
    /// A lease on the same database, not yet tried ([`Lease::hold`]).
    pub(super) fn lease(&self) -> Lease {
        let mut config = self.config.clone();
        config
            .keepalives(true)
            .keepalives_idle(LEASE_KEEPALIVE_IDLE)
            .keepalives_interval(LEASE_KEEPALIVE_INTERVAL)
            .keepalives_retries(LEASE_KEEPALIVE_RETRIES);
        Lease {
            config,
            session: Mutex::new(None),
        }
    }

    /// `Store::write_apart` on PostgreSQL: one `READ COMMITTED` transaction on a pooled
    /// connection (one of the [`MAX_READERS`]), which first takes `lane`'s advisory lock (not
    /// [`WRITE_LOCK`]), and commits without waiting for the flush (`synchronous_commit = off`).
    pub(super) fn write_apart<T, E: From<StoreError>>(
        &self,
        lane: super::Lane,
        f: impl FnOnce(&Db<'_>) -> Result<T, E>,
    ) -> Result<T, E> {
        let _permit = ReadPermit::take(&self.open);
        let pooled = self.pool.lock().ok().and_then(|mut pool| pool.pop());
        let conn = match pooled {
            Some(conn) if !conn.is_closed() => conn,
            _ => connect(&self.config)?,
        };
        let db = Db::Postgres(&conn);
        let begun = db
            .execute_batch("BEGIN; SET LOCAL synchronous_commit = off")
            .and_then(|()| {
                db.query_row(
                    "SELECT pg_advisory_xact_lock(?1)",
                    [lane.lock()],
                    |_| Ok(()),
                )
            });
        if let Err(e) = begun {
            let _ = db.execute_batch("ROLLBACK");
            return Err(StoreError::from(e).into());
        }
        let result = f(&db);
        let end = match &result {
            Ok(_) => db
                .execute_batch("COMMIT")
                .map_err(|e| StoreError::Commit(e.to_string())),
            Err(_) => db.execute_batch("ROLLBACK").map_err(StoreError::from),
        };
        if end.is_ok() && !conn.is_closed() {
            if let Ok(mut pool) = self.pool.lock() {
                if pool.len() < MAX_READERS {
                    pool.push(conn);
                }
            }
        }
        let value = result?;
        end?;
        Ok(value)
    }

    pub(super) fn read<T, E: From<StoreError>>(
        &self,
        f: impl FnOnce(&Db<'_>) -> Result<T, E>,
    ) -> Result<T, E> {
        let _permit = ReadPermit::take(&self.open);
        let pooled = self.pool.lock().ok().and_then(|mut pool| pool.pop());
        let conn = match pooled {
            Some(conn) if !conn.is_closed() => conn,
            _ => connect(&self.config)?,
        };
        let db = Db::Postgres(&conn);
        db.execute_batch("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
            .map_err(StoreError::from)?;
        let result = f(&db);
        let end = db.execute_batch(if result.is_ok() { "COMMIT" } else { "ROLLBACK" });
        if end.is_ok() && !conn.is_closed() {
            if let Ok(mut pool) = self.pool.lock() {
                if pool.len() < MAX_READERS {
                    pool.push(conn);
                }
            }
        }
        result
    }
}
