-- The daemon: runs wait in `runs` with state `queued` until the scheduler takes
-- them; newer pushes supersede older queued runs of a pipeline (`coalesced`,
-- pointing at the run that replaced them). Webhook deliveries are remembered by
-- their forge's id so a redelivery gets the first answer again. Run logs are kept
-- line by line so `gantry logs --follow` can read them while the run goes on.

ALTER TABLE runs ADD COLUMN superseded_by INTEGER;

CREATE INDEX runs_by_state ON runs (state, pipeline, id);

CREATE TABLE deliveries (
    pipeline    TEXT    NOT NULL,
    forge       TEXT    NOT NULL,
    delivery_id TEXT    NOT NULL,
    -- The HTTP status and JSON body the first delivery got.
    status      INTEGER NOT NULL,
    response    TEXT    NOT NULL,
    run_id      INTEGER REFERENCES runs (id) ON DELETE SET NULL,
    received_at INTEGER NOT NULL,
    PRIMARY KEY (pipeline, forge, delivery_id)
);

CREATE TABLE run_logs (
    run_id INTEGER NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    seq    INTEGER NOT NULL,
    at     INTEGER NOT NULL,
    line   TEXT    NOT NULL,
    PRIMARY KEY (run_id, seq)
);
