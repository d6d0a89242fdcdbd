ALTER TABLE runs ADD COLUMN commit_message TEXT;
ALTER TABLE runs ADD COLUMN commit_author TEXT;

CREATE INDEX runs_by_finished ON runs (finished_at);

CREATE INDEX runs_by_pipeline_id ON runs (pipeline, id);
