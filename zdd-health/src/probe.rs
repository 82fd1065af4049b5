//! Readiness probes run from the host against a replica's address.
//!
//! Used when the caller asks for them (`--http`, `--tcp`) or when a
//! container has no Docker HEALTHCHECK to wait for. Each probe is one
//! attempt with a short timeout; the caller decides how often to try.

use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::time::Duration;

/// How to decide that a replica is ready.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Probe {
    /// `GET http://ADDRESS/PATH` answers 2xx.
    Http { path: String },
    /// A TCP connection to ADDRESS is accepted.
    Tcp,
}

impl Probe {
    /// One attempt; `Err` carries what went wrong, for the record's reason.
    pub fn attempt(&self, address: &str, timeout: Duration) -> Result<(), String> {
        match self {
            Probe::Tcp => {
                let addr = resolve(address)?;
                TcpStream::connect_timeout(&addr, timeout)
                    .map(drop)
                    .map_err(|e| format!("TCP connect to {address}: {e}"))
            }
            Probe::Http { path } => {
                let url = format!("http://{address}{path}");
                let agent: ureq::Agent = ureq::Agent::config_builder()
                    .timeout_global(Some(timeout))
                    .http_status_as_error(false)
                    .build()
                    .into();
                match agent.get(&url).call() {
                    Ok(response) if response.status().is_success() => Ok(()),
                    Ok(response) => Err(format!("GET {url}: HTTP {}", response.status())),
                    Err(e) => Err(format!("GET {url}: {e}")),
                }
            }
        }
    }

    /// How the probe reads in a reason: `HTTP GET /healthz`, `TCP connect`.
    pub fn describe(&self) -> String {
        match self {
            Probe::Http { path } => format!("HTTP GET {path}"),
            Probe::Tcp => "TCP connect".into(),
        }
    }
}

fn resolve(address: &str) -> Result<SocketAddr, String> {
    address
        .to_socket_addrs()
        .map_err(|e| format!("address `{address}`: {e}"))?
        .next()
        .ok_or_else(|| format!("address `{address}` resolves to nothing"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::net::TcpListener;

    fn serve_once(status: &'static str) -> String {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let address = listener.local_addr().unwrap().to_string();
        std::thread::spawn(move || {
            if let Ok((mut stream, _)) = listener.accept() {
                let mut buf = [0u8; 1024];
                let _ = stream.read(&mut buf);
                let _ = write!(
                    stream,
                    "HTTP/1.1 {status}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
                );
            }
        });
        address
    }

    #[test]
    fn http_probe_wants_a_2xx() {
        let probe = Probe::Http {
            path: "/healthz".into(),
        };
        assert_eq!(
            probe.attempt(&serve_once("200 OK"), Duration::from_secs(2)),
            Ok(())
        );
        let err = probe
            .attempt(
                &serve_once("503 Service Unavailable"),
                Duration::from_secs(2),
            )
            .unwrap_err();
        assert!(err.contains("HTTP 503"), "{err}");
    }

    #[test]
    fn tcp_probe_needs_a_listener() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let address = listener.local_addr().unwrap().to_string();
        assert_eq!(Probe::Tcp.attempt(&address, Duration::from_secs(1)), Ok(()));
        drop(listener);
        assert!(Probe::Tcp
            .attempt(&address, Duration::from_secs(1))
            .is_err());
    }
}
