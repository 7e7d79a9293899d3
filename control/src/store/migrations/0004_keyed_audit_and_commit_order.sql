-- Lynxo control plane, schema 4: a keyed audit chain, and revocations in force by commit order.

-- The audit kid whose chain subkey made the row's `hash` (an HMAC-SHA256). NULL: a row written
-- before this schema, chained by unkeyed SHA-256. Those rows stay as they are: the first keyed
-- row chains from the last of them, so rewriting them now breaks a MAC nobody can recompute
-- without the audit secret. Legacy rows may only form a prefix of the chain.
ALTER TABLE audit_events ADD COLUMN kid INTEGER;

-- Whether the key's revocation is in force: set in the transaction of an immediate revoke, or
-- by the publisher once a rotation's grace period has ended, and never cleared. The publisher
-- includes exactly these keys, so what the edge is told never depends on a later clock reading.
ALTER TABLE api_keys ADD COLUMN revocation_in_force INTEGER NOT NULL DEFAULT 0
    CHECK (revocation_in_force IN (0, 1));

-- Before this schema a revocation was in force once `revoked_at <= now`. An immediate revoke has
-- no grace period, or was made during one (`revoked_at` before its end); a rotation's grace
-- ended if `revoked_at` is in the past.
UPDATE api_keys SET revocation_in_force = 1
WHERE revoked_at IS NOT NULL
  AND (grace_until IS NULL OR revoked_at < grace_until
       OR revoked_at <= CAST(strftime('%s', 'now') AS INTEGER));

-- An outbox row of a key in force is due at once, whatever the clock says (`due_at` 0): a
-- revoke stamped by a clock running fast is published now, not when the clock reaches it.
UPDATE revocation_outbox SET due_at = 0
WHERE key_id IN (SELECT id FROM api_keys WHERE revocation_in_force = 1);

CREATE INDEX api_keys_in_force_by_shard ON api_keys (id_top) WHERE revocation_in_force = 1;
