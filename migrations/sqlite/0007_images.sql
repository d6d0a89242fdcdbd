-- A pipeline may build several images from one commit. A run and a deployment keep
-- every image they pushed or rolled out as a JSON object, image name -> repository@digest;
-- `image` and `digest` keep the first (by name). NULL on rows from before this
-- migration: their one image is `image` with `digest`.
ALTER TABLE runs ADD COLUMN images TEXT;
ALTER TABLE deployments ADD COLUMN images TEXT;
