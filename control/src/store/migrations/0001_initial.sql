-- Lynxo control plane, schema 1. Times are Unix seconds unless a column name says `_ms`.

CREATE TABLE plans (
    id                  TEXT PRIMARY KEY,
    max_active_keys     INTEGER NOT NULL CHECK (max_active_keys > 0),
    default_rate_limit  INTEGER NOT NULL CHECK (default_rate_limit > 0),
    max_rate_limit      INTEGER NOT NULL CHECK (max_rate_limit >= default_rate_limit)
) STRICT;

-- Rate limits are requests per minute per key.
INSERT INTO plans (id, max_active_keys, default_rate_limit, max_rate_limit)
VALUES ('standard', 50, 600, 6000);

CREATE TABLE accounts (
    id          INTEGER PRIMARY KEY,
    name        TEXT NOT NULL,
    plan_id     TEXT NOT NULL REFERENCES plans (id),
    created_at  INTEGER NOT NULL
) STRICT;

CREATE TABLE users (
    id             INTEGER PRIMARY KEY,
    account_id     INTEGER NOT NULL REFERENCES accounts (id),
    email          TEXT NOT NULL UNIQUE COLLATE NOCASE,
    password_hash  TEXT NOT NULL,
    created_at     INTEGER NOT NULL
) STRICT;

-- Only the SHA-256 of a session id is stored: a copy of the database signs nobody in.
CREATE TABLE sessions (
    token_hash  BLOB PRIMARY KEY,
    user_id     INTEGER NOT NULL REFERENCES users (id),
    account_id  INTEGER NOT NULL REFERENCES accounts (id),
    created_at  INTEGER NOT NULL,
    expires_at  INTEGER NOT NULL
) STRICT;

-- Management tokens (`lnxm_...`): only their SHA-256 is stored.
CREATE TABLE management_tokens (
    id            INTEGER PRIMARY KEY,
    account_id    INTEGER NOT NULL REFERENCES accounts (id),
    name          TEXT NOT NULL,
    token_hash    BLOB NOT NULL UNIQUE,
    hint          TEXT NOT NULL,
    created_at    INTEGER NOT NULL,
    last_used_at  INTEGER,
    revoked_at    INTEGER
) STRICT;

-- API keys: metadata only. The key string is never stored; `hint` is its non-secret reminder.
CREATE TABLE api_keys (
    id                  TEXT PRIMARY KEY,            -- 32 lowercase hex digits
    id_top              INTEGER NOT NULL,            -- top 16 bits of the id: selects the shard
    account_id          INTEGER NOT NULL REFERENCES accounts (id),
    name                TEXT NOT NULL,
    description         TEXT,
    environment         TEXT NOT NULL,
    scopes              INTEGER NOT NULL,            -- ScopeSet bits, as signed into the key
    kid                 INTEGER NOT NULL,
    hint                TEXT NOT NULL,
    rate_limit          INTEGER NOT NULL,
    created_at          INTEGER NOT NULL,
    expires_at          INTEGER,
    last_used_at        INTEGER,
    revoked_at          INTEGER,                     -- in the future while a rotation's grace runs
    revoke_reason       TEXT,
    revocation_version  INTEGER,                     -- list version that carries the revocation
    rotated_from        TEXT REFERENCES api_keys (id),
    rotated_to          TEXT REFERENCES api_keys (id),
    grace_until         INTEGER
) STRICT;

CREATE INDEX api_keys_by_account ON api_keys (account_id, created_at);
CREATE INDEX api_keys_revoked_by_shard ON api_keys (id_top, revoked_at) WHERE revoked_at IS NOT NULL;

-- Append-only and hash-chained: hash = SHA-256(prev_hash || canonical JSON of the row).
CREATE TABLE audit_events (
    seq         INTEGER PRIMARY KEY,
    at          INTEGER NOT NULL,
    account_id  INTEGER,
    actor       TEXT NOT NULL,
    action      TEXT NOT NULL,
    target      TEXT,
    source      TEXT,
    details     TEXT NOT NULL,
    prev_hash   BLOB NOT NULL,
    hash        BLOB NOT NULL
) STRICT;

CREATE TRIGGER audit_events_no_update BEFORE UPDATE ON audit_events
BEGIN SELECT RAISE (ABORT, 'audit events are append-only'); END;
CREATE TRIGGER audit_events_no_delete BEFORE DELETE ON audit_events
BEGIN SELECT RAISE (ABORT, 'audit events are append-only'); END;

-- The revocation list's version counter: every revocation and every publish takes the next one.
CREATE TABLE revocation_meta (
    id            INTEGER PRIMARY KEY CHECK (id = 1),
    list_version  INTEGER NOT NULL
) STRICT;
INSERT INTO revocation_meta (id, list_version) VALUES (1, 0);

-- Outbox: a revocation that is committed but not yet published. `due_at` is in the future for a
-- rotated key's grace period. Rows are deleted once a shard carrying them is published.
CREATE TABLE revocation_outbox (
    id       INTEGER PRIMARY KEY,
    key_id   TEXT NOT NULL,
    id_top   INTEGER NOT NULL,
    version  INTEGER NOT NULL,
    due_at   INTEGER NOT NULL
) STRICT;

-- What was last published, per shard layout and shard.
CREATE TABLE revocation_shards (
    shard_count   INTEGER NOT NULL,
    shard         INTEGER NOT NULL,
    version       INTEGER NOT NULL,
    published_at  INTEGER NOT NULL,
    next_update   INTEGER NOT NULL,
    PRIMARY KEY (shard_count, shard)
) STRICT;

-- Idempotency-Key records for key creation: the request's hash and the key it created.
CREATE TABLE idempotency_keys (
    account_id    INTEGER NOT NULL REFERENCES accounts (id),
    idem_key      TEXT NOT NULL,
    request_hash  BLOB NOT NULL,
    key_id        TEXT NOT NULL REFERENCES api_keys (id),
    created_at    INTEGER NOT NULL,
    PRIMARY KEY (account_id, idem_key)
) STRICT;
