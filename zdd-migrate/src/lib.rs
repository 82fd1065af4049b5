//! `zdd-migrate` (in progress).
