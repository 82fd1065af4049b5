//! `--probe`: the app checks its own health.
//!
//! A Docker `HEALTHCHECK` runs a command inside the container, and a
//! `FROM scratch` image has no shell or curl to run, so the binary doubles
//! as its own probe: `HEALTHCHECK CMD ["/app", "--probe"]`. It sends
//! `GET /healthz` to 127.0.0.1:$PORT and exits 0 on a 200, 1 on anything
//! else, all within [`TIMEOUT`]. Never 2: Docker reserves that exit code.
//! Connecting to 127.0.0.1 means the probe passes with
//! `LISTEN_LOOPBACK_ONLY` too, as a `HEALTHCHECK` would for a real app that
//! listens on loopback only.

use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use crate::config;

/// How long the whole probe may take, connecting included.
pub const TIMEOUT: Duration = Duration::from_secs(2);

/// Probes the server, printing the reason on stderr if it is not healthy.
pub fn run() -> ExitCode {
    match probe() {
        Ok(()) => ExitCode::SUCCESS,
        Err(reason) => {
            eprintln!("zdd-example-app --probe: {reason}");
            ExitCode::FAILURE
        }
    }
}

fn probe() -> Result<(), String> {
    let deadline = Instant::now() + TIMEOUT;
    let port = config::port_from_env().map_err(|error| error.to_string())?;
    let address = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let mut stream = TcpStream::connect_timeout(&address, TIMEOUT)
        .map_err(|error| format!("cannot connect to {address}: {error}"))?;
    let status_line = exchange(&mut stream, deadline)
        .map_err(|error| format!("GET /healthz on {address} failed: {error}"))?;
    match status_code(&status_line) {
        Some(200) => Ok(()),
        Some(_) => Err(format!(
            "GET /healthz on {address} answered {status_line:?}"
        )),
        None => Err(format!(
            "GET /healthz on {address} answered garbage: {status_line:?}"
        )),
    }
}

/// Sends the request and returns the response's status line.
fn exchange(stream: &mut TcpStream, deadline: Instant) -> io::Result<String> {
    stream.set_write_timeout(Some(time_left(deadline)?))?;
    stream.write_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")?;
    let mut received = Vec::new();
    let mut chunk = [0; 256];
    while !received.contains(&b'\n') && received.len() < 1024 {
        stream.set_read_timeout(Some(time_left(deadline)?))?;
        match stream.read(&mut chunk)? {
            0 => break,
            n => received.extend_from_slice(&chunk[..n]),
        }
    }
    let line = received.split(|&b| b == b'\n').next().unwrap_or_default();
    Ok(String::from_utf8_lossy(line).trim_end().to_owned())
}

/// The time until `deadline`, or a timeout error if it has passed (a zero
/// socket timeout would mean "no timeout").
fn time_left(deadline: Instant) -> io::Result<Duration> {
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        Err(io::Error::new(io::ErrorKind::TimedOut, "timed out"))
    } else {
        Ok(left)
    }
}

/// The code in a status line such as `HTTP/1.1 200 OK`.
fn status_code(status_line: &str) -> Option<u16> {
    let mut parts = status_line.split(' ');
    let version = parts.next()?;
    let code = parts.next()?;
    if !version.starts_with("HTTP/") || code.len() != 3 {
        return None;
    }
    code.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_codes() {
        assert_eq!(status_code("HTTP/1.1 200 OK"), Some(200));
        assert_eq!(status_code("HTTP/1.0 503 Service Unavailable"), Some(503));
        assert_eq!(status_code("HTTP/1.1 200"), Some(200));
        assert_eq!(status_code(""), None);
        assert_eq!(status_code("SSH-2.0-OpenSSH"), None);
        assert_eq!(status_code("HTTP/1.1 2000 OK"), None);
    }
}
