ALTER TABLE deliveries ADD COLUMN body_sha256 TEXT NOT NULL DEFAULT '';
ALTER TABLE deliveries DROP CONSTRAINT deliveries_pkey;
ALTER TABLE deliveries ADD PRIMARY KEY (pipeline, forge, delivery_id, body_sha256);

CREATE INDEX deliveries_by_age ON deliveries (pipeline, run_id, received_at);
