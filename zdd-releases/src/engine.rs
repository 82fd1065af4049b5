//! What the engine says about a service's releases: the images it holds,
//! the replicas that run, the images any container still uses; and
//! removing an image.

use std::collections::{BTreeMap, HashMap, HashSet};

use bollard::models::ImageSummary;
use bollard::query_parameters::{
    ListContainersOptionsBuilder, ListImagesOptionsBuilder, RemoveImageOptionsBuilder,
};
use bollard::Docker;
use zdd_core::service::Service;
use zdd_core::{docker, labels, Error, Result};

use crate::catalog::{Attempt, HeldImage};

/// The images zdd-build built for the service (`zdd.built-for`), and those
/// the run folders name that are still there, one per release.
pub async fn held_images(
    docker: &Docker,
    service: &str,
    attempts: &[Attempt],
) -> Result<Vec<HeldImage>> {
    let mut held: BTreeMap<String, HeldImage> = BTreeMap::new();
    let built_for = format!("{}={service}", labels::BUILT_FOR);
    for summary in images_filtered(docker, "label", &built_for).await? {
        for image in releases_of(&summary) {
            held.entry(image.release.clone()).or_insert(image);
        }
    }
    // Images built before zdd-build labelled them, or by hand with another
    // repository: the run folders know their reference.
    let named: HashSet<&str> = attempts.iter().filter_map(|a| a.image.as_deref()).collect();
    for reference in named {
        let release = reference.rsplit_once(':').map(|(_, tag)| tag);
        if release.is_some_and(|r| held.contains_key(r)) {
            continue;
        }
        for summary in images_filtered(docker, "reference", reference).await? {
            for image in releases_of(&summary) {
                held.entry(image.release.clone()).or_insert(image);
            }
        }
    }
    Ok(held.into_values().collect())
}

async fn images_filtered(docker: &Docker, key: &str, value: &str) -> Result<Vec<ImageSummary>> {
    let filters = HashMap::from([(key.to_owned(), vec![value.to_owned()])]);
    let options = ListImagesOptionsBuilder::default()
        .filters(&filters)
        .build();
    docker
        .list_images(Some(options))
        .await
        .map_err(|e| Error::docker(format!("listing the images with {key}={value}"), e))
}

/// The releases an image is tagged as: each `REPO:TAG` whose tag is the
/// start of its `zdd.context-hash` (zdd-build's tag), so another tag put
/// on the same image by hand is not taken for a release.
fn releases_of(summary: &ImageSummary) -> Vec<HeldImage> {
    let hash = summary.labels.get(labels::CONTEXT_HASH);
    let hex = hash.and_then(|h| h.strip_prefix("sha256:"));
    summary
        .repo_tags
        .iter()
        .filter_map(|reference| {
            let (_, tag) = reference.rsplit_once(':')?;
            hex.is_some_and(|hex| !tag.is_empty() && hex.starts_with(tag))
                .then(|| HeldImage {
                    release: tag.to_owned(),
                    image: reference.clone(),
                    image_id: summary.id.clone(),
                    context_hash: hash.cloned(),
                    created_ms: u64::try_from(summary.created).ok().map(|s| s * 1000),
                })
        })
        .collect()
}

/// Running replicas of the service, counted per release.
pub async fn replicas_by_release(
    docker: &Docker,
    service: &Service,
) -> Result<BTreeMap<String, usize>> {
    let mut counts = BTreeMap::new();
    for inspect in service.containers(docker, false).await? {
        let record = docker::container_record(&inspect, &service.name);
        if let Some(release) = record.release {
            *counts.entry(release).or_insert(0) += 1;
        }
    }
    Ok(counts)
}

/// The image ids any container on the engine was created from, running or
/// not: an image one of them uses is never pruned.
pub async fn image_ids_in_use(docker: &Docker) -> Result<HashSet<String>> {
    let options = ListContainersOptionsBuilder::default().all(true).build();
    let containers = docker
        .list_containers(Some(options))
        .await
        .map_err(|e| Error::docker("listing the containers", e))?;
    Ok(containers.into_iter().filter_map(|c| c.image_id).collect())
}

/// Removes the tag `image` (never forced: the engine refuses an image a
/// container uses, and an image with other tags keeps them).
pub async fn remove_image(docker: &Docker, image: &str) -> Result<()> {
    let options = RemoveImageOptionsBuilder::default()
        .force(false)
        .noprune(false)
        .build();
    match docker.remove_image(image, Some(options), None).await {
        Ok(_) => Ok(()),
        Err(e) if docker::is_not_found(&e) => Ok(()),
        Err(e) => Err(Error::docker(format!("removing image {image}"), e)),
    }
}
