-- Several `gantry serve` replicas may share one state database (PostgreSQL). Each
-- renews its row while it lives; a run records the replica executing it, so a run of
-- a replica whose row expired is known to be interrupted and is queued again.
ALTER TABLE runs ADD COLUMN replica TEXT;

CREATE TABLE replicas (
    id          TEXT    PRIMARY KEY,
    started_at  INTEGER NOT NULL,
    expires_at  INTEGER NOT NULL
);
