//! SIGINT and SIGTERM as something a tool can wait on beside its work.
//!
//! zdd-deploy sends SIGTERM to the step it runs when it is stopped (and a
//! terminal's Ctrl-C sends SIGINT to the group); a tool that holds
//! something it must put back (the one-off migration container, a watch's
//! standby servers) selects on [`Interrupt::next`] to do so before it
//! exits.

use tokio::signal::unix::{signal, Signal, SignalKind};

use crate::{Error, Result};

/// SIGINT and SIGTERM, listened for from [`Interrupt::new`] on: a signal
/// that comes between two waits is not lost.
pub struct Interrupt {
    int: Signal,
    term: Signal,
}

impl Interrupt {
    pub fn new() -> Result<Interrupt> {
        let listen =
            |kind| signal(kind).map_err(|e| Error::Failed(format!("listening for signals: {e}")));
        Ok(Interrupt {
            int: listen(SignalKind::interrupt())?,
            term: listen(SignalKind::terminate())?,
        })
    }

    /// The next signal: `"SIGINT"` or `"SIGTERM"`.
    pub async fn next(&mut self) -> &'static str {
        tokio::select! {
            _ = self.int.recv() => "SIGINT",
            _ = self.term.recv() => "SIGTERM",
        }
    }
}

/// Resolves at the first SIGINT or SIGTERM from now on; never, where the
/// signals cannot be listened for.
pub async fn interrupted() -> &'static str {
    match Interrupt::new() {
        Ok(mut interrupt) => interrupt.next().await,
        Err(_) => std::future::pending().await,
    }
}
