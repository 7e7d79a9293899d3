//! The `UsageMeter` object's storage protocol, as pure code: what the object reads when it
//! starts, and for each delivery and each seal the keys to write (in one atomic call) and to
//! delete. `objects` only carries the writes out; the host tests run the same protocol against
//! a map, evictions and lost answers included.

use super::{
    Aggregate, Delivery, MAX_BACKOFF_MS, MIN_BACKOFF_MS, OPEN_KEY, SEQ_KEY, SOURCE_KEY, batch_key,
    chunk_key, chunk_number, seen_key, source_name,
};

/// What a meter object reads from its storage when it starts.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stored {
    /// The value under [`OPEN_KEY`].
    pub open: Option<String>,
    /// The value under [`SEQ_KEY`].
    pub seq: Option<String>,
    /// The value under [`SOURCE_KEY`].
    pub source: Option<String>,
    /// Every `(key, value)` under [`CHUNK_PREFIX`].
    pub chunks: Vec<(String, String)>,
}

/// Keys and values to write in one atomic call.
pub type Writes = Vec<(String, String)>;

/// What a meter object keeps in memory, mirrored in its storage.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MeterState {
    /// The open aggregate.
    pub open: Aggregate,
    /// Number of the last sealed batch.
    pub seq: u64,
    /// `meter-<shard>-<random>`, made once and persisted.
    pub source: Option<String>,
    /// Failed deliveries in a row (memory only).
    pub failures: u32,
    /// Failed deliveries since the last seal (memory only): the next batch reports them.
    pub retries: u64,
}

/// A seal: the batch, its number and the emptied aggregate to write at once, then the chunks
/// the batch took, to delete.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sealed {
    /// One atomic write.
    pub writes: Writes,
    /// Keys to delete after it (harmless if that fails: the next load deletes them).
    pub delete: Vec<String>,
}

impl MeterState {
    /// The state `stored` holds, and the keys of chunks that an interrupted clean-up left
    /// behind (of batches already sealed), to delete.
    pub fn load(stored: Stored) -> Result<(Self, Vec<String>), String> {
        let mut open: Aggregate = match stored.open.map(|s| serde_json::from_str(&s)) {
            Some(Ok(open)) => open,
            Some(Err(e)) => return Err(format!("open aggregate unreadable: {e}")),
            None => Aggregate::default(),
        };
        let chunks = stored
            .chunks
            .iter()
            .filter_map(|(key, value)| {
                Some((chunk_number(key)?, serde_json::from_str(value).ok()?))
            })
            .collect();
        let stale = open
            .restore_chunks(chunks)
            .into_iter()
            .map(chunk_key)
            .collect();
        let state = Self {
            open,
            seq: stored.seq.and_then(|s| s.parse().ok()).unwrap_or(0),
            source: stored.source,
            failures: 0,
            retries: 0,
        };
        Ok((state, stale))
    }

    /// Merges `delivery`, whose name the caller found not stored yet ([`seen_key`]), and
    /// returns the one atomic write that stores it: its name, the source (the first time, named
    /// with `random_hex`), the activity chunk it keeps, and the merged aggregate. If the write
    /// fails, memory is ahead of storage: the caller loads again.
    pub fn record(
        &mut self,
        delivery: Delivery,
        random_hex: impl FnOnce() -> String,
        now_ms: u64,
    ) -> Result<Writes, serde_json::Error> {
        let mut writes = vec![(seen_key(&delivery.id), now_ms.to_string())];
        if self.source.is_none() {
            let source = source_name(delivery.shard, &random_hex());
            self.source = Some(source.clone());
            writes.push((SOURCE_KEY.to_owned(), source));
        }
        let kept = self.open.merge(delivery);
        if !kept.is_empty() {
            let n = self.open.next_chunk();
            writes.push((chunk_key(n), serde_json::to_string(&kept)?));
        }
        writes.push((OPEN_KEY.to_owned(), serde_json::to_string(&self.open)?));
        Ok(writes)
    }

    /// Seals the open aggregate as the next batch; `None` when it is empty. If the write fails,
    /// the caller loads again (storage still holds the aggregate and number as they were).
    pub fn seal(&mut self) -> Result<Option<Sealed>, String> {
        if self.open.is_empty() {
            return Ok(None);
        }
        let Some(source) = self.source.clone() else {
            return Err("meter has events but no source".to_owned());
        };
        self.seq += 1;
        let (mut batch, chunks) = self.open.seal(&source, self.seq);
        let retries = std::mem::take(&mut self.retries);
        if retries > 0 {
            batch
                .health
                .get_or_insert_with(Default::default)
                .meter_retries = retries;
        }
        let json = |e: serde_json::Error| e.to_string();
        // The batch, its number, and the emptied aggregate whose chunk floor excludes the
        // chunks the batch took.
        let writes = vec![
            (
                batch_key(self.seq),
                serde_json::to_string(&batch).map_err(json)?,
            ),
            (SEQ_KEY.to_owned(), self.seq.to_string()),
            (
                OPEN_KEY.to_owned(),
                serde_json::to_string(&self.open).map_err(json)?,
            ),
        ];
        Ok(Some(Sealed {
            writes,
            delete: chunks.map(chunk_key).collect(),
        }))
    }
}

/// The delay before the next delivery attempt after `failures` failed ones in a row.
pub fn backoff_ms(failures: u32) -> u64 {
    MIN_BACKOFF_MS
        .saturating_mul(1_u64 << failures.saturating_sub(1).min(16))
        .min(MAX_BACKOFF_MS)
}
