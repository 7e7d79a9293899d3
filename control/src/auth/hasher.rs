//! Password checks: argon2id, at most a fixed number at once, in memory that is reused.
//!
//! A check costs a core for tens of milliseconds and `m_cost` KiB of memory (19 MiB by
//! default). Unbounded, a burst of sign-ins is a burst of threads each holding that memory, and
//! glibc keeps the freed buffers in per-thread arenas, so the process stays large afterwards.
//! Here a check needs a [`Ticket`]: there are at most `max` of them (and about half that for any
//! one client address), and when none is free the caller is told to come back (`429`), never
//! queued. Each running check borrows one of at most `max` block buffers, allocated once and
//! wiped after every use, so the memory for hashing is `max * m_cost` whatever the load.
//!
//! Unknown emails are checked against a dummy hash with the same parameters, so they cost the
//! same time as known ones.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use argon2::password_hash::{Output, ParamsString, PasswordHash, SaltString};
use argon2::{ARGON2ID_IDENT, Algorithm, Argon2, Block, Params, Version};

use crate::error::{AppError, Result};

/// Longest password accepted, in bytes. Far above any passphrase; keeps the hash's input small.
pub const MAX_PASSWORD_BYTES: usize = 1024;

/// What the hasher has done, for tests and measurements.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct HashStats {
    /// Checks running now.
    pub in_flight: usize,
    /// The most that ever ran at once.
    pub peak_in_flight: usize,
    /// Checks started since the process began.
    pub started: u64,
    /// Block buffers allocated (never more than the concurrency bound).
    pub buffers: usize,
}

#[derive(Debug, Default)]
struct Gate {
    total: usize,
    by_source: HashMap<Option<IpAddr>, usize>,
}

/// The password checker. Share it behind an `Arc`.
#[derive(Debug)]
pub struct Hasher {
    max: usize,
    max_per_source: usize,
    gate: Mutex<Gate>,
    buffers: Mutex<Vec<Vec<Block>>>,
    allocated: AtomicUsize,
    peak: AtomicUsize,
    started: AtomicU64,
    dummy: String,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Each critical section leaves its data consistent, so a poisoned lock is still usable.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The right to run one check: holds a place in the global and per-address bounds until it is
/// dropped, which happens when the check has finished (on the blocking thread), not when the
/// request is cancelled.
#[derive(Debug)]
pub struct Ticket {
    hasher: Arc<Hasher>,
    source: Option<IpAddr>,
}

impl Drop for Ticket {
    fn drop(&mut self) {
        let mut gate = lock(&self.hasher.gate);
        gate.total = gate.total.saturating_sub(1);
        if let Some(n) = gate.by_source.get_mut(&self.source) {
            *n -= 1;
            if *n == 0 {
                gate.by_source.remove(&self.source);
            }
        }
    }
}

impl Hasher {
    /// At most `max` checks at once (at least 1), with the argon2 `params` new hashes use: the
    /// dummy hash for unknown emails gets the same ones.
    pub fn new(max: usize, params: &Params) -> Self {
        let max = max.max(1);
        Self {
            max,
            max_per_source: max.div_ceil(2),
            gate: Mutex::new(Gate::default()),
            buffers: Mutex::new(Vec::new()),
            allocated: AtomicUsize::new(0),
            peak: AtomicUsize::new(0),
            started: AtomicU64::new(0),
            dummy: dummy_hash(params),
        }
    }

    /// The bound on checks at once.
    pub fn max(&self) -> usize {
        self.max
    }

    /// A ticket for a check from `source` (an IPv4 address or an IPv6 /64), if both the global
    /// bound and the source's share have room.
    pub fn admit(self: &Arc<Self>, source: Option<IpAddr>) -> Option<Ticket> {
        let mut gate = lock(&self.gate);
        let mine = gate.by_source.get(&source).copied().unwrap_or(0);
        if gate.total >= self.max || mine >= self.max_per_source {
            return None;
        }
        gate.total += 1;
        gate.by_source.insert(source, mine + 1);
        self.peak.fetch_max(gate.total, Ordering::Relaxed);
        Some(Ticket {
            hasher: Arc::clone(self),
            source,
        })
    }

    /// Checks `password` against `phc` (or, for an unknown email, against the dummy hash, which
    /// nothing matches) on the blocking pool. The ticket is released when the hash is done.
    pub async fn check(ticket: Ticket, password: String, phc: Option<String>) -> Result<bool> {
        let hasher = Arc::clone(&ticket.hasher);
        tokio::task::spawn_blocking(move || {
            let in_flight = lock(&hasher.gate).total;
            hasher.started.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(in_flight, "sign-in hash started");
            let mut blocks = hasher.take_buffer();
            let matched = match &phc {
                Some(phc) => verify_into(password.as_bytes(), phc, &mut blocks),
                None => {
                    verify_into(password.as_bytes(), &hasher.dummy, &mut blocks);
                    false
                }
            };
            lock(&hasher.buffers).push(blocks);
            drop(ticket);
            matched
        })
        .await
        .map_err(AppError::internal)
    }

    fn take_buffer(&self) -> Vec<Block> {
        lock(&self.buffers).pop().unwrap_or_else(|| {
            // Only as many buffers as checks ever ran at once: at most `max`.
            self.allocated.fetch_add(1, Ordering::Relaxed);
            Vec::new()
        })
    }

    /// What it has done so far.
    pub fn stats(&self) -> HashStats {
        HashStats {
            in_flight: lock(&self.gate).total,
            peak_in_flight: self.peak.load(Ordering::Relaxed),
            started: self.started.load(Ordering::Relaxed),
            buffers: self.allocated.load(Ordering::Relaxed),
        }
    }
}

/// A PHC string with `params`, a random salt and a random output: checking a password against
/// it costs exactly what a real check costs, and nothing matches it. (Should the system's
/// randomness fail, zeros serve as well: the output still matches no password.)
fn dummy_hash(params: &Params) -> String {
    let mut random = [0_u8; 80];
    if getrandom::fill(&mut random).is_err() {
        tracing::error!("getrandom failed; the dummy sign-in hash uses zeros");
    }
    let len = params.output_len().unwrap_or(Params::DEFAULT_OUTPUT_LEN);
    let (Ok(salt), Ok(params), Ok(output)) = (
        SaltString::encode_b64(&random[..16]),
        ParamsString::try_from(params),
        Output::new(&random[16..16 + len.min(64)]),
    ) else {
        // Parameters no PHC string can carry: hash_password fails on them too.
        return String::new();
    };
    PasswordHash {
        algorithm: ARGON2ID_IDENT,
        version: Some(Version::V0x13.into()),
        params,
        salt: Some(salt.as_salt()),
        hash: Some(output),
    }
    .to_string()
}

/// Whether `password` hashes to `phc`, computed in `blocks` (grown to the hash's memory cost if
/// needed, then wiped: what is left in argon2's memory would let a reader test guesses cheaply).
fn verify_into(password: &[u8], phc: &str, blocks: &mut Vec<Block>) -> bool {
    let Ok(hash) = PasswordHash::new(phc) else {
        return false;
    };
    let (Some(salt), Some(expected)) = (hash.salt, hash.hash) else {
        return false;
    };
    let (Ok(algorithm), Ok(version), Ok(params)) = (
        Algorithm::try_from(hash.algorithm),
        hash.version
            .map_or(Ok(Version::default()), Version::try_from),
        Params::try_from(&hash),
    ) else {
        return false;
    };
    let mut salt_bytes = [0_u8; 64];
    let Ok(salt) = salt.decode_b64(&mut salt_bytes) else {
        return false;
    };
    let need = params.block_count();
    if blocks.len() < need {
        blocks.resize(need, Block::default());
    }
    let mut out = [0_u8; 64];
    let out = &mut out[..expected.len()];
    let hashed = Argon2::new(algorithm, version, params)
        .hash_password_into_with_memory(password, salt, &mut *out, &mut blocks[..need])
        .is_ok();
    blocks[..need].fill(Block::default());
    // `Output`'s equality is constant-time.
    hashed && Output::new(out).is_ok_and(|o| o == expected)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::Settings;

    fn cheap() -> Params {
        Params::new(64, 1, 1, None).unwrap()
    }

    #[test]
    fn checks_agree_with_the_argon2_crate() {
        let settings = Settings {
            argon2: cheap(),
            ..Settings::default()
        };
        let phc = crate::auth::hash_password("correct horse battery", &settings).unwrap();
        let mut blocks = Vec::new();
        assert!(verify_into(b"correct horse battery", &phc, &mut blocks));
        assert!(!verify_into(b"correct horse batterY", &phc, &mut blocks));
        assert_eq!(blocks.len(), 64);
        assert!(
            blocks.iter().all(|b| b.as_ref().iter().all(|x| *x == 0)),
            "wiped after use"
        );
        // A hash with a larger cost grows the buffer; garbage never matches.
        let bigger = Settings {
            argon2: Params::new(128, 1, 1, None).unwrap(),
            ..Settings::default()
        };
        let phc = crate::auth::hash_password("another one!", &bigger).unwrap();
        assert!(verify_into(b"another one!", &phc, &mut blocks));
        assert_eq!(blocks.len(), 128);
        for bad in [
            "",
            "$argon2id$v=19$m=64,t=1,p=1$",
            "not a hash",
            "$scrypt$x",
        ] {
            assert!(!verify_into(b"x", bad, &mut blocks), "{bad}");
        }
    }

    #[test]
    fn the_dummy_hash_has_the_same_parameters_and_matches_nothing() {
        let params = cheap();
        let dummy = dummy_hash(&params);
        let parsed = PasswordHash::new(&dummy).unwrap();
        assert_eq!(Params::try_from(&parsed).unwrap().m_cost(), 64);
        assert_ne!(dummy, dummy_hash(&params), "random salt and output");
        let mut blocks = Vec::new();
        assert!(!verify_into(b"", &dummy, &mut blocks));
        assert_eq!(blocks.len(), 64, "a full hash ran");
    }

    #[tokio::test]
    async fn tickets_bound_checks_globally_and_per_source() {
        let hasher = Arc::new(Hasher::new(4, &cheap()));
        let a = Some("192.0.2.1".parse().unwrap());
        let b = Some("192.0.2.2".parse().unwrap());
        let t1 = hasher.admit(a).unwrap();
        let t2 = hasher.admit(a).unwrap();
        assert!(hasher.admit(a).is_none(), "half the bound per source");
        let t3 = hasher.admit(b).unwrap();
        let t4 = hasher.admit(None).unwrap();
        assert!(hasher.admit(Some("192.0.2.3".parse().unwrap())).is_none());
        assert_eq!(hasher.stats().in_flight, 4);
        assert!(!Hasher::check(t1, "x".into(), None).await.unwrap());
        assert!(hasher.admit(a).is_some());
        drop((t2, t3, t4));
        let stats = hasher.stats();
        assert_eq!((stats.in_flight, stats.peak_in_flight), (0, 4));
        assert_eq!((stats.started, stats.buffers), (1, 1));
    }
}
