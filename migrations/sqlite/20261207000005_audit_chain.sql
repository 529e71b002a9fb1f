-- The audit log as a hash chain (SQLite flavour; keep in step with postgres/): each entry
-- links to the one before it; audit_head holds the newest hash. Entries written before this
-- migration stay unchained and are counted, so blanking later ones cannot pass as old.
ALTER TABLE audit_log ADD COLUMN prev_hash TEXT NOT NULL DEFAULT '';
ALTER TABLE audit_log ADD COLUMN hash TEXT NOT NULL DEFAULT '';

CREATE TABLE audit_head (
    id        INTEGER PRIMARY KEY CHECK (id = 1),
    hash      TEXT   NOT NULL,
    unchained BIGINT NOT NULL
);
INSERT INTO audit_head (id, hash, unchained) SELECT 1, '', COUNT(*) FROM audit_log;

-- Append-only: the application never changes or removes an entry.
CREATE TRIGGER audit_log_never_updated BEFORE UPDATE ON audit_log
BEGIN
    SELECT RAISE(ABORT, 'audit entries are never changed');
END;
CREATE TRIGGER audit_log_never_deleted BEFORE DELETE ON audit_log
BEGIN
    SELECT RAISE(ABORT, 'audit entries are never deleted');
END;
