-- v1: the notes table. Its code writes and reads `name`.
-- zdd: phase=expand
CREATE TABLE notes (
    id bigserial PRIMARY KEY,
    name text,
    created_at timestamptz NOT NULL DEFAULT now()
);
