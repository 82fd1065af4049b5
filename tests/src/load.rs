//! zdd-loadgen as the tests' load: the failed requests it counts are the
//! figure every deploy test asserts on.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use serde_json::Value;

use crate::{binary, Sandbox};

/// zdd-loadgen running against a URL until stopped.
pub struct Load {
    child: std::process::Child,
    stop_file: PathBuf,
}

impl Load {
    /// Requests per second of one load, in total. Steady, not as fast as
    /// the clients go: several tests run at once on two cores, and
    /// unthrottled loads starve the Docker engine (a replica's start took
    /// 8 s and its HEALTHCHECK exec over 1 s), which tests the machine, not
    /// the deploy. A request failing in a 100 ms window still shows as ~40
    /// failures at this rate; `scripts/bench-deploy` measures the deploys
    /// under load as fast as it goes.
    pub const RATE: u32 = 400;

    /// Starts `concurrency` clients, half keep-alive, half a new connection
    /// per request, sending [`Load::RATE`] requests per second in all.
    pub fn start(sandbox: &Sandbox, url: &str, concurrency: usize) -> Self {
        static N: AtomicUsize = AtomicUsize::new(0);
        let stop_file = sandbox
            .dir
            .join(format!("stop-load-{}", N.fetch_add(1, Ordering::SeqCst)));
        let child = Command::new(binary("zdd-loadgen"))
            .args([
                "--url",
                url,
                "--mode",
                "mixed",
                "--json",
                "--timeout",
                "10s",
            ])
            .args(["--concurrency", &concurrency.to_string()])
            .args(["--rate", &Self::RATE.to_string()])
            .arg("--until-file")
            .arg(&stop_file)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start zdd-loadgen");
        std::thread::sleep(Duration::from_millis(300));
        Load { child, stop_file }
    }

    /// Stops the load and returns its JSON summary.
    pub fn stop(mut self) -> Value {
        std::fs::write(&self.stop_file, b"").unwrap();
        let child = std::mem::replace(&mut self.child, Command::new("true").spawn().unwrap());
        let out = child.wait_with_output().unwrap();
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "zdd-loadgen printed no JSON ({e}): {}",
                String::from_utf8_lossy(&out.stderr)
            )
        })
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
