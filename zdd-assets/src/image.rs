//! Publishing from a built image: `IMAGE:/path`.
//!
//! The build is copied out through the Docker API the way `docker cp`
//! does it, without running anything: a container is *created* from the
//! image (never started; no network), its folder is read as a tar
//! archive, and the container is removed whatever happens. The image
//! needs no shell or binary, so a `FROM scratch` image holding only the
//! build works. The engine never pulls on create, so a missing image is a
//! usage error.
//!
//! The archive is unpacked into a temporary folder with the same rules as
//! a folder source: regular files and folders only. A symbolic link, a
//! hard link to anything but an earlier file of the folder, or a path that
//! would land outside the folder (`..`, absolute), is refused before the
//! asset root is touched; a hard link within the folder is unpacked as a
//! copy of its file, as a folder's hard links are published. The folder is then published like any other,
//! which is why an image and the folder it was built from give the same
//! release.

use std::collections::HashMap;
use std::io::{self, Read};
use std::path::{Component, Path, PathBuf};
use std::sync::mpsc;

use bollard::models::ContainerCreateBody;
use bollard::query_parameters::{
    DownloadFromContainerOptionsBuilder, RemoveContainerOptionsBuilder,
};
use futures_util::StreamExt;
use zdd_core::cli::Progress;
use zdd_core::docker::{self, Docker};
use zdd_core::{Error, Result};

use crate::source::TempDir;

/// `IMAGE:/path` split, when `source` has that form.
pub fn parse_source(source: &str) -> Option<(&str, &str)> {
    let at = source.find(":/")?;
    let (image, path) = (&source[..at], &source[at + 1..]);
    (!image.is_empty()).then_some((image, path))
}

/// Copies `path` out of `image` into a temporary folder.
pub async fn extract(image: &str, path: &str, progress: Progress) -> Result<TempDir> {
    let path = normalise(path)?;
    let docker = docker::connect().await?;
    let body = ContainerCreateBody {
        image: Some(image.to_owned()),
        // Never run; the engine only wants a command to create it.
        cmd: Some(vec!["zdd-assets-copy".into()]),
        network_disabled: Some(true),
        labels: Some(HashMap::from([
            ("zdd.oneoff".to_string(), "true".to_string()),
            ("zdd.assets.copy".to_string(), "1".to_string()),
        ])),
        ..Default::default()
    };
    let created = match docker.create_container(None, body).await {
        Ok(created) => created,
        Err(e) if docker::is_not_found(&e) => {
            return Err(Error::Usage(format!(
                "no image `{image}` on this engine (zdd-assets never pulls; build or load it first)"
            )))
        }
        Err(e) => {
            return Err(Error::docker(
                format!("creating a container from {image}"),
                e,
            ))
        }
    };
    progress.info(format_args!("copying {path} out of {image}"));
    let result = copy_out(&docker, &created.id, image, &path).await;
    let remove = RemoveContainerOptionsBuilder::default()
        .force(true)
        .v(true)
        .build();
    if let Err(e) = docker.remove_container(&created.id, Some(remove)).await {
        if !docker::is_not_found(&e) {
            progress.warn(format_args!(
                "could not remove the copy container {}: {}",
                &created.id[..12.min(created.id.len())],
                docker::describe_error(&e)
            ));
        }
    }
    result
}

/// `/usr/share/nginx/html/` → `/usr/share/nginx/html`; the image's root
/// itself is refused (the archive of `/` is the whole file system).
fn normalise(path: &str) -> Result<String> {
    let trimmed = path.trim_end_matches('/');
    if trimmed.is_empty() || !path.starts_with('/') {
        return Err(Error::Usage(format!(
            "`{path}`: give the folder inside the image that holds the build, e.g. IMAGE:/usr/share/nginx/html"
        )));
    }
    Ok(trimmed.to_owned())
}

async fn copy_out(docker: &Docker, id: &str, image: &str, path: &str) -> Result<TempDir> {
    let dir = TempDir::new("image")?;
    let options = DownloadFromContainerOptionsBuilder::default()
        .path(path)
        .build();
    let mut stream = docker.download_from_container(id, Some(options));
    let (tx, rx) = mpsc::sync_channel::<Vec<u8>>(16);
    let target = dir.path.clone();
    let shown = format!("{image}:{path}");
    let unpacker = std::thread::spawn(move || unpack(ChannelReader::new(rx), &target, &shown));
    let mut docker_error = None;
    while let Some(chunk) = stream.next().await {
        match chunk {
            Ok(bytes) => {
                if tx.send(bytes.to_vec()).is_err() {
                    break; // the unpacker stopped: its error says why
                }
            }
            Err(e) => {
                docker_error = Some(e);
                break;
            }
        }
    }
    drop(tx);
    let unpacked = unpacker
        .join()
        .unwrap_or_else(|_| Err(Error::Failed("the archive unpacker panicked".into())));
    if let Some(e) = docker_error {
        if docker::is_not_found(&e) {
            return Err(Error::Usage(format!("image {image} has no {path}")));
        }
        return Err(Error::docker(format!("copying {path} out of {image}"), e));
    }
    unpacked?;
    Ok(dir)
}

/// The parts of an archive path; `..` or an absolute path is refused.
fn parts(path: &Path, shown: &str) -> Result<Vec<std::ffi::OsString>> {
    let mut parts = Vec::new();
    for component in path.components() {
        match component {
            Component::Normal(part) => parts.push(part.to_owned()),
            Component::CurDir => {}
            _ => {
                return Err(Error::Usage(format!(
                    "{shown}: the archive entry {} escapes the folder",
                    path.display()
                )))
            }
        }
    }
    Ok(parts)
}

/// Unpacks the archive of one folder into `target`, stripping the folder's
/// own name from every entry.
fn unpack(reader: impl Read, target: &Path, shown: &str) -> Result<()> {
    let mut archive = tar::Archive::new(reader);
    let entries = archive
        .entries()
        .map_err(|e| Error::Failed(format!("reading the archive of {shown}: {e}")))?;
    let mut top: Option<PathBuf> = None;
    for entry in entries {
        let mut entry =
            entry.map_err(|e| Error::Failed(format!("reading the archive of {shown}: {e}")))?;
        let path = entry
            .path()
            .map_err(|e| Error::Failed(format!("reading the archive of {shown}: {e}")))?
            .into_owned();
        let kind = entry.header().entry_type();
        if kind.is_pax_global_extensions() {
            continue;
        }
        let components = parts(&path, shown)?;
        let Some(first) = components.first() else {
            continue;
        };
        match &top {
            None => {
                if !kind.is_dir() {
                    return Err(Error::Usage(format!("{shown} is not a folder")));
                }
                top = Some(PathBuf::from(first));
                continue;
            }
            Some(top) if Path::new(first) != top.as_path() => {
                return Err(Error::Usage(format!(
                    "{shown}: the archive entry {} is outside the folder",
                    path.display()
                )));
            }
            Some(_) => {}
        }
        let rel: PathBuf = components[1..].iter().collect();
        let shown_entry = format!("{shown}/{}", rel.display());
        let link = entry.link_name().ok().flatten().map(|l| l.into_owned());
        if kind.is_symlink() {
            return Err(Error::Usage(format!(
                "the source has a symbolic link: {shown_entry} -> {}; zdd-assets publishes \
                 regular files only",
                link.map(|l| l.display().to_string()).unwrap_or_default()
            )));
        }
        let dest = target.join(&rel);
        if kind.is_hard_link() {
            // Another name of a file earlier in the archive: a file of its own.
            let link = link.unwrap_or_default();
            let linked = parts(&link, shown)?;
            let from = target.join(linked.iter().skip(1).collect::<PathBuf>());
            if linked.first() != Some(first) || linked.len() < 2 || !from.is_file() {
                return Err(Error::Usage(format!(
                    "the source has a hard link {shown_entry} to {}, which is not a file of \
                     the folder",
                    link.display()
                )));
            }
            std::fs::copy(&from, &dest)
                .map_err(|e| Error::Failed(format!("unpacking {shown_entry}: {e}")))?;
            continue;
        }
        if kind.is_dir() {
            std::fs::create_dir_all(&dest)
                .map_err(|e| Error::Failed(format!("creating {}: {e}", dest.display())))?;
        } else if kind.is_file() || kind == tar::EntryType::Continuous {
            if let Some(parent) = dest.parent() {
                std::fs::create_dir_all(parent)
                    .map_err(|e| Error::Failed(format!("creating {}: {e}", parent.display())))?;
            }
            let mut out = std::fs::File::create(&dest)
                .map_err(|e| Error::Failed(format!("creating {}: {e}", dest.display())))?;
            io::copy(&mut entry, &mut out)
                .map_err(|e| Error::Failed(format!("unpacking {shown_entry}: {e}")))?;
        } else {
            return Err(Error::Usage(format!(
                "the source has {shown_entry}, which is neither a regular file nor a folder"
            )));
        }
    }
    if top.is_none() {
        return Err(Error::Usage(format!("{shown}: the archive is empty")));
    }
    Ok(())
}

/// A blocking reader over chunks sent from the async side.
struct ChannelReader {
    rx: mpsc::Receiver<Vec<u8>>,
    chunk: Vec<u8>,
    at: usize,
}

impl ChannelReader {
    fn new(rx: mpsc::Receiver<Vec<u8>>) -> Self {
        ChannelReader {
            rx,
            chunk: Vec::new(),
            at: 0,
        }
    }
}

impl Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.at >= self.chunk.len() {
            match self.rx.recv() {
                Ok(chunk) => {
                    self.chunk = chunk;
                    self.at = 0;
                }
                Err(_) => return Ok(0),
            }
        }
        let n = buf.len().min(self.chunk.len() - self.at);
        buf[..n].copy_from_slice(&self.chunk[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_image_sources() {
        assert_eq!(parse_source("web:v1:/site"), Some(("web:v1", "/site")));
        assert_eq!(
            parse_source("localhost:5000/web:v1:/usr/share/html"),
            Some(("localhost:5000/web:v1", "/usr/share/html"))
        );
        assert_eq!(parse_source("web:/site"), Some(("web", "/site")));
        assert_eq!(parse_source("./dist"), None);
        assert_eq!(parse_source(":/x"), None);
    }

    fn archive(entries: &[(&str, tar::EntryType, &[u8])]) -> Vec<u8> {
        let mut builder = tar::Builder::new(Vec::new());
        for (path, kind, data) in entries {
            let mut header = tar::Header::new_gnu();
            header.set_entry_type(*kind);
            header.set_size(data.len() as u64);
            header.set_mode(0o644);
            if *kind == tar::EntryType::Symlink {
                header.set_link_name("/etc/passwd").unwrap();
                header.set_size(0);
            }
            if *kind == tar::EntryType::Link {
                header
                    .set_link_name(std::str::from_utf8(data).unwrap())
                    .unwrap();
                header.set_size(0);
            }
            // `set_path` refuses `..`; write the name field directly.
            let name = &mut header.as_old_mut().name;
            name[..path.len()].copy_from_slice(path.as_bytes());
            header.set_cksum();
            let body: &[u8] = if *kind == tar::EntryType::Link {
                b""
            } else {
                data
            };
            builder.append(&header, body).unwrap();
        }
        builder.into_inner().unwrap()
    }

    #[test]
    fn unpacks_a_folder_without_its_name() {
        let bytes = archive(&[
            ("site/", tar::EntryType::Directory, b""),
            ("site/index.html", tar::EntryType::Regular, b"<p>hi"),
            ("site/css/a.css", tar::EntryType::Regular, b"a{}"),
            // A hard link is another file with the same content.
            ("site/css/b.css", tar::EntryType::Link, b"site/css/a.css"),
        ]);
        let dir = TempDir::new("unpack-test").unwrap();
        unpack(&bytes[..], &dir.path, "img:/site").unwrap();
        assert_eq!(std::fs::read(dir.path.join("css/b.css")).unwrap(), b"a{}");
        assert_eq!(
            std::fs::read(dir.path.join("index.html")).unwrap(),
            b"<p>hi"
        );
        assert_eq!(std::fs::read(dir.path.join("css/a.css")).unwrap(), b"a{}");
    }

    #[test]
    fn refuses_links_and_escapes() {
        for (entries, expected) in [
            (
                vec![
                    ("site/", tar::EntryType::Directory, &b""[..]),
                    ("site/x", tar::EntryType::Symlink, b""),
                ],
                "symbolic link",
            ),
            (
                vec![
                    ("site/", tar::EntryType::Directory, &b""[..]),
                    ("site/../../evil", tar::EntryType::Regular, b"x"),
                ],
                "escapes",
            ),
            (
                vec![("index.html", tar::EntryType::Regular, &b"x"[..])],
                "not a folder",
            ),
            (
                vec![
                    ("site/", tar::EntryType::Directory, &b""[..]),
                    ("site/passwd", tar::EntryType::Link, b"etc/passwd"),
                ],
                "not a file of the folder",
            ),
        ] {
            let bytes = archive(&entries);
            let dir = TempDir::new("unpack-bad").unwrap();
            let err = unpack(&bytes[..], &dir.path, "img:/site").unwrap_err();
            assert!(err.to_string().contains(expected), "{err}");
            assert_eq!(err.exit_code(), 2);
            assert!(!dir.path.parent().unwrap().join("evil").exists());
        }
    }
}
