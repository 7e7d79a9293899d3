//! Writes what bench/throughput.sh serves from its stand-in KV: the 16 revocation shards
//! (`shard-<n>.bin`, empty, valid for a day) signed with the test keyring, and `key.txt`, a
//! development Full Access key that passes every check, and the worker's keyrings (`keyring.txt`,
//! `origin-keyring.txt`: the test keyrings of `shared::testkit`).
//!
//!   cargo run -p e2e --bin bench_fixtures -- <out dir>

use std::path::PathBuf;

use anyhow::Context as _;
use e2e::keys::{self, SHARDS, key_id, shard_bytes};
use e2e::stack::{KEYRING, ORIGIN_KEYRING};
use shared::key::Environment;
use shared::mac::Keyring;
use shared::scope::ScopeSet;

fn main() -> anyhow::Result<()> {
    let out = PathBuf::from(
        std::env::args()
            .nth(1)
            .context("usage: bench_fixtures <out dir>")?,
    );
    std::fs::create_dir_all(&out)?;
    let ring = Keyring::from_config(KEYRING).map_err(|e| anyhow::anyhow!("keyring: {e}"))?;
    for shard in 0..SHARDS {
        let bytes = shard_bytes(&ring, shard, 1, &[], 86_400);
        std::fs::write(out.join(format!("shard-{shard}.bin")), bytes)?;
    }
    let claims = keys::claims(
        key_id(5, 1),
        Environment::Development,
        ScopeSet::FULL_ACCESS,
    );
    std::fs::write(out.join("key.txt"), keys::issue(&ring, &claims))?;
    std::fs::write(out.join("keyring.txt"), KEYRING)?;
    std::fs::write(out.join("origin-keyring.txt"), ORIGIN_KEYRING)?;
    Ok(())
}
