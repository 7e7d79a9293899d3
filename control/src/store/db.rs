//! The SQL the store speaks, over either database: one connection type ([`Db`]), one statement
//! type ([`Stmt`]), one row type ([`Row`]) and one parameter type ([`Param`]), so every store
//! function is written once and runs on SQLite and on PostgreSQL (docs/postgres.md).
//!
//! The names follow rusqlite's (`execute`, `query_row`, `prepare_cached`, `query_map`,
//! `optional`), and SQL is written with SQLite's numbered parameters (`?1`), which a PostgreSQL
//! connection rewrites to `$1` once per statement text. Values are as loose as SQLite's on the
//! way in and out: an integer parameter binds to whatever integer or boolean type PostgreSQL
//! inferred for it, and a boolean or `numeric` column (PostgreSQL's `EXISTS`, `sum`) reads as an
//! integer, so the store's row readers need no backend of their own. Where the two dialects
//! differ, a function asks [`Db::is_postgres`] and says why beside the two texts.

use std::cell::RefCell;
use std::collections::HashMap;
use std::fmt;

use postgres::types::{FromSql, IsNull, ToSql, Type, to_sql_checked};

/// What a statement fails with.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// `query_row` found no row (see [`OptionalExtension::optional`]).
    #[error("the query returned no row")]
    NoRows,
    /// A column held a value its reader does not take.
    #[error("column {column}: {what}")]
    Column {
        /// Zero-based column index.
        column: usize,
        /// What was wrong.
        what: String,
    },
    /// A parameter could not be bound (a value out of range, or of a type PostgreSQL does not
    /// take in that place).
    #[error("parameter {index}: {what}")]
    Param {
        /// One-based parameter index.
        index: usize,
        /// What was wrong.
        what: String,
    },
    /// SQLite refused or failed the statement.
    #[error(transparent)]
    Sqlite(#[from] rusqlite::Error),
    /// PostgreSQL refused or failed the statement.
    #[error(transparent)]
    Postgres(PgError),
    /// PostgreSQL refused or failed this statement (its text, for the log: never a value).
    #[error("{source} (in: {sql})")]
    PostgresIn {
        /// The statement as the store wrote it.
        sql: String,
        /// The error.
        source: PgError,
    },
}

impl From<postgres::Error> for Error {
    fn from(e: postgres::Error) -> Self {
        Self::Postgres(PgError(e))
    }
}

/// PostgreSQL's error without the values it may quote. Its DETAIL ("Key (email)=(...) already
/// exists", "Failing row contains (...)") is left out of its text, of its `Debug` and of its
/// chain (it has no source), all of which reach the logs as a 500's cause; its severity,
/// message and SQLSTATE stay. SQLite's errors never quote a value.
pub struct PgError(postgres::Error);

impl PgError {
    /// The SQLSTATE, if the server sent one.
    pub fn code(&self) -> Option<&postgres::error::SqlState> {
        self.0.code()
    }
}

impl fmt::Display for PgError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(db) = self.0.as_db_error() {
            return write!(
                f,
                "{}: {} (SQLSTATE {})",
                db.severity(),
                db.message(),
                db.code().code()
            );
        }
        // Not the server's: the client's (I/O, a closed connection, a parameter refused by
        // `Value`'s binding, whose text names no value either), with its cause.
        write!(f, "{}", self.0)?;
        if let Some(cause) = std::error::Error::source(&self.0) {
            write!(f, ": {cause}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for PgError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("PgError")
            .field(&format_args!("{self}"))
            .finish()
    }
}

impl std::error::Error for PgError {}

impl Error {
    /// A column that held the wrong kind of value for its reader.
    pub fn column(column: usize, what: impl Into<String>) -> Self {
        Self::Column {
            column,
            what: what.into(),
        }
    }

    /// Whether the database refused the write for want of room or working storage: SQLite's
    /// `SQLITE_FULL` or an I/O error; PostgreSQL's `disk_full` (53100) or class 58 (system
    /// error: I/O). Not too many connections or out of memory: the disk is fine then.
    pub fn is_unwritable(&self) -> bool {
        match self {
            Self::Sqlite(e) => {
                use rusqlite::ErrorCode::{DiskFull, SystemIoFailure};
                matches!(e.sqlite_error_code(), Some(DiskFull | SystemIoFailure))
            }
            Self::Postgres(e) | Self::PostgresIn { source: e, .. } => e
                .code()
                .is_some_and(|c| c.code() == "53100" || c.code().starts_with("58")),
            _ => false,
        }
    }
}

/// A statement's result.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// `query_row(...).optional()`: no row is `None`, as rusqlite's extension of the same name.
pub trait OptionalExtension<T> {
    /// `Ok(None)` for [`Error::NoRows`].
    fn optional(self) -> Result<Option<T>>;
}

impl<T> OptionalExtension<T> for Result<T> {
    fn optional(self) -> Result<Option<T>> {
        match self {
            Ok(v) => Ok(Some(v)),
            Err(Error::NoRows) => Ok(None),
            Err(e) => Err(e),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Parameters

/// One bound value, borrowed from the caller (or made for the binding, such as a key id's hex).
/// Its `Debug` shows a text's or a blob's length, never its content (below).
#[derive(Clone)]
pub enum Value<'a> {
    /// SQL NULL.
    Null,
    /// An integer (booleans are 0 and 1).
    Int(i64),
    /// A float (only read: the store writes none).
    Real(f64),
    /// UTF-8 text.
    Text(&'a str),
    /// UTF-8 text made for the binding.
    OwnedText(String),
    /// Bytes.
    Blob(&'a [u8]),
    /// An integer that does not fit `i64` (refused when bound).
    OutOfRange(u64),
}

/// Text and bytes by their length only: tokio-postgres logs every parameter's `Debug` at debug
/// level ("executing statement ... with parameters"), and a refused binding's error carries it,
/// so the content (an email typed at sign-in, a hash, a sealed secret) would reach the logs.
impl fmt::Debug for Value<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Null => f.write_str("Null"),
            Value::Int(i) => write!(f, "Int({i})"),
            Value::Real(r) => write!(f, "Real({r})"),
            Value::Text(t) => write!(f, "Text({} bytes)", t.len()),
            Value::OwnedText(t) => write!(f, "Text({} bytes)", t.len()),
            Value::Blob(b) => write!(f, "Blob({} bytes)", b.len()),
            Value::OutOfRange(v) => write!(f, "OutOfRange({v})"),
        }
    }
}

/// A value the store binds as a parameter.
pub trait ToParam {
    /// The value.
    fn value(&self) -> Value<'_>;
}

macro_rules! int_param {
    ($($t:ty),*) => {$(
        impl ToParam for $t {
            fn value(&self) -> Value<'_> {
                Value::Int(i64::from(*self))
            }
        }
    )*};
}
int_param!(i8, i16, i32, i64, u8, u16, u32, bool);

impl ToParam for u64 {
    fn value(&self) -> Value<'_> {
        i64::try_from(*self).map_or(Value::OutOfRange(*self), Value::Int)
    }
}

impl ToParam for usize {
    fn value(&self) -> Value<'_> {
        i64::try_from(*self).map_or(Value::OutOfRange(*self as u64), Value::Int)
    }
}

/// A key id is its hex text in both databases, as on the wire.
impl ToParam for shared::key::KeyId {
    fn value(&self) -> Value<'_> {
        Value::OwnedText(self.to_string())
    }
}

impl ToParam for str {
    fn value(&self) -> Value<'_> {
        Value::Text(self)
    }
}

impl ToParam for String {
    fn value(&self) -> Value<'_> {
        Value::Text(self)
    }
}

impl ToParam for [u8] {
    fn value(&self) -> Value<'_> {
        Value::Blob(self)
    }
}

impl ToParam for Vec<u8> {
    fn value(&self) -> Value<'_> {
        Value::Blob(self)
    }
}

impl<const N: usize> ToParam for [u8; N] {
    fn value(&self) -> Value<'_> {
        Value::Blob(self)
    }
}

impl<T: ToParam + ?Sized> ToParam for &T {
    fn value(&self) -> Value<'_> {
        (**self).value()
    }
}

impl<T: ToParam> ToParam for Option<T> {
    fn value(&self) -> Value<'_> {
        self.as_ref().map_or(Value::Null, ToParam::value)
    }
}

impl ToParam for Value<'_> {
    fn value(&self) -> Value<'_> {
        self.clone()
    }
}

/// A statement's parameters, as rusqlite takes them: `params![a, b]`, an array of one type
/// (`[id]`, `[]`) or `()`.
pub trait Params {
    /// The values, in order (`?1` first).
    fn values(&self) -> Vec<Value<'_>>;
}

impl Params for [&dyn ToParam; 0] {
    fn values(&self) -> Vec<Value<'_>> {
        Vec::new()
    }
}

impl Params for &[&dyn ToParam] {
    fn values(&self) -> Vec<Value<'_>> {
        self.iter().map(|p| p.value()).collect()
    }
}

impl Params for () {
    fn values(&self) -> Vec<Value<'_>> {
        Vec::new()
    }
}

macro_rules! array_params {
    ($($n:literal)*) => {$(
        impl<T: ToParam> Params for [T; $n] {
            fn values(&self) -> Vec<Value<'_>> {
                self.iter().map(ToParam::value).collect()
            }
        }
    )*};
}
array_params!(1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16);

/// `params![a, b, c]`: values of different types, as rusqlite's macro of the same name.
#[macro_export]
macro_rules! db_params {
    () => { &[] as &[&dyn $crate::store::db::ToParam] };
    ($($p:expr),+ $(,)?) => { &[$(&$p as &dyn $crate::store::db::ToParam),+] as &[&dyn $crate::store::db::ToParam] };
}
pub use crate::db_params as params;

impl rusqlite::ToSql for Value<'_> {
    fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
        use rusqlite::types::{ToSqlOutput, ValueRef};
        Ok(ToSqlOutput::Borrowed(match self {
            Value::Null => ValueRef::Null,
            Value::Int(i) => ValueRef::Integer(*i),
            Value::Real(f) => ValueRef::Real(*f),
            Value::Text(t) => ValueRef::Text(t.as_bytes()),
            Value::OwnedText(t) => ValueRef::Text(t.as_bytes()),
            Value::Blob(b) => ValueRef::Blob(b),
            Value::OutOfRange(v) => {
                return Err(rusqlite::Error::ToSqlConversionFailure(
                    format!("{v} does not fit a 64-bit signed integer").into(),
                ));
            }
        }))
    }
}

/// Binds a value as the type PostgreSQL inferred for its parameter, as loosely as SQLite
/// would: an integer into any integer type (range checked) or a boolean, a text into any text
/// type or JSON, bytes into `bytea`. Anything else is refused, naming both types.
impl ToSql for Value<'_> {
    fn to_sql(
        &self,
        ty: &Type,
        out: &mut postgres::types::private::BytesMut,
    ) -> std::result::Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        let refuse = || -> Box<dyn std::error::Error + Sync + Send> {
            format!("cannot bind {self:?} as {ty}").into()
        };
        let text = match self {
            Value::Text(t) => Some(*t),
            Value::OwnedText(t) => Some(t.as_str()),
            _ => None,
        };
        if let Some(t) = text {
            return match *ty {
                Type::TEXT | Type::VARCHAR | Type::BPCHAR | Type::NAME | Type::UNKNOWN => {
                    t.to_sql(ty, out)
                }
                Type::JSON => {
                    out.extend_from_slice(t.as_bytes());
                    Ok(IsNull::No)
                }
                Type::JSONB => {
                    out.extend_from_slice(&[1]);
                    out.extend_from_slice(t.as_bytes());
                    Ok(IsNull::No)
                }
                _ => Err(refuse()),
            };
        }
        match *self {
            Value::Null => Ok(IsNull::Yes),
            Value::Int(i) => match *ty {
                Type::INT8 => i.to_sql(ty, out),
                Type::INT4 => i32::try_from(i).map_err(|_| refuse())?.to_sql(ty, out),
                Type::INT2 => i16::try_from(i).map_err(|_| refuse())?.to_sql(ty, out),
                Type::BOOL => (i != 0).to_sql(ty, out),
                Type::FLOAT8 => (i as f64).to_sql(ty, out),
                Type::TEXT | Type::VARCHAR => i.to_string().to_sql(ty, out),
                _ => Err(refuse()),
            },
            Value::Real(f) => match *ty {
                Type::FLOAT8 => f.to_sql(ty, out),
                _ => Err(refuse()),
            },
            Value::Text(_) | Value::OwnedText(_) => Err(refuse()),
            Value::Blob(b) => match *ty {
                Type::BYTEA => b.to_sql(ty, out),
                _ => Err(refuse()),
            },
            Value::OutOfRange(_) => Err(refuse()),
        }
    }

    fn accepts(_: &Type) -> bool {
        true
    }

    to_sql_checked!();
}

// ---------------------------------------------------------------------------------------------
// Rows

/// One row of a result.
#[derive(Clone, Copy)]
pub enum Row<'a> {
    /// From SQLite.
    Sqlite(&'a rusqlite::Row<'a>),
    /// From PostgreSQL.
    Postgres(&'a postgres::Row),
}

impl fmt::Debug for Row<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Row")
    }
}

/// A column index (rusqlite's `get::<_, T>` shape is kept, so the index is generic).
pub trait ColumnIndex {
    /// Zero-based.
    fn index(&self) -> usize;
}

impl ColumnIndex for usize {
    fn index(&self) -> usize {
        *self
    }
}

impl<'a> Row<'a> {
    /// Column `idx` as `T`.
    pub fn get<I: ColumnIndex, T: FromColumn>(&self, idx: I) -> Result<T> {
        let i = idx.index();
        T::from_column(self.value(i)?).map_err(|what| Error::column(i, what))
    }

    fn value(&self, i: usize) -> Result<Value<'a>> {
        match *self {
            Row::Sqlite(r) => {
                use rusqlite::types::ValueRef;
                Ok(match r.get_ref(i)? {
                    ValueRef::Null => Value::Null,
                    ValueRef::Integer(v) => Value::Int(v),
                    ValueRef::Real(v) => Value::Real(v),
                    ValueRef::Text(t) => Value::Text(
                        std::str::from_utf8(t)
                            .map_err(|_| Error::column(i, "text is not UTF-8"))?,
                    ),
                    ValueRef::Blob(b) => Value::Blob(b),
                })
            }
            Row::Postgres(r) => pg_value(r, i),
        }
    }
}

fn pg_value(r: &postgres::Row, i: usize) -> Result<Value<'_>> {
    let column = r
        .columns()
        .get(i)
        .ok_or_else(|| Error::column(i, "no such column"))?;
    let ty = column.type_().clone();
    let int = |v: Option<i64>| v.map_or(Value::Null, Value::Int);
    Ok(match ty {
        Type::INT8 => int(r.try_get::<_, Option<i64>>(i)?),
        Type::INT4 => int(r.try_get::<_, Option<i32>>(i)?.map(i64::from)),
        Type::INT2 => int(r.try_get::<_, Option<i16>>(i)?.map(i64::from)),
        Type::BOOL => int(r.try_get::<_, Option<bool>>(i)?.map(i64::from)),
        Type::NUMERIC => int(r.try_get::<_, Option<Numeric>>(i)?.map(|n| n.0)),
        Type::FLOAT8 => r
            .try_get::<_, Option<f64>>(i)?
            .map_or(Value::Null, Value::Real),
        Type::TEXT | Type::VARCHAR | Type::BPCHAR | Type::NAME | Type::UNKNOWN => r
            .try_get::<_, Option<&str>>(i)?
            .map_or(Value::Null, Value::Text),
        Type::BYTEA => r
            .try_get::<_, Option<&[u8]>>(i)?
            .map_or(Value::Null, Value::Blob),
        other => {
            return Err(Error::column(
                i,
                format!("PostgreSQL type {other} is not read"),
            ));
        }
    })
}

/// An integral `numeric` (what PostgreSQL's `sum` of `bigint`s answers), read as an `i64`.
struct Numeric(i64);

impl<'a> FromSql<'a> for Numeric {
    fn from_sql(
        _: &Type,
        raw: &'a [u8],
    ) -> std::result::Result<Self, Box<dyn std::error::Error + Sync + Send>> {
        // Binary format: ndigits, weight, sign, dscale (each 16 bits), then ndigits base-10000
        // digits; the value is sum(digit[i] * 10000^(weight - i)).
        let word =
            |i: usize| -> std::result::Result<u16, Box<dyn std::error::Error + Sync + Send>> {
                raw.get(i * 2..i * 2 + 2)
                    .map(|b| u16::from_be_bytes([b[0], b[1]]))
                    .ok_or_else(|| "short numeric".into())
            };
        let ndigits = usize::from(word(0)?);
        let weight = i32::from(word(1)? as i16);
        let sign = word(2)?;
        if sign == 0xC000 {
            return Err("numeric NaN".into());
        }
        let mut v: i128 = 0;
        for d in 0..ndigits {
            let digit = i128::from(word(4 + d)?);
            let power = weight - d as i32;
            if power < 0 {
                if digit != 0 {
                    return Err("numeric with a fraction".into());
                }
                continue;
            }
            v = v
                .checked_add(
                    digit
                        * 10_000_i128
                            .checked_pow(power as u32)
                            .ok_or("numeric too large")?,
                )
                .ok_or("numeric too large")?;
        }
        if sign == 0x4000 {
            v = -v;
        }
        Ok(Self(
            i64::try_from(v).map_err(|_| "numeric out of the 64-bit range")?,
        ))
    }

    fn accepts(ty: &Type) -> bool {
        *ty == Type::NUMERIC
    }
}

/// A Rust value a column reads into.
pub trait FromColumn: Sized {
    /// Converts; the error says what was wrong.
    fn from_column(v: Value<'_>) -> std::result::Result<Self, String>;
}

fn kind(v: Value<'_>) -> &'static str {
    match v {
        Value::Null => "NULL",
        Value::Int(_) | Value::OutOfRange(_) => "an integer",
        Value::Real(_) => "a float",
        Value::Text(_) | Value::OwnedText(_) => "text",
        Value::Blob(_) => "bytes",
    }
}

macro_rules! int_column {
    ($($t:ty),*) => {$(
        impl FromColumn for $t {
            fn from_column(v: Value<'_>) -> std::result::Result<Self, String> {
                match v {
                    Value::Int(i) => <$t>::try_from(i)
                        .map_err(|_| format!("{i} out of range for {}", stringify!($t))),
                    other => Err(format!("expected an integer, found {}", kind(other))),
                }
            }
        }
    )*};
}
int_column!(i8, i16, i32, i64, u8, u16, u32, u64, usize);

impl FromColumn for bool {
    fn from_column(v: Value<'_>) -> std::result::Result<Self, String> {
        match v {
            Value::Int(i) => Ok(i != 0),
            other => Err(format!("expected a boolean, found {}", kind(other))),
        }
    }
}

impl FromColumn for f64 {
    fn from_column(v: Value<'_>) -> std::result::Result<Self, String> {
        match v {
            Value::Real(f) => Ok(f),
            Value::Int(i) => Ok(i as f64),
            other => Err(format!("expected a number, found {}", kind(other))),
        }
    }
}

impl FromColumn for String {
    fn from_column(v: Value<'_>) -> std::result::Result<Self, String> {
        match v {
            Value::Text(t) => Ok(t.to_owned()),
            Value::OwnedText(t) => Ok(t),
            other => Err(format!("expected text, found {}", kind(other))),
        }
    }
}

impl FromColumn for Vec<u8> {
    fn from_column(v: Value<'_>) -> std::result::Result<Self, String> {
        match v {
            Value::Blob(b) => Ok(b.to_vec()),
            other => Err(format!("expected bytes, found {}", kind(other))),
        }
    }
}

impl<const N: usize> FromColumn for [u8; N] {
    fn from_column(v: Value<'_>) -> std::result::Result<Self, String> {
        match v {
            Value::Blob(b) => b
                .try_into()
                .map_err(|_| format!("expected {N} bytes, found {}", b.len())),
            other => Err(format!("expected bytes, found {}", kind(other))),
        }
    }
}

impl FromColumn for shared::key::KeyId {
    fn from_column(v: Value<'_>) -> std::result::Result<Self, String> {
        let text = String::from_column(v)?;
        Self::parse_hex(&text).ok_or_else(|| "not a key id".to_owned())
    }
}

impl<T: FromColumn> FromColumn for Option<T> {
    fn from_column(v: Value<'_>) -> std::result::Result<Self, String> {
        match v {
            Value::Null => Ok(None),
            v => T::from_column(v).map(Some),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Connections and statements

/// A statement prepared on a PostgreSQL connection, and its text as the store wrote it (for
/// errors).
#[derive(Clone)]
pub struct Prepared {
    statement: postgres::Statement,
    sql: std::sync::Arc<str>,
}

/// A PostgreSQL connection of the store, with its prepared statements (by SQLite text).
pub struct PgConn {
    client: RefCell<postgres::Client>,
    statements: RefCell<HashMap<String, Prepared>>,
}

impl fmt::Debug for PgConn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PgConn")
    }
}

impl PgConn {
    /// Wraps a connected client.
    pub fn new(client: postgres::Client) -> Self {
        Self {
            client: RefCell::new(client),
            statements: RefCell::new(HashMap::new()),
        }
    }

    /// Whether the server closed the connection (it is then dropped, not pooled).
    pub fn is_closed(&self) -> bool {
        self.client.borrow().is_closed()
    }

    fn statement(&self, sql: &str) -> Result<Prepared> {
        if let Some(s) = self.statements.borrow().get(sql) {
            return Ok(s.clone());
        }
        let text = pg_sql(sql);
        let statement = self
            .client
            .borrow_mut()
            .prepare_typed(&text, &unused_parameters(&text))
            .map_err(|source| Error::PostgresIn {
                sql: sql.to_owned(),
                source: PgError(source),
            })?;
        let mut cache = self.statements.borrow_mut();
        // Statement texts are the store's own, a bounded set; a `format!`ed one that differs
        // per call (never user input) would grow this, so the cache is bounded anyway.
        if cache.len() >= 512 {
            cache.clear();
        }
        let prepared = Prepared {
            statement,
            sql: sql.into(),
        };
        cache.insert(sql.to_owned(), prepared.clone());
        Ok(prepared)
    }

    fn run(&self, stmt: &Prepared, values: &[Value<'_>]) -> Result<Vec<postgres::Row>> {
        let params = pg_params(&stmt.statement, values)?;
        self.client
            .borrow_mut()
            .query(&stmt.statement, &params)
            .map_err(|source| stmt.failed(source))
    }

    fn execute(&self, stmt: &Prepared, values: &[Value<'_>]) -> Result<usize> {
        let params = pg_params(&stmt.statement, values)?;
        let n = self
            .client
            .borrow_mut()
            .execute(&stmt.statement, &params)
            .map_err(|source| stmt.failed(source))?;
        Ok(usize::try_from(n).unwrap_or(usize::MAX))
    }

    /// Runs statements separated by `;` with no parameters (transaction control, migrations).
    pub fn batch(&self, sql: &str) -> Result<()> {
        Ok(self.client.borrow_mut().batch_execute(sql)?)
    }
}

impl Prepared {
    /// The error of running it, with its text.
    fn failed(&self, source: postgres::Error) -> Error {
        Error::PostgresIn {
            sql: self.sql.to_string(),
            source: PgError(source),
        }
    }
}

fn pg_params<'v>(
    stmt: &postgres::Statement,
    values: &'v [Value<'v>],
) -> Result<Vec<&'v (dyn ToSql + Sync)>> {
    if stmt.params().len() != values.len() {
        return Err(Error::Param {
            index: values.len(),
            what: format!(
                "the statement takes {} parameters, {} given",
                stmt.params().len(),
                values.len()
            ),
        });
    }
    Ok(values.iter().map(|v| v as &(dyn ToSql + Sync)).collect())
}

/// A statement as PostgreSQL takes it, from the SQLite text the store writes. Outside quoted
/// text and comments, and nothing else:
/// - SQLite's numbered parameters `?N` are PostgreSQL's `$N`;
/// - SQLite's scalar `max(a, b, ...)` and `min(a, b, ...)` (two or more arguments; with one
///   they are the aggregates, as in PostgreSQL) are `GREATEST` and `LEAST`;
/// - `json_each(x)` (the store passes lists as JSON arrays) is
///   `jsonb_array_elements_text(CAST(x AS jsonb))`, whose column is also named `value`;
/// - `LIKE`, which ignores (ASCII) case in SQLite, is `ILIKE`.
///
/// Anything else either dialect lacks is written portably where it is used (`RETURNING id`,
/// table-qualified columns in `ON CONFLICT ... DO UPDATE`, a `CAST` on a parameter whose first
/// use is `IS NULL`, which PostgreSQL cannot type).
pub fn pg_sql(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len() + 16);
    let b = sql.as_bytes();
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        if c == b'\'' || c == b'"' {
            let end = sql[i + 1..]
                .find(c as char)
                .map_or(b.len(), |j| i + 1 + j + 1);
            out.push_str(&sql[i..end]);
            i = end;
        } else if c == b'-' && b.get(i + 1) == Some(&b'-') {
            let end = sql[i..].find('\n').map_or(b.len(), |j| i + j + 1);
            out.push_str(&sql[i..end]);
            i = end;
        } else if c == b'?' && b.get(i + 1).is_some_and(u8::is_ascii_digit) {
            out.push('$');
            i += 1;
        } else if c.is_ascii_alphabetic() || c == b'_' {
            let end = sql[i..]
                .find(|ch: char| !(ch.is_ascii_alphanumeric() || ch == '_'))
                .map_or(b.len(), |j| i + j);
            let word = &sql[i..end];
            let call = b.get(end) == Some(&b'(');
            let close = if call { matching(sql, end) } else { None };
            match (word.to_ascii_lowercase().as_str(), close) {
                (f @ ("max" | "min"), Some((close, commas))) if commas > 0 => {
                    out.push_str(if f == "max" { "GREATEST" } else { "LEAST" });
                    out.push('(');
                    out.push_str(&pg_sql(&sql[end + 1..close]));
                    out.push(')');
                    i = close + 1;
                }
                ("like", _) => {
                    out.push_str("ILIKE");
                    i = end;
                }
                ("json_each", Some((close, _))) => {
                    out.push_str("jsonb_array_elements_text(CAST(");
                    out.push_str(&pg_sql(&sql[end + 1..close]));
                    out.push_str(" AS jsonb))");
                    i = close + 1;
                }
                _ => {
                    out.push_str(word);
                    i = end;
                }
            }
        } else {
            let len = sql[i..].chars().next().map_or(1, char::len_utf8);
            out.push_str(&sql[i..i + len]);
            i += len;
        }
    }
    out
}

/// The types to prepare `text` (PostgreSQL's) with: a parameter the text never uses (a
/// filter's value when the filter is off) as `text`, which PostgreSQL cannot infer and any
/// value binds to (an integer as its digits); the others unspecified, inferred from their use.
/// (A parameter whose first use is `IS NULL` cannot be inferred either; the store casts it.)
fn unused_parameters(text: &str) -> Vec<Type> {
    let b = text.as_bytes();
    let mut used = Vec::new();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            q @ (b'\'' | b'"') => {
                i += 1 + text[i + 1..].find(q as char).unwrap_or(b.len());
            }
            b'$' => {
                let digits = b[i + 1..].iter().take_while(|c| c.is_ascii_digit()).count();
                if let Ok(n) = text[i + 1..i + 1 + digits].parse::<usize>() {
                    if (1..=256).contains(&n) {
                        if used.len() < n {
                            used.resize(n, false);
                        }
                        used[n - 1] = true;
                    }
                }
                i += digits;
            }
            _ => {}
        }
        i += 1;
    }
    used.into_iter()
        .map(|u| if u { Type::UNKNOWN } else { Type::TEXT })
        .collect()
}

/// The `)` matching the `(` at `open`, and how many commas are directly inside (skipping
/// quoted text and nested parentheses); `None` if it is not closed.
fn matching(sql: &str, open: usize) -> Option<(usize, usize)> {
    let b = sql.as_bytes();
    let (mut depth, mut commas, mut i) = (0_usize, 0, open);
    while i < b.len() {
        match b[i] {
            q @ (b'\'' | b'"') => {
                i += 1 + sql[i + 1..].find(q as char)?;
            }
            b'(' => depth += 1,
            b')' => {
                depth -= 1;
                if depth == 0 {
                    return Some((i, commas));
                }
            }
            b',' if depth == 1 => commas += 1,
            _ => {}
        }
        i += 1;
    }
    None
}

/// A connection (or transaction) of either database: what every store function takes.
#[derive(Clone, Copy)]
pub enum Db<'a> {
    /// SQLite: a connection, or a write transaction (which derefs to one).
    Sqlite(&'a rusqlite::Connection),
    /// PostgreSQL: a connection inside the store's transaction.
    Postgres(&'a PgConn),
}

impl fmt::Debug for Db<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.is_postgres() {
            "Db(PostgreSQL)"
        } else {
            "Db(SQLite)"
        })
    }
}

impl<'a> Db<'a> {
    /// Whether this is PostgreSQL (for the few statements whose dialects differ).
    pub fn is_postgres(&self) -> bool {
        matches!(self, Db::Postgres(_))
    }

    /// The SQLite connection, for what only SQLite has (`PRAGMA`s, the online backup).
    pub fn sqlite(&self) -> Option<&'a rusqlite::Connection> {
        match *self {
            Db::Sqlite(c) => Some(c),
            Db::Postgres(_) => None,
        }
    }

    /// Runs one statement; the number of rows it changed.
    pub fn execute<P: Params>(&self, sql: &str, params: P) -> Result<usize> {
        self.prepare_cached(sql)?.execute(params)
    }

    /// The first row of a query, read by `f`; [`Error::NoRows`] if there is none.
    pub fn query_row<P, T, F>(&self, sql: &str, params: P, f: F) -> Result<T>
    where
        P: Params,
        F: FnOnce(&Row<'_>) -> Result<T>,
    {
        self.prepare_cached(sql)?.query_row(params, f)
    }

    /// Runs statements separated by `;`, with no parameters.
    pub fn execute_batch(&self, sql: &str) -> Result<()> {
        match *self {
            Db::Sqlite(c) => Ok(c.execute_batch(sql)?),
            Db::Postgres(c) => c.batch(sql),
        }
    }

    /// A statement, prepared once per connection and kept.
    pub fn prepare_cached(&self, sql: &str) -> Result<Stmt<'a>> {
        Ok(match *self {
            Db::Sqlite(c) => Stmt::SqliteCached(c.prepare_cached(sql)?),
            Db::Postgres(c) => Stmt::Postgres(c, c.statement(sql)?),
        })
    }

    /// A statement prepared for this use only (a text built at run time).
    pub fn prepare(&self, sql: &str) -> Result<Stmt<'a>> {
        Ok(match *self {
            Db::Sqlite(c) => Stmt::Sqlite(c.prepare(sql)?),
            Db::Postgres(c) => Stmt::Postgres(c, c.statement(sql)?),
        })
    }
}

/// A prepared statement.
pub enum Stmt<'a> {
    /// SQLite, kept in the connection's cache.
    SqliteCached(rusqlite::CachedStatement<'a>),
    /// SQLite, for this use only.
    Sqlite(rusqlite::Statement<'a>),
    /// PostgreSQL.
    Postgres(&'a PgConn, Prepared),
}

impl Stmt<'_> {
    /// Runs it; the number of rows it changed.
    pub fn execute<P: Params>(&mut self, params: P) -> Result<usize> {
        let values = params.values();
        let sqlite = rusqlite::params_from_iter(values.iter());
        match self {
            Stmt::SqliteCached(s) => Ok(s.execute(sqlite)?),
            Stmt::Sqlite(s) => Ok(s.execute(sqlite)?),
            Stmt::Postgres(c, s) => c.execute(s, &values),
        }
    }

    /// Every row, each read by `f`.
    pub fn query_map<P, T, F>(
        &mut self,
        params: P,
        mut f: F,
    ) -> Result<std::vec::IntoIter<Result<T>>>
    where
        P: Params,
        F: FnMut(&Row<'_>) -> Result<T>,
    {
        let mut out = Vec::new();
        let mut rows = self.query(params)?;
        while let Some(r) = rows.next()? {
            out.push(f(&r));
        }
        Ok(out.into_iter())
    }

    /// The first row, read by `f`; [`Error::NoRows`] if there is none.
    pub fn query_row<P, T, F>(&mut self, params: P, f: F) -> Result<T>
    where
        P: Params,
        F: FnOnce(&Row<'_>) -> Result<T>,
    {
        let mut rows = self.query(params)?;
        match rows.next()? {
            Some(r) => f(&r),
            None => Err(Error::NoRows),
        }
    }

    /// The rows, one at a time (`while let Some(r) = rows.next()?`). SQLite reads them as they
    /// are asked for; PostgreSQL answers them all at once.
    pub fn query<P: Params>(&mut self, params: P) -> Result<Rows<'_>> {
        let values = params.values();
        match self {
            Stmt::SqliteCached(s) => Ok(Rows::Sqlite(
                s.query(rusqlite::params_from_iter(values.iter()))?,
            )),
            Stmt::Sqlite(s) => Ok(Rows::Sqlite(
                s.query(rusqlite::params_from_iter(values.iter()))?,
            )),
            Stmt::Postgres(c, s) => Ok(Rows::Postgres(c.run(s, &values)?, 0)),
        }
    }
}

/// The rows of [`Stmt::query`].
pub enum Rows<'s> {
    /// SQLite's cursor.
    Sqlite(rusqlite::Rows<'s>),
    /// PostgreSQL's rows and the index of the next.
    Postgres(Vec<postgres::Row>, usize),
}

impl Rows<'_> {
    /// The next row, or `None` after the last.
    #[allow(clippy::should_implement_trait)] // borrows from `self`: not an `Iterator`
    pub fn next(&mut self) -> Result<Option<Row<'_>>> {
        match self {
            Rows::Sqlite(rows) => Ok(rows.next()?.map(Row::Sqlite)),
            Rows::Postgres(rows, i) => {
                let row = rows.get(*i);
                *i += 1;
                Ok(row.map(Row::Postgres))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_parameter_debugs_as_its_length_never_its_content() {
        let owned = "typed@secret.example".to_owned();
        let values = [
            Value::Text("typed@secret.example"),
            Value::OwnedText(owned),
            Value::Blob(b"sealed-secret"),
        ];
        let shown = format!("{values:?}");
        assert_eq!(
            shown, "[Text(20 bytes), Text(20 bytes), Blob(13 bytes)]",
            "{shown}"
        );
        assert_eq!(format!("{:?}", Value::Int(7)), "Int(7)");
    }

    #[test]
    fn numbered_parameters_become_dollars_outside_quotes_and_comments() {
        assert_eq!(
            pg_sql("SELECT '?1', \"?2\" FROM t WHERE a = ?1 AND b = ?12 -- ?3\nAND c = ?3"),
            "SELECT '?1', \"?2\" FROM t WHERE a = $1 AND b = $12 -- ?3\nAND c = $3"
        );
        assert_eq!(pg_sql("SELECT ? FROM t"), "SELECT ? FROM t");
        assert_eq!(pg_sql("SELECT 'é?1', ?1"), "SELECT 'é?1', $1");
    }

    #[test]
    fn parameters_a_text_never_uses_are_typed_as_text() {
        assert_eq!(
            unused_parameters("SELECT 1 WHERE a = $1 AND b = $3 AND '$2' = c"),
            [Type::UNKNOWN, Type::TEXT, Type::UNKNOWN]
        );
        assert!(unused_parameters("SELECT 1").is_empty());
    }

    #[test]
    fn sqlite_functions_become_postgresql_ones_outside_quotes() {
        assert_eq!(
            pg_sql("UPDATE m SET v = max(v + 1, ?1), w = MAX(w), x = min(max(a, b), 'max(c, d)')"),
            "UPDATE m SET v = GREATEST(v + 1, $1), w = MAX(w), x = LEAST(GREATEST(a, b), 'max(c, d)')"
        );
        assert_eq!(
            pg_sql("SELECT count(*), min(max(due_at, version / 1000)) FROM o"),
            "SELECT count(*), min(GREATEST(due_at, version / 1000)) FROM o"
        );
        assert_eq!(
            pg_sql("WHERE k IN (SELECT value FROM json_each(?2)) AND max_x = 1 AND imax(a, b)"),
            "WHERE k IN (SELECT value FROM jsonb_array_elements_text(CAST($2 AS jsonb))) \
             AND max_x = 1 AND imax(a, b)"
        );
        assert_eq!(
            pg_sql("SELECT max(f(a, b)) FROM t"),
            "SELECT max(f(a, b)) FROM t"
        );
        assert_eq!(
            pg_sql("WHERE name LIKE ?3 ESCAPE '\\' AND likes = 'LIKE'"),
            "WHERE name ILIKE $3 ESCAPE '\\' AND likes = 'LIKE'"
        );
    }

    #[test]
    fn sqlite_reads_and_binds_through_the_common_types() {
        let c = rusqlite::Connection::open_in_memory().unwrap();
        let db = Db::Sqlite(&c);
        db.execute_batch("CREATE TABLE t (i INTEGER, s TEXT, b BLOB)")
            .unwrap();
        let n = db
            .execute(
                "INSERT INTO t VALUES (?1, ?2, ?3)",
                params![7_u32, "x", vec![1_u8, 2]],
            )
            .unwrap();
        assert_eq!(n, 1);
        db.execute("INSERT INTO t VALUES (?1, NULL, NULL)", [u64::MAX >> 1])
            .unwrap();
        let err = db
            .execute("INSERT INTO t VALUES (?1, NULL, NULL)", [u64::MAX])
            .unwrap_err();
        assert!(err.to_string().contains("does not fit"), "{err}");
        let (i, s, b): (u8, String, Vec<u8>) = db
            .query_row("SELECT i, s, b FROM t WHERE i = ?1", [7], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?))
            })
            .unwrap();
        assert_eq!((i, s.as_str(), b.as_slice()), (7, "x", &[1, 2][..]));
        let none: Option<i64> = db
            .query_row("SELECT i FROM t WHERE i = 99", (), |r| r.get(0))
            .optional()
            .unwrap();
        assert_eq!(none, None);
        let wrong = db.query_row("SELECT s FROM t WHERE i = 7", (), |r| r.get::<_, i64>(0));
        assert!(
            matches!(wrong, Err(Error::Column { column: 0, .. })),
            "{wrong:?}"
        );
        let small = db.query_row("SELECT i FROM t WHERE s IS NULL", (), |r| r.get::<_, u8>(0));
        assert!(matches!(small, Err(Error::Column { .. })), "{small:?}");
        let ids: Vec<i64> = db
            .prepare("SELECT i FROM t ORDER BY i")
            .unwrap()
            .query_map((), |r| r.get(0))
            .unwrap()
            .collect::<Result<_>>()
            .unwrap();
        assert_eq!(ids, [7, i64::MAX]);
    }

    #[test]
    fn numeric_reads_integral_values_and_refuses_fractions() {
        let enc = |ndigits: u16, weight: i16, sign: u16, digits: &[u16]| {
            let mut v = Vec::new();
            for w in [ndigits, weight as u16, sign, 0] {
                v.extend_from_slice(&w.to_be_bytes());
            }
            for d in digits {
                v.extend_from_slice(&d.to_be_bytes());
            }
            v
        };
        let read = |raw: &[u8]| Numeric::from_sql(&Type::NUMERIC, raw).map(|n| n.0);
        assert_eq!(read(&enc(0, 0, 0, &[])).unwrap(), 0);
        // 1234_5678 = 1234 * 10000 + 5678
        assert_eq!(read(&enc(2, 1, 0, &[1234, 5678])).unwrap(), 12_345_678);
        // -20000: one digit 2 at weight 1
        assert_eq!(read(&enc(1, 1, 0x4000, &[2])).unwrap(), -20_000);
        assert!(read(&enc(1, -1, 0, &[5000])).is_err(), "0.5");
        assert!(read(&enc(1, 5, 0, &[1])).is_err(), "10^20");
        assert!(read(&enc(0, 0, 0xC000, &[])).is_err(), "NaN");
    }
}
