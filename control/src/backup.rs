//! Backup and restore of the control plane's SQLite file (`control backup`, `control restore`).
//!
//! A backup is `VACUUM INTO` from a read-only connection: one read transaction, so the copy is
//! the database as of one commit, while the service keeps writing (WAL: readers and the writer
//! do not block each other). The copy goes to `FILE.partial`, is checked (`integrity_check`),
//! fsynced and renamed, so `FILE` is a whole backup or absent.
//!
//! A restore refuses while a service holds the database ([`ServiceLock`]), copies the file beside
//! it and checks the copy (integrity, a schema this build knows, the audit chain with the audit
//! keyring: the same `store::audit::verify_chain` as `verify-audit`), moves the current files aside, puts the copy in
//! place and then makes the edge's view follow it (`store::restore`): versions move past
//! anything published since the backup, and every key's rate limit is queued, so the next start
//! republishes the revocation list and the limits in full, after reading the edge's shards back
//! so no revocation made since the backup is undone. See `docs/operations.md`.

use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context as _, bail, ensure};
use rusqlite::{Connection, OpenFlags};
use shared::audit::AuditKeyring;

use crate::store::audit::{ChainReport, verify_chain};
use crate::store::restore::{Republish, prepare_republish};
use crate::store::{SCHEMA_VERSION, Store, StoreError};

/// An exclusive lock on `DATABASE.lock`, held by `serve` for its whole life and by `restore`
/// while it works, so a restore never replaces the file under a running service (nor a service
/// starts on a half-restored one). An advisory `flock`, released by the kernel when the process
/// dies, kill -9 included.
#[derive(Debug)]
pub struct ServiceLock {
    _file: File,
}

impl ServiceLock {
    /// Takes the lock of `database`, or fails at once if another process holds it.
    pub fn acquire(database: &Path) -> anyhow::Result<Self> {
        let path = lock_path(database);
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .with_context(|| format!("opening {}", path.display()))?;
        match rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => Ok(Self { _file: file }),
            Err(rustix::io::Errno::WOULDBLOCK) => bail!(
                "{} is in use: a control plane serves it (or a restore is running); stop it first",
                database.display()
            ),
            Err(e) => {
                Err(std::io::Error::from(e)).with_context(|| format!("locking {}", path.display()))
            }
        }
    }
}

fn lock_path(database: &Path) -> PathBuf {
    suffixed(database, ".lock")
}

fn suffixed(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

/// Refuses a PostgreSQL database (a `postgres://` URL): `backup` and `restore` copy a SQLite
/// file, and PostgreSQL has its own tools for both. Checked before anything is opened or
/// connected to; the message names no part of the URL, which may hold a password.
pub fn refuse_postgres(database: &Path, command: &str) -> anyhow::Result<()> {
    ensure!(
        !crate::store::is_postgres(database),
        "control {command} copies a SQLite file, and --database names a PostgreSQL database: \
         use PostgreSQL's own tools instead (pg_dump and pg_restore for a logical copy, \
         pg_basebackup with WAL archiving for point-in-time recovery (PITR), or the managed \
         service's snapshots); see docs/postgres.md"
    );
    Ok(())
}

/// What a backup wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupReport {
    /// Its schema version.
    pub schema: usize,
    /// Its size in bytes.
    pub bytes: u64,
}

/// Copies `database` to `to` while the service runs (see the module documentation). Refuses to
/// overwrite `to`, and a PostgreSQL database ([`refuse_postgres`]).
pub fn backup(database: &Path, to: &Path) -> anyhow::Result<BackupReport> {
    refuse_postgres(database, "backup")?;
    ensure!(
        !to.exists(),
        "{} exists: a backup never overwrites a file",
        to.display()
    );
    ensure!(database.exists(), "{} does not exist", database.display());
    let partial = suffixed(to, ".partial");
    let _ = std::fs::remove_file(&partial);
    // Every account's data (password hashes included) is in it: readable by its owner only,
    // whatever the umask of the shell it was run from. SQLite writes into an empty file it is
    // given and keeps the file's mode.
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&partial)
            .with_context(|| format!("creating {}", partial.display()))?;
    }
    let source = Connection::open_with_flags(
        database,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .with_context(|| format!("opening {}", database.display()))?;
    source.busy_timeout(std::time::Duration::from_secs(30))?;
    let target = partial
        .to_str()
        .context("the backup's path is not UTF-8")?
        .to_owned();
    let copied = source
        .execute("VACUUM INTO ?1", [&target])
        .with_context(|| format!("VACUUM INTO {}", partial.display()));
    if let Err(e) = copied {
        let _ = std::fs::remove_file(&partial);
        return Err(e);
    }
    let checked = check_integrity(&partial).and_then(|schema| {
        File::open(&partial)?.sync_all()?;
        std::fs::rename(&partial, to)?;
        sync_dir(to)?;
        Ok(schema)
    });
    let schema = match checked {
        Ok(schema) => schema,
        Err(e) => {
            let _ = std::fs::remove_file(&partial);
            return Err(e);
        }
    };
    Ok(BackupReport {
        schema,
        bytes: std::fs::metadata(to)?.len(),
    })
}

/// `PRAGMA integrity_check` of the file; returns its schema version, refusing one newer than
/// this build.
fn check_integrity(path: &Path) -> anyhow::Result<usize> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .with_context(|| format!("opening {}", path.display()))?;
    let result: String = conn
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .with_context(|| format!("{} is not a SQLite database", path.display()))?;
    ensure!(
        result == "ok",
        "{} fails SQLite's integrity check: {result}",
        path.display()
    );
    let schema: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    let schema = usize::try_from(schema)?;
    ensure!(
        schema <= SCHEMA_VERSION,
        "{} has schema {schema}, newer than this build knows ({SCHEMA_VERSION}): restore it with \
         the build that wrote it",
        path.display()
    );
    ensure!(schema > 0, "{} holds no Lynxo schema", path.display());
    Ok(schema)
}

fn sync_dir(file: &Path) -> std::io::Result<()> {
    let dir = file
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    File::open(dir)?.sync_all()
}

/// What a backup file holds, checked.
#[derive(Debug, Clone)]
pub struct Checked {
    /// Its schema version.
    pub schema: usize,
    /// Its audit chain, verified.
    pub chain: ChainReport,
}

/// Checks a backup file without changing it: SQLite's integrity check, a schema this build
/// knows, and the audit chain with `audit` (as `verify-audit` checks it, without an anchor: the
/// edge's anchor is newer than any backup).
pub fn check(file: &Path, audit: &AuditKeyring) -> anyhow::Result<Checked> {
    let schema = check_integrity(file)?;
    let conn = Connection::open_with_flags(
        file,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    let chain = verify_chain(&crate::store::db::Db::Sqlite(&conn), audit, None)
        .with_context(|| format!("the audit chain of {} does not verify", file.display()))?;
    Ok(Checked { schema, chain })
}

/// What a restore did.
#[derive(Debug, Clone)]
pub struct RestoreReport {
    /// The backup, checked.
    pub checked: Checked,
    /// Where the files it replaced went (`None`: there was no database).
    pub replaced: Option<PathBuf>,
    /// The versions and queue set for the republish.
    pub republish: Republish,
}

/// Restores `from` into `database` (see the module documentation) at `now_ms`.
pub fn restore(
    from: &Path,
    database: &Path,
    audit: Arc<AuditKeyring>,
    now_ms: u64,
) -> anyhow::Result<RestoreReport> {
    refuse_postgres(database, "restore")?;
    let _lock = ServiceLock::acquire(database)?;
    // The copy is what is checked, so what is checked is what is restored.
    let incoming = suffixed(database, ".restoring");
    std::fs::copy(from, &incoming)
        .with_context(|| format!("copying {} to {}", from.display(), incoming.display()))?;
    let checked = match check(&incoming, &audit) {
        Ok(checked) => checked,
        Err(e) => {
            let _ = std::fs::remove_file(&incoming);
            return Err(e.context(format!("{} is not restored", from.display())));
        }
    };
    File::open(&incoming)?.sync_all()?;
    // The current database with its WAL and shared memory, kept aside: a WAL left beside the
    // restored file would be replayed into it.
    let replaced = if database.exists() {
        let aside = suffixed(database, &format!(".replaced-{}", now_ms / 1000));
        for suffix in ["-wal", "-shm", ""] {
            let file = suffixed(database, suffix);
            if file.exists() {
                std::fs::rename(&file, suffixed(&aside, suffix))
                    .with_context(|| format!("moving {} aside", file.display()))?;
            }
        }
        Some(aside)
    } else {
        None
    };
    std::fs::rename(&incoming, database)?;
    sync_dir(database)?;
    let store = Store::open(database, audit)
        .with_context(|| format!("opening the restored {}", database.display()))?;
    let republish = store
        .write_blocking(move |tx| -> Result<_, StoreError> { prepare_republish(tx, now_ms) })
        .context("preparing the republish")?;
    Ok(RestoreReport {
        checked,
        replaced,
        republish,
    })
}
