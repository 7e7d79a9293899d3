-- Lynxo control plane: leaked keys (secret-scanning reports and self-revocation).

-- What the service does when a partner (GitHub, GitLab) reports one of the account's live keys
-- in public: 'revoke' it at once (the default) or only 'notify' (banner, audit event).
ALTER TABLE accounts ADD COLUMN leak_response TEXT NOT NULL DEFAULT 'revoke'
    CHECK (leak_response IN ('revoke', 'notify'));

-- One row per key and place it was found: a replayed report finds its row and changes nothing.
-- `url` is '' when the reporter gave none (so the unique constraint holds: NULLs never clash).
CREATE TABLE key_leaks (
    id           INTEGER PRIMARY KEY,
    key_id       TEXT NOT NULL REFERENCES api_keys (id),
    account_id   INTEGER NOT NULL REFERENCES accounts (id),
    reporter     TEXT NOT NULL CHECK (reporter IN ('github', 'gitlab', 'holder')),
    url          TEXT NOT NULL,
    source       TEXT,
    reported_at  INTEGER NOT NULL,
    action       TEXT NOT NULL CHECK (action IN ('revoked', 'notified', 'already_revoked', 'expired')),
    UNIQUE (key_id, reporter, url)
) STRICT;

CREATE INDEX key_leaks_by_account ON key_leaks (account_id, reported_at);
