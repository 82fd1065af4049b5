-- v2 renames `name` to `title` by expand/contract. This is the expand:
-- a new nullable column, which v1 (writing `name` only) does not notice.
-- v2 writes both and reads coalesce(title, name).
-- zdd: phase=expand
ALTER TABLE notes ADD COLUMN title text;
