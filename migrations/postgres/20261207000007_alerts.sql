-- Alerts: a run remembers what it still owes its pipeline's alert targets, and each
-- notification is a row in a delivery queue, retried with backoff until it is delivered or
-- its attempts run out. Runs from before this migration owe nothing.

-- When the run misses its SLA if it has not ended by then; cleared once decided.
ALTER TABLE runs ADD COLUMN sla_due_at BIGINT;
-- The run's end (success or failure) is still to be announced.
ALTER TABLE runs ADD COLUMN alerts_pending BOOLEAN NOT NULL DEFAULT FALSE;
CREATE INDEX runs_sla_due ON runs (sla_due_at) WHERE sla_due_at IS NOT NULL;
CREATE INDEX runs_alerts_pending ON runs (ended_at) WHERE alerts_pending = TRUE;

CREATE TABLE alert_deliveries (
    id              BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    run_id          BIGINT NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    pipeline_id     TEXT   NOT NULL,
    event           TEXT   NOT NULL,            -- failure | success | sla_miss
    conn_id         TEXT   NOT NULL,            -- the webhook or smtp connection
    payload         TEXT   NOT NULL,            -- the JSON body, fixed when queued
    state           TEXT   NOT NULL DEFAULT 'pending',  -- pending | delivered | failed
    attempts        BIGINT NOT NULL DEFAULT 0,
    next_attempt_at BIGINT NOT NULL,
    lease_until     BIGINT,                     -- a sender holds it until then
    last_error      TEXT,
    created_at      BIGINT NOT NULL,
    delivered_at    BIGINT,
    UNIQUE (run_id, event, conn_id)
);
CREATE INDEX alert_deliveries_due ON alert_deliveries (next_attempt_at) WHERE state = 'pending';
