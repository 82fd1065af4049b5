//! A stand-in replica for the routing tests that need no Docker engine:
//! an HTTP server on a 127.0.0.1 ephemeral port, with a container record
//! written for it by hand (`address: 127.0.0.1:PORT`, a made-up id).

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use serde_json::{json, Value};

/// How long `/slow` takes to answer.
pub const STUB_SLOW: Duration = Duration::from_millis(1500);

/// An HTTP server standing for the container `api-BODY`: `/healthz`
/// answers 200 while it is healthy (else 503), `/slow` answers after
/// [`STUB_SLOW`], anything else at once; every body is BODY.
pub struct StubReplica {
    /// The container's name, `api-BODY`.
    pub name: String,
    pub port: u16,
    healthy: Arc<AtomicBool>,
}

impl StubReplica {
    pub fn start(body: &str, healthy: bool) -> StubReplica {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let healthy = Arc::new(AtomicBool::new(healthy));
        let (text, health) = (body.to_owned(), healthy.clone());
        thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let (text, health) = (text.clone(), health.clone());
                thread::spawn(move || serve(stream, &text, &health));
            }
        });
        StubReplica {
            name: format!("api-{body}"),
            port,
            healthy,
        }
    }

    /// `127.0.0.1:PORT`: its record's address, an HAProxy server's, a
    /// Caddy upstream's `dial`.
    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn set_healthy(&self, healthy: bool) {
        self.healthy.store(healthy, Ordering::SeqCst);
    }

    /// A container record for it, of service `api`.
    pub fn record(&self, role: &str) -> Value {
        json!({
            "type": "container",
            "id": format!("{:0>64}", format!("{:x}", self.port)),
            "name": self.name,
            "service": "api",
            "address": self.address(),
            "role": role,
        })
    }

    /// A healthy new replica that this run started (zdd-scale's
    /// `"started": true`).
    pub fn new_healthy(&self) -> Value {
        let mut record = self.record("new");
        record["started"] = json!(true);
        record["health"] = json!("healthy");
        record["health_reason"] = json!("HTTP /healthz answered 200");
        record
    }
}

fn serve(mut stream: TcpStream, body: &str, healthy: &AtomicBool) {
    let mut request = Vec::new();
    let mut buf = [0u8; 1024];
    while !request.windows(4).any(|w| w == b"\r\n\r\n") {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => request.extend_from_slice(&buf[..n]),
        }
    }
    let request = String::from_utf8_lossy(&request);
    let path = request.split_whitespace().nth(1).unwrap_or("/");
    let status = match path {
        "/healthz" if !healthy.load(Ordering::SeqCst) => "503 Service Unavailable",
        "/slow" => {
            thread::sleep(STUB_SLOW);
            "200 OK"
        }
        _ => "200 OK",
    };
    let _ = write!(
        stream,
        "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
}
