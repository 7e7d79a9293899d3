-- Lynxo control plane, schema 6: sessions a user can see and end.
--
-- Each session gets a stable id (the API and the dashboard name sessions by it, never by the
-- hash of their secret), its last use (for the idle timeout), and the address and user agent it
-- was opened from and last seen from. SQLite cannot add a primary key to a table, so the table is
-- rebuilt; no other table refers to it.
CREATE TABLE sessions_v6 (
    -- AUTOINCREMENT: an id is never given again, so an id in the audit trail names one session.
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    -- Only the SHA-256 of the session id: a copy of the database signs nobody in.
    token_hash    BLOB NOT NULL UNIQUE,
    user_id       INTEGER NOT NULL REFERENCES users (id),
    account_id    INTEGER NOT NULL REFERENCES accounts (id),
    created_at    INTEGER NOT NULL,
    -- The absolute end; the idle end is last_seen_at plus the configured idle timeout.
    expires_at    INTEGER NOT NULL,
    last_seen_at  INTEGER NOT NULL,
    -- The client address at sign-in and at the last recorded use (NULL when unknown).
    created_ip    TEXT,
    last_seen_ip  TEXT,
    -- The browser's User-Agent at sign-in: printable ASCII only, at most 256 bytes.
    user_agent    TEXT NOT NULL DEFAULT ''
) STRICT;

-- Sessions from before keep working until their ends; their last use is taken as their start,
-- so those idle longer than the idle timeout end now.
INSERT INTO sessions_v6 (token_hash, user_id, account_id, created_at, expires_at, last_seen_at)
SELECT token_hash, user_id, account_id, created_at, expires_at, created_at FROM sessions;

DROP TABLE sessions;
ALTER TABLE sessions_v6 RENAME TO sessions;

-- A user's sessions, oldest first (the list, the cap, sign out everywhere).
CREATE INDEX sessions_by_user ON sessions (user_id, id);
-- Purging ended sessions, a bounded batch at a time.
CREATE INDEX sessions_by_expiry ON sessions (expires_at);
CREATE INDEX sessions_by_last_seen ON sessions (last_seen_at);
