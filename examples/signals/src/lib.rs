//! Installing a signal handler, the one `unsafe` call the example app and
//! the load generator share. std has no API for it; both programs need it
//! to turn SIGTERM and SIGINT into a flag they act on (a graceful shutdown,
//! a summary), and the example app also because the kernel ignores those
//! signals sent to PID 1 (the app in a `FROM scratch` image) unless a
//! handler is installed.
//!
//! What the handler does stays with each program; it must only call
//! async-signal-safe functions (storing to an atomic is).

use std::ffi::c_int;
use std::io;

/// Installs `handler` for each of `signals`, with `SA_RESTART`: system
/// calls the signal interrupts are restarted, so the rest of the program
/// only sees what the handler records, never stray `EINTR` errors.
pub fn install(signals: &[c_int], handler: extern "C" fn(c_int)) -> io::Result<()> {
    for &signal in signals {
        // SAFETY: the zeroed `sigaction` is a valid value (empty mask, no
        // flags) before the handler and flags are filled in; the caller's
        // handler is a plain `extern "C" fn(c_int)`, the type sigaction
        // expects without SA_SIGINFO.
        let result = unsafe {
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = handler as libc::sighandler_t;
            action.sa_flags = libc::SA_RESTART;
            libc::sigemptyset(&mut action.sa_mask);
            libc::sigaction(signal, &action, std::ptr::null_mut())
        };
        if result != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    static CAUGHT: AtomicUsize = AtomicUsize::new(0);

    extern "C" fn count(_signal: c_int) {
        CAUGHT.fetch_add(1, Ordering::SeqCst);
    }

    #[test]
    fn the_handler_runs_instead_of_the_default_action() {
        // SIGUSR2's default action ends the process; with the handler
        // installed, raising it twice only counts.
        install(&[libc::SIGUSR2], count).unwrap();
        for _ in 0..2 {
            // SAFETY: raise(3) with a signal whose handler is installed.
            assert_eq!(unsafe { libc::raise(libc::SIGUSR2) }, 0);
        }
        assert_eq!(CAUGHT.load(Ordering::SeqCst), 2);
    }

    #[test]
    fn an_invalid_signal_is_an_error() {
        assert!(install(&[libc::SIGKILL], count).is_err());
    }
}
