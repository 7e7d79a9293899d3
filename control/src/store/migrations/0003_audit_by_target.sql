-- Lynxo control plane, schema 3: an account's audit events of one target (a key's page).
CREATE INDEX audit_events_by_target ON audit_events (account_id, target, seq);
