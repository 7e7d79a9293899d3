-- Sign-in attempt budgets in the database (`store::sign_in_budgets`, docs/sign-in.md), so every
-- control-plane replica on one database draws on the same budgets. `serve` keeps them in
-- process memory on SQLite (one process); on PostgreSQL it keeps them here.
--
-- One row per budget entry, named by an opaque 16-byte keyed hash, never an email. The columns
-- are `auth::limit::Entry`'s; `forget_at` is when the entry stops mattering (unless an attempt
-- is in flight), written with it so expired rows are found without the rules in SQL. At most
-- the ledger's capacity of rows: a full table forgets expired rows, then the least restrictive
-- eighth.
CREATE TABLE sign_in_budgets (
    key           BLOB PRIMARY KEY CHECK (length(key) = 16),
    start         INTEGER NOT NULL,
    failures      INTEGER NOT NULL CHECK (failures >= 0),
    pending       INTEGER NOT NULL CHECK (pending >= 0),
    in_flight     INTEGER NOT NULL CHECK (in_flight >= 0),
    strikes       INTEGER NOT NULL CHECK (strikes >= 0),
    locked_until  INTEGER NOT NULL,
    forget_at     INTEGER NOT NULL
) STRICT, WITHOUT ROWID;

-- How many rows `sign_in_budgets` holds, kept by every insert and delete of the ledger, so the
-- bound is checked by reading one row.
CREATE TABLE sign_in_ledger (
    id       INTEGER PRIMARY KEY CHECK (id = 1),
    entries  INTEGER NOT NULL CHECK (entries >= 0)
) STRICT;
INSERT INTO sign_in_ledger (id, entries) VALUES (1, 0);

-- Attempts admitted and not yet settled: the email's key and the attempt's budgets (16-byte key,
-- 4-byte big-endian limit, 1-byte cleared-by-success flag each). Past `expires_at` any replica
-- settles the row as a failure (its replica died mid-hash). At most one row per hashing slot of
-- each replica, plus what dead ones left until it expires.
CREATE TABLE sign_in_reservations (
    -- AUTOINCREMENT: an id is never given again, so a late answer settles only its own row.
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    email       BLOB NOT NULL CHECK (length(email) = 16),
    budgets     BLOB NOT NULL CHECK (length(budgets) BETWEEN 21 AND 84),
    expires_at  INTEGER NOT NULL
) STRICT;
CREATE INDEX sign_in_reservations_by_expiry ON sign_in_reservations (expires_at);
