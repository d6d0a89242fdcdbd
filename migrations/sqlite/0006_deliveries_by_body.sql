-- A delivery is known by its id together with a digest of its signed body: the id is
-- an unsigned header, so a real delivery whose id someone used first (with another
-- captured body) must not be answered as if it were that one. A captured body sent
-- again with a fresh id is a new delivery; coalescing and "never older over newer"
-- keep it from doing harm. Rows from before this migration have an empty digest.
CREATE TABLE deliveries_by_body (
    pipeline    TEXT    NOT NULL,
    forge       TEXT    NOT NULL,
    delivery_id TEXT    NOT NULL,
    -- Hex SHA-256 of the raw body as received (and verified).
    body_sha256 TEXT    NOT NULL,
    status      INTEGER NOT NULL,
    response    TEXT    NOT NULL,
    run_id      INTEGER REFERENCES runs (id) ON DELETE SET NULL,
    received_at INTEGER NOT NULL,
    PRIMARY KEY (pipeline, forge, delivery_id, body_sha256)
);

INSERT INTO deliveries_by_body
    (pipeline, forge, delivery_id, body_sha256, status, response, run_id, received_at)
SELECT pipeline, forge, delivery_id, '', status, response, run_id, received_at
FROM deliveries;

DROP TABLE deliveries;
ALTER TABLE deliveries_by_body RENAME TO deliveries;

-- Pruning keeps the newest deliveries that no longer point at a run.
CREATE INDEX deliveries_by_age ON deliveries (pipeline, run_id, received_at);
