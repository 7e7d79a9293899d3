//! Storage: the only module that speaks SQL.
//!
//! SQLite in WAL mode with `synchronous=FULL`, so an acknowledged write survives a power cut.
//! Writes go through one connection, owned by a dedicated writer thread, and `BEGIN IMMEDIATE`,
//! so a transaction never fails halfway on a lock upgrade and the audit chain's "previous row"
//! is always the real previous row. Writes that arrive together share one transaction and one
//! fsync (group commit), each in its own savepoint, and are answered only after the commit.
//! Reads use a small pool of their own connections in `spawn_blocking` and never wait for the
//! writer.
//!
//! The rest of the service calls the functions of the submodules through [`Store::write`] and
//! [`Store::read`] and never sees a table, so another database can be put behind the same
//! functions later.

pub mod accounts;
pub mod audit;
pub mod db;
mod health;
pub mod keys;
pub mod leaks;
pub mod limits;
pub mod metrics;
mod pg;
pub mod restore;
pub mod retention;
pub mod revocations;
pub mod sessions;
pub mod sign_in_budgets;
pub mod signing;
pub mod tokens;
pub mod usage;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags, TransactionBehavior};
use shared::audit::AuditKeyring;

/// What storage fails with. The HTTP boundary turns every one into a 500 whose cause is
/// logged (`impl From<StoreError> for AppError`); background loops and the CLI log it as it is.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The database refused or failed a statement.
    #[error("database")]
    Db(#[from] db::Error),
    /// A write transaction could not begin.
    #[error("could not begin a write transaction: {0}")]
    Begin(String),
    /// The batch's `COMMIT` failed: none of its writes happened.
    #[error("commit: {0}")]
    Commit(String),
    /// A write panicked; its savepoint was rolled back.
    #[error("a write panicked")]
    Panicked,
    /// The writer thread has stopped (the process is stopping).
    #[error("the writer thread has stopped")]
    WriterStopped,
    /// The writer thread dropped a write without answering.
    #[error("the writer thread dropped a write")]
    WriteDropped,
    /// A read's blocking task did not finish.
    #[error("a read task failed")]
    Task(#[from] tokio::task::JoinError),
    /// An audit event was appended off the writer thread, which alone holds the audit keyring.
    #[error("audit events are appended by the store's writer")]
    NotWriter,
    /// The audit keyring's active kid has no key.
    #[error("the active audit kid has no key")]
    NoAuditKey,
    /// The disk refused the batch's `BEGIN` or `COMMIT` (full, or failing I/O): none of its
    /// writes happened. A statement's own refusal of that kind stays a [`StoreError::Db`];
    /// [`StoreError::is_unwritable`] tells both.
    #[error("the disk refused the write: {0}")]
    Unwritable(String),
}

impl StoreError {
    /// Whether the disk refused to store the write: SQLite's `SQLITE_FULL`, or an I/O error
    /// (a full disk shows as either, depending on which file and call ran out of room). Such a
    /// write was rolled back whole; it may succeed once there is room again.
    pub fn is_unwritable(&self) -> bool {
        match self {
            Self::Unwritable(_) => true,
            Self::Db(e) => e.is_unwritable(),
            _ => false,
        }
    }
}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        Self::Db(e.into())
    }
}

/// Why a batch's `BEGIN` or `COMMIT` failed, handed to each of its writes.
#[derive(Debug, Clone)]
struct BatchFailure {
    message: String,
    unwritable: bool,
}

impl BatchFailure {
    fn new(stage: &str, e: rusqlite::Error) -> Self {
        Self {
            message: format!("{stage}: {e}"),
            unwritable: db::Error::from(e).is_unwritable(),
        }
    }

    fn into_error(self) -> StoreError {
        if self.unwritable {
            StoreError::Unwritable(self.message)
        } else {
            StoreError::Commit(self.message)
        }
    }
}

/// Storage result.
pub type Result<T, E = StoreError> = std::result::Result<T, E>;

pub use self::health::{PROBE_INTERVAL, ProbeFailure};

/// The schema, in order. Applied ones are counted in `PRAGMA user_version`; never edit an entry
/// that has shipped, add a new one.
const MIGRATIONS: &[&str] = &[
    include_str!("migrations/0001_initial.sql"),
    include_str!("migrations/0002_usage_and_limits.sql"),
    include_str!("migrations/0003_audit_by_target.sql"),
    include_str!("migrations/0004_keyed_audit_and_commit_order.sql"),
    include_str!("migrations/0005_rotation_budgets.sql"),
    include_str!("migrations/0006_session_details.sql"),
    include_str!("migrations/0007_token_scopes.sql"),
    include_str!("migrations/0008_key_leaks.sql"),
    include_str!("migrations/0009_retention.sql"),
    include_str!("migrations/0010_write_probe.sql"),
    include_str!("migrations/0011_limits_queued_at.sql"),
    include_str!("migrations/0012_recovered_revocations.sql"),
    include_str!("migrations/0013_retired_kids.sql"),
    include_str!("migrations/0014_activity_reason.sql"),
    include_str!("migrations/0015_sign_in_budgets.sql"),
];

/// The PostgreSQL schema of record (docs/postgres.md), in order: the whole schema 13, then one
/// file per later SQLite migration, each recording the version it reaches in
/// `schema_migrations`. `copy-to-postgres` applies them; tests/postgres_schema.rs keeps them
/// equal to what [`MIGRATIONS`] make and checks that every file of the directory is here.
pub const PG_MIGRATIONS: &[(&str, &str)] = &[
    (
        "0001_initial.sql",
        include_str!("postgres/0001_initial.sql"),
    ),
    (
        "0002_activity_reason.sql",
        include_str!("postgres/0002_activity_reason.sql"),
    ),
    (
        "0003_sign_in_budgets.sql",
        include_str!("postgres/0003_sign_in_budgets.sql"),
    ),
];

/// The schema version this build writes (`PRAGMA user_version` after its migrations): a
/// database of a higher one comes from a newer build and is refused.
pub const SCHEMA_VERSION: usize = MIGRATIONS.len();

/// Writes kept apart from the store's ([`Store::write_apart`]): each lane is serialised with
/// itself only.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Lane {
    /// The sign-in attempt budgets (`sign_in_budgets`, `sign_in_reservations`, `sign_in_ledger`).
    SignIn,
}

/// Readers kept open between calls.
const READER_POOL: usize = 4;

/// The read connections kept open, of the store's database.
enum Readers {
    Sqlite(Mutex<Vec<Connection>>),
    Postgres(Box<pg::Readers>),
}

/// `database` as logs and errors may show it: a file path as it is, a PostgreSQL URL without
/// its password.
pub fn display_database(database: &Path) -> String {
    let text = database.to_string_lossy();
    if !is_postgres(database) {
        return text.into_owned();
    }
    let (scheme, rest) = text.split_once("://").unwrap_or(("postgres", &text));
    // A query may carry a password too (`?password=...`): it is left out, with any fragment.
    let rest = rest.split(['?', '#']).next().unwrap_or_default();
    let (authority, db) = rest.split_once('/').unwrap_or((rest, ""));
    // The host follows the last `@`: a password may hold one.
    let authority = match authority.rsplit_once('@') {
        Some((userinfo, host)) => match userinfo.split_once(':') {
            Some((user, _)) => format!("{user}:***@{host}"),
            None => format!("{userinfo}@{host}"),
        },
        None => authority.to_owned(),
    };
    format!("{scheme}://{authority}/{db}")
}

/// Whether `database` names a PostgreSQL database (`postgres://...`) rather than a SQLite file.
pub fn is_postgres(database: &Path) -> bool {
    database
        .to_str()
        .is_some_and(|s| s.starts_with("postgres://") || s.starts_with("postgresql://"))
}

/// The database.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

struct Inner {
    path: PathBuf,
    /// Jobs for the writer thread, which owns the only write connection.
    jobs: mpsc::Sender<Job>,
    readers: Readers,
    /// The writer's last batch failed because the disk refused it (see [`run_writer`]).
    unwritable: Arc<AtomicBool>,
    /// Readiness's write probe: its last result, shared by every `/readyz` ([`health`]).
    probe: health::Probe,
}

/// Most writes committed by one `COMMIT` (one fsync).
const MAX_BATCH: usize = 256;

/// What a write job hands back once it ran: called with the batch's commit result.
type Finish = Box<dyn FnOnce(Result<(), BatchFailure>) + Send>;
/// A write: run inside the batch's transaction (`None` if it could not begin).
type Job = Box<dyn FnOnce(Option<&db::Db<'_>>) -> Finish + Send>;

/// Wraps `f` as a job that runs in its own savepoint (so its failure undoes only its own
/// writes) and hands its result to `reply` only after the batch commits: nothing is
/// acknowledged before it is durable.
fn job<T, E, F, R>(f: F, reply: R) -> Job
where
    T: Send + 'static,
    E: From<StoreError> + Send + 'static,
    F: FnOnce(&db::Db<'_>) -> Result<T, E> + Send + 'static,
    R: FnOnce(Result<T, E>) + Send + 'static,
{
    Box::new(move |tx| {
        let result = match tx {
            Some(tx) => in_savepoint(tx, f),
            None => Err(StoreError::Begin("see the writer's log".into()).into()),
        };
        Box::new(move |commit| {
            reply(match commit {
                Ok(()) => result,
                Err(e) => Err(e.into_error().into()),
            });
        })
    })
}

fn in_savepoint<T, E: From<StoreError>>(
    tx: &db::Db<'_>,
    f: impl FnOnce(&db::Db<'_>) -> Result<T, E>,
) -> Result<T, E> {
    let sql = |sql: &str| tx.execute_batch(sql).map_err(|e| E::from(e.into()));
    sql("SAVEPOINT job")?;
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(tx)))
        .unwrap_or_else(|_| Err(StoreError::Panicked.into()));
    if result.is_ok() {
        sql("RELEASE job")?;
    } else {
        sql("ROLLBACK TO job; RELEASE job")?;
    }
    result
}

thread_local! {
    /// The audit keyring, on the writer thread only: every audit event is appended there, in the
    /// transaction of its change, and chained with this keyring (`audit::append`). It lives in
    /// the process, never in the database.
    static WRITER_AUDIT_KEYRING: std::cell::RefCell<Option<Arc<AuditKeyring>>> =
        const { std::cell::RefCell::new(None) };
}

/// The audit keyring of the writer thread, if this is one.
pub(crate) fn writer_audit_keyring() -> Option<Arc<AuditKeyring>> {
    WRITER_AUDIT_KEYRING.with_borrow(Clone::clone)
}

/// The writer thread: takes every job waiting (up to [`MAX_BATCH`]), runs them in one
/// `BEGIN IMMEDIATE` transaction, commits once, then answers them all. Under concurrency this
/// turns N fsyncs into one (group commit); alone, a job is its own batch.
///
/// `unwritable` says whether the last batch failed because the disk refused it (full or failing
/// I/O), so readiness says so at once; the next batch that commits clears it. A failed `COMMIT`
/// leaves nothing behind: SQLite rolls the transaction back (dropping the `Transaction` rolls
/// back what it did not), and the WAL frames it may have appended carry no commit mark.
fn run_writer(
    mut conn: Connection,
    jobs: mpsc::Receiver<Job>,
    audit: Arc<AuditKeyring>,
    unwritable: Arc<AtomicBool>,
) {
    WRITER_AUDIT_KEYRING.set(Some(audit));
    while let Some(batch) = next_batch(&jobs) {
        match conn.transaction_with_behavior(TransactionBehavior::Immediate) {
            Ok(tx) => {
                // SQLite may roll the whole transaction back on its own after a statement fails
                // with SQLITE_FULL or an I/O error: the jobs after that must not run (each
                // savepoint would then commit on its own), and the batch has failed.
                let mut rolled_back = false;
                let finishers: Vec<Finish> = batch
                    .into_iter()
                    .map(|job| {
                        rolled_back = rolled_back || tx.is_autocommit();
                        job((!rolled_back).then_some(&db::Db::Sqlite(&tx)))
                    })
                    .collect();
                rolled_back = rolled_back || tx.is_autocommit();
                let commit = if rolled_back {
                    Err(BatchFailure {
                        message: "SQLite rolled the transaction back after a write failed".into(),
                        unwritable: true,
                    })
                } else {
                    tx.commit().map_err(|e| BatchFailure::new("commit", e))
                };
                settle(commit, finishers, &unwritable);
            }
            Err(e) => {
                tracing::error!(error = %e, "could not begin a write transaction");
                fail_batch(batch, &BatchFailure::new("begin", e), &unwritable);
            }
        }
    }
}

/// The next batch for a writer: the first job waiting (blocking until there is one), then
/// every other already waiting, up to [`MAX_BATCH`]. `None` once the store is gone.
fn next_batch(jobs: &mpsc::Receiver<Job>) -> Option<Vec<Job>> {
    let mut batch = vec![jobs.recv().ok()?];
    while batch.len() < MAX_BATCH {
        match jobs.try_recv() {
            Ok(job) => batch.push(job),
            Err(_) => break,
        }
    }
    Some(batch)
}

/// Answers a batch's writes with its commit's result, and records whether the disk refused it.
fn settle(commit: Result<(), BatchFailure>, finishers: Vec<Finish>, unwritable: &AtomicBool) {
    match &commit {
        Ok(()) => unwritable.store(false, Ordering::SeqCst),
        Err(e) => {
            unwritable.store(e.unwritable, Ordering::SeqCst);
            tracing::error!(error = %e.message, "a write batch failed to commit");
        }
    }
    for finish in finishers {
        finish(commit.clone());
    }
}

/// Answers a batch that could not begin: none of its writes ran.
fn fail_batch(batch: Vec<Job>, failure: &BatchFailure, unwritable: &AtomicBool) {
    unwritable.store(failure.unwritable, Ordering::SeqCst);
    for job in batch {
        job(None)(Err(failure.clone()));
    }
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // A PostgreSQL URL may hold a password: only its kind is shown.
        let database = match &self.inner.readers {
            Readers::Sqlite(_) => self.inner.path.display().to_string(),
            Readers::Postgres(_) => "postgres://...".to_owned(),
        };
        f.debug_struct("Store")
            .field("database", &database)
            .finish()
    }
}

fn configure(conn: &Connection) -> rusqlite::Result<()> {
    conn.busy_timeout(Duration::from_secs(5))?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    // Room for every statement the store prepares with `prepare_cached` (rusqlite keeps 16): a
    // leak report's loop alone uses ten per key, and an evicted one is parsed again.
    conn.set_prepared_statement_cache_capacity(64);
    Ok(())
}

impl Store {
    /// Opens (creating if needed) the database at `path` and applies pending migrations. Audit
    /// events written through this store are chained with `audit` (see `audit::append`).
    ///
    /// A `postgres://` URL opens that PostgreSQL database instead (docs/postgres.md): the same
    /// store, with writes serialised across every replica by one advisory lock.
    pub fn open(path: &Path, audit: Arc<AuditKeyring>) -> anyhow::Result<Self> {
        if is_postgres(path) {
            let url = path.to_str().unwrap_or_default();
            let (jobs, readers, unwritable) = pg::open(url, audit)?;
            return Ok(Self {
                inner: Arc::new(Inner {
                    path: path.to_owned(),
                    jobs,
                    readers: Readers::Postgres(Box::new(readers)),
                    unwritable,
                    probe: health::Probe::default(),
                }),
            });
        }
        let writer = Connection::open(path)?;
        let mode: String =
            writer.pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get(0))?;
        anyhow::ensure!(
            mode.eq_ignore_ascii_case("wal"),
            "database refused WAL mode (journal_mode = {mode})"
        );
        configure(&writer)?;
        migrate(&writer)?;
        let (jobs, queue) = mpsc::channel();
        let unwritable = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&unwritable);
        std::thread::Builder::new()
            .name("sqlite-writer".into())
            .spawn(move || run_writer(writer, queue, audit, flag))?;
        Ok(Self {
            inner: Arc::new(Inner {
                path: path.to_owned(),
                jobs,
                readers: Readers::Sqlite(Mutex::new(Vec::new())),
                unwritable,
                probe: health::Probe::default(),
            }),
        })
    }

    /// The database file (or PostgreSQL URL) it was opened with.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// Whether this store is on PostgreSQL.
    pub fn is_postgres(&self) -> bool {
        matches!(self.inner.readers, Readers::Postgres(_))
    }

    /// Runs `f` in a `BEGIN IMMEDIATE` transaction (shared with other writes waiting at the
    /// same time, each in its own savepoint). Its writes commit if it returns `Ok` and are undone
    /// if it returns `Err`; either way the answer comes only after the commit is durable.
    ///
    /// `f` fails with a storage error or a domain error of its own (`E`, which a storage error
    /// converts into): the caller gets either, unchanged.
    pub async fn write<T, E, F>(&self, f: F) -> Result<T, E>
    where
        T: Send + 'static,
        E: From<StoreError> + Send + 'static,
        F: FnOnce(&db::Db<'_>) -> Result<T, E> + Send + 'static,
    {
        let (reply, answer) = tokio::sync::oneshot::channel();
        self.inner
            .jobs
            .send(job(f, move |r| {
                let _ = reply.send(r);
            }))
            .map_err(|_| StoreError::WriterStopped)?;
        answer.await.map_err(|_| StoreError::WriteDropped)?
    }

    /// Runs `f` in a write transaction of its own, serialised with the other transactions of
    /// `lane` only: for rows no other write touches (the sign-in budgets), so they neither wait
    /// for the store's writes nor hold them up (a sign-in never queues behind a slow write, and
    /// a flood of sign-ins never delays a key change). On PostgreSQL its commit does not wait
    /// for the flush (`synchronous_commit = off`): a crash of the database server may lose its
    /// last fraction of a second, which the lane's state can afford and acknowledged API writes
    /// never are. SQLite has one writer: there it is [`Store::write`].
    pub async fn write_apart<T, E, F>(&self, lane: Lane, f: F) -> Result<T, E>
    where
        T: Send + 'static,
        E: From<StoreError> + Send + 'static,
        F: FnOnce(&db::Db<'_>) -> Result<T, E> + Send + 'static,
    {
        if !self.is_postgres() {
            return self.write(f).await;
        }
        let inner = Arc::clone(&self.inner);
        tokio::task::spawn_blocking(move || match &inner.readers {
            Readers::Postgres(readers) => readers.write_apart(lane, f),
            Readers::Sqlite(_) => Err(StoreError::WriterStopped.into()),
        })
        .await
        .map_err(StoreError::from)?
    }

    /// Runs `f` on a read connection.
    pub async fn read<T, E, F>(&self, f: F) -> Result<T, E>
    where
        T: Send + 'static,
        E: From<StoreError> + Send + 'static,
        F: FnOnce(&db::Db<'_>) -> Result<T, E> + Send + 'static,
    {
        let inner = Arc::clone(&self.inner);
        tokio::task::spawn_blocking(move || inner.read_blocking(f))
            .await
            .map_err(StoreError::from)?
    }

    /// [`Store::write`] for callers that are not on the async runtime (the CLI, tests).
    pub fn write_blocking<T, E, F>(&self, f: F) -> Result<T, E>
    where
        T: Send + 'static,
        E: From<StoreError> + Send + 'static,
        F: FnOnce(&db::Db<'_>) -> Result<T, E> + Send + 'static,
    {
        let (reply, answer) = mpsc::channel();
        self.inner
            .jobs
            .send(job(f, move |r| {
                let _ = reply.send(r);
            }))
            .map_err(|_| StoreError::WriterStopped)?;
        answer.recv().map_err(|_| StoreError::WriteDropped)?
    }

    /// [`Store::read`] for callers that are not on the async runtime (the CLI, tests).
    pub fn read_blocking<T, E, F>(&self, f: F) -> Result<T, E>
    where
        T: Send,
        E: From<StoreError> + Send,
        F: FnOnce(&db::Db<'_>) -> Result<T, E> + Send,
    {
        if self.is_postgres() && tokio::runtime::Handle::try_current().is_ok() {
            // PostgreSQL's blocking client runs its own runtime, which may not start inside
            // another's thread: a caller on the async runtime reads from a thread of its own.
            return std::thread::scope(|s| {
                s.spawn(|| self.inner.read_blocking(f))
                    .join()
                    .unwrap_or_else(|_| Err(StoreError::Panicked.into()))
            });
        }
        self.inner.read_blocking(f)
    }

    /// The publishers' lease of this process (docs/postgres.md, "The publisher lease"): on
    /// PostgreSQL, several replicas share the database and only the one holding the lease
    /// publishes; on SQLite one process serves the file, and the lease is always held. Make one
    /// per process and share it (clones share its connection): two leases of one process
    /// compete for the lock like two replicas.
    pub fn publisher_lease(&self) -> PublisherLease {
        PublisherLease(match &self.inner.readers {
            Readers::Sqlite(_) => None,
            Readers::Postgres(readers) => Some(Arc::new(readers.lease())),
        })
    }

    /// Whether the database answers: for `/readyz`.
    pub async fn ping(&self) -> Result<()> {
        self.read(|conn| {
            conn.query_row("SELECT 1", [], |_| Ok(()))?;
            Ok(())
        })
        .await
    }
}

/// Whether this process may publish now ([`Store::publisher_lease`]). Cheap to clone; clones
/// share one lease.
#[derive(Clone, Default)]
pub struct PublisherLease(Option<Arc<pg::Lease>>);

impl std::fmt::Debug for PublisherLease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() {
            "PublisherLease(postgres)"
        } else {
            "PublisherLease(always)"
        })
    }
}

/// How often a publisher on a shared database looks for work other replicas committed: their
/// commits wake no trigger in this process.
pub const SHARED_POLL: Duration = Duration::from_secs(1);

impl PublisherLease {
    /// A lease that is always held: one process on its own database (SQLite, and publishers
    /// built without a lease).
    pub fn always() -> Self {
        Self(None)
    }

    /// Whether this process holds the lease now, taking it if it is free. Blocking (a
    /// PostgreSQL round trip): off the async runtime's threads, or through [`Self::hold`].
    pub fn hold_blocking(&self) -> Result<bool> {
        match &self.0 {
            None => Ok(true),
            Some(lease) => lease.hold(),
        }
    }

    /// [`Self::hold_blocking`] on a blocking thread; a failure to ask counts as not held (the
    /// database is unreachable: nothing could be published anyway) and is logged.
    pub async fn hold(&self) -> bool {
        let Some(lease) = self.0.clone() else {
            return true;
        };
        match tokio::task::spawn_blocking(move || lease.hold()).await {
            Ok(Ok(held)) => held,
            Ok(Err(e)) => {
                tracing::warn!(error = %format_args!("{e:#}"), "could not take the publisher lease");
                false
            }
            Err(e) => {
                tracing::warn!(error = %e, "the publisher lease's task failed");
                false
            }
        }
    }

    /// How long a publisher may sleep with nothing to do: on a shared database, at most
    /// [`SHARED_POLL`], since another replica's commits do not wake it; `None` on its own one.
    pub fn poll(&self) -> Option<Duration> {
        self.0.as_ref().map(|_| SHARED_POLL)
    }

    /// Caps `wait` at [`Self::poll`].
    pub fn cap(&self, wait: Duration) -> Duration {
        self.poll().map_or(wait, |poll| wait.min(poll))
    }
}

impl Inner {
    fn read_blocking<T, E: From<StoreError>>(
        &self,
        f: impl FnOnce(&db::Db<'_>) -> Result<T, E>,
    ) -> Result<T, E> {
        let pool = match &self.readers {
            Readers::Sqlite(pool) => pool,
            Readers::Postgres(readers) => return readers.read(f),
        };
        let pooled = pool.lock().ok().and_then(|mut pool| pool.pop());
        let conn = match pooled {
            Some(conn) => conn,
            None => {
                let open = || -> Result<Connection> {
                    let conn = Connection::open_with_flags(
                        &self.path,
                        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
                    )?;
                    configure(&conn)?;
                    Ok(conn)
                };
                open()?
            }
        };
        let result = f(&db::Db::Sqlite(&conn));
        if let Ok(mut pool) = pool.lock() {
            if pool.len() < READER_POOL {
                pool.push(conn);
            }
        }
        result
    }
}

/// A fresh in-memory database with this build's whole schema (the real migrations): where
/// `copy-to-postgres` reads PostgreSQL's audit rows back to run the same chain verifier on them.
pub fn schema_in_memory() -> anyhow::Result<Connection> {
    let conn = Connection::open_in_memory()?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    migrate(&conn)?;
    Ok(conn)
}

fn migrate(conn: &Connection) -> anyhow::Result<()> {
    let applied: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    let applied = usize::try_from(applied)?;
    anyhow::ensure!(
        applied <= MIGRATIONS.len(),
        "database schema {applied} is newer than this build knows ({})",
        MIGRATIONS.len()
    );
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(applied) {
        conn.execute_batch(&format!(
            "BEGIN IMMEDIATE;\n{sql}\nPRAGMA user_version = {};\nCOMMIT;",
            i + 1
        ))?;
        tracing::info!(version = i + 1, "applied database migration");
    }
    Ok(())
}

/// Converts a stored integer to `u64`, refusing negatives (which this service never writes).
pub(crate) fn to_u64(v: i64) -> db::Result<u64> {
    u64::try_from(v).map_err(|_| db::Error::column(0, format!("{v} is negative")))
}

/// Converts a time or count to the `i64` SQLite stores.
pub(crate) fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// A fixed audit keyring for the unit tests (test-only secret).
#[cfg(test)]
pub(crate) fn test_audit_keyring() -> Arc<AuditKeyring> {
    Arc::new(shared::testkit::audit_keyring())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_postgres_url_is_shown_without_its_password() {
        let shown = |s: &str| display_database(Path::new(s));
        assert_eq!(
            shown("postgres://lynxo:s3cret@127.0.0.1:5432/lynxo"),
            "postgres://lynxo:***@127.0.0.1:5432/lynxo"
        );
        assert_eq!(
            shown("postgres://lynxo@[::1]/db"),
            "postgres://lynxo@[::1]/db"
        );
        assert_eq!(shown("/var/lib/a:b@c.sqlite3"), "/var/lib/a:b@c.sqlite3");
    }

    #[test]
    fn no_part_of_a_url_that_may_hold_a_password_is_shown() {
        for (given, want) in [
            ("/var/lib/lynxo/c.sqlite3", "/var/lib/lynxo/c.sqlite3"),
            (
                "postgres://lynxo@127.0.0.1:5432/lynxo",
                "postgres://lynxo@127.0.0.1:5432/lynxo",
            ),
            (
                "postgres://lynxo:s3cret@localhost/db",
                "postgres://lynxo:***@localhost/db",
            ),
            (
                "postgresql://u:p:q@[::1]:5/d?password=x",
                "postgresql://u:***@[::1]:5/d",
            ),
            ("postgres://localhost?password=x", "postgres://localhost/"),
            ("postgres://a:b@c@host/db#x", "postgres://a:***@host/db"),
        ] {
            assert_eq!(display_database(Path::new(given)), want, "{given}");
        }
    }

    #[test]
    fn opens_in_wal_with_full_sync_and_migrates_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.sqlite3");
        let store = Store::open(&path, test_audit_keyring()).unwrap();
        let (mode, sync, version): (String, i64, i64) = store
            .write_blocking::<_, StoreError, _>(|tx| -> Result<_, StoreError> {
                Ok((
                    tx.sqlite()
                        .unwrap()
                        .pragma_query_value(None, "journal_mode", |r| r.get(0))?,
                    tx.sqlite()
                        .unwrap()
                        .pragma_query_value(None, "synchronous", |r| r.get(0))?,
                    tx.sqlite()
                        .unwrap()
                        .pragma_query_value(None, "user_version", |r| r.get(0))?,
                ))
            })
            .unwrap();
        assert_eq!(mode, "wal");
        assert_eq!(sync, 2, "synchronous=FULL");
        assert_eq!(version, MIGRATIONS.len() as i64);
        drop(store);
        // Reopening applies nothing twice (the plan insert would violate its primary key).
        Store::open(&path, test_audit_keyring()).unwrap();
    }

    /// A database of schema 3 (before the in-force flag) opened by this build: revocations that
    /// were in force stay in force, the one stamped by a clock running fast included, and a
    /// rotation still in its grace period stays scheduled. (The unkeyed audit prefix:
    /// `audit::tests::an_unkeyed_prefix_is_sealed_and_then_protected`.)
    #[test]
    fn schema_4_keeps_revocations_in_force_whatever_the_clock_said() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("old.sqlite3");
        let now = i64::try_from(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_secs(),
        )
        .unwrap();
        {
            let conn = Connection::open(&path).unwrap();
            for sql in &MIGRATIONS[..3] {
                conn.execute_batch(sql).unwrap();
            }
            conn.pragma_update(None, "user_version", 3).unwrap();
            conn.execute(
                "INSERT INTO accounts (id, name, plan_id, created_at) VALUES (1, 'a', 'standard', 1)",
                [],
            )
            .unwrap();
            // (id, revoked_at, grace_until): revoked an hour ago; revoked "400 s from now" by a
            // clock running fast; rotated, grace ended; rotated, grace running; revoked during
            // its grace; never revoked.
            let keys = [
                ("a", Some(now - 3600), None),
                ("b", Some(now + 400), None),
                ("c", Some(now - 10), Some(now - 10)),
                ("d", Some(now + 3600), Some(now + 3600)),
                ("e", Some(now - 5), Some(now + 3600)),
                ("f", None, None),
            ];
            for (n, (id, revoked_at, grace)) in keys.iter().enumerate() {
                let id = id.repeat(32);
                conn.execute(
                    "INSERT INTO api_keys (id, id_top, account_id, name, environment, scopes, kid, \
                     hint, rate_limit, created_at, revoked_at, grace_until) \
                     VALUES (?1, 0, 1, 'k', 'production', 1, 1, 'h', 10, 1, ?2, ?3)",
                    rusqlite::params![id, revoked_at, grace],
                )
                .unwrap();
                if let Some(at) = revoked_at {
                    conn.execute(
                        "INSERT INTO revocation_outbox (key_id, id_top, version, due_at) \
                         VALUES (?1, 0, ?2, ?3)",
                        rusqlite::params![id, n as i64, at],
                    )
                    .unwrap();
                }
            }
        }
        let store = Store::open(&path, test_audit_keyring()).unwrap();
        let (in_force, due): (Vec<String>, Vec<String>) = store
            .read_blocking::<_, StoreError, _>(move |c| {
                let ids = |sql: &str| -> Result<Vec<String>> {
                    let mut stmt = c.prepare(sql)?;
                    let rows = stmt.query_map([now], |r| r.get::<_, String>(0))?;
                    Ok(rows
                        .map(|r| r.map(|id| id[..1].to_owned()))
                        .collect::<db::Result<_>>()?)
                };
                Ok((
                    ids(
                        "SELECT id FROM api_keys WHERE revocation_in_force = 1 AND ?1 ORDER BY id",
                    )?,
                    ids("SELECT key_id FROM revocation_outbox WHERE due_at <= ?1 ORDER BY key_id")?,
                ))
            })
            .unwrap();
        assert_eq!(in_force, ["a", "b", "c", "e"]);
        assert_eq!(
            due,
            ["a", "b", "c", "e"],
            "due at once, the fast-clock one included"
        );
    }

    #[test]
    fn a_failed_write_rolls_back() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("c.sqlite3"), test_audit_keyring()).unwrap();
        let r: Result<()> = store.write_blocking::<_, StoreError, _>(|tx| {
            tx.execute(
                "INSERT INTO accounts (name, plan_id, created_at) VALUES ('a', 'standard', 1)",
                [],
            )?;
            Err(StoreError::Db(db::Error::NoRows))
        });
        assert!(r.is_err());
        let n: i64 = store
            .read_blocking::<_, StoreError, _>(|c| {
                Ok(c.query_row("SELECT count(*) FROM accounts", [], |r| r.get(0))?)
            })
            .unwrap();
        assert_eq!(n, 0);
    }

    /// Concurrent writes may share a transaction: one failing must undo only its own writes, and
    /// the others must still commit.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_failed_write_does_not_undo_its_batch_neighbours() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("c.sqlite3"), test_audit_keyring()).unwrap();
        let writes = (0..64).map(|i| {
            let store = store.clone();
            tokio::spawn(async move {
                store
                    .write(move |tx| -> Result<()> {
                        tx.execute(
                            "INSERT INTO accounts (name, plan_id, created_at) VALUES (?1, 'standard', 1)",
                            [format!("a{i}")],
                        )?;
                        if i % 2 == 1 {
                            return Err(StoreError::Db(db::Error::NoRows));
                        }
                        Ok(())
                    })
                    .await
            })
        });
        let mut ok = 0;
        for w in writes.collect::<Vec<_>>() {
            ok += usize::from(w.await.unwrap().is_ok());
        }
        assert_eq!(ok, 32);
        let names: Vec<String> = store
            .read_blocking::<_, StoreError, _>(|c| {
                let mut stmt = c.prepare("SELECT name FROM accounts")?;
                let rows = stmt.query_map([], |r| r.get(0))?;
                Ok(rows.collect::<db::Result<_>>()?)
            })
            .unwrap();
        assert_eq!(names.len(), 32);
        for name in names {
            let i: u32 = name[1..].parse().unwrap();
            assert_eq!(i % 2, 0, "{name} should have been rolled back");
        }
    }
}
