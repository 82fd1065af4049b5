//! The few operating-system calls std does not offer, made through libc.
//! All of the crate's `unsafe` code is here.
//!
//! - SIGTERM and SIGINT must end a run *with* its summary (a script stops
//!   the load with `kill`, a human with Ctrl-C), so they set a flag instead
//!   of killing the process. A second signal kills at once, for when the
//!   server hangs and the summary can wait.
//! - Whether an idle keep-alive connection was closed by the server can
//!   only be seen by peeking without blocking, which std cannot do in one
//!   call on a blocking socket.

use std::ffi::c_int;
use std::io;
use std::net::TcpStream;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};

/// Set by the signal handler.
static STOP_SIGNALLED: AtomicBool = AtomicBool::new(false);

const STOP_SIGNALS: [c_int; 2] = [libc::SIGTERM, libc::SIGINT];

/// Whether SIGTERM or SIGINT has arrived.
pub fn stop_signalled() -> bool {
    STOP_SIGNALLED.load(Ordering::SeqCst)
}

/// Makes the first SIGTERM or SIGINT set [`stop_signalled`] instead of
/// killing the process.
pub fn install_stop_handlers() -> io::Result<()> {
    zdd_signals::install(&STOP_SIGNALS, on_stop_signal)
}

extern "C" fn on_stop_signal(signal: c_int) {
    if STOP_SIGNALLED.swap(true, Ordering::SeqCst) {
        // SAFETY: signal(2) and raise(3) are async-signal-safe; with the
        // default action restored, raising the signal ends the process as
        // if no handler had been installed.
        unsafe {
            libc::signal(signal, libc::SIG_DFL);
            libc::raise(signal);
        }
    }
}

/// Runs `f` with SIGTERM and SIGINT blocked in the calling thread, so that
/// threads spawned by `f` inherit the block and the signals go to the
/// calling thread only: the workers' socket calls are then never
/// interrupted, and the thread that watches [`stop_signalled`] is the one
/// woken.
pub fn with_stop_signals_blocked<T>(f: impl FnOnce() -> T) -> T {
    // SAFETY: the sets are initialised by sigemptyset before use, and
    // pthread_sigmask only reads `block` and writes `previous`.
    unsafe {
        let mut block: libc::sigset_t = std::mem::zeroed();
        let mut previous: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut block);
        for signal in STOP_SIGNALS {
            libc::sigaddset(&mut block, signal);
        }
        let blocked = libc::pthread_sigmask(libc::SIG_BLOCK, &block, &mut previous) == 0;
        let result = f();
        if blocked {
            libc::pthread_sigmask(libc::SIG_SETMASK, &previous, std::ptr::null_mut());
        }
        result
    }
}

/// Whether an idle keep-alive connection can still carry a request: the
/// server has not closed it, and has sent nothing unasked. Does not block.
pub fn idle_connection_usable(stream: &TcpStream) -> bool {
    let mut byte = 0u8;
    // SAFETY: the buffer is one valid byte that outlives the call, and the
    // descriptor is kept open by the borrow of `stream`.
    let n = unsafe {
        libc::recv(
            stream.as_raw_fd(),
            (&mut byte as *mut u8).cast(),
            1,
            libc::MSG_PEEK | libc::MSG_DONTWAIT,
        )
    };
    match n {
        // 0: the server closed it; more: bytes nobody asked for.
        0.. => false,
        _ => matches!(
            io::Error::last_os_error().kind(),
            io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::net::TcpListener;
    use std::time::{Duration, Instant};

    #[test]
    fn idle_connection_checks() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (mut server, _) = listener.accept().unwrap();
        assert!(idle_connection_usable(&client));

        server.write_all(b"x").unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        while idle_connection_usable(&client) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(1));
        }
        assert!(!idle_connection_usable(&client), "unasked bytes");

        let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server, _) = listener.accept().unwrap();
        drop(server);
        let deadline = Instant::now() + Duration::from_secs(5);
        while idle_connection_usable(&client) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(1));
        }
        assert!(!idle_connection_usable(&client), "closed by the server");
    }
}
