//! The few operating-system calls std does not offer, made through libc.
//! All of the crate's `unsafe` code is here.
//!
//! Signal handlers are needed even for the default "terminate" behaviour:
//! the kernel ignores SIGTERM and SIGINT sent to PID 1 unless it has
//! installed handlers, and in a `FROM scratch` image the app is PID 1.

use std::ffi::c_int;
use std::io;
use std::os::fd::{AsFd, AsRawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// Set by the signal handler; read by everyone who must react to shutdown.
static SHUTDOWN_REQUESTED: AtomicBool = AtomicBool::new(false);

/// Whether SIGTERM or SIGINT has arrived.
pub fn shutdown_requested() -> bool {
    SHUTDOWN_REQUESTED.load(Ordering::SeqCst)
}

/// Makes SIGTERM and SIGINT set [`shutdown_requested`] instead of killing
/// the process.
pub fn install_shutdown_handlers() -> io::Result<()> {
    zdd_signals::install(&[libc::SIGTERM, libc::SIGINT], on_shutdown_signal)
}

extern "C" fn on_shutdown_signal(_signal: c_int) {
    SHUTDOWN_REQUESTED.store(true, Ordering::SeqCst);
}

/// Waits up to `timeout` for `fd` to become readable (for a listening
/// socket: for a connection to accept). Returns whether it did; a signal
/// arriving meanwhile counts as "not yet", so the caller can look at
/// [`shutdown_requested`].
pub fn wait_readable(fd: impl AsFd, timeout: Duration) -> io::Result<bool> {
    let mut poll_fd = libc::pollfd {
        fd: fd.as_fd().as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    let timeout_ms = c_int::try_from(timeout.as_millis()).unwrap_or(c_int::MAX);
    // SAFETY: `poll_fd` is one valid `pollfd`, and the descriptor is kept
    // open by the borrow of `fd` for the duration of the call.
    let ready = unsafe { libc::poll(&mut poll_fd, 1, timeout_ms) };
    match ready {
        -1 => {
            let error = io::Error::last_os_error();
            if error.kind() == io::ErrorKind::Interrupted {
                Ok(false)
            } else {
                Err(error)
            }
        }
        0 => Ok(false),
        _ => Ok(true),
    }
}

/// The machine's host name (in a container: the container's), or
/// `"unknown"` if it cannot be had.
pub fn hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: the pointer and length describe `buf`, which outlives the call.
    let result = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if result != 0 {
        return "unknown".to_owned();
    }
    // POSIX does not promise a terminating NUL if the name was truncated.
    let len = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    let name = String::from_utf8_lossy(&buf[..len]);
    // The name goes into a response header, which must not contain control
    // characters; a real host name never does.
    if name.is_empty() || name.chars().any(char::is_control) {
        "unknown".to_owned()
    } else {
        name.into_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    #[test]
    fn hostname_is_not_empty() {
        assert!(!hostname().is_empty());
    }

    #[test]
    fn wait_readable_sees_a_pending_connection() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        assert!(!wait_readable(&listener, Duration::from_millis(10)).unwrap());
        let _client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        assert!(wait_readable(&listener, Duration::from_secs(5)).unwrap());
    }
}
