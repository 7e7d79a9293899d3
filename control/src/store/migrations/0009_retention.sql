-- Bounded growth (docs/control-plane.md, "Retention"): per-minute counts are kept for days,
-- per-hour counts for months, per-day counts for ever; the compaction job (`store::retention`)
-- moves hours into days and deletes what has expired, a few thousand rows per transaction.

-- Requests per key, UTC day (Unix day number), scope and outcome: hours rolled up. A count is
-- in exactly one of `usage_hours` and `usage_days` (the roll-up moves it in one transaction).
CREATE TABLE usage_days (
    key_id      TEXT NOT NULL,
    account_id  INTEGER NOT NULL,
    day         INTEGER NOT NULL,
    scope       TEXT NOT NULL,
    outcome     TEXT NOT NULL,
    n           INTEGER NOT NULL CHECK (n > 0),
    PRIMARY KEY (key_id, day, scope, outcome)
) STRICT, WITHOUT ROWID;
CREATE INDEX usage_days_by_account ON usage_days (account_id, day, n);

-- One row: minute rows before `minutes_from` (a Unix minute on an hour) may have been deleted,
-- so minute queries read the hourly and daily rows before it. Only ever moves forward.
CREATE TABLE usage_retention (
    id            INTEGER PRIMARY KEY CHECK (id = 1),
    minutes_from  INTEGER NOT NULL
) STRICT;
INSERT INTO usage_retention (id, minutes_from) VALUES (1, 0);

-- Applied batch names older than the window are deleted. Each source's highest deleted `seq`
-- stays here: the edge posts a source's batches in order and stops at the first failure, so
-- every `seq` at or below it was applied, and a batch at or below it is acknowledged unapplied.
CREATE TABLE usage_sources (
    source          TEXT PRIMARY KEY,
    pruned_through  INTEGER NOT NULL
) STRICT, WITHOUT ROWID;
CREATE INDEX usage_batches_by_time ON usage_batches (applied_at);
