-- Why the edge answered a request itself, as the edge decided it (`shared::usage::Reason`:
-- `wrong_environment`, `revoked`, `expired`, `insufficient_scope`, `rate_limit_exceeded`, ...),
-- recorded with the activity entry. NULL for the origin's answers and for rows stored before the
-- edge sent it: the activity API derives those from the status and the key's dates. Ingestion
-- stores only codes this build knows; the CHECK bounds what any writer can store.
ALTER TABLE activity ADD COLUMN reason TEXT CHECK (length(reason) BETWEEN 1 AND 32);
