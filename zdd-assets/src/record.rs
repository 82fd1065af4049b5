//! The records `zdd-assets` writes (JSON Lines on stdout).
//!
//! `asset_release` describes one release; `publish`, `activate` and `list`
//! all write it, each with the fields it knows, so one `jq` filter reads
//! them all. `asset_prune` says what `prune` deleted (or, with
//! `--dry-run`, would delete). The schema is documented in the crate's
//! README.

use serde::Serialize;

use crate::rewrite::Warning;

pub const RELEASE: &str = "asset_release";
pub const PRUNE: &str = "asset_prune";

/// `"type": "asset_release"`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ReleaseRecord {
    /// `20250102T030405Z-<12 hex of the manifest's sha256>`.
    pub id: String,
    /// The asset root.
    pub root: String,
    /// Whether it is the live release after this command.
    pub live: bool,
    /// The release that was live before, when this command switched.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub previous: Option<String>,
    /// publish, activate: whether this command moved the live pointer.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub switched: Option<bool>,
    /// publish, list: the folder or `IMAGE:/path` it was published from.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// When it was published (RFC 3339, UTC).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub created: Option<String>,
    /// publish: the same build was published before, and its release was
    /// reused.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reused: Option<bool>,
    /// Files in the build, and their total size in bytes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub files: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bytes: Option<u64>,
    /// publish: files served from the pool (referenced, or bundler-hashed).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pooled: Option<u64>,
    /// publish: pool files this publish wrote, and their bytes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub new_files: Option<u64>,
    /// publish: pooled files that were already in the pool.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reused_files: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub new_bytes: Option<u64>,
    /// publish: contents served from the release only (pages, files
    /// nothing references, kept names) that this publish stored, and their
    /// bytes; an unchanged one is already stored and costs nothing.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stored_files: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stored_bytes: Option<u64>,
    /// list: each time it was live, oldest first; `until` is absent for
    /// the current period of the live release.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub live_periods: Option<Vec<Period>>,
    /// list: the release folder cannot be read (no `release.json`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub damaged: Option<bool>,
    /// publish: references left as written, and why.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub warnings: Option<Vec<Warning>>,
}

/// One stretch of time a release was live.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Period {
    pub from: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub until: Option<String>,
}

/// `"type": "asset_prune"`: one release or pool file deleted (or that
/// would be), or the summary that ends the output.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum PruneRecord {
    Release {
        id: String,
        /// When it stopped being live (absent: never live; its age counts
        /// from `created`).
        #[serde(skip_serializing_if = "Option::is_none")]
        live_until: Option<String>,
        created: String,
        dry_run: bool,
    },
    File {
        /// Its path in the pool.
        path: String,
        bytes: u64,
        dry_run: bool,
    },
    Summary {
        /// Releases kept, oldest first.
        kept: Vec<String>,
        releases: u64,
        /// Pool files deleted, and their bytes.
        files: u64,
        bytes: u64,
        /// Objects (contents served from releases only that no kept
        /// release has) deleted, and their bytes.
        objects: u64,
        object_bytes: u64,
        dry_run: bool,
    },
}
