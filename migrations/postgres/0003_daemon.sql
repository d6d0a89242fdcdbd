ALTER TABLE runs ADD COLUMN superseded_by BIGINT;

CREATE INDEX runs_by_state ON runs (state, pipeline, id);

CREATE TABLE deliveries (
    pipeline    TEXT    NOT NULL,
    forge       TEXT    NOT NULL,
    delivery_id TEXT    NOT NULL,
    status      BIGINT  NOT NULL,
    response    TEXT    NOT NULL,
    run_id      BIGINT  REFERENCES runs (id) ON DELETE SET NULL,
    received_at BIGINT  NOT NULL,
    PRIMARY KEY (pipeline, forge, delivery_id)
);

CREATE TABLE run_logs (
    run_id BIGINT  NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    seq    BIGINT  NOT NULL,
    at     BIGINT  NOT NULL,
    line   TEXT    NOT NULL,
    PRIMARY KEY (run_id, seq)
);
