//! Readiness's write probe: whether the database takes a write now.
//!
//! A read (`SELECT 1`) answers while the disk is full, so readiness commits a real write: one
//! row of `write_probe` rewritten (a WAL frame and an fsync, through the same writer and group
//! commit as every other write). `/readyz` is unauthenticated, so the probe writes at most once
//! per [`PROBE_INTERVAL`]: calls in between share the last answer, and calls arriving together
//! wait for one probe; a flood of `/readyz` cannot become a flood of writes. A batch the disk
//! refused (any write, not only the probe) makes the next answer "not ready" at once.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::{Result, Store, StoreError};

/// At most one probe write this often.
pub const PROBE_INTERVAL: Duration = Duration::from_secs(1);
/// A probe write not committed within this long counts as failed (the writer is stuck).
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// The probe's last answer, and the lock that makes concurrent callers share one write.
#[derive(Default)]
pub(super) struct Probe(tokio::sync::Mutex<Option<(Instant, Result<(), ProbeFailure>)>>);

/// Why the probe says the database is not writable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProbeFailure {
    /// The disk refused a write (full, or failing I/O).
    #[error("the disk refuses writes: {0}")]
    Unwritable(String),
    /// The write failed otherwise.
    #[error("a write failed: {0}")]
    Failed(String),
    /// The write did not commit within [`PROBE_TIMEOUT`].
    #[error("a write did not commit within {PROBE_TIMEOUT:?}")]
    TimedOut,
}

impl ProbeFailure {
    fn of(e: &StoreError) -> Self {
        if e.is_unwritable() {
            Self::Unwritable(e.to_string())
        } else {
            Self::Failed(e.to_string())
        }
    }
}

impl Store {
    /// Whether a write commits now: the last probe's answer if it is younger than
    /// [`PROBE_INTERVAL`] and no batch has been refused by the disk since, else a new probe.
    pub async fn probe_write(&self) -> Result<(), ProbeFailure> {
        let mut last = self.inner.probe.0.lock().await;
        let refused = self.inner.unwritable.load(Ordering::SeqCst);
        if let Some((at, answer)) = last.as_ref() {
            if at.elapsed() < PROBE_INTERVAL && (answer.is_err() || !refused) {
                return answer.clone();
            }
        }
        let write = self.write(|tx| -> Result<()> {
            tx.execute("UPDATE write_probe SET beats = beats + 1 WHERE id = 1", [])?;
            Ok(())
        });
        let answer = match tokio::time::timeout(PROBE_TIMEOUT, write).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(ProbeFailure::of(&e)),
            Err(_) => Err(ProbeFailure::TimedOut),
        };
        *last = Some((Instant::now(), answer.clone()));
        answer
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn beats(store: &Store) -> i64 {
        store
            .read_blocking::<_, StoreError, _>(|c| {
                Ok(c.query_row("SELECT beats FROM write_probe", [], |r| r.get(0))?)
            })
            .unwrap()
    }

    /// A flood of readiness checks is one write a second: concurrent calls share one probe, and
    /// calls within the interval share its answer.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_flood_of_probes_writes_once_per_interval() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(
            &dir.path().join("p.sqlite3"),
            crate::store::test_audit_keyring(),
        )
        .unwrap();
        let calls: Vec<_> = (0..200)
            .map(|_| {
                let store = store.clone();
                tokio::spawn(async move { store.probe_write().await })
            })
            .collect();
        for call in calls {
            assert_eq!(call.await.unwrap(), Ok(()));
        }
        assert_eq!(beats(&store), 1);
        // Once the interval is over, the next call writes again.
        *store.inner.probe.0.lock().await = Some((Instant::now() - PROBE_INTERVAL, Ok(())));
        store.probe_write().await.unwrap();
        assert_eq!(beats(&store), 2);
    }

    /// A batch the disk refused makes the next answer a new probe, not the cached "ready".
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_refused_batch_skips_the_cached_answer() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(
            &dir.path().join("p.sqlite3"),
            crate::store::test_audit_keyring(),
        )
        .unwrap();
        store.probe_write().await.unwrap();
        store.inner.unwritable.store(true, Ordering::SeqCst);
        store.probe_write().await.unwrap();
        assert_eq!(beats(&store), 2, "probed again at once");
        assert!(
            !store.inner.unwritable.load(Ordering::SeqCst),
            "the commit cleared it"
        );
    }
}
