-- The audit log as a hash chain (PostgreSQL flavour; keep in step with sqlite/): each entry
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
CREATE FUNCTION audit_log_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit entries are never changed or deleted';
END
$$;
CREATE TRIGGER audit_log_append_only BEFORE UPDATE OR DELETE ON audit_log
    FOR EACH ROW EXECUTE FUNCTION audit_log_append_only();
