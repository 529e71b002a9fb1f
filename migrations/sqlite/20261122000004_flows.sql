-- Flows of flows: the flow registry (versioned), stored results, and run options.
-- SQLite flavour; keep in step with postgres/.
CREATE TABLE flows (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    project     TEXT   NOT NULL,
    name        TEXT   NOT NULL,
    version     BIGINT NOT NULL,
    kind        TEXT   NOT NULL,             -- pipeline | composition
    source      TEXT   NOT NULL,             -- the YAML as registered
    spec        TEXT   NOT NULL,             -- canonical JSON (composition with its mappings, or pipeline)
    hash        TEXT   NOT NULL,             -- sha256 of spec: an unchanged flow keeps its version
    labels      TEXT   NOT NULL DEFAULT '',
    parameters  TEXT   NOT NULL,             -- JSON: name → {type, default, required}
    task_slugs  TEXT   NOT NULL,             -- JSON: task name → slug
    created_at  BIGINT NOT NULL,
    created_by  TEXT   NOT NULL,
    UNIQUE (project, name, version),
    UNIQUE (project, name, hash)
);

CREATE TABLE flow_results (
    id                 INTEGER PRIMARY KEY AUTOINCREMENT,
    project_name       TEXT   NOT NULL,
    flow_id            TEXT   NOT NULL,
    inputs             TEXT   NOT NULL,
    outputs            TEXT   NOT NULL,
    date_modified      BIGINT NOT NULL,
    unique_hash        TEXT   NOT NULL,
    result_type_string TEXT   NOT NULL,
    UNIQUE (project_name, unique_hash)
);

ALTER TABLE runs ADD COLUMN run_name TEXT;
ALTER TABLE runs ADD COLUMN start_after BIGINT;
