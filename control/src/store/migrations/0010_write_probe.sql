-- Lynxo control plane: readiness's write probe.

-- One row that `/readyz` rewrites (at most once a second), so readiness is a real committed
-- write (a WAL frame and an fsync), not a read: a full disk fails it as it fails every write.
-- A write rolled back would prove nothing, since SQLite keeps it in memory until the commit.
CREATE TABLE write_probe (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    beats INTEGER NOT NULL
) STRICT;
INSERT INTO write_probe (id, beats) VALUES (1, 0);
