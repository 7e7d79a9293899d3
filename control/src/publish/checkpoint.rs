//! The audit chain's anchor outside the database: a checkpoint of the chain's head, stored
//! through the sink every heartbeat.

use std::sync::Arc;
use std::time::Duration;

use shared::audit::{AuditKeyring, Checkpoint};

use super::Sink;
use crate::state::Clock;
use crate::store::audit::{self as audit_db, ChainPoint};
use crate::store::{PublisherLease, Store, StoreError};

/// What a checkpoint pass did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CheckpointPass {
    /// A new checkpoint anchors this event.
    Anchored(u64),
    /// Nothing new since the anchored checkpoint (or no events yet).
    Unchanged,
    /// The anchor could not be read or written; retried at the next interval.
    Failed(String),
    /// The table no longer holds what the anchor says, or its new rows do not verify: nothing is
    /// anchored over it (the anchor keeps the evidence) until the table matches again.
    Refused(String),
}

/// Anchors the audit chain outside the database: every interval (the revocation heartbeat's),
/// checks the events appended since the anchored checkpoint with the audit keyring and, if they
/// verify and the anchored event is still in the table unchanged, stores a new checkpoint of the
/// head through the sink (the edge's KV). Events cut off the end after a checkpoint, or rewritten
/// before the next one, are then caught by `verify-audit`, or here.
pub struct CheckpointPublisher {
    store: Store,
    audit: Arc<AuditKeyring>,
    clock: Arc<dyn Clock>,
    sink: Arc<dyn Sink>,
    interval: Duration,
    /// The checkpoint the sink holds, once read back (`Some(None)`: none stored yet).
    anchored: Option<Option<Checkpoint>>,
    /// Only the replica holding it anchors ([`CheckpointPublisher::run`]).
    lease: PublisherLease,
}

impl CheckpointPublisher {
    /// A publisher that anchors through `sink` every `interval`.
    pub fn new(
        store: Store,
        audit: Arc<AuditKeyring>,
        clock: Arc<dyn Clock>,
        sink: Arc<dyn Sink>,
        interval: Duration,
    ) -> Self {
        Self {
            store,
            audit,
            clock,
            sink,
            interval,
            anchored: None,
            lease: PublisherLease::always(),
        }
    }

    /// Anchors only while `lease` is held ([`crate::store::Store::publisher_lease`]).
    #[must_use]
    pub fn with_lease(mut self, lease: PublisherLease) -> Self {
        self.lease = lease;
        self
    }

    /// One pass: reads the anchor back (the first time), checks the table against it and stores a
    /// checkpoint of the head if there is a new one.
    pub async fn run_once(&mut self) -> CheckpointPass {
        let now = self.clock.now();
        if self.anchored.is_none() {
            let sink = Arc::clone(&self.sink);
            let read = tokio::task::spawn_blocking(move || sink.get_checkpoint(now)).await;
            let bytes = match read {
                Ok(Ok(bytes)) => bytes,
                Ok(Err(e)) => return CheckpointPass::Failed(format!("reading the anchor: {e}")),
                Err(e) => return CheckpointPass::Failed(e.to_string()),
            };
            match bytes.map(|b| Checkpoint::open(&b, &self.audit)).transpose() {
                Ok(anchored) => self.anchored = Some(anchored),
                Err(e) => {
                    return CheckpointPass::Refused(format!(
                        "the stored checkpoint does not verify with the audit keyring ({e}): \
                         another keyring, or forged"
                    ));
                }
            }
        }
        let anchored = self.anchored.flatten();
        let ring = Arc::clone(&self.audit);
        let checked = self
            .store
            .read(move |c| -> Result<_, StoreError> {
                let Some(head) = audit_db::head_point(c)? else {
                    return Ok(Ok(None));
                };
                Ok(match anchored {
                    Some(a) if head.seq == a.seq && head.value == a.head => Ok(None),
                    Some(a) => audit_db::check_anchor(c, &a, head.seq)
                        .and_then(|()| {
                            let from = ChainPoint {
                                seq: a.seq,
                                value: a.head,
                            };
                            audit_db::verify_after(c, &ring, from, a.legacy_upto)
                        })
                        .map(|r| r.head.map(|h| (h, a.legacy_upto))),
                    None => audit_db::verify_chain(c, &ring, None)
                        .map(|r| r.head.map(|h| (h, r.legacy_upto))),
                })
            })
            .await;
        let (head, legacy_upto) = match checked {
            Ok(Ok(Some(next))) => next,
            Ok(Ok(None)) => return CheckpointPass::Unchanged,
            Ok(Err(e)) => return CheckpointPass::Refused(e.to_string()),
            Err(e) => {
                return CheckpointPass::Failed(format!("reading the audit trail: {e}"));
            }
        };
        let checkpoint = Checkpoint {
            kid: self.audit.active_kid(),
            seq: head.seq,
            legacy_upto,
            at: now,
            head: head.value,
        };
        let body = match checkpoint.encode(&self.audit) {
            Ok(body) => body,
            Err(e) => return CheckpointPass::Failed(e.to_string()),
        };
        let sink = Arc::clone(&self.sink);
        match tokio::task::spawn_blocking(move || sink.put_checkpoint(&body, now)).await {
            Ok(Ok(())) => {
                self.anchored = Some(Some(checkpoint));
                CheckpointPass::Anchored(checkpoint.seq)
            }
            Ok(Err(e)) => {
                // The edge may hold a newer one (another control plane, a retried write): read
                // it back before the next attempt.
                self.anchored = None;
                CheckpointPass::Failed(format!("storing the checkpoint: {e}"))
            }
            Err(e) => CheckpointPass::Failed(e.to_string()),
        }
    }

    /// Runs passes forever, one per interval, while this replica holds the lease. A replica
    /// that takes the lease reads the anchor back first: the last holder may have moved it.
    pub async fn run(mut self) {
        if !self.sink.supports_checkpoints() {
            tracing::warn!(
                sink = self.sink.name(),
                "this publisher cannot keep the audit checkpoint: the audit trail is not anchored"
            );
            return;
        }
        loop {
            if !self.lease.hold().await {
                self.anchored = None;
                tokio::time::sleep(self.lease.cap(self.interval)).await;
                continue;
            }
            match self.run_once().await {
                CheckpointPass::Anchored(seq) => {
                    tracing::debug!(seq, sink = self.sink.name(), "audit checkpoint anchored");
                }
                CheckpointPass::Unchanged => {}
                CheckpointPass::Failed(e) => {
                    tracing::warn!(
                        sink = self.sink.name(),
                        error = e,
                        "audit checkpoint failed"
                    );
                }
                CheckpointPass::Refused(e) => tracing::error!(
                    error = e,
                    "ALARM the audit trail does not match its anchored checkpoint: rows removed \
                     or rewritten; run `lynxo-control verify-audit`"
                ),
            }
            tokio::time::sleep(self.interval).await;
        }
    }
}
