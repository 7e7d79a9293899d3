-- Lynxo control plane, schema 4: rotation never multiplies an account's keys or quota.

-- The key whose rate-limit budget this key spends at the edge: the first key of its rotation
-- chain, so a key and its successor in grace share one budget. A created key is its own.
ALTER TABLE api_keys ADD COLUMN budget_id TEXT REFERENCES api_keys (id);

WITH RECURSIVE chain (id, root) AS (
    SELECT id, id FROM api_keys WHERE rotated_from IS NULL
    UNION ALL
    SELECT k.id, c.root FROM api_keys k JOIN chain c ON k.rotated_from = c.id
)
UPDATE api_keys SET budget_id = (SELECT root FROM chain WHERE chain.id = api_keys.id)
WHERE rotated_from IS NOT NULL;
UPDATE api_keys SET budget_id = id WHERE budget_id IS NULL;

-- A chain's keys, for ending the grace of the predecessor when its successor is rotated.
CREATE INDEX api_keys_by_budget ON api_keys (account_id, budget_id);

-- The edge learns each key's budget and the plan's per-minute cap from the next limits push:
-- every key that works (or still may, in a rotation's grace) takes a new policy version and is
-- queued. Chains that already have several keys in grace keep them until their graces end; from
-- now on they share one budget.
UPDATE api_keys SET policy_version = policy_version + 1
WHERE revoked_at IS NULL OR revoked_at > CAST(strftime('%s', 'now') AS INTEGER);
INSERT INTO limits_outbox (key_id, version)
SELECT id, policy_version FROM api_keys
WHERE revoked_at IS NULL OR revoked_at > CAST(strftime('%s', 'now') AS INTEGER)
ON CONFLICT (key_id) DO UPDATE SET version = excluded.version;
