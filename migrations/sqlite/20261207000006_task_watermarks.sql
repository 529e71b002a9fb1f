-- Incremental exports remember a high-water mark of dateModified per pipeline, task,
-- connection and study, one row per run that exported successfully, so the next run reads
-- the newest mark of an earlier run (instances of one run never see each other's marks).
CREATE TABLE task_watermarks (
    pipeline_id TEXT   NOT NULL,
    task_id     TEXT   NOT NULL,
    conn_id     TEXT   NOT NULL,
    study_key   TEXT   NOT NULL,
    run_id      BIGINT NOT NULL,
    watermark   TEXT   NOT NULL,
    updated_at  BIGINT NOT NULL,
    PRIMARY KEY (pipeline_id, task_id, conn_id, study_key, run_id)
);

-- Marks were kept per destination before, which a per-run folder never repeats; the next
-- incremental run after this migration exports everything once.
DROP TABLE export_watermarks;
