-- What a person recognises a run by: the commit's first line and its author, read
-- from the repository when the commit is checked out (or copied from the run that
-- built the same commit, for a deploy).
ALTER TABLE runs ADD COLUMN commit_message TEXT;
ALTER TABLE runs ADD COLUMN commit_author TEXT;

-- The last run to end, for readers that must not be shown a status older than it.
CREATE INDEX runs_by_finished ON runs (finished_at);

-- A pipeline's runs newest first, a page at a time (`id < before`).
CREATE INDEX runs_by_pipeline_id ON runs (pipeline, id);
