//! `releases/ID/manifest.json`: what a release is made of.
//!
//! Build path → hashed path (when served from the pool), sha256, size and
//! Subresource Integrity of every file as served. Its own sha256 names the
//! release, so the same build published again finds its release. `prune`
//! reads the manifests of the releases it keeps to know which pool files
//! and stored contents are still needed.

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;

use serde::{Deserialize, Serialize};
use zdd_core::{Error, Result};

use crate::root::io_failed;

/// `releases/ID/manifest.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub format: u32,
    pub files: BTreeMap<String, ManifestEntry>,
}

/// One file of a release.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestEntry {
    /// Its path in the pool (and URL path), when it is served from there:
    /// `css/app-<hash>.css`, or its own path for a bundler-hashed name.
    /// Absent for files served only from the release (pages, files nothing
    /// references, names kept with `--keep-name`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hashed: Option<String>,
    pub sha256: String,
    pub size: u64,
    pub integrity: String,
}

impl Manifest {
    pub fn read(path: &Path) -> Result<Manifest> {
        let bytes = fs::read(path).map_err(|e| io_failed("reading", path, e))?;
        serde_json::from_slice(&bytes)
            .map_err(|e| Error::Failed(format!("{} is damaged: {e}", path.display())))
    }

    /// The bytes written to disk (and hashed into the release id).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut bytes = serde_json::to_vec(self).expect("a manifest serializes");
        bytes.push(b'\n');
        bytes
    }
}
