-- Deployments: which image digest was rolled out to which instances, kept as
-- history for `gantry status` (drift) and `gantry rollback`; pins that hold
-- automatic deploys after a rollback; and the per-pipeline deploy lease.

CREATE TABLE deployments (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    pipeline    TEXT    NOT NULL,
    -- Counts per pipeline from 1; `gantry rollback --to N` names one.
    number      INTEGER NOT NULL,
    -- The run this deployment is part of (kind `deploy`, `rollback` or `run`).
    run_id      INTEGER REFERENCES runs (id) ON DELETE SET NULL,
    kind        TEXT    NOT NULL,
    -- repository@digest, as pulled on every host.
    image       TEXT    NOT NULL,
    digest      TEXT    NOT NULL,
    commit_sha  TEXT,
    -- `running`, `succeeded` or `failed`.
    state       TEXT    NOT NULL,
    message     TEXT,
    started_at  INTEGER NOT NULL,
    finished_at INTEGER,
    UNIQUE (pipeline, number)
);

CREATE INDEX deployments_by_pipeline ON deployments (pipeline, number DESC);

-- What one deployment did to one instance.
CREATE TABLE deployment_instances (
    deployment_id   INTEGER NOT NULL REFERENCES deployments (id) ON DELETE CASCADE,
    service         TEXT    NOT NULL,
    instance        TEXT    NOT NULL,
    host            TEXT    NOT NULL,
    -- `updated`, `unchanged`, `failed`, `reverted` or `not_reached`.
    action          TEXT    NOT NULL,
    -- The digest the instance runs after this deployment (NULL: unknown).
    digest          TEXT,
    previous_digest TEXT,
    message         TEXT,
    finished_at     INTEGER NOT NULL,
    PRIMARY KEY (deployment_id, instance)
);

-- A pinned pipeline takes no automatic deploys until it is unpinned.
CREATE TABLE pins (
    pipeline  TEXT    PRIMARY KEY,
    digest    TEXT    NOT NULL,
    reason    TEXT    NOT NULL,
    pinned_at INTEGER NOT NULL
);

-- One deploy per pipeline at a time, across processes: the holder renews
-- `expires_at` while it works; a holder that died stops renewing and loses it.
CREATE TABLE leases (
    pipeline    TEXT    PRIMARY KEY,
    owner       TEXT    NOT NULL,
    acquired_at INTEGER NOT NULL,
    expires_at  INTEGER NOT NULL
);
