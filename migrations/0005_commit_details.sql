-- What a person recognises a run by: the commit's first line and its author, read
-- from the repository when the commit is checked out (or copied from the run that
-- built the same commit, for a deploy).
ALTER TABLE runs ADD COLUMN commit_message TEXT;
ALTER TABLE runs ADD COLUMN commit_author TEXT;
