//! The load balancers zdd-route drives, behind one small interface.
//!
//! What to add, drain, restore and forget, in which order, and when the
//! evidence allows it, is the same whatever the proxy, and it is the part
//! that keeps a switch safe: it lives once, in the
//! [router](crate::router). How to do each of those things with one proxy
//! lives in its module here. A proxy is asked for one kind of action on a
//! set of items at once, so that its waits (a check to pass, sessions to
//! end) overlap, and it answers for each item.

pub(crate) mod caddy;
pub(crate) mod haproxy;

use std::collections::HashMap;
use std::collections::HashSet;
use std::net::SocketAddr;
use std::thread;
use std::time::{Duration, Instant};

use crate::plan::Item;

/// One load balancer's way of doing what the router decides.
pub(crate) trait Proxy {
    /// Before the next [`bring_up`](Proxy::bring_up): the new servers are
    /// to take `percent` of the traffic, beside the servers serving now.
    fn canary(&mut self, new: &[&Item], percent: u8) -> Result<(), String>;

    /// Puts each item's server in service (adds it, or makes the one at
    /// its address ready) and waits until the proxy's own health check
    /// has it up. `restoring`: these are old servers coming back.
    fn bring_up(&mut self, items: &[&Item], restoring: bool) -> Vec<Result<(), BringUpFailure>>;

    /// Sends no new request to each item's server and waits until what it
    /// serves has finished, or the drain timeout passes.
    fn drain(&mut self, items: &[&Item]) -> Vec<Result<Drained, String>>;

    /// Takes each item's servers (at its address) out for good: deleted
    /// where zdd added them, otherwise kept out of the rotation.
    fn remove(&mut self, items: &[&Item]) -> Vec<Result<(), String>>;

    /// Deletes the servers zdd added for `service` that send to none of
    /// `live`, and keeps every other such server out of the rotation;
    /// false when one could not be. Without a service (an empty input),
    /// no server is known to be zdd's.
    fn prune(&mut self, live: &HashSet<SocketAddr>, service: Option<&Service>) -> bool;
}

/// The service whose servers a prune may delete: its name and project.
#[derive(Debug, Clone)]
pub(crate) struct Service {
    pub(crate) name: String,
    pub(crate) project: Option<String>,
}

/// Why a server did not come up.
#[derive(Debug, Clone)]
pub(crate) struct BringUpFailure {
    pub(crate) message: String,
    /// The server was set in service (ready, not drained) and then did not
    /// pass its check; false when it could not even be set.
    pub(crate) readied: bool,
}

/// How one drain ended.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Drained {
    /// Sessions still open when the timeout passed.
    pub(crate) left: Option<u64>,
}

/// How long a replica's address may take to accept a connection.
const CONNECT_TIMEOUT: Duration = Duration::from_millis(300);

/// Whether something accepts a TCP connection at `address`: a server the
/// proxy still calls up from an earlier check may be gone.
pub(crate) fn accepts_connections(address: &SocketAddr) -> bool {
    std::net::TcpStream::connect_timeout(address, CONNECT_TIMEOUT).is_ok()
}

/// How often a proxy is asked whether its servers are up or drained.
pub(crate) const POLL: Duration = Duration::from_millis(50);

/// Asks the proxy (`fetch`) every [`POLL`] until `conclude` has a result
/// for every entry; `conclude` sees the entry, the proxy's answer and the
/// time since the start. An answer that fails concludes every open entry
/// with its error. The results are in the entries' order; `index` is an
/// entry's item index.
pub(crate) fn poll_each<W, S, T>(
    entries: &[W],
    index: impl Fn(&W) -> usize,
    mut fetch: impl FnMut() -> Result<S, String>,
    mut conclude: impl FnMut(&W, &S, Duration) -> Option<Result<T, String>>,
) -> Vec<Result<T, String>> {
    let start = Instant::now();
    let mut results: HashMap<usize, Result<T, String>> = HashMap::new();
    while results.len() < entries.len() {
        match fetch() {
            Ok(answer) => {
                let elapsed = start.elapsed();
                for entry in entries {
                    if results.contains_key(&index(entry)) {
                        continue;
                    }
                    if let Some(result) = conclude(entry, &answer, elapsed) {
                        results.insert(index(entry), result);
                    }
                }
            }
            Err(e) => {
                for entry in entries {
                    results
                        .entry(index(entry))
                        .or_insert_with(|| Err(e.clone()));
                }
            }
        }
        if results.len() < entries.len() {
            thread::sleep(POLL);
        }
    }
    entries
        .iter()
        .map(|e| results.remove(&index(e)).expect("every entry concluded"))
        .collect()
}
