ALTER TABLE runs ADD COLUMN replica TEXT;

CREATE TABLE replicas (
    id          TEXT    PRIMARY KEY,
    started_at  BIGINT  NOT NULL,
    expires_at  BIGINT  NOT NULL
);
