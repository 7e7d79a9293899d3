//! `control copy-to-postgres`: copies a SQLite deployment into an empty PostgreSQL database
//! (docs/postgres.md, "Copying a SQLite deployment").
//!
//! The source is read through a read-only connection inside one read transaction (a consistent
//! snapshot, even while `serve` writes to it). The target gets the PostgreSQL schema of record
//! and every row in ONE transaction, which commits only after the copy checks out: equal row
//! counts, an equal digest of every table's rows, and the audit chain verifying on the rows read
//! back from PostgreSQL (with the same verifier `verify-audit` runs). Any failure rolls it back:
//! the target is left as it was, empty.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use anyhow::{Context as _, anyhow, bail, ensure};
use rusqlite::types::ValueRef;
use rusqlite::{Connection, OpenFlags};
use sha2::{Digest as _, Sha256};
use shared::audit::AuditKeyring;
use tokio_postgres::types::{IsNull, ToSql, Type};

use crate::store::audit::{self, ChainReport};

pub use crate::store::PG_MIGRATIONS;

/// The schema version [`PG_MIGRATIONS`] reach (the last one records it in `schema_migrations`):
/// a source database must be at exactly this SQLite `user_version`.
pub const PG_SCHEMA_VERSION: i64 = 15;

/// Rows per multi-row INSERT (well under PostgreSQL's 65,535 parameters for our widest table).
const ROWS_PER_INSERT: usize = 256;

/// One table's copy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableCopy {
    /// Its name.
    pub name: String,
    /// Rows copied (equal on both sides).
    pub rows: u64,
    /// SHA-256 of its rows in primary-key order (equal on both sides).
    pub digest: [u8; 32],
}

/// What a copy did.
#[derive(Debug)]
pub struct Copied {
    /// Every table, in the order copied (foreign-key order).
    pub tables: Vec<TableCopy>,
    /// The audit chain as verified on the rows read back from PostgreSQL.
    pub chain: ChainReport,
    /// Identity sequences moved past the copied ids: (table, column, next id).
    pub sequences: Vec<(String, String, i64)>,
}

/// A source table: its name, its columns in order, the columns it is ordered by.
#[derive(Debug, Clone)]
struct Table {
    name: String,
    columns: Vec<String>,
    order: Vec<String>,
}

/// The PostgreSQL types the schema of record uses (docs/postgres.md: INTEGER -> BIGINT, TEXT ->
/// TEXT, BLOB -> BYTEA). Any other is refused by name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PgType {
    BigInt,
    Text,
    Bytea,
}

/// One value, typed for PostgreSQL.
enum Val {
    Int(Option<i64>),
    Text(Option<String>),
    Bytes(Option<Vec<u8>>),
}

/// Text and bytes by their length only: tokio-postgres logs every parameter's `Debug` at debug
/// level, and the rows copied hold emails, password hashes and sealed secrets.
impl std::fmt::Debug for Val {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Val::Int(v) => write!(f, "Int({v:?})"),
            Val::Text(None) | Val::Bytes(None) => f.write_str("Null"),
            Val::Text(Some(t)) => write!(f, "Text({} bytes)", t.len()),
            Val::Bytes(Some(b)) => write!(f, "Bytes({} bytes)", b.len()),
        }
    }
}

/// Binds as the value it holds (each checked against the column's type as its own type is).
impl ToSql for Val {
    fn to_sql(
        &self,
        ty: &Type,
        out: &mut tokio_postgres::types::private::BytesMut,
    ) -> Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        match self {
            Val::Int(v) => v.to_sql_checked(ty, out),
            Val::Text(v) => v.to_sql_checked(ty, out),
            Val::Bytes(v) => v.to_sql_checked(ty, out),
        }
    }

    fn accepts(ty: &Type) -> bool {
        <Option<i64>>::accepts(ty)
            || <Option<String>>::accepts(ty)
            || <Option<Vec<u8>>>::accepts(ty)
    }

    tokio_postgres::types::to_sql_checked!();
}

/// A parameter whose `Debug` is its type's name only (see [`Val`]'s).
#[derive(Clone, Copy)]
struct Hidden<T>(T);

impl<T> std::fmt::Debug for Hidden<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Hidden<{}>", std::any::type_name::<T>())
    }
}

impl<T: ToSql> ToSql for Hidden<T> {
    fn to_sql(
        &self,
        ty: &Type,
        out: &mut tokio_postgres::types::private::BytesMut,
    ) -> Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        self.0.to_sql(ty, out)
    }

    fn accepts(ty: &Type) -> bool {
        T::accepts(ty)
    }

    tokio_postgres::types::to_sql_checked!();
}

impl Val {
    fn param(&self) -> &(dyn ToSql + Sync) {
        self
    }

    /// The value's canonical bytes for the table digest: a tag, then its content.
    fn digest_into(&self, h: &mut Sha256) {
        match self {
            Val::Int(None) | Val::Text(None) | Val::Bytes(None) => h.update([0]),
            Val::Int(Some(i)) => {
                h.update([1]);
                h.update(i.to_be_bytes());
            }
            Val::Text(Some(t)) => {
                h.update([2]);
                h.update((t.len() as u64).to_be_bytes());
                h.update(t.as_bytes());
            }
            Val::Bytes(Some(b)) => {
                h.update([3]);
                h.update((b.len() as u64).to_be_bytes());
                h.update(b);
            }
        }
    }
}

/// Quotes an identifier for either SQL dialect.
fn ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// Opens the source read-only and starts its read transaction, then checks its schema version.
fn open_source(path: &Path) -> anyhow::Result<Connection> {
    ensure!(path.is_file(), "no SQLite database at {}", path.display());
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .with_context(|| format!("opening {} read-only", path.display()))?;
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    // One read transaction for everything read below: its snapshot starts at the first read.
    conn.execute_batch("BEGIN DEFERRED")?;
    let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    ensure!(
        version == PG_SCHEMA_VERSION,
        "{} is at schema version {version}; this build's PostgreSQL schema is version \
         {PG_SCHEMA_VERSION}: open it once with this build's `control serve` (which migrates it) \
         or use the build matching its version",
        path.display()
    );
    Ok(conn)
}

/// The source's tables in foreign-key order (a table after every table it references), with
/// their columns and the order their rows are read in (the primary key, else every column).
fn source_tables(conn: &Connection) -> anyhow::Result<Vec<Table>> {
    let names: Vec<String> = conn
        .prepare(
            "SELECT name FROM sqlite_schema WHERE type = 'table' AND name NOT LIKE 'sqlite_%' \
             ORDER BY name",
        )?
        .query_map([], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    let mut tables = BTreeMap::new();
    let mut refs: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for name in &names {
        let mut cols: Vec<(i64, String, i64)> = conn
            .prepare(&format!("PRAGMA table_info({})", ident(name)))?
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(5)?)))?
            .collect::<Result<_, _>>()?;
        cols.sort_by_key(|c| c.0);
        let mut pk: Vec<(i64, String)> = cols
            .iter()
            .filter(|c| c.2 > 0)
            .map(|c| (c.2, c.1.clone()))
            .collect();
        pk.sort();
        let columns: Vec<String> = cols.into_iter().map(|c| c.1).collect();
        let order = if pk.is_empty() {
            columns.clone()
        } else {
            pk.into_iter().map(|p| p.1).collect()
        };
        let parents: BTreeSet<String> = conn
            .prepare(&format!("PRAGMA foreign_key_list({})", ident(name)))?
            .query_map([], |r| r.get::<_, String>(2))?
            .collect::<Result<_, _>>()?;
        refs.insert(
            name.clone(),
            parents.into_iter().filter(|p| p != name).collect(),
        );
        tables.insert(
            name.clone(),
            Table {
                name: name.clone(),
                columns,
                order,
            },
        );
    }
    let mut ordered = Vec::new();
    let mut done = BTreeSet::new();
    while done.len() < names.len() {
        let ready: Vec<String> = names
            .iter()
            .filter(|n| !done.contains(*n))
            .filter(|n| refs[*n].iter().all(|p| done.contains(p)))
            .cloned()
            .collect();
        ensure!(
            !ready.is_empty(),
            "the source's foreign keys form a cycle (or name a missing table) among: {:?}",
            names
                .iter()
                .filter(|n| !done.contains(*n))
                .collect::<Vec<_>>()
        );
        for n in ready {
            done.insert(n.clone());
            ordered.push(tables[&n].clone());
        }
    }
    Ok(ordered)
}

/// The source's rows of `table` in its order, typed for the target's columns.
fn source_rows(
    conn: &Connection,
    table: &Table,
    types: &[PgType],
) -> anyhow::Result<Vec<Vec<Val>>> {
    let cols: Vec<String> = table.columns.iter().map(|c| ident(c)).collect();
    // Bytewise for text whatever the column's collation (users.email is NOCASE), as PostgreSQL
    // reads it back (`COLLATE "C"`).
    let order: Vec<String> = table
        .order
        .iter()
        .map(|c| format!("{} COLLATE BINARY", ident(c)))
        .collect();
    let sql = format!(
        "SELECT {} FROM {} ORDER BY {}",
        cols.join(", "),
        ident(&table.name),
        order.join(", ")
    );
    let mut stmt = conn.prepare(&sql)?;
    let mut rows = stmt.query([])?;
    let mut out = Vec::new();
    while let Some(row) = rows.next()? {
        let mut vals = Vec::with_capacity(types.len());
        for (i, ty) in types.iter().enumerate() {
            let v = row.get_ref(i)?;
            let bad = |held: &str| {
                anyhow!(
                    "{}.{} holds a {held} value (row {} of the table in its order) where \
                     PostgreSQL's column is {ty:?}: the copy refuses to convert it",
                    table.name,
                    table.columns[i],
                    out.len() + 1
                )
            };
            vals.push(match (ty, v) {
                (PgType::BigInt, ValueRef::Null) => Val::Int(None),
                (PgType::Text, ValueRef::Null) => Val::Text(None),
                (PgType::Bytea, ValueRef::Null) => Val::Bytes(None),
                (PgType::BigInt, ValueRef::Integer(n)) => Val::Int(Some(n)),
                (PgType::Text, ValueRef::Text(t)) => Val::Text(Some(
                    std::str::from_utf8(t)
                        .map_err(|_| bad("non-UTF-8 TEXT"))?
                        .to_owned(),
                )),
                (PgType::Bytea, ValueRef::Blob(b)) => Val::Bytes(Some(b.to_vec())),
                (_, ValueRef::Integer(_)) => return Err(bad("INTEGER")),
                (_, ValueRef::Real(_)) => return Err(bad("REAL")),
                (_, ValueRef::Text(_)) => return Err(bad("TEXT")),
                (_, ValueRef::Blob(_)) => return Err(bad("BLOB")),
            });
        }
        out.push(vals);
    }
    Ok(out)
}

fn digest(rows: &[Vec<Val>]) -> [u8; 32] {
    let mut h = Sha256::new();
    for row in rows {
        h.update([0xff]);
        for v in row {
            v.digest_into(&mut h);
        }
    }
    h.finalize().into()
}

/// The target's column types of `table`, in the source's column order.
async fn target_types(
    tx: &tokio_postgres::Transaction<'_>,
    table: &Table,
) -> anyhow::Result<Vec<PgType>> {
    let rows = tx
        .query(
            "SELECT column_name::text, data_type::text FROM information_schema.columns \
             WHERE table_schema = current_schema() AND table_name = $1",
            &[&table.name],
        )
        .await?;
    let types: BTreeMap<String, String> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
    ensure!(
        !types.is_empty(),
        "the source's table {} has no counterpart in the PostgreSQL schema: its rows would be lost",
        table.name
    );
    let mut out = Vec::new();
    for c in &table.columns {
        let ty = types.get(c).ok_or_else(|| {
            anyhow!(
                "{}.{} has no counterpart in the PostgreSQL schema: its values would be lost",
                table.name,
                c
            )
        })?;
        out.push(match ty.as_str() {
            "bigint" => PgType::BigInt,
            "text" => PgType::Text,
            "bytea" => PgType::Bytea,
            other => bail!(
                "{}.{c} is {other} on PostgreSQL: the copy knows bigint, text and bytea",
                table.name
            ),
        });
    }
    ensure!(
        types.len() == table.columns.len(),
        "{} has columns on PostgreSQL that SQLite lacks ({:?})",
        table.name,
        types
            .keys()
            .filter(|k| !table.columns.contains(k))
            .collect::<Vec<_>>()
    );
    Ok(out)
}

/// The target's rows of `table`, in the same order as [`source_rows`] reads them (bytewise for
/// text, as SQLite's BINARY; NULLs first, as SQLite).
async fn target_rows(
    tx: &tokio_postgres::Transaction<'_>,
    table: &Table,
    types: &[PgType],
) -> anyhow::Result<Vec<Vec<Val>>> {
    let order: Vec<String> = table
        .order
        .iter()
        .map(|c| {
            let i = table.columns.iter().position(|x| x == c).unwrap_or(0);
            if types[i] == PgType::Text {
                format!("{} COLLATE \"C\" NULLS FIRST", ident(c))
            } else {
                format!("{} NULLS FIRST", ident(c))
            }
        })
        .collect();
    let cols: Vec<String> = table.columns.iter().map(|c| ident(c)).collect();
    let sql = format!(
        "SELECT {} FROM {} ORDER BY {}",
        cols.join(", "),
        ident(&table.name),
        order.join(", ")
    );
    let rows = tx.query(&sql, &[]).await?;
    let mut out = Vec::with_capacity(rows.len());
    for row in rows {
        let mut vals = Vec::with_capacity(types.len());
        for (i, ty) in types.iter().enumerate() {
            vals.push(match ty {
                PgType::BigInt => Val::Int(row.try_get(i)?),
                PgType::Text => Val::Text(row.try_get(i)?),
                PgType::Bytea => Val::Bytes(row.try_get(i)?),
            });
        }
        out.push(vals);
    }
    Ok(out)
}

/// Refuses unless the target holds none of our tables: the copy never overwrites.
async fn check_target_empty(
    client: &tokio_postgres::Client,
    tables: &[Table],
) -> anyhow::Result<()> {
    let mut names: Vec<String> = tables.iter().map(|t| t.name.clone()).collect();
    names.push("schema_migrations".into());
    let found: Vec<String> = client
        .query(
            "SELECT c.relname::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
             WHERE n.nspname = current_schema() AND c.relname = ANY($1) ORDER BY 1",
            &[&names],
        )
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    ensure!(
        found.is_empty(),
        "the target database already holds tables of ours ({}): copy-to-postgres only fills an \
         empty database and never overwrites one",
        found.join(", ")
    );
    Ok(())
}

/// Refuses a source whose user emails collide under PostgreSQL's case-insensitive ICU
/// collation (wider than SQLite's NOCASE), naming them.
async fn check_emails(
    tx: &tokio_postgres::Transaction<'_>,
    conn: &Connection,
) -> anyhow::Result<()> {
    let emails: Vec<String> = conn
        .prepare("SELECT email FROM users ORDER BY id")?
        .query_map([], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    let groups = tx
        .query(
            "SELECT array_agg(e ORDER BY e COLLATE \"C\")::text[] FROM unnest($1::text[]) AS t(e) \
             GROUP BY e COLLATE nocase HAVING count(*) > 1 ORDER BY 1",
            &[&Hidden(&emails)],
        )
        .await
        .context("checking the users' emails against PostgreSQL's collation")?;
    if groups.is_empty() {
        return Ok(());
    }
    let named: Vec<String> = groups
        .iter()
        .map(|r| r.get::<_, Vec<String>>(0).join(" = "))
        .collect();
    bail!(
        "users' emails that SQLite's NOCASE tells apart but PostgreSQL's case-insensitive \
         collation (docs/postgres.md) takes as one: {}; change one of each (in the source, with \
         the service stopped) and copy again",
        named.join("; ")
    )
}

async fn insert_rows(
    tx: &tokio_postgres::Transaction<'_>,
    table: &Table,
    rows: &[Vec<Val>],
) -> anyhow::Result<()> {
    let cols: Vec<String> = table.columns.iter().map(|c| ident(c)).collect();
    let n = cols.len();
    for (chunk_no, chunk) in rows.chunks(ROWS_PER_INSERT).enumerate() {
        let tuples: Vec<String> = (0..chunk.len())
            .map(|r| {
                let ps: Vec<String> = (1..=n).map(|c| format!("${}", r * n + c)).collect();
                format!("({})", ps.join(", "))
            })
            .collect();
        let sql = format!(
            "INSERT INTO {} ({}) VALUES {}",
            ident(&table.name),
            cols.join(", "),
            tuples.join(", ")
        );
        let params: Vec<&(dyn ToSql + Sync)> = chunk
            .iter()
            .flat_map(|r| r.iter().map(Val::param))
            .collect();
        tx.execute(&sql, &params).await.with_context(|| {
            format!(
                "PostgreSQL refused rows {}..{} of {}",
                chunk_no * ROWS_PER_INSERT + 1,
                chunk_no * ROWS_PER_INSERT + chunk.len(),
                table.name
            )
        })?;
    }
    Ok(())
}

/// Runs the whole copy inside `tx`; the caller commits only on `Ok`.
async fn copy_in(
    tx: &tokio_postgres::Transaction<'_>,
    conn: &Connection,
    tables: &[Table],
    keyring: &AuditKeyring,
    source_chain: &ChainReport,
) -> anyhow::Result<Copied> {
    for (name, sql) in PG_MIGRATIONS {
        tx.batch_execute(sql)
            .await
            .with_context(|| format!("applying the PostgreSQL schema file {name}"))?;
    }
    let version: i64 = tx
        .query_one("SELECT max(version) FROM schema_migrations", &[])
        .await?
        .get(0);
    ensure!(
        version == PG_SCHEMA_VERSION,
        "the PostgreSQL schema files reach version {version}, not {PG_SCHEMA_VERSION}"
    );
    // Every table of the target must come from the source (else its rows would be the seeds').
    let target_tables: BTreeSet<String> = tx
        .query(
            "SELECT table_name::text FROM information_schema.tables \
             WHERE table_schema = current_schema() AND table_type = 'BASE TABLE'",
            &[],
        )
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    let source_names: BTreeSet<String> = tables.iter().map(|t| t.name.clone()).collect();
    let only_target: Vec<&String> = target_tables
        .iter()
        .filter(|t| *t != "schema_migrations" && !source_names.contains(*t))
        .collect();
    ensure!(
        only_target.is_empty(),
        "PostgreSQL tables the source lacks: {only_target:?}"
    );
    check_emails(tx, conn).await?;
    // The schema's seed rows (plans, singletons) make way for the source's own.
    for table in tables.iter().rev() {
        tx.execute(&format!("DELETE FROM {}", ident(&table.name)), &[])
            .await
            .with_context(|| format!("clearing the seed rows of {}", table.name))?;
    }
    let mut copied = Vec::new();
    for table in tables {
        let types = target_types(tx, table).await?;
        let rows = source_rows(conn, table, &types)?;
        insert_rows(tx, table, &rows).await?;
        copied.push((table, types, rows.len() as u64, digest(&rows)));
    }
    // Identity sequences past the copied ids, so the next generated id never collides.
    let identities = tx
        .query(
            "SELECT table_name::text, column_name::text FROM information_schema.columns \
             WHERE table_schema = current_schema() AND is_identity = 'YES' ORDER BY 1, 2",
            &[],
        )
        .await?;
    let mut sequences = Vec::new();
    for row in identities {
        let (t, c): (String, String) = (row.get(0), row.get(1));
        let next: i64 = tx
            .query_one(
                &format!(
                    "SELECT setval(pg_get_serial_sequence($1, $2), \
                     COALESCE((SELECT max({c}) FROM {t}), 0) + 1, false)",
                    c = ident(&c),
                    t = ident(&t)
                ),
                &[&ident(&t), &c],
            )
            .await
            .with_context(|| format!("moving the identity sequence of {t}.{c}"))?
            .get(0);
        sequences.push((t, c, next));
    }
    // Checks before committing: counts and digests, read back from PostgreSQL.
    let mut out = Vec::new();
    for (table, types, rows, want) in copied {
        let count: i64 = tx
            .query_one(&format!("SELECT count(*) FROM {}", ident(&table.name)), &[])
            .await?
            .get(0);
        ensure!(
            u64::try_from(count).ok() == Some(rows),
            "{}: {rows} rows in SQLite, {count} in PostgreSQL",
            table.name
        );
        let back = target_rows(tx, table, &types).await?;
        let got = digest(&back);
        ensure!(
            got == want,
            "{}: the rows read back from PostgreSQL differ from SQLite's (digest {} != {})",
            table.name,
            hex::encode(got),
            hex::encode(want)
        );
        out.push(TableCopy {
            name: table.name.clone(),
            rows,
            digest: got,
        });
    }
    let chain = target_chain(tx, tables, keyring).await?;
    ensure!(
        chain.events == source_chain.events && chain.head == source_chain.head,
        "the audit chain read back from PostgreSQL ({} events, head {:?}) is not the source's \
         ({} events, head {:?})",
        chain.events,
        chain.head.map(|h| h.seq),
        source_chain.events,
        source_chain.head.map(|h| h.seq)
    );
    Ok(Copied {
        tables: out,
        chain,
        sequences,
    })
}

/// Reads the audit trail back from PostgreSQL into a fresh in-memory SQLite with the real schema
/// and runs the chain verifier `verify-audit` runs on it.
async fn target_chain(
    tx: &tokio_postgres::Transaction<'_>,
    tables: &[Table],
    keyring: &AuditKeyring,
) -> anyhow::Result<ChainReport> {
    let table = tables
        .iter()
        .find(|t| t.name == "audit_events")
        .ok_or_else(|| anyhow!("the source has no audit_events table"))?;
    let types = target_types(tx, table).await?;
    let rows = target_rows(tx, table, &types).await?;
    let mem = crate::store::schema_in_memory().context("creating the in-memory check database")?;
    let cols: Vec<String> = table.columns.iter().map(|c| ident(c)).collect();
    let marks: Vec<String> = (1..=cols.len()).map(|i| format!("?{i}")).collect();
    {
        let mut insert = mem.prepare(&format!(
            "INSERT INTO audit_events ({}) VALUES ({})",
            cols.join(", "),
            marks.join(", ")
        ))?;
        for row in &rows {
            let vals: Vec<rusqlite::types::Value> = row
                .iter()
                .map(|v| match v {
                    Val::Int(Some(i)) => rusqlite::types::Value::Integer(*i),
                    Val::Text(Some(t)) => rusqlite::types::Value::Text(t.clone()),
                    Val::Bytes(Some(b)) => rusqlite::types::Value::Blob(b.clone()),
                    _ => rusqlite::types::Value::Null,
                })
                .collect();
            insert.execute(rusqlite::params_from_iter(vals))?;
        }
    }
    audit::verify_chain(&crate::store::db::Db::Sqlite(&mem), keyring, None)
        .context("the audit chain read back from PostgreSQL does not verify")
}

/// The target's connection settings, refused unless every host is loopback or a unix socket:
/// there is no TLS yet (it comes with the store), so the rows must not cross a network.
pub fn target_config(target: &str) -> anyhow::Result<tokio_postgres::Config> {
    use tokio_postgres::config::Host;
    let config: tokio_postgres::Config = target.parse().context(
        "the target is not a PostgreSQL connection string (postgres://USER@HOST:PORT/DB)",
    )?;
    ensure!(
        !config.get_hosts().is_empty() || !config.get_hostaddrs().is_empty(),
        "the target names no host"
    );
    for host in config.get_hosts() {
        let local = match host {
            #[cfg(unix)]
            Host::Unix(_) => true,
            Host::Tcp(name) => {
                name.eq_ignore_ascii_case("localhost")
                    || name
                        .trim_start_matches('[')
                        .trim_end_matches(']')
                        .parse::<std::net::IpAddr>()
                        .is_ok_and(|ip| ip.is_loopback())
            }
        };
        ensure!(
            local,
            "the target host is not loopback or a unix socket: copy-to-postgres has no TLS yet, \
             so it connects only to this machine (docs/postgres.md)"
        );
    }
    ensure!(
        config
            .get_hostaddrs()
            .iter()
            .all(std::net::IpAddr::is_loopback),
        "the target hostaddr is not loopback: copy-to-postgres has no TLS yet (docs/postgres.md)"
    );
    Ok(config)
}

/// Copies the SQLite database at `source` into the empty PostgreSQL database at `target`
/// (`postgres://USER@HOST:PORT/DB`, no TLS: loopback or a unix socket). Commits only if every
/// check passes; otherwise the target is left empty.
pub async fn copy(source: &Path, target: &str, keyring: &AuditKeyring) -> anyhow::Result<Copied> {
    let config = target_config(target)?;
    let conn = open_source(source)?;
    let tables = source_tables(&conn)?;
    let source_chain = audit::verify_chain(&crate::store::db::Db::Sqlite(&conn), keyring, None)
        .context("the source's audit chain does not verify: nothing to copy faithfully")?;
    let (mut client, connection) = config
        .connect(tokio_postgres::NoTls)
        .await
        .context("connecting to the target PostgreSQL database")?;
    let driver = tokio::spawn(connection);
    check_target_empty(&client, &tables).await?;
    let tx = client.transaction().await?;
    let result = copy_in(&tx, &conn, &tables, keyring, &source_chain).await;
    match result {
        Ok(copied) => {
            tx.commit().await.context("committing the copy")?;
            drop(client);
            let _ = driver.await;
            Ok(copied)
        }
        Err(e) => {
            let _ = tx.rollback().await;
            Err(e.context("the copy is rolled back: the target database is left as it was"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::target_config;

    #[test]
    fn only_loopback_or_unix_socket_targets_are_taken() {
        for ok in [
            "postgres://lynxo@127.0.0.1:5432/lynxo",
            "postgres://lynxo@localhost/lynxo",
            "postgres://lynxo@[::1]:5432/lynxo",
            "host=/run/postgresql dbname=lynxo user=lynxo",
            "postgres://lynxo@%2Frun%2Fpostgresql/lynxo",
        ] {
            assert!(target_config(ok).is_ok(), "{ok}");
        }
        for refused in [
            "postgres://lynxo@db.example.com/lynxo",
            "postgres://lynxo@10.0.0.5:5432/lynxo",
            "postgres://lynxo@127.0.0.1,db.example.com/lynxo",
            "host=localhost hostaddr=10.0.0.5 dbname=lynxo",
            "not a url at all",
        ] {
            assert!(target_config(refused).is_err(), "{refused}");
        }
    }
}
