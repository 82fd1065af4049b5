-- v2: copy the names v1 wrote into `title`. Rows v1 writes during the
-- rollout are read through coalesce(title, name) until v1 is gone.
-- zdd: phase=data
UPDATE notes SET title = name WHERE title IS NULL;
