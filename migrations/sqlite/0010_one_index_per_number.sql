-- `runs_by_pipeline` and `deployments_by_pipeline` (pipeline, number DESC) repeated
-- the index of each table's UNIQUE (pipeline, number), which reads as well in either
-- direction: every row inserted wrote both, for runs in the transaction each
-- delivery's 202 waits for.
DROP INDEX IF EXISTS runs_by_pipeline;
DROP INDEX IF EXISTS deployments_by_pipeline;
