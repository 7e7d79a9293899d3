//! The meter object's open batch: deliveries merged into it (each request counted once, its
//! activity sampled by the same rule as the isolate's), sealed as the next numbered batch.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};
use shared::key::KeyId;
use shared::usage::{
    Activity, Batch, Count, EdgeHealth, IsolateHealth, LastUsed, MAX_HEALTH_ISOLATES, Outcome,
};

use super::{Delivery, keep};

/// Activity entries kept for one key in the open batch: allowed ones (`outcome` absent), or
/// denials of one outcome.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct Sampled {
    key_id: KeyId,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    outcome: Option<Outcome>,
    n: u32,
}

/// The open batch of a meter object: what its next [`Batch`] will say.
///
/// Stored in two parts so a delivery does not rewrite a thousand activity entries: the
/// aggregate itself (counts, last use, sampling state: small) under one storage key, and the
/// activity entries each delivery kept as a numbered chunk ([`chunk_key`]). Chunks
/// `chunk_floor..chunk_next` belong to the open batch; sealing moves the floor up in the same
/// write that stores the batch, so a chunk is in exactly one batch.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Aggregate {
    counts: Vec<Count>,
    last_used: Vec<LastUsed>,
    dropped_activity: u64,
    pub(super) sampled: Vec<Sampled>,
    allowed_kept: usize,
    /// First activity chunk of this batch.
    pub chunk_floor: u64,
    /// Number of the next activity chunk.
    pub chunk_next: u64,
    /// The latest health report of each isolate that delivered, at most
    /// [`MAX_HEALTH_ISOLATES`] (absent from aggregates stored before the field).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    health: Vec<IsolateHealth>,
    /// The activity entries of the chunks, in memory.
    #[serde(skip)]
    activity: Vec<Activity>,
}

impl Aggregate {
    /// Whether nothing was merged since the last seal.
    pub fn is_empty(&self) -> bool {
        self.counts.is_empty()
    }

    /// Merges an isolate's part of a batch; returns the activity entries the batch keeps (by
    /// the same rule as the isolate, now over the whole batch; the rest are counted dropped).
    pub fn merge(&mut self, part: Delivery) -> Vec<Activity> {
        let found: Vec<Option<usize>> = {
            let index: HashMap<(KeyId, u64, Option<&str>, Outcome), usize> = self
                .counts
                .iter()
                .enumerate()
                .map(|(i, c)| ((c.key_id, c.minute, c.scope.as_deref(), c.outcome), i))
                .collect();
            part.counts
                .iter()
                .map(|c| {
                    index
                        .get(&(c.key_id, c.minute, c.scope.as_deref(), c.outcome))
                        .copied()
                })
                .collect()
        };
        for (count, at) in part.counts.into_iter().zip(found) {
            match at {
                Some(i) => self.counts[i].n += count.n,
                None => self.counts.push(count),
            }
        }
        for last in part.last_used {
            match self.last_used.iter_mut().find(|l| l.key_id == last.key_id) {
                Some(l) if l.at_ms <= last.at_ms => *l = last,
                Some(_) => {}
                None => self.last_used.push(last),
            }
        }
        self.dropped_activity += part.dropped_activity;
        if let Some(report) = part.health {
            self.note_health(report);
        }
        let mut kept = Vec::new();
        for entry in part.activity {
            if self.sample(&entry) {
                self.activity.push(entry.clone());
                kept.push(entry);
            } else {
                self.dropped_activity += 1;
            }
        }
        kept
    }

    /// Keeps `report` as its isolate's latest (an older one never replaces a newer one); past
    /// [`MAX_HEALTH_ISOLATES`] isolates, the one heard from longest ago goes.
    fn note_health(&mut self, report: IsolateHealth) {
        match self.health.iter_mut().find(|h| h.isolate == report.isolate) {
            Some(known) if known.at_ms <= report.at_ms => *known = report,
            Some(_) => {}
            None => {
                self.health.push(report);
                if self.health.len() > MAX_HEALTH_ISOLATES {
                    if let Some(oldest) =
                        (0..self.health.len()).min_by_key(|&i| self.health[i].at_ms)
                    {
                        self.health.swap_remove(oldest);
                    }
                }
            }
        }
    }

    /// Whether the batch keeps `entry` (see [`keep`]).
    fn sample(&mut self, entry: &Activity) -> bool {
        let outcome = (!entry.outcome.is_allowed()).then_some(entry.outcome);
        let i = match self
            .sampled
            .iter()
            .position(|s| s.key_id == entry.key_id && s.outcome == outcome)
        {
            Some(i) => i,
            None => {
                self.sampled.push(Sampled {
                    key_id: entry.key_id,
                    outcome,
                    n: 0,
                });
                self.sampled.len() - 1
            }
        };
        keep(
            self.activity.len(),
            entry.outcome,
            &mut self.sampled[i].n,
            &mut self.allowed_kept,
        )
    }

    /// Takes the number for the chunk of activity entries the current delivery kept.
    pub fn next_chunk(&mut self) -> u64 {
        let n = self.chunk_next;
        self.chunk_next += 1;
        n
    }

    /// Puts back, after a restart, the activity entries of stored chunks: those of this batch
    /// (`chunk_floor..chunk_next`), in chunk order. Returns the numbers of chunks that belong
    /// to no open batch (already sealed), for the caller to delete.
    pub fn restore_chunks(&mut self, mut chunks: Vec<(u64, Vec<Activity>)>) -> Vec<u64> {
        chunks.sort_by_key(|(n, _)| *n);
        let mut stale = Vec::new();
        self.activity.clear();
        for (n, entries) in chunks {
            if (self.chunk_floor..self.chunk_next).contains(&n) {
                self.activity.extend(entries);
            } else {
                stale.push(n);
            }
        }
        stale
    }

    /// Seals the aggregate as batch `seq` of `source`, leaving it empty with its chunk floor
    /// past every chunk the batch took. Returns the batch and the chunks to delete once the
    /// seal is stored.
    pub fn seal(&mut self, source: &str, seq: u64) -> (Batch, std::ops::Range<u64>) {
        let chunks = self.chunk_floor..self.chunk_next;
        let open = std::mem::replace(
            self,
            Self {
                chunk_floor: self.chunk_next,
                chunk_next: self.chunk_next,
                ..Self::default()
            },
        );
        let batch = Batch {
            source: source.to_owned(),
            seq,
            counts: open.counts,
            last_used: open.last_used,
            activity: open.activity,
            dropped_activity: open.dropped_activity,
            health: (!open.health.is_empty()).then_some(EdgeHealth {
                meter_retries: 0,
                isolates: open.health,
            }),
        };
        (batch, chunks)
    }
}
