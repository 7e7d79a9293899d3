-- Lynxo control plane: revocations read back from the edge that no key of this database carries.
--
-- After a restore from a backup (or any copy older than what was published), the edge can hold
-- revocations this database never saw. Those of keys it has are recorded on the keys
-- (`revocation_in_force`, with a `key.revoked` audit event); those of keys made after the copy
-- was taken have no row here, so their ids are kept in this table and every shard published
-- carries them: a revocation is never undone. Rows are never deleted.
CREATE TABLE recovered_revocations (
    key_id        TEXT PRIMARY KEY,          -- 32 lowercase hex digits
    id_top        INTEGER NOT NULL,          -- top 16 bits of the id: selects the shard
    recovered_at  INTEGER NOT NULL,          -- Unix seconds
    list_version  INTEGER NOT NULL           -- the version of the edge's shard that carried it
) STRICT;

CREATE INDEX recovered_revocations_by_shard ON recovered_revocations (id_top);
