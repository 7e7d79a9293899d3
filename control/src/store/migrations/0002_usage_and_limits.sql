-- Lynxo control plane, schema 2: per-key rate-limit windows and policy versions, last use,
-- usage counters, the activity log, applied usage batches and the limits outbox.

-- `rate_limit` is now "requests per `rate_limit_window` seconds" (60 keeps the old meaning).
-- `policy_version` increases with every change of the limit; the edge keeps the highest it saw.
ALTER TABLE api_keys ADD COLUMN rate_limit_window INTEGER NOT NULL DEFAULT 60
    CHECK (rate_limit_window BETWEEN 1 AND 86400);
ALTER TABLE api_keys ADD COLUMN policy_version INTEGER NOT NULL DEFAULT 1;
-- Last use, from the edge's usage batches. `last_used_at` (seconds, schema 1) is written with it.
ALTER TABLE api_keys ADD COLUMN last_used_at_ms INTEGER;
ALTER TABLE api_keys ADD COLUMN last_used_ip TEXT;
ALTER TABLE api_keys ADD COLUMN last_used_user_agent TEXT;

-- Requests per key, Unix minute, route scope ('' when no route matched) and outcome
-- ('2xx', '3xx', '4xx', '5xx', '401', '403', '429').
CREATE TABLE usage_minutes (
    key_id      TEXT NOT NULL,
    account_id  INTEGER NOT NULL,
    minute      INTEGER NOT NULL,
    scope       TEXT NOT NULL,
    outcome     TEXT NOT NULL,
    n           INTEGER NOT NULL CHECK (n > 0),
    PRIMARY KEY (key_id, minute, scope, outcome)
) STRICT, WITHOUT ROWID;
-- Account-wide queries read only this index: it holds the primary key's columns and `n`.
CREATE INDEX usage_minutes_by_account ON usage_minutes (account_id, minute, n);

-- The same counts per Unix hour, written in the same transaction: hour and day charts, the
-- 24-hour totals of the key list and the 30-day scope use read a sixtieth of the rows.
CREATE TABLE usage_hours (
    key_id      TEXT NOT NULL,
    account_id  INTEGER NOT NULL,
    hour        INTEGER NOT NULL,
    scope       TEXT NOT NULL,
    outcome     TEXT NOT NULL,
    n           INTEGER NOT NULL CHECK (n > 0),
    PRIMARY KEY (key_id, hour, scope, outcome)
) STRICT, WITHOUT ROWID;
CREATE INDEX usage_hours_by_account ON usage_hours (account_id, hour, n);

-- Recent requests per key. Pruned on ingestion: the latest 200 non-denials per key, denials
-- (401/403/429) for 30 days, nothing older than 30 days.
CREATE TABLE activity (
    id          INTEGER PRIMARY KEY,
    key_id      TEXT NOT NULL,
    account_id  INTEGER NOT NULL,
    at_ms       INTEGER NOT NULL,
    method      TEXT NOT NULL,
    path        TEXT NOT NULL,
    status      INTEGER NOT NULL,
    outcome     TEXT NOT NULL,
    client_ip   TEXT,
    country     TEXT,
    colo        TEXT,
    user_agent  TEXT
) STRICT;
CREATE INDEX activity_by_key ON activity (key_id, at_ms);
CREATE INDEX activity_by_time ON activity (at_ms);

-- Usage batches applied, by name: a retried batch is acknowledged without being counted twice.
CREATE TABLE usage_batches (
    source      TEXT NOT NULL,
    seq         INTEGER NOT NULL,
    applied_at  INTEGER NOT NULL,
    PRIMARY KEY (source, seq)
) STRICT, WITHOUT ROWID;

-- Limits outbox: a key whose policy (version) the edge has not acknowledged yet. A row is
-- deleted after a push of that exact version succeeded; a newer version replaces it.
CREATE TABLE limits_outbox (
    key_id   TEXT PRIMARY KEY,
    version  INTEGER NOT NULL
) STRICT, WITHOUT ROWID;

-- Keys issued before this schema have never been pushed: queue every one that still works.
INSERT INTO limits_outbox (key_id, version)
SELECT id, policy_version FROM api_keys WHERE revoked_at IS NULL;
