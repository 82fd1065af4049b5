//! One deploy of a service at a time, on the whole host.
//!
//! The lock is an `flock(2)` on `STATE/locks/SERVICE[.PROJECT]-ENGINE.lock`:
//! per service and per Docker engine (the engine's id is part of the name,
//! so a `DOCKER_HOST` pointing elsewhere is another lock), and in the
//! host's state directory, so the working directory does not matter.
//!
//! The caller opens the file (`exec 9>>"$lock"` in zdd-deploy) and this
//! tool locks that descriptor: an flock belongs to the open file
//! description, which the caller still holds when this process has exited.
//! zdd-deploy closes the descriptor for every child tool (`9>&-`), so the
//! lock is held by the deploy alone and the kernel releases it when the
//! deploy dies, however it dies. Beside the lock, `….owner` says who holds
//! it (pid, run, user, host, folder), for the refusal message.

use std::fs;
use std::os::fd::{AsRawFd, RawFd};
use std::path::{Path, PathBuf};
use std::thread;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use zdd_core::cli::{Outcome, Progress};
use zdd_core::{docker, time, Error, Result};

use crate::state::{self, file_safe};
use crate::ServiceArgs;

/// `zdd-run lock`.
#[derive(Debug, Clone, clap::Args)]
pub struct LockArgs {
    /// The open file descriptor of the lock file (from `zdd-run lock-file`).
    #[arg(long, value_name = "FD")]
    pub fd: RawFd,
    /// The service, for messages.
    #[arg(long)]
    pub service: String,
    /// Wait up to this many seconds for another deploy to finish (0: fail
    /// at once).
    #[arg(long, value_name = "SECONDS", default_value_t = 0)]
    pub wait: u64,
    /// The process that holds the lock once it is taken (zdd-deploy's `$$`).
    #[arg(long)]
    pub pid: u32,
    /// The run taking it.
    #[arg(long)]
    pub run: Option<String>,
}

/// Who holds a lock, as written beside it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Owner {
    pub pid: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run: Option<String>,
    pub user: String,
    pub host: String,
    pub cwd: String,
    pub since: String,
}

/// How often a waiting deploy tries the lock again.
const RETRY: Duration = Duration::from_millis(200);

/// The lock file of `service` on the engine `DOCKER_HOST` names, its
/// folder created.
pub async fn lock_file(state_dir: &Path, service: &ServiceArgs) -> Result<PathBuf> {
    let docker = docker::connect().await?;
    let info = docker
        .info()
        .await
        .map_err(|e| Error::docker("asking the engine for its id", e))?;
    let engine = info.id.unwrap_or_else(|| "engine".into());
    let dir = state_dir.join("locks");
    state::private_dir(&dir)?;
    Ok(dir.join(lock_name(
        &service.service,
        service.project.as_deref(),
        &engine,
    )))
}

/// `api-ENGINE12.lock`, `api.shop-ENGINE12.lock`: readable, one per
/// service, project and engine.
pub fn lock_name(service: &str, project: Option<&str>, engine: &str) -> String {
    let engine: String = file_safe(engine).chars().filter(|c| *c != '_').collect();
    let engine = &engine[..engine.len().min(12)];
    match project {
        None => format!("{}-{engine}.lock", file_safe(service)),
        Some(project) => format!(
            "{}.{}-{engine}.lock",
            file_safe(service),
            file_safe(project)
        ),
    }
}

/// Takes the lock on `args.fd`, waiting up to `args.wait` seconds.
pub fn take(args: &LockArgs, progress: Progress) -> Result<Outcome> {
    let path = fs::read_link(format!("/proc/self/fd/{}", args.fd)).map_err(|e| {
        Error::Usage(format!(
            "file descriptor {} is not open on the lock file: {e}",
            args.fd
        ))
    })?;
    let wait = Duration::from_secs(args.wait);
    let holder = Holder {
        pid: args.pid,
        run: args.run.clone(),
    };
    acquire(args.fd, &path, &args.service, wait, holder, progress)?;
    Ok(Outcome::Success)
}

/// Takes the lock of `service` for this process, waiting up to `wait`:
/// held until the returned file is dropped or the process ends. For a
/// tool that changes a service outside a deploy (`zdd-releases prune`).
pub async fn hold(service: &ServiceArgs, wait: Duration, progress: Progress) -> Result<fs::File> {
    let path = lock_file(&state::state_dir()?, service).await?;
    let file = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .map_err(|e| Error::Usage(format!("cannot open the lock {}: {e}", path.display())))?;
    let holder = Holder {
        pid: std::process::id(),
        run: None,
    };
    acquire(
        file.as_raw_fd(),
        &path,
        &service.service,
        wait,
        holder,
        progress,
    )?;
    Ok(file)
}

/// Who takes a lock: the process that holds it afterwards, and its run.
struct Holder {
    pid: u32,
    run: Option<String>,
}

fn acquire(
    fd: RawFd,
    path: &Path,
    service: &str,
    wait: Duration,
    holder: Holder,
    progress: Progress,
) -> Result<()> {
    let owner_path = owner_file(path);
    let deadline = Instant::now() + wait;
    let mut told = false;
    loop {
        if try_lock(fd)? {
            let owner = Owner {
                pid: holder.pid,
                run: holder.run,
                user: time::user(),
                host: time::host(),
                cwd: std::env::current_dir()
                    .map(|d| d.display().to_string())
                    .unwrap_or_default(),
                since: time::rfc3339(time::now_ms()),
            };
            write_owner(&owner_path, &owner)?;
            return Ok(());
        }
        let holder = describe_settled_holder(&owner_path);
        if Instant::now() >= deadline {
            return Err(Error::Usage(format!(
                "another deploy of {service} is running: {holder} (lock {}); wait for it, or pass --lock-wait SECONDS",
                path.display()
            )));
        }
        if !told {
            progress.info(format_args!(
                "waiting up to {}s for another deploy of {service}: {holder}",
                wait.as_secs()
            ));
            told = true;
        }
        thread::sleep(RETRY);
    }
}

/// How long a refused deploy waits for the holder's owner file: the
/// holder writes it right after its flock succeeds, so a deploy refused in
/// that instant would otherwise name no holder, or the previous one.
const OWNER_SETTLE: Duration = Duration::from_secs(1);

/// Writes the owner file whole or not at all (a temporary file renamed over
/// it), so a reader never sees it half written.
fn write_owner(owner_path: &Path, owner: &Owner) -> Result<()> {
    let text = serde_json::to_string(owner).expect("an owner serializes") + "\n";
    let mut temporary = owner_path.as_os_str().to_os_string();
    temporary.push(format!(".{}", std::process::id()));
    let temporary = PathBuf::from(temporary);
    fs::write(&temporary, text)
        .and_then(|()| fs::rename(&temporary, owner_path))
        .map_err(|e| Error::Failed(format!("writing {}: {e}", owner_path.display())))
}

/// The holder as [`describe_holder`] says, once the owner file names a
/// live process or [`OWNER_SETTLE`] has passed.
fn describe_settled_holder(owner_path: &Path) -> String {
    let deadline = Instant::now() + OWNER_SETTLE;
    while Instant::now() < deadline {
        match read_owner(owner_path) {
            Some(owner) if process_alive(owner.pid) => break,
            _ => thread::sleep(Duration::from_millis(20)),
        }
    }
    describe_holder(owner_path)
}

fn read_owner(owner_path: &Path) -> Option<Owner> {
    fs::read_to_string(owner_path)
        .ok()
        .and_then(|text| serde_json::from_str::<Owner>(&text).ok())
}

/// `LOCK.owner` beside `LOCK`.
fn owner_file(lock: &Path) -> PathBuf {
    let mut name = lock.file_name().unwrap_or_default().to_os_string();
    name.push(".owner");
    lock.with_file_name(name)
}

/// `flock(fd, LOCK_EX | LOCK_NB)`: whether it was taken.
fn try_lock(fd: RawFd) -> Result<bool> {
    // SAFETY: flock(2) on a descriptor the caller says is open; a bad one
    // is reported as EBADF, not undefined behaviour.
    let rc = unsafe { libc::flock(fd, libc::LOCK_EX | libc::LOCK_NB) };
    if rc == 0 {
        return Ok(true);
    }
    let error = std::io::Error::last_os_error();
    match error.raw_os_error() {
        Some(libc::EWOULDBLOCK) => Ok(false),
        Some(libc::EINTR) => Ok(false),
        _ => Err(Error::Usage(format!(
            "cannot lock file descriptor {fd}: {error}"
        ))),
    }
}

/// The holder, from the owner file, and whether its process still lives.
pub fn describe_holder(owner_path: &Path) -> String {
    match read_owner(owner_path) {
        None => "a deploy that wrote no owner file".into(),
        Some(owner) => {
            let run = owner
                .run
                .as_deref()
                .map(|r| format!(" run {r},"))
                .unwrap_or_default();
            let alive = if process_alive(owner.pid) {
                ""
            } else {
                " (that process is gone; a process it started still holds the lock)"
            };
            format!(
                "pid {}{alive},{run} {}@{} from {}, since {}",
                owner.pid, owner.user, owner.host, owner.cwd, owner.since
            )
        }
    }
}

/// Whether a process with this pid exists (kill(pid, 0)).
pub(crate) fn process_alive(pid: u32) -> bool {
    let Ok(pid) = i32::try_from(pid) else {
        return false;
    };
    if pid <= 0 {
        return false;
    }
    // SAFETY: signal 0 only checks that the process exists.
    let rc = unsafe { libc::kill(pid, 0) };
    rc == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;

    #[test]
    fn lock_names_are_per_service_project_and_engine() {
        let engine = "ABCD:EFGH:IJKL:MNOP:QRST:UVWX";
        assert_eq!(lock_name("api", None, engine), "api-ABCDEFGHIJKL.lock");
        assert_eq!(
            lock_name("api", Some("shop"), engine),
            "api.shop-ABCDEFGHIJKL.lock"
        );
        assert_ne!(
            lock_name("api", None, engine),
            lock_name("api", None, "ZZZZ:EFGH")
        );
        assert_eq!(lock_name("a/b", None, "e"), "a_b-e.lock");
    }

    #[test]
    fn a_held_lock_is_refused_and_free_once_its_description_closes() {
        let dir = std::env::temp_dir().join(format!("zdd-run-lock-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let path = dir.join("api-e.lock");
        let first = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .unwrap();
        let second = fs::OpenOptions::new().append(true).open(&path).unwrap();
        assert!(try_lock(first.as_raw_fd()).unwrap());
        assert!(
            !try_lock(second.as_raw_fd()).unwrap(),
            "one holder at a time"
        );
        drop(first);
        assert!(try_lock(second.as_raw_fd()).unwrap(), "released on close");
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_holder_is_named_and_a_dead_one_is_told_apart() {
        let dir = std::env::temp_dir().join(format!("zdd-run-owner-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let path = dir.join("api.lock.owner");
        let owner = Owner {
            pid: std::process::id(),
            run: Some("api-1".into()),
            user: "ann".into(),
            host: "box".into(),
            cwd: "/srv/app".into(),
            since: "2026-12-01T00:00:00.000Z".into(),
        };
        fs::write(&path, serde_json::to_string(&owner).unwrap()).unwrap();
        let text = describe_holder(&path);
        assert!(
            text.contains(&format!("pid {}", std::process::id())),
            "{text}"
        );
        assert!(
            text.contains("run api-1") && text.contains("ann@box from /srv/app"),
            "{text}"
        );
        assert!(!text.contains("gone"), "{text}");
        let dead = Owner {
            pid: i32::MAX as u32,
            ..owner
        };
        fs::write(&path, serde_json::to_string(&dead).unwrap()).unwrap();
        assert!(describe_holder(&path).contains("that process is gone"));
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_refusal_in_the_instant_after_the_flock_waits_for_the_owner_file() {
        let dir = std::env::temp_dir().join(format!("zdd-run-settle-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let path = dir.join("api.lock.owner");
        let owner = Owner {
            pid: std::process::id(),
            run: None,
            user: "ann".into(),
            host: "box".into(),
            cwd: "/srv/app".into(),
            since: "2026-12-01T00:00:00.000Z".into(),
        };
        let writer = {
            let path = path.clone();
            thread::spawn(move || {
                thread::sleep(Duration::from_millis(150));
                write_owner(&path, &owner).unwrap();
            })
        };
        let text = describe_settled_holder(&path);
        writer.join().unwrap();
        assert!(
            text.contains(&format!("pid {}", std::process::id())),
            "{text}"
        );
        fs::remove_dir_all(&dir).unwrap();
    }
}
