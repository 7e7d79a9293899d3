//! The store on PostgreSQL itself (docs/postgres.md), on a private server (`e2e::postgres`):
//! what the control suite run on PostgreSQL cannot show, because every test app there has a
//! database of its own.

use std::sync::Arc;

use control::store::{Store, StoreError};
use e2e::postgres::Server;

fn audit() -> Arc<shared::audit::AuditKeyring> {
    Arc::new(shared::testkit::audit_keyring())
}

/// Two stores (two replicas) started together on an empty database migrate it once (the
/// migration lock), and one reads what the other wrote.
#[test]
fn replicas_starting_together_migrate_once_and_share_their_writes() {
    let server = Server::start();
    let url = server.create_database("together");
    let stores: Vec<Store> = std::thread::scope(|s| {
        let opening: Vec<_> = (0..4)
            .map(|_| s.spawn(|| Store::open(url.as_ref(), audit()).unwrap()))
            .collect();
        opening.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let versions = server.psql(
        "together",
        "SELECT version FROM schema_migrations ORDER BY 1",
    );
    // Schema 13 in the first file, then one version per later file.
    let expected: Vec<String> = (0..control::store::PG_MIGRATIONS.len())
        .map(|k| (13 + k).to_string())
        .collect();
    assert_eq!(
        versions.lines().collect::<Vec<_>>(),
        expected,
        "each migration applied once"
    );
    let id = stores[0]
        .write_blocking(|tx| control::store::accounts::create_account(tx, "a", 1))
        .unwrap();
    let name: String = stores[3]
        .read_blocking(move |db| -> Result<String, StoreError> {
            Ok(
                db.query_row("SELECT name FROM accounts WHERE id = ?1", [id], |r| {
                    r.get(0)
                })?,
            )
        })
        .unwrap();
    assert_eq!(name, "a");
}

/// A flood of concurrent reads waits for the store's read connections instead of opening one
/// each: the server's connection limit is shared by every replica.
#[test]
fn a_flood_of_reads_holds_a_bounded_number_of_connections() {
    let server = Server::start();
    let url = server.create_database("flood");
    let store = Store::open(url.as_ref(), audit()).unwrap();
    let seen: Vec<i64> = std::thread::scope(|s| {
        let readers: Vec<_> = (0..64)
            .map(|_| {
                let store = store.clone();
                s.spawn(move || {
                    store
                        .read_blocking(|db| -> Result<i64, StoreError> {
                            // Long enough for the reads to overlap.
                            db.query_row("SELECT pg_sleep(0.05)::text", [], |_| Ok(()))?;
                            Ok(db.query_row(
                                "SELECT count(*) FROM pg_stat_activity \
                                 WHERE datname = current_database()",
                                [],
                                |r| r.get(0),
                            )?)
                        })
                        .unwrap()
                })
            })
            .collect();
        readers.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let most = seen.iter().copied().max().unwrap();
    // 16 readers and the writer.
    assert!(most <= 17, "{most} connections at once");
    assert!(most > 2, "the reads ran concurrently ({most})");
}
