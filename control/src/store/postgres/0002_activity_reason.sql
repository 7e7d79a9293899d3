-- SQLite migration 0014 (control/src/store/migrations/0014_activity_reason.sql) on PostgreSQL:
-- why the edge answered a request itself, recorded with its activity entry; NULL for the
-- origin's answers and for older rows. The same column, last in the table as in SQLite, and the
-- same CHECK (PostgreSQL's length() also counts characters). Apply it in one transaction after
-- 0001; a second run fails on the ADD COLUMN and changes nothing.
ALTER TABLE activity ADD COLUMN reason TEXT CHECK (length(reason) BETWEEN 1 AND 32);

INSERT INTO schema_migrations (version) VALUES (14);
