-- v3: v1 replicas kept writing rows with `name` only until v2's rollout
-- retired them, after v2's backfill had run. Now only v2 runs (it writes
-- both columns), so this second backfill leaves no row behind, and the
-- contract that follows loses nothing.
-- zdd: phase=data
UPDATE notes SET title = name WHERE title IS NULL;
