-- Who executes a run: `daemon` for runs `gantry serve` took from the queue. Only
-- those are recovered (marked interrupted and queued again) when a daemon starts;
-- a run a `gantry` command is doing in the foreground is left alone.
ALTER TABLE runs ADD COLUMN runner TEXT;
