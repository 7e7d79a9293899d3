//! The PostgreSQL schema of record (`src/store/postgres/0001_initial.sql` and the migrations
//! after it, applied in order) against what the real store's SQLite migrations make, on a private
//! server (`e2e::postgres`).
//!
//! Each database is read into a set of facts (a table, a column with its type, nullability and
//! default, a primary key, a UNIQUE constraint, an index, a foreign key, a trigger, the number of
//! CHECK constraints of a table, a seed row, the schema version); the two sets must be equal,
//! and a failure lists every fact on one side only. What the catalogs cannot compare (the CHECK
//! expressions, the collation's semantics, the triggers' effect) is run as statements on both
//! backends, which must agree on each.

use std::collections::BTreeSet;
use std::path::Path;

use control::store::{PG_MIGRATIONS, SCHEMA_VERSION, Store};
use e2e::postgres::Server;
use rusqlite::Connection;
use rusqlite::types::ValueRef;

/// SQLite `INTEGER PRIMARY KEY` columns whose value the store always names (a chain's next seq,
/// a singleton row's 1, a kid): no generated id on PostgreSQL. Every other one is an identity.
const EXPLICIT_IDS: &[&str] = &[
    "audit_events.seq",
    "retired_kids.kid",
    "revocation_meta.id",
    "sign_in_ledger.id",
    "usage_retention.id",
    "write_probe.id",
];

/// Triggers only PostgreSQL needs: TRUNCATE skips row triggers there; SQLite has no TRUNCATE.
const PG_ONLY_TRIGGERS: &[&str] = &["audit_events_no_truncate"];

/// PostgreSQL's own bookkeeping table (SQLite keeps the version in `PRAGMA user_version`).
const PG_ONLY_TABLES: &[&str] = &["schema_migrations"];

/// A fresh SQLite database migrated by the real store, in `dir`.
fn sqlite(dir: &Path) -> Connection {
    let path = dir.join("control.sqlite3");
    drop(Store::open(&path, shared_audit_keyring()).expect("the store opens and migrates"));
    Connection::open(&path).expect("open the migrated database")
}

fn shared_audit_keyring() -> std::sync::Arc<shared::audit::AuditKeyring> {
    std::sync::Arc::new(shared::testkit::audit_keyring())
}

/// A private server with the schema applied to database `lynxo`.
fn postgres() -> Server {
    let server = Server::start();
    server.create_database("lynxo");
    for (_, sql) in PG_MIGRATIONS {
        server.psql("lynxo", sql);
    }
    server
}

#[test]
fn every_postgres_migration_is_applied() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/store/postgres");
    let mut files: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|name| name.ends_with(".sql"))
        .collect();
    files.sort();
    let listed: Vec<&str> = PG_MIGRATIONS.iter().map(|(name, _)| *name).collect();
    assert_eq!(
        files, listed,
        "PG_MIGRATIONS lists every file of {dir:?}, in order"
    );
}

fn sqlite_type(declared: &str) -> String {
    match declared.to_ascii_uppercase().as_str() {
        "INTEGER" => "integer".into(),
        "TEXT" => "text".into(),
        "BLOB" => "blob".into(),
        "REAL" => "real".into(),
        other => format!("unmapped sqlite type {other}"),
    }
}

/// PostgreSQL types by the SQLite type they stand for. Only BIGINT for INTEGER: the store reads
/// every integer as an i64, which a driver maps to int8 alone.
fn pg_type(data_type: &str) -> String {
    match data_type {
        "bigint" => "integer".into(),
        "text" => "text".into(),
        "bytea" => "blob".into(),
        "double precision" => "real".into(),
        other => format!("unmapped postgres type {other}"),
    }
}

/// A column default as both backends print it: no `::text`/`::bigint` cast, no quotes around
/// a number (PostgreSQL prints a BIGINT literal past i32 as `'2147483648'::bigint`).
fn default(raw: &str) -> String {
    let mut v = raw.trim();
    for cast in ["::text", "::bigint"] {
        v = v.strip_suffix(cast).unwrap_or(v);
    }
    match v.strip_prefix('\'').and_then(|v| v.strip_suffix('\'')) {
        Some(n)
            if !n.is_empty()
                && n.trim_start_matches('-')
                    .bytes()
                    .all(|b| b.is_ascii_digit()) =>
        {
            n.to_owned()
        }
        _ => v.to_owned(),
    }
}

/// A partial index's predicate, spelled alike: lowercase, no parentheses, single spaces.
fn predicate(raw: &str) -> String {
    raw.trim()
        .trim_end_matches(';')
        .to_ascii_lowercase()
        .replace(['(', ')'], " ")
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

/// A collation suffix: none for the byte-wise default (SQLite BINARY, PostgreSQL default or C).
fn collation(name: &str) -> String {
    match name {
        "" | "BINARY" | "default" | "C" => String::new(),
        other => format!(" COLLATE {}", other.to_ascii_lowercase()),
    }
}

fn index_fact(table: &str, name: &str, unique: bool, columns: &str, pred: &str) -> String {
    let kind = if unique { "unique index" } else { "index" };
    let pred = if pred.is_empty() {
        String::new()
    } else {
        format!(" WHERE {}", predicate(pred))
    };
    format!("{kind} {name} ON {table} ({columns}){pred}")
}

fn sqlite_facts(conn: &Connection) -> BTreeSet<String> {
    let mut facts = BTreeSet::new();
    let version: i64 = conn
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .unwrap();
    facts.insert(format!("schema version {version}"));
    let objects: Vec<(String, String, String, Option<String>)> = conn
        .prepare(
            "SELECT type, name, tbl_name, sql FROM sqlite_schema WHERE name NOT LIKE 'sqlite_%'",
        )
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    for (kind, name, table, sql) in &objects {
        match kind.as_str() {
            "table" => {
                sqlite_table(conn, name, &objects, &mut facts);
                facts.insert(checks_fact(
                    name,
                    sqlite_checks(sql.as_deref().unwrap_or("")),
                ));
            }
            "trigger" => {
                facts.insert(format!("trigger {name} ON {table}"));
            }
            "index" | "view" => {}
            other => {
                facts.insert(format!("sqlite object {other} {name}: {sql:?}"));
            }
        }
    }
    facts
}

/// How many CHECK constraints a SQLite table's SQL holds (SQLite keeps one CREATE TABLE text,
/// columns added later included; `--` comments skipped). Their expressions are spelled
/// differently by each backend (PostgreSQL prints `IN` as `= ANY (ARRAY[...])`), so the catalog
/// comparison counts them and `both_backends_accept_and_refuse_the_same_writes` runs them.
fn sqlite_checks(sql: &str) -> usize {
    sql.lines()
        .map(|line| line.split("--").next().unwrap_or(""))
        .map(|code| code.to_ascii_uppercase().matches("CHECK (").count())
        .sum()
}

fn checks_fact(table: &str, n: usize) -> String {
    format!("{n} CHECK constraints on {table}")
}

fn sqlite_table(
    conn: &Connection,
    table: &str,
    objects: &[(String, String, String, Option<String>)],
    facts: &mut BTreeSet<String>,
) {
    facts.insert(format!("table {table}"));
    // (cid, name, type, notnull, default, pk)
    let columns: Vec<(String, String, bool, Option<String>, i64)> = conn
        .prepare(&format!("PRAGMA table_info(\"{table}\")"))
        .unwrap()
        .query_map([], |r| {
            Ok((r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?))
        })
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let names: Vec<&str> = columns.iter().map(|c| c.0.as_str()).collect();
    facts.insert(format!("columns of {table}: {}", names.join(", ")));
    for (name, ty, notnull, dflt, pk) in &columns {
        // Every table is STRICT: a primary key column is NOT NULL there as on PostgreSQL.
        let null = if *notnull || *pk > 0 { " NOT NULL" } else { "" };
        let dflt = dflt
            .as_deref()
            .map(|d| format!(" DEFAULT {}", default(d)))
            .unwrap_or_default();
        facts.insert(format!(
            "column {table}.{name} {}{null}{dflt}",
            sqlite_type(ty)
        ));
    }
    let mut pk: Vec<&(String, String, bool, Option<String>, i64)> =
        columns.iter().filter(|c| c.4 > 0).collect();
    pk.sort_by_key(|c| c.4);
    let pk_names: Vec<&str> = pk.iter().map(|c| c.0.as_str()).collect();
    facts.insert(format!("primary key {table} ({})", pk_names.join(", ")));
    // A lone INTEGER PRIMARY KEY is the rowid: SQLite gives the next one when none is named.
    let without_rowid = objects.iter().any(|(kind, name, _, sql)| {
        kind == "table"
            && name == table
            && sql
                .as_deref()
                .is_some_and(|s| s.to_ascii_uppercase().contains("WITHOUT ROWID"))
    });
    if let [only] = pk.as_slice() {
        let column = format!("{table}.{}", only.0);
        if only.1.eq_ignore_ascii_case("INTEGER")
            && !without_rowid
            && !EXPLICIT_IDS.contains(&column.as_str())
        {
            facts.insert(format!("generated id {column}"));
        }
    }

    let indexes: Vec<(String, bool, String)> = conn
        .prepare(&format!("PRAGMA index_list(\"{table}\")"))
        .unwrap()
        .query_map([], |r| Ok((r.get(1)?, r.get(2)?, r.get(3)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    for (index, unique, origin) in indexes {
        // (column name or NULL for an expression, collation, is a key column)
        let parts: Vec<(Option<String>, String, bool)> = conn
            .prepare(&format!("PRAGMA index_xinfo(\"{index}\")"))
            .unwrap()
            .query_map([], |r| Ok((r.get(2)?, r.get(4)?, r.get(5)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        let cols: Vec<String> = parts
            .iter()
            .filter(|p| p.2)
            .map(|(name, coll, _)| {
                format!("{}{}", name.as_deref().unwrap_or("<expr>"), collation(coll))
            })
            .collect();
        let cols = cols.join(", ");
        match origin.as_str() {
            "pk" => {}
            "u" => {
                facts.insert(format!("unique {table} ({cols})"));
            }
            _ => {
                let sql = objects
                    .iter()
                    .find(|o| o.0 == "index" && o.1 == index)
                    .and_then(|o| o.3.clone())
                    .unwrap_or_default();
                let pred = sql
                    .to_ascii_uppercase()
                    .find(" WHERE ")
                    .map(|at| sql[at + " WHERE ".len()..].to_owned())
                    .unwrap_or_default();
                facts.insert(index_fact(table, &index, unique, &cols, &pred));
            }
        }
    }

    // (id, table, from, to, on_update, on_delete), ordered by id then seq.
    let fks: Vec<(i64, String, String, Option<String>, String, String)> = conn
        .prepare(&format!("PRAGMA foreign_key_list(\"{table}\")"))
        .unwrap()
        .query_map([], |r| {
            Ok((
                r.get(0)?,
                r.get(2)?,
                r.get(3)?,
                r.get(4)?,
                r.get(5)?,
                r.get(6)?,
            ))
        })
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let ids: BTreeSet<i64> = fks.iter().map(|f| f.0).collect();
    for id in ids {
        let parts: Vec<_> = fks.iter().filter(|f| f.0 == id).collect();
        let from: Vec<&str> = parts.iter().map(|f| f.2.as_str()).collect();
        // Every REFERENCES of the schema names its column.
        let to: Vec<&str> = parts
            .iter()
            .map(|f| f.3.as_deref().unwrap_or("<pk>"))
            .collect();
        facts.insert(format!(
            "foreign key {table} ({}) -> {} ({}) ON UPDATE {} ON DELETE {}",
            from.join(", "),
            parts[0].1,
            to.join(", "),
            parts[0].4.to_ascii_lowercase(),
            parts[0].5.to_ascii_lowercase()
        ));
    }

    let mut stmt = conn
        .prepare(&format!(
            "SELECT * FROM \"{table}\" ORDER BY {}",
            (1..=columns.len())
                .map(|i| i.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ))
        .unwrap();
    let mut rows = stmt.query([]).unwrap();
    while let Some(row) = rows.next().unwrap() {
        let values: Vec<String> = (0..columns.len())
            .map(|i| match row.get_ref(i).unwrap() {
                ValueRef::Null => String::new(),
                ValueRef::Integer(v) => v.to_string(),
                ValueRef::Real(v) => v.to_string(),
                ValueRef::Text(v) => String::from_utf8_lossy(v).into_owned(),
                ValueRef::Blob(v) => format!("\\x{}", hex::encode(v)),
            })
            .collect();
        facts.insert(format!("row {table}: {}", values.join("|")));
    }
}

/// Runs a catalog query; one `|`-separated row per line.
fn rows(server: &Server, sql: &str) -> Vec<Vec<String>> {
    server
        .psql("lynxo", sql)
        .lines()
        .map(|line| line.split('|').map(str::to_owned).collect())
        .collect()
}

/// `cols(rel, attnums)`: the names of a relation's columns, in the array's order.
const PG_COLS: &str = "(SELECT string_agg(a.attname, ', ' ORDER BY k.ord) \
     FROM unnest(%ATTS%) WITH ORDINALITY k(attnum, ord) \
     JOIN pg_attribute a ON a.attrelid = %REL% AND a.attnum = k.attnum)";

fn pg_cols(rel: &str, atts: &str) -> String {
    PG_COLS.replace("%REL%", rel).replace("%ATTS%", atts)
}

fn pg_facts(server: &Server) -> BTreeSet<String> {
    let mut facts = BTreeSet::new();
    for r in rows(server, "SELECT max(version) FROM schema_migrations") {
        facts.insert(format!("schema version {}", r[0]));
    }
    let skip = PG_ONLY_TABLES
        .iter()
        .map(|t| format!("'{t}'"))
        .collect::<Vec<_>>()
        .join(", ");
    let tables: Vec<String> = rows(
        server,
        &format!(
            "SELECT table_name FROM information_schema.tables \
             WHERE table_schema = 'public' AND table_name NOT IN ({skip}) ORDER BY 1"
        ),
    )
    .into_iter()
    .map(|r| r[0].clone())
    .collect();
    let mut order: std::collections::BTreeMap<String, Vec<String>> = Default::default();
    for r in rows(
        server,
        &format!(
            "SELECT table_name, column_name, data_type, is_nullable, coalesce(column_default, ''), \
             is_identity FROM information_schema.columns \
             WHERE table_schema = 'public' AND table_name NOT IN ({skip}) \
             ORDER BY table_name, ordinal_position"
        ),
    ) {
        let (table, name) = (&r[0], &r[1]);
        let null = if r[3] == "NO" { " NOT NULL" } else { "" };
        let dflt = if r[4].is_empty() {
            String::new()
        } else {
            format!(" DEFAULT {}", default(&r[4]))
        };
        facts.insert(format!(
            "column {table}.{name} {}{null}{dflt}",
            pg_type(&r[2])
        ));
        if r[5] == "YES" {
            facts.insert(format!("generated id {table}.{name}"));
        }
        order.entry(table.clone()).or_default().push(name.clone());
    }
    for table in &tables {
        facts.insert(format!("table {table}"));
        let names = order.get(table).cloned().unwrap_or_default();
        facts.insert(format!("columns of {table}: {}", names.join(", ")));
    }
    let in_public = "c.connamespace = 'public'::regnamespace";
    for r in rows(
        server,
        &format!(
            "SELECT c.conrelid::regclass::text, {} FROM pg_constraint c \
             WHERE {in_public} AND c.contype = 'p' AND c.conrelid::regclass::text NOT IN ({skip})",
            pg_cols("c.conrelid", "c.conkey")
        ),
    ) {
        facts.insert(format!("primary key {} ({})", r[0], r[1]));
    }
    let action = |a: &str| match a {
        "a" => "no action",
        "r" => "restrict",
        "c" => "cascade",
        "n" => "set null",
        "d" => "set default",
        _ => "unknown action",
    };
    for r in rows(
        server,
        &format!(
            "SELECT c.conrelid::regclass::text, {}, c.confrelid::regclass::text, {}, \
             c.confupdtype, c.confdeltype FROM pg_constraint c WHERE {in_public} AND c.contype = 'f'",
            pg_cols("c.conrelid", "c.conkey"),
            pg_cols("c.confrelid", "c.confkey")
        ),
    ) {
        facts.insert(format!(
            "foreign key {} ({}) -> {} ({}) ON UPDATE {} ON DELETE {}",
            r[0],
            r[1],
            r[2],
            r[3],
            action(&r[4]),
            action(&r[5])
        ));
    }
    // Key columns only (INCLUDE columns stand for what SQLite's WITHOUT ROWID indexes carry).
    for r in rows(
        server,
        &format!(
            "SELECT t.relname, i.relname, x.indisunique, x.indisprimary, \
             EXISTS (SELECT 1 FROM pg_constraint c WHERE c.conindid = x.indexrelid AND c.contype = 'u'), \
             (SELECT string_agg(coalesce(a.attname, '<expr>') || \
                     CASE WHEN co.collname IS NULL OR co.collname IN ('default', 'C') THEN '' \
                          ELSE ' COLLATE ' || co.collname END, ', ' ORDER BY k.ord) \
              FROM unnest(x.indkey::int2[], x.indcollation::oid[]) WITH ORDINALITY k(attnum, coll, ord) \
              LEFT JOIN pg_attribute a ON a.attrelid = x.indrelid AND a.attnum = k.attnum AND k.attnum > 0 \
              LEFT JOIN pg_collation co ON co.oid = k.coll \
              WHERE k.ord <= x.indnkeyatts), \
             coalesce(pg_get_expr(x.indpred, x.indrelid), '') \
             FROM pg_index x JOIN pg_class i ON i.oid = x.indexrelid JOIN pg_class t ON t.oid = x.indrelid \
             WHERE t.relnamespace = 'public'::regnamespace AND t.relname NOT IN ({skip})"
        ),
    ) {
        let (table, index, cols) = (&r[0], &r[1], &r[5]);
        if r[3] == "t" {
            continue;
        }
        if r[4] == "t" {
            facts.insert(format!("unique {table} ({cols})"));
        } else {
            facts.insert(index_fact(table, index, r[2] == "t", cols, &r[6]));
        }
    }
    let mut checks: std::collections::BTreeMap<String, usize> =
        tables.iter().map(|t| (t.clone(), 0)).collect();
    for r in rows(
        server,
        "SELECT conrelid::regclass::text FROM pg_constraint \
         WHERE connamespace = 'public'::regnamespace AND contype = 'c'",
    ) {
        if let Some(n) = checks.get_mut(&r[0]) {
            *n += 1;
        }
    }
    for (table, n) in checks {
        facts.insert(checks_fact(&table, n));
    }
    for r in rows(
        server,
        "SELECT tgname, tgrelid::regclass::text FROM pg_trigger WHERE NOT tgisinternal",
    ) {
        if !PG_ONLY_TRIGGERS.contains(&r[0].as_str()) {
            facts.insert(format!("trigger {} ON {}", r[0], r[1]));
        }
    }
    // Every table's rows in one psql run, each line led by its table's name.
    let selects: String = tables
        .iter()
        .map(|t| {
            let n = order.get(t).map_or(0, Vec::len);
            let by = (2..=n + 1)
                .map(|i| i.to_string())
                .collect::<Vec<_>>()
                .join(", ");
            format!("SELECT '{t}', * FROM {t} ORDER BY {by};\n")
        })
        .collect();
    for line in server.psql("lynxo", &selects).lines() {
        let (table, values) = line.split_once('|').unwrap_or((line, ""));
        facts.insert(format!("row {table}: {values}"));
    }
    facts
}

/// Every fact on one side only, one per line.
fn differences(sqlite: &BTreeSet<String>, pg: &BTreeSet<String>) -> String {
    let mut out = String::new();
    for fact in sqlite.difference(pg) {
        out.push_str(&format!("  only in SQLite:     {fact}\n"));
    }
    for fact in pg.difference(sqlite) {
        out.push_str(&format!("  only in PostgreSQL: {fact}\n"));
    }
    out
}

#[test]
fn the_postgres_schema_is_the_sqlite_schema() {
    let dir = tempfile::tempdir().unwrap();
    let sqlite = sqlite_facts(&sqlite(dir.path()));
    let server = postgres();
    let pg = pg_facts(&server);
    assert!(
        sqlite.contains(&format!("schema version {SCHEMA_VERSION}")),
        "the store migrated to {SCHEMA_VERSION}"
    );
    // The comparison sees what it must: a schema this size, not two empty sets.
    assert!(
        sqlite.iter().filter(|f| f.starts_with("table ")).count() >= 20,
        "{sqlite:#?}"
    );
    for id in EXPLICIT_IDS {
        assert!(
            sqlite.contains(&format!("column {id} integer NOT NULL")),
            "{id} is no INTEGER PRIMARY KEY of SQLite any more: update EXPLICIT_IDS"
        );
    }
    let diff = differences(&sqlite, &pg);
    assert!(
        diff.is_empty(),
        "src/store/postgres/ (its migrations applied in order) differs from the SQLite schema {SCHEMA_VERSION}:\n{diff}"
    );
}

#[test]
fn a_second_run_of_the_postgres_schema_fails_and_changes_nothing() {
    let server = postgres();
    let before = pg_facts(&server);
    for (name, sql) in PG_MIGRATIONS {
        let err = server
            .try_psql("lynxo", sql)
            .expect_err("a migration is not idempotent: a second run must fail");
        assert!(err.contains("already exists"), "{name}: {err}");
        let after = pg_facts(&server);
        assert!(
            before == after,
            "the failed second run of {name} changed the database:\n{}",
            differences(&before, &after)
        );
    }
}

/// Statements run in order on both backends, each in its own transaction, with whether it must
/// succeed: what the catalogs do not show (CHECKs, the NOCASE collation, the append-only
/// triggers, generated ids, foreign keys enforced). `{blob:HEX}` is a byte string literal.
const STEPS: &[(bool, &str)] = &[
    (
        true,
        "INSERT INTO accounts (name, plan_id, created_at) VALUES ('a', 'standard', 1)",
    ),
    (
        false,
        "INSERT INTO accounts (name, plan_id, created_at) VALUES ('b', 'gold', 1)",
    ),
    (
        false,
        "INSERT INTO accounts (name, plan_id, created_at, leak_response) \
         VALUES ('b', 'standard', 1, 'ignore')",
    ),
    (
        true,
        "INSERT INTO users (account_id, email, password_hash, created_at) \
         VALUES (1, 'ann@example.com', 'h', 1)",
    ),
    (
        false,
        "INSERT INTO users (account_id, email, password_hash, created_at) \
         VALUES (1, 'ANN@Example.com', 'h', 1)",
    ),
    (
        true,
        "INSERT INTO users (account_id, email, password_hash, created_at) \
         VALUES (1, 'ANN@Example.com', 'h', 1) ON CONFLICT (email) DO NOTHING",
    ),
    (
        false,
        "INSERT INTO users (account_id, email, password_hash, created_at) \
         VALUES (99, 'bob@example.com', 'h', 1)",
    ),
    (
        true,
        "INSERT INTO api_keys (id, id_top, account_id, name, environment, scopes, kid, hint, \
         rate_limit, created_at) VALUES ('k1', 0, 1, 'n', 'live', 1, 1, 'h', 600, 1)",
    ),
    (true, "UPDATE api_keys SET budget_id = id WHERE id = 'k1'"),
    (
        false,
        "UPDATE api_keys SET revocation_in_force = 2 WHERE id = 'k1'",
    ),
    (
        false,
        "UPDATE api_keys SET rate_limit_window = 0 WHERE id = 'k1'",
    ),
    (
        false,
        "UPDATE api_keys SET rotated_from = 'nope' WHERE id = 'k1'",
    ),
    (
        true,
        "INSERT INTO audit_events (seq, at, account_id, actor, action, details, prev_hash, hash) \
         VALUES (1, 1, 1, 'cli', 'x', '{}', {blob:00}, {blob:01})",
    ),
    (
        false,
        "INSERT INTO audit_events (seq, at, account_id, actor, action, details, prev_hash, hash) \
         VALUES (1, 1, 1, 'cli', 'fork', '{}', {blob:00}, {blob:02})",
    ),
    (false, "UPDATE audit_events SET actor = 'y'"),
    (false, "DELETE FROM audit_events"),
    (
        true,
        "INSERT INTO sessions (token_hash, user_id, account_id, created_at, expires_at, \
         last_seen_at) VALUES ({blob:aa}, 1, 1, 1, 2, 1)",
    ),
    (
        false,
        "INSERT INTO sessions (token_hash, user_id, account_id, created_at, expires_at, \
         last_seen_at) VALUES ({blob:aa}, 1, 1, 1, 2, 1)",
    ),
    (
        true,
        "INSERT INTO key_leaks (key_id, account_id, reporter, url, reported_at, action) \
         VALUES ('k1', 1, 'github', '', 1, 'revoked')",
    ),
    (
        false,
        "INSERT INTO key_leaks (key_id, account_id, reporter, url, reported_at, action) \
         VALUES ('k1', 1, 'github', '', 2, 'notified')",
    ),
    (
        false,
        "INSERT INTO key_leaks (key_id, account_id, reporter, url, reported_at, action) \
         VALUES ('k1', 1, 'bitbucket', 'u', 1, 'revoked')",
    ),
    (
        true,
        "INSERT INTO retired_kids VALUES (7, 1, 'compromised', NULL, 0)",
    ),
    (
        false,
        "INSERT INTO retired_kids VALUES (256, 1, 'scheduled', NULL, 0)",
    ),
    (
        false,
        "INSERT INTO retired_kids VALUES (8, 1, 'bored', NULL, 0)",
    ),
    (
        false,
        "INSERT INTO revocation_meta (id, list_version) VALUES (2, 0)",
    ),
    (
        false,
        "INSERT INTO usage_minutes VALUES ('k1', 1, 1, '', '2xx', 0)",
    ),
    (
        false,
        "INSERT INTO plans (id, max_active_keys, default_rate_limit, max_rate_limit) \
         VALUES ('tiny', 1, 10, 5)",
    ),
    (false, "UPDATE plans SET token_max_ttl = 0"),
    (
        true,
        "INSERT INTO limits_outbox (key_id, version) VALUES ('k1', 1)",
    ),
    (
        true,
        "INSERT INTO activity (key_id, account_id, at_ms, method, path, status, outcome) \
         VALUES ('k1', 1, 1, 'GET', '/v1/jobs', 200, '2xx')",
    ),
    (
        true,
        "INSERT INTO activity (key_id, account_id, at_ms, method, path, status, outcome, reason) \
         VALUES ('k1', 1, 2, 'GET', '/v1/jobs', 401, '401', 'revocation_list_unavailable_abcd')",
    ),
    (
        false,
        "INSERT INTO activity (key_id, account_id, at_ms, method, path, status, outcome, reason) \
         VALUES ('k1', 1, 3, 'GET', '/v1/jobs', 401, '401', 'revocation_list_unavailable_abcde')",
    ),
    (
        false,
        "INSERT INTO activity (key_id, account_id, at_ms, method, path, status, outcome, reason) \
         VALUES ('k1', 1, 4, 'GET', '/v1/jobs', 401, '401', '')",
    ),
];

/// `{blob:HEX}` as each backend spells a byte string.
fn dialect(sql: &str, postgres: bool) -> String {
    let mut out = String::new();
    let mut rest = sql;
    while let Some(at) = rest.find("{blob:") {
        let end = at + rest[at..].find('}').expect("a closed {blob:..}");
        let hex = &rest[at + "{blob:".len()..end];
        out.push_str(&rest[..at]);
        out.push_str(&if postgres {
            format!("'\\x{hex}'::bytea")
        } else {
            format!("X'{hex}'")
        });
        rest = &rest[end + 1..];
    }
    out.push_str(rest);
    out
}

#[test]
fn both_backends_accept_and_refuse_the_same_writes() {
    let dir = tempfile::tempdir().unwrap();
    let conn = sqlite(dir.path());
    // The store's own connection setting (SQLite enforces foreign keys only when asked).
    conn.pragma_update(None, "foreign_keys", "ON").unwrap();
    let server = postgres();
    let mut wrong = String::new();
    for (want, sql) in STEPS {
        let lite = conn
            .execute_batch(&dialect(sql, false))
            .map_err(|e| e.to_string());
        let pg = server.try_psql("lynxo", &dialect(sql, true));
        if lite.is_ok() != *want || pg.is_ok() != *want {
            wrong.push_str(&format!(
                "  {sql}\n    want ok: {want}; SQLite: {lite:?}; PostgreSQL: {pg:?}\n"
            ));
        }
    }
    assert!(
        wrong.is_empty(),
        "the backends disagree (or both are wrong):\n{wrong}"
    );

    // Email lookups ignore case on both.
    let sql = "SELECT count(*) FROM users WHERE email = 'Ann@EXAMPLE.com'";
    let lite: i64 = conn.query_row(sql, [], |r| r.get(0)).unwrap();
    assert_eq!((lite, server.psql("lynxo", sql).trim()), (1, "1"));
    // TRUNCATE fires no row trigger: its own trigger keeps the trail (PostgreSQL only).
    let err = server
        .try_psql("lynxo", "TRUNCATE audit_events")
        .unwrap_err();
    assert!(err.contains("append-only"), "{err}");

    // And both hold the same rows afterwards (generated ids included).
    let diff = differences(&sqlite_facts(&conn), &pg_facts(&server));
    assert!(diff.is_empty(), "the backends hold different data:\n{diff}");
}
