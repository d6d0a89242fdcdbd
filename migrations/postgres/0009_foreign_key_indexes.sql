-- Deleting a run (pruning old runs) sets the rows that point at it to NULL; without
-- an index on the column, each deleted run read the whole table, and a prune of a
-- few thousand runs held the write lock for a tenth of a second or more.
CREATE INDEX deliveries_by_run ON deliveries (run_id);
CREATE INDEX deployments_by_run ON deployments (run_id);
