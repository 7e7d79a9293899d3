//! Any bytes as a revocation shard: `open` must never panic, and a shard it accepts must
//! re-encode to the same bytes and answer lookups for every id it holds.
//!
//! Random bytes never carry a valid tag, so the first byte picks a mode: `0` re-signs the rest
//! (whatever its content) with the test keyring, which reaches the decoder behind the tag check.
#![no_main]

use libfuzzer_sys::fuzz_target;
use shared::mac::{Purpose, TAG_LEN};
use shared::revocation::{HEADER_LEN, RevocationShard};
use shared::testkit;

fuzz_target!(|data: &[u8]| {
    let ring = testkit::keyring();
    let mut bytes = data.get(1..).unwrap_or_default().to_vec();
    if data.first() == Some(&0) && bytes.len() >= HEADER_LEN + TAG_LEN {
        let kid = if ring.contains(bytes[5]) { bytes[5] } else { ring.active_kid() };
        bytes[5] = kid;
        let signed = bytes.len() - TAG_LEN;
        let tag = ring.mac(kid, Purpose::RevocationList).unwrap().sign(&bytes[..signed]);
        bytes[signed..].copy_from_slice(&tag);
    }
    if let Ok(shard) = RevocationShard::open(&bytes, &ring) {
        assert_eq!(shard.encode(&ring).unwrap(), bytes);
        assert!(shard.ids().all(|id| shard.contains(id)));
        let _ = shard.check(1_750_000_000, Some(1));
    }
});
