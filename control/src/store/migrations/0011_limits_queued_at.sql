-- Lynxo control plane: when each queued rate-limit policy started waiting for the edge, so
-- `/metrics` can show the age of the oldest one (lynxo_outbox_oldest_age_seconds).

-- Milliseconds since the Unix epoch; kept when a newer version of a still-queued policy
-- replaces the row, so the age is how long the key has waited, not its latest change.
ALTER TABLE limits_outbox ADD COLUMN queued_at INTEGER NOT NULL DEFAULT 0;

-- Rows queued before this schema: they wait from now on (their real start is unknown).
UPDATE limits_outbox SET queued_at = CAST(unixepoch('subsec') * 1000 AS INTEGER);
