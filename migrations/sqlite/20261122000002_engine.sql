-- The job engine: pipelines, pools, runs, task instances, attempts, logs, events, workers.
-- SQLite flavour; keep in step with postgres/. Times are integer milliseconds since the epoch.
CREATE TABLE pipelines (
    id          TEXT PRIMARY KEY,
    source      TEXT    NOT NULL,            -- the YAML as written
    origin      TEXT    NOT NULL,            -- builtin | folder | api
    spec        TEXT    NOT NULL,            -- validated definition as JSON
    paused      BOOLEAN NOT NULL DEFAULT FALSE,
    next_run_at BIGINT,                      -- next cron tick, when scheduled
    updated_at  BIGINT  NOT NULL
);

CREATE TABLE pools (
    name        TEXT PRIMARY KEY,
    slots       BIGINT  NOT NULL CHECK (slots >= 0),
    description TEXT    NOT NULL DEFAULT '',
    builtin     BOOLEAN NOT NULL DEFAULT FALSE
);
INSERT INTO pools (name, slots, description, builtin)
VALUES ('default_pool', 128, 'Tasks that name no pool', TRUE);

CREATE TABLE runs (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    pipeline_id  TEXT   NOT NULL,
    state        TEXT   NOT NULL,
    conf         TEXT   NOT NULL,
    run_trigger  TEXT   NOT NULL,            -- manual | schedule
    triggered_by TEXT   NOT NULL,
    logical_date BIGINT NOT NULL,
    labels       TEXT   NOT NULL DEFAULT '',
    spec         TEXT   NOT NULL,            -- the definition the run was created with
    queued_at    BIGINT NOT NULL,
    started_at   BIGINT,
    ended_at     BIGINT
);
CREATE INDEX runs_state ON runs (state);
CREATE INDEX runs_pipeline ON runs (pipeline_id, id);

CREATE TABLE task_instances (
    id                INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id            BIGINT NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    task_id           TEXT   NOT NULL,
    map_index         BIGINT NOT NULL,       -- -1: unmapped, or mapped but not yet expanded
    map_key           TEXT,
    state             TEXT   NOT NULL,
    try_number        BIGINT NOT NULL DEFAULT 0,
    max_tries         BIGINT NOT NULL,
    pool              TEXT   NOT NULL,
    pool_slots        BIGINT NOT NULL,
    priority          BIGINT NOT NULL,
    labels            TEXT   NOT NULL DEFAULT '',
    input             TEXT,
    output            TEXT,
    error             TEXT,
    queued_at         BIGINT,
    started_at        BIGINT,
    ended_at          BIGINT,
    next_attempt_at   BIGINT,
    sensor_started_at BIGINT,
    fence             BIGINT NOT NULL DEFAULT 0,
    lease_owner       TEXT,
    lease_expires_at  BIGINT,
    UNIQUE (run_id, task_id, map_index)
);
CREATE INDEX ti_queued ON task_instances (priority DESC, id) WHERE state = 'queued';
CREATE INDEX ti_run_state ON task_instances (run_id, state);
CREATE INDEX ti_active ON task_instances (state, pool) WHERE state IN ('queued', 'running');

CREATE TABLE task_attempts (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    ti_id       BIGINT NOT NULL REFERENCES task_instances (id) ON DELETE CASCADE,
    try_number  BIGINT NOT NULL,
    fence       BIGINT NOT NULL,
    worker      TEXT   NOT NULL,
    state       TEXT   NOT NULL,
    started_at  BIGINT NOT NULL,
    ended_at    BIGINT,
    error       TEXT,
    UNIQUE (ti_id, fence)
);

CREATE TABLE task_logs (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    attempt_id BIGINT NOT NULL REFERENCES task_attempts (id) ON DELETE CASCADE,
    at         BIGINT NOT NULL,
    stream     TEXT   NOT NULL,
    line       TEXT   NOT NULL
);
CREATE INDEX task_logs_attempt ON task_logs (attempt_id, id);

CREATE TABLE engine_events (
    id      INTEGER PRIMARY KEY AUTOINCREMENT,
    at      BIGINT NOT NULL,
    run_id  BIGINT,
    kind    TEXT   NOT NULL,
    payload TEXT   NOT NULL
);
CREATE INDEX engine_events_run ON engine_events (run_id, id);

CREATE TABLE workers (
    id           TEXT PRIMARY KEY,
    host         TEXT   NOT NULL,
    labels       TEXT   NOT NULL DEFAULT '',
    concurrency  BIGINT NOT NULL,
    started_at   BIGINT NOT NULL,
    heartbeat_at BIGINT NOT NULL,
    stopped_at   BIGINT
);
