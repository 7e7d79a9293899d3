-- Lynxo control plane, schema 7: management tokens with scopes, a key grant, an expiry and a
-- cap per account. Touches only `plans` and `management_tokens` (a 0006 that rebuilds the
-- sessions table may come before or not).

-- The plan sets how many tokens an account keeps working at once and how long they live:
-- `token_default_ttl` when the creator names no expiry, at most `token_max_ttl` (NULL: the plan
-- allows tokens that never expire).
ALTER TABLE plans ADD COLUMN max_management_tokens INTEGER NOT NULL DEFAULT 25
    CHECK (max_management_tokens > 0);
ALTER TABLE plans ADD COLUMN token_default_ttl INTEGER NOT NULL DEFAULT 2592000
    CHECK (token_default_ttl > 0);
ALTER TABLE plans ADD COLUMN token_max_ttl INTEGER DEFAULT 31536000
    CHECK (token_max_ttl IS NULL OR token_max_ttl > 0);

-- `scopes`: admin scope bits (`auth::grant::AdminScope::bit`, never renumbered). `key_grant`:
-- the `shared::scope::ScopeSet` bits the keys a token manages may carry at most (1 << 31: Full
-- Access). `used_audited_at`: the last `management_token.used` event. `legacy`: made before
-- this schema. The defaults are what every earlier token keeps: every admin scope of the
-- catalog and a Full Access grant.
ALTER TABLE management_tokens ADD COLUMN scopes INTEGER NOT NULL DEFAULT 127;
ALTER TABLE management_tokens ADD COLUMN key_grant INTEGER NOT NULL DEFAULT 2147483648;
ALTER TABLE management_tokens ADD COLUMN expires_at INTEGER;
ALTER TABLE management_tokens ADD COLUMN used_audited_at INTEGER;
ALTER TABLE management_tokens ADD COLUMN legacy INTEGER NOT NULL DEFAULT 0;

-- Tokens from before keep working, as legacy tokens, until the plan's default lifetime from
-- the upgrade: a token that leaked before expiry existed cannot live forever.
UPDATE management_tokens
SET legacy = 1,
    used_audited_at = last_used_at,
    expires_at = unixepoch() + (
        SELECT p.token_default_ttl FROM accounts a JOIN plans p ON p.id = a.plan_id
        WHERE a.id = management_tokens.account_id
    )
WHERE revoked_at IS NULL;

-- An account's tokens, newest first (the list's pages; the cap's count).
CREATE INDEX management_tokens_by_account ON management_tokens (account_id, id);
