-- Connections, export watermarks and the files runs produce. PostgreSQL flavour; keep in step with the other.
CREATE TABLE connections (
    conn_id     TEXT PRIMARY KEY,
    kind        TEXT   NOT NULL,                -- imednet | aws
    description TEXT   NOT NULL DEFAULT '',
    settings    TEXT   NOT NULL,                -- non-secret fields as a JSON object
    secrets     TEXT   NOT NULL,                -- field -> AEAD value 'tf1:<key id>:…' (never plaintext)
    created_at  BIGINT NOT NULL,
    updated_at  BIGINT NOT NULL,
    updated_by  TEXT   NOT NULL
);

-- High-water mark of dateModified per study and destination, for incremental exports.
CREATE TABLE export_watermarks (
    conn_id     TEXT   NOT NULL,
    study_key   TEXT   NOT NULL,
    destination TEXT   NOT NULL,
    watermark   TEXT   NOT NULL,
    run_id      BIGINT NOT NULL,
    updated_at  BIGINT NOT NULL,
    PRIMARY KEY (conn_id, study_key, destination)
);

-- Files written by tasks: shown on the run page and downloadable.
CREATE TABLE artifacts (
    id               BIGSERIAL PRIMARY KEY,
    run_id           BIGINT NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    task_instance_id BIGINT NOT NULL REFERENCES task_instances (id) ON DELETE CASCADE,
    uri              TEXT   NOT NULL,           -- local path or s3://bucket/key
    bytes            BIGINT NOT NULL,
    sha256           TEXT   NOT NULL,
    rows_written     BIGINT,
    created_at       BIGINT NOT NULL
);
CREATE INDEX artifacts_run ON artifacts (run_id, id);

INSERT INTO pools (name, slots, description, builtin)
VALUES ('imednet_exports', 4, 'Concurrent iMednet study exports (the reference pipeline)', TRUE);
