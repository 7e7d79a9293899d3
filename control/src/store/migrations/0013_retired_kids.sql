-- Signing kids retired by `control keyring retire`: a retired kid never signs or verifies again
-- (`serve` refuses a keyring that holds one), and every key it signed that still worked was
-- revoked in the same transaction (reason `signing_key_retired`). Kept for ever: it is what the
-- dashboard tells the owners of those keys.
CREATE TABLE retired_kids (
    kid           INTEGER PRIMARY KEY CHECK (kid BETWEEN 0 AND 255),
    retired_at    INTEGER NOT NULL,
    reason        TEXT NOT NULL CHECK (reason IN ('compromised', 'scheduled')),
    note          TEXT,                                -- the operator's own record; never shown to accounts
    keys_revoked  INTEGER NOT NULL
) STRICT;

-- A retirement finds the keys of one kid; serve's start checks which kids working keys need.
CREATE INDEX api_keys_by_kid ON api_keys (kid);
