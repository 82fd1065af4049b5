//! `zdd-assets` (in progress).
