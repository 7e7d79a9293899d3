//! The control plane's database as a test reads and tampers with it, on either backend: a SQLite
//! file, or the PostgreSQL database a `postgres://` URL names (what
//! [`crate::postgres::test_database`] hands a test). One accessor with the few shapes the tests
//! need: a row of values ([`Database::row`]), a count or single number ([`Database::count`]),
//! an `execute` for tampering, the list of tables.
//!
//! SQL is written once, in SQLite's spelling where the dialects differ only in name, and
//! translated here for PostgreSQL: `?N` parameters become `$N`, `instr(a, b)` becomes
//! `strpos(a, b)`. Test SQL holds neither inside quoted text. Values are [`Value`]s: integers,
//! text, bytes and NULL, which mean the same on both.

use std::path::{Path, PathBuf};
use std::time::Duration;

/// A parameter or a column value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    /// SQL NULL.
    Null,
    /// An integer (PostgreSQL's `smallint`, `integer`, `bigint` and `boolean` read as one).
    Int(i64),
    /// Text.
    Text(String),
    /// Bytes (a BLOB, a `bytea`).
    Bytes(Vec<u8>),
}

impl Value {
    /// The integer, or a panic naming what it is instead.
    #[track_caller]
    pub fn int(&self) -> i64 {
        match self {
            Value::Int(n) => *n,
            other => panic!("not an integer: {other:?}"),
        }
    }

    /// The text, `None` for NULL, or a panic naming what it is instead.
    #[track_caller]
    pub fn text(&self) -> Option<String> {
        match self {
            Value::Null => None,
            Value::Text(t) => Some(t.clone()),
            other => panic!("not text: {other:?}"),
        }
    }
}

impl From<i64> for Value {
    fn from(n: i64) -> Self {
        Value::Int(n)
    }
}

impl From<u64> for Value {
    fn from(n: u64) -> Self {
        Value::Int(i64::try_from(n).unwrap_or_else(|_| panic!("{n} does not fit an i64")))
    }
}

impl From<u32> for Value {
    fn from(n: u32) -> Self {
        Value::Int(n.into())
    }
}

impl From<&str> for Value {
    fn from(t: &str) -> Self {
        Value::Text(t.to_owned())
    }
}

impl From<&String> for Value {
    fn from(t: &String) -> Self {
        Value::Text(t.clone())
    }
}

impl From<String> for Value {
    fn from(t: String) -> Self {
        Value::Text(t)
    }
}

impl From<Vec<u8>> for Value {
    fn from(b: Vec<u8>) -> Self {
        Value::Bytes(b)
    }
}

/// An open connection to a control plane's database.
pub enum Database {
    /// A SQLite file.
    Sqlite(rusqlite::Connection),
    /// A PostgreSQL database (the synchronous client: call it from a plain thread, not from an
    /// async test's runtime).
    Postgres(postgres::Client),
}

/// Whether `database` (as the control plane takes `--database`) names a PostgreSQL database.
pub fn is_postgres(database: &Path) -> bool {
    database
        .to_str()
        .is_some_and(|s| s.starts_with("postgres://") || s.starts_with("postgresql://"))
}

impl Database {
    /// Opens `database`: a `postgres://` URL, else a SQLite file (read-write, waiting up to 10 s
    /// for the control plane's writer).
    pub fn open(database: &Path) -> Self {
        Self::try_open(database).unwrap_or_else(|e| panic!("opening {database:?}: {e}"))
    }

    /// [`Database::open`], returning the error (a file not created yet, a server gone).
    pub fn try_open(database: &Path) -> Result<Self, String> {
        if is_postgres(database) {
            let url = database.to_str().unwrap_or_default();
            postgres::Client::connect(url, postgres::NoTls)
                .map(Database::Postgres)
                .map_err(|e| e.to_string())
        } else {
            // No creating: a missing file is an error, not a new empty database.
            let c = rusqlite::Connection::open_with_flags(
                database,
                rusqlite::OpenFlags::SQLITE_OPEN_READ_WRITE,
            )
            .map_err(|e| e.to_string())?;
            c.busy_timeout(Duration::from_secs(10))
                .map_err(|e| e.to_string())?;
            Ok(Database::Sqlite(c))
        }
    }

    /// Whether this is PostgreSQL (for the few statements the dialects spell differently).
    pub fn is_postgres(&self) -> bool {
        matches!(self, Database::Postgres(_))
    }

    /// The first row `sql` returns, or `None` if it returns none.
    pub fn try_row(&mut self, sql: &str, params: &[Value]) -> Result<Option<Vec<Value>>, String> {
        match self {
            Database::Sqlite(c) => {
                let mut stmt = c.prepare(sql).map_err(|e| format!("{sql}: {e}"))?;
                let n = stmt.column_count();
                let mut rows = stmt
                    .query(rusqlite::params_from_iter(params.iter().map(sqlite_param)))
                    .map_err(|e| format!("{sql}: {e}"))?;
                let Some(row) = rows.next().map_err(|e| format!("{sql}: {e}"))? else {
                    return Ok(None);
                };
                (0..n)
                    .map(|i| {
                        row.get_ref(i)
                            .map_err(|e| format!("{sql}: column {i}: {e}"))
                            .and_then(|v| sqlite_value(v).map_err(|e| format!("{sql}: {e}")))
                    })
                    .collect::<Result<Vec<_>, _>>()
                    .map(Some)
            }
            Database::Postgres(c) => {
                let text = pg_sql(sql);
                let params = pg_params(params);
                let refs: Vec<&(dyn postgres::types::ToSql + Sync)> =
                    params.iter().map(|p| p.as_ref() as _).collect();
                let rows = c.query(&text, &refs).map_err(|e| pg_error(&text, &e))?;
                let Some(row) = rows.first() else {
                    return Ok(None);
                };
                (0..row.len())
                    .map(|i| pg_value(row, i).map_err(|e| format!("{text}: column {i}: {e}")))
                    .collect::<Result<Vec<_>, _>>()
                    .map(Some)
            }
        }
    }

    /// The first row `sql` returns; panics if it fails or returns none.
    #[track_caller]
    pub fn row(&mut self, sql: &str, params: &[Value]) -> Vec<Value> {
        self.try_row(sql, params)
            .unwrap_or_else(|e| panic!("{e}"))
            .unwrap_or_else(|| panic!("{sql}: no row"))
    }

    /// The integer in the first column of the first row (a `count(*)`, a `max`).
    #[track_caller]
    pub fn count(&mut self, sql: &str, params: &[Value]) -> i64 {
        self.row(sql, params)[0].int()
    }

    /// [`Database::count`], returning the error.
    pub fn try_count(&mut self, sql: &str, params: &[Value]) -> Result<i64, String> {
        match self.try_row(sql, params)?.as_deref() {
            Some([Value::Int(n), ..]) => Ok(*n),
            other => Err(format!("{sql}: not an integer: {other:?}")),
        }
    }

    /// Runs one statement that returns no rows; the number of rows it changed.
    #[track_caller]
    pub fn execute(&mut self, sql: &str, params: &[Value]) -> u64 {
        let changed = match self {
            Database::Sqlite(c) => c
                .execute(
                    sql,
                    rusqlite::params_from_iter(params.iter().map(sqlite_param)),
                )
                .map(|n| n as u64)
                .map_err(|e| format!("{sql}: {e}")),
            Database::Postgres(c) => {
                let text = pg_sql(sql);
                let params = pg_params(params);
                let refs: Vec<&(dyn postgres::types::ToSql + Sync)> =
                    params.iter().map(|p| p.as_ref() as _).collect();
                c.execute(&text, &refs).map_err(|e| pg_error(&text, &e))
            }
        };
        changed.unwrap_or_else(|e| panic!("{e}"))
    }

    /// The names of the control plane's tables.
    pub fn tables(&mut self) -> Vec<String> {
        match self {
            Database::Sqlite(c) => c
                .prepare("SELECT name FROM sqlite_master WHERE type = 'table'")
                .and_then(|mut s| {
                    s.query_map([], |r| r.get::<_, String>(0))
                        .and_then(Iterator::collect)
                })
                .unwrap_or_else(|e| panic!("listing tables: {e}")),
            Database::Postgres(c) => c
                .query(
                    "SELECT table_name::text FROM information_schema.tables \
                     WHERE table_schema = current_schema() AND table_type = 'BASE TABLE'",
                    &[],
                )
                .unwrap_or_else(|e| panic!("listing tables: {e}"))
                .iter()
                .map(|r| r.get(0))
                .collect(),
        }
    }
}

/// A copy of the database `database` names, taken while nothing writes to it: a file beside it
/// named `name` (after a WAL checkpoint, so the copy holds every commit), or a new PostgreSQL
/// database `name` on the same server made from it as a template (PostgreSQL requires that
/// nothing else is connected to it then: stop the control plane first). Returns what
/// `--database` takes for the copy.
pub fn copy(database: &Path, name: &str) -> PathBuf {
    assert!(
        !name.is_empty()
            && name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'),
        "copy name {name:?}: lowercase letters, digits and _ only"
    );
    if is_postgres(database) {
        let url = database.to_str().unwrap_or_default();
        let (base, source) = url
            .rsplit_once('/')
            .unwrap_or_else(|| panic!("{url}: no database name"));
        let source = source.split('?').next().unwrap_or(source);
        let mut admin = postgres::Client::connect(&format!("{base}/postgres"), postgres::NoTls)
            .unwrap_or_else(|e| panic!("{base}/postgres: {e}"));
        admin
            .batch_execute(&format!(
                "CREATE DATABASE {source}_{name} TEMPLATE {source}"
            ))
            .unwrap_or_else(|e| panic!("copying {source}: {e}"));
        PathBuf::from(format!("{base}/{source}_{name}"))
    } else {
        let conn = rusqlite::Connection::open(database)
            .unwrap_or_else(|e| panic!("opening {database:?}: {e}"));
        conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE);")
            .unwrap_or_else(|e| panic!("checkpoint of {database:?}: {e}"));
        drop(conn);
        let path = database.with_file_name(format!("{name}.sqlite3"));
        std::fs::copy(database, &path).unwrap_or_else(|e| panic!("copying {database:?}: {e}"));
        path
    }
}

/// PostgreSQL's error with the server's message (the client's `Display` says only "db error").
fn pg_error(sql: &str, e: &postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{sql}: {db}"),
        None => format!("{sql}: {e}"),
    }
}

fn sqlite_param(v: &Value) -> rusqlite::types::Value {
    match v {
        Value::Null => rusqlite::types::Value::Null,
        Value::Int(n) => rusqlite::types::Value::Integer(*n),
        Value::Text(t) => rusqlite::types::Value::Text(t.clone()),
        Value::Bytes(b) => rusqlite::types::Value::Blob(b.clone()),
    }
}

fn sqlite_value(v: rusqlite::types::ValueRef<'_>) -> Result<Value, String> {
    use rusqlite::types::ValueRef;
    match v {
        ValueRef::Null => Ok(Value::Null),
        ValueRef::Integer(n) => Ok(Value::Int(n)),
        ValueRef::Text(t) => String::from_utf8(t.to_vec())
            .map(Value::Text)
            .map_err(|e| e.to_string()),
        ValueRef::Blob(b) => Ok(Value::Bytes(b.to_vec())),
        ValueRef::Real(r) => Err(format!("a REAL ({r}): no test reads one")),
    }
}

fn pg_params(params: &[Value]) -> Vec<Box<dyn postgres::types::ToSql + Sync>> {
    params
        .iter()
        .map(|v| -> Box<dyn postgres::types::ToSql + Sync> {
            match v {
                Value::Null => Box::new(None::<String>),
                Value::Int(n) => Box::new(*n),
                Value::Text(t) => Box::new(t.clone()),
                Value::Bytes(b) => Box::new(b.clone()),
            }
        })
        .collect()
}

fn pg_value(row: &postgres::Row, i: usize) -> Result<Value, String> {
    use postgres::types::Type;
    let ty = row.columns()[i].type_().clone();
    let int = |v: Option<i64>| v.map_or(Value::Null, Value::Int);
    let got = match ty {
        Type::INT8 => row.try_get::<_, Option<i64>>(i).map(int),
        Type::INT4 => row
            .try_get::<_, Option<i32>>(i)
            .map(|v| int(v.map(i64::from))),
        Type::INT2 => row
            .try_get::<_, Option<i16>>(i)
            .map(|v| int(v.map(i64::from))),
        Type::BOOL => row
            .try_get::<_, Option<bool>>(i)
            .map(|v| int(v.map(i64::from))),
        Type::TEXT | Type::VARCHAR | Type::NAME | Type::BPCHAR => row
            .try_get::<_, Option<String>>(i)
            .map(|v| v.map_or(Value::Null, Value::Text)),
        Type::BYTEA => row
            .try_get::<_, Option<Vec<u8>>>(i)
            .map(|v| v.map_or(Value::Null, Value::Bytes)),
        other => return Err(format!("type {other}: no test reads one")),
    };
    got.map_err(|e| e.to_string())
}

/// SQLite's spelling to PostgreSQL's: `?N` to `$N`, `instr(` to `strpos(`.
fn pg_sql(sql: &str) -> String {
    let sql = sql.replace("instr(", "strpos(");
    let mut out = String::with_capacity(sql.len());
    let mut chars = sql.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '?' && chars.peek().is_some_and(char::is_ascii_digit) {
            out.push('$');
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlite_spelling_becomes_postgres() {
        assert_eq!(
            pg_sql("SELECT count(*) FROM t WHERE instr(a, ?1) > 0 AND b = ?12 AND c = '?'"),
            "SELECT count(*) FROM t WHERE strpos(a, $1) > 0 AND b = $12 AND c = '?'"
        );
    }

    #[test]
    fn a_sqlite_file_reads_and_writes_through_the_accessor() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.sqlite3");
        rusqlite::Connection::open(&path)
            .unwrap()
            .execute_batch("CREATE TABLE t (id INTEGER PRIMARY KEY, name TEXT, b BLOB)")
            .unwrap();
        let mut db = Database::open(&path);
        assert_eq!(
            db.execute(
                "INSERT INTO t (id, name, b) VALUES (?1, ?2, ?3)",
                &[7i64.into(), "seven".into(), vec![0u8].into()],
            ),
            1
        );
        assert_eq!(
            db.count(
                "SELECT count(*) FROM t WHERE instr(name, ?1) > 0",
                &["eve".into()]
            ),
            1
        );
        assert_eq!(
            db.row("SELECT name, b FROM t WHERE id = ?1", &[7i64.into()]),
            vec![Value::Text("seven".into()), Value::Bytes(vec![0])]
        );
        assert_eq!(db.tables(), vec!["t".to_owned()]);
        assert!(Database::try_open(&dir.path().join("missing.sqlite3")).is_err());
    }
}
