-- Runs of a pipeline and their stages. A run is one pass for one commit; `kind`
-- says how far it goes (`build`: checkout, build, push). Later migrations add to
-- these tables; they never rename a column.
CREATE TABLE runs (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    pipeline     TEXT    NOT NULL,
    -- Counts per pipeline from 1; `{{ run.number }}` in tag templates.
    number       INTEGER NOT NULL,
    kind         TEXT    NOT NULL,
    -- What started it: `manual` from the command line.
    trigger      TEXT    NOT NULL,
    -- The ref the user asked for, if any (a branch, tag or commit id).
    requested    TEXT,
    commit_sha   TEXT,
    -- `running`, `succeeded` or `failed`.
    state        TEXT    NOT NULL,
    failed_stage TEXT,
    message      TEXT,
    image        TEXT,
    -- JSON array of the full references pushed.
    tags         TEXT,
    digest       TEXT,
    -- Milliseconds since the epoch.
    started_at   INTEGER NOT NULL,
    finished_at  INTEGER,
    UNIQUE (pipeline, number)
);

CREATE TABLE stages (
    run_id      INTEGER NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    -- Stage order within the run.
    position    INTEGER NOT NULL,
    name        TEXT    NOT NULL,
    state       TEXT    NOT NULL,
    started_at  INTEGER NOT NULL,
    duration_ms INTEGER NOT NULL,
    message     TEXT,
    PRIMARY KEY (run_id, position)
);

CREATE INDEX runs_by_pipeline ON runs (pipeline, number DESC);
