-- v3 reads and writes `title` only. The contract: drop `name`, which only
-- v1 and v2 use. `zdd-migrate contract` runs it once no replica of an
-- older release is left.
-- zdd: phase=contract
ALTER TABLE notes DROP COLUMN name;
