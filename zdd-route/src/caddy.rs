//! A small client for Caddy 2's admin API (Debian's caddy 2.6), for
//! routing through a `reverse_proxy` handler found by its `"@id"`.
//!
//! Why it works the way it does (measured on caddy 2.6.2; `docs/caddy.md`
//! has the figures and the commands):
//!
//! - Every change through the admin API is a whole config reload: Caddy
//!   provisions a new config, rebinds its listeners and shuts the old
//!   servers down gracefully. Requests in flight finish, but a change can
//!   fail a few requests of clients that do not retry, and it resets
//!   every upstream's health state. So a change is made only when one is
//!   needed (adding an upstream already there, removing one already gone
//!   changes nothing), and several upstreams are added or removed in one
//!   change ([`Admin::add_upstreams`], [`Admin::remove_upstreams`]).
//! - Caddy 2.6 supports `If-Match` for safe concurrent edits, but sends
//!   its `ETag` as an HTTP *trailer*, which ureq does not expose. The
//!   ETag is `"<path> <hash>"` with the FNV-1a (32-bit) hash of the body
//!   Caddy answered for `<path>`, so this client hashes the whole config
//!   it read (`GET /config/`) and writes with `If-Match: "/config/ <hash>"`:
//!   a change is refused with 412 if *anything* in the config changed
//!   since it was read, and is then read and tried again. Other upstreams
//!   are kept as they are (their objects unchanged, extra fields and all).
//! - After a change the config is read again, which is the next round's
//!   starting point: the client returns only once it has seen the state it
//!   was asked for.
//! - `GET /reverse_proxy/upstreams` ([`Admin::upstream_stats`]) lists the
//!   process's whole upstream pool by address, with requests in flight and
//!   passive-check failures, but no health: an address leaves it as soon
//!   as no handler of the running config names it, even with requests
//!   still in flight on it. Drain by moving the upstream to a handler that
//!   is never routed to, then watch `num_requests` (see `docs/caddy.md`).
//!
//! Only TCP admin endpoints over plain HTTP (`admin.listen` such as
//! `localhost:2019`) are supported: not unix sockets (`unix//…`), and
//! not the TLS `admin.remote` endpoint.

mod config;
mod error;

use std::time::Duration;

use serde_json::Value;

use config::{
    check_dial, check_id, check_reverse_proxy, dials, find_by_id, parse_endpoint, path_of,
    plan_add, plan_remove, pointer, set_upstreams, upstreams_of, Edit, Write,
};
pub use config::{etag_hash, parse_health_gauges, parse_upstream_stats, HealthGauge, UpstreamStat};
use error::{broken, json_answer, ok_answer};
pub use error::{AdminError, Result};

/// How long one admin request may take. A change answers in milliseconds
/// (Caddy does not wait for the old servers' connections to finish); this
/// only guards against an endpoint that accepts and never answers.
const TIMEOUT: Duration = Duration::from_secs(10);

/// How many times a change is read, written and read back before
/// concurrent edits of the config are given up on.
const ATTEMPTS: usize = 8;

/// How many times a request whose connection broke is sent again, and
/// after how long.
const RESENDS: usize = 3;
const RESEND_PAUSE: Duration = Duration::from_millis(50);

/// The most a config may weigh in bytes.
const MAX_BODY: u64 = 64 << 20;

/// A client for one Caddy's admin API.
#[derive(Debug, Clone)]
pub struct Admin {
    /// `host:port`.
    endpoint: String,
    agent: ureq::Agent,
}

impl Admin {
    /// An admin endpoint: `localhost:2019`, `127.0.0.1:2019`, `[::1]:2019`
    /// or the same after `http://`. Unix sockets and `https://` are
    /// refused (not supported).
    pub fn new(endpoint: &str) -> Result<Admin> {
        let endpoint = parse_endpoint(endpoint).map_err(|problem| AdminError::BadEndpoint {
            endpoint: endpoint.to_owned(),
            problem,
        })?;
        let agent = ureq::Agent::config_builder()
            .timeout_global(Some(TIMEOUT))
            .http_status_as_error(false)
            .proxy(None)
            // Caddy restarts its admin server on every config change, so a
            // pooled connection may be closed under the next request.
            .max_idle_connections(0)
            .build()
            .into();
        Ok(Admin { endpoint, agent })
    }

    /// `host:port`.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// The JSON of the `reverse_proxy` handler `id`.
    pub fn handler(&self, id: &str) -> Result<Value> {
        check_id(id)?;
        let path = format!("/id/{id}");
        let (status, body) = self.request("GET", &path, None, None)?;
        if status == 404 {
            return Err(AdminError::NoSuchId { id: id.to_owned() });
        }
        let handler = json_answer(&format!("GET {path}"), status, &body)?;
        check_reverse_proxy(id, &handler)?;
        Ok(handler)
    }

    /// The `dial` addresses of handler `id`'s upstreams, in order.
    pub fn upstreams(&self, id: &str) -> Result<Vec<String>> {
        let handler = self.handler(id)?;
        Ok(dials(&upstreams_of(id, &handler)?))
    }

    /// Adds `dial` to handler `id`'s upstreams unless it is there;
    /// `Ok(true)` when Caddy's config was changed (a reload).
    pub fn add_upstream(&self, id: &str, dial: &str) -> Result<bool> {
        self.add_upstreams(id, &[dial])
    }

    /// Adds those of `dials` that are not there yet, in one change.
    pub fn add_upstreams(&self, id: &str, dials: &[&str]) -> Result<bool> {
        dials.iter().try_for_each(|d| check_dial(d))?;
        self.change(id, |current| plan_add(current, dials).map(Edit::Append))
    }

    /// Removes every upstream that dials `dial` from handler `id`; `Ok(false)`
    /// when there was none. Requests in flight on it finish.
    pub fn remove_upstream(&self, id: &str, dial: &str) -> Result<bool> {
        self.remove_upstreams(id, &[dial])
    }

    /// Removes the upstreams of `dials`, in one change.
    pub fn remove_upstreams(&self, id: &str, dials: &[&str]) -> Result<bool> {
        self.change(id, |current| plan_remove(current, dials).map(Edit::Replace))
    }

    /// `GET /reverse_proxy/upstreams`: every upstream of the running
    /// config, whichever handler names it.
    pub fn upstream_stats(&self) -> Result<Vec<UpstreamStat>> {
        let request = "GET /reverse_proxy/upstreams";
        let (status, body) = self.request("GET", "/reverse_proxy/upstreams", None, None)?;
        ok_answer(request, status, &body)?;
        parse_upstream_stats(&String::from_utf8_lossy(&body)).map_err(|problem| {
            AdminError::Unexpected {
                request: request.into(),
                problem,
            }
        })
    }

    /// The `caddy_reverse_proxy_upstreams_healthy` gauges of `/metrics`:
    /// Caddy's active-check view, refreshed only every 10 s, reset to
    /// healthy by every config change, and never forgetting an upstream
    /// once removed. Evidence of health only when read more than 10 s after
    /// the last change.
    pub fn health_gauges(&self) -> Result<Vec<HealthGauge>> {
        let (status, body) = self.request("GET", "/metrics", None, None)?;
        ok_answer("GET /metrics", status, &body)?;
        Ok(parse_health_gauges(&String::from_utf8_lossy(&body)))
    }

    /// Moves the upstreams of `dials` from handler `from` to handler `to`
    /// in one change: taken out of `from` where they are, added to `to`
    /// where they are not (a dial in neither is added to `to`). `Ok(true)`
    /// when Caddy's config was changed. One reload instead of two: a drain
    /// parks the old upstreams and takes them out of the served handler at
    /// once, a rollback brings them back the same way.
    pub fn move_upstreams(&self, from: &str, to: &str, dials: &[&str]) -> Result<bool> {
        check_id(from)?;
        dials.iter().try_for_each(|d| check_dial(d))?;
        self.write_until_done(|config| {
            let upstreams = |id: &str| -> Result<Vec<Value>> {
                let handler =
                    find_by_id(config, id).ok_or_else(|| AdminError::NoSuchId { id: id.into() })?;
                check_reverse_proxy(id, handler)?;
                upstreams_of(id, handler)
            };
            let (from_now, to_now) = (upstreams(from)?, upstreams(to)?);
            let kept = plan_remove(&from_now, dials);
            let added = plan_add(&to_now, dials);
            if kept.is_none() && added.is_none() {
                return Ok(None);
            }
            let (Some(from_path), Some(to_path)) = (path_of(config, from), path_of(config, to))
            else {
                return Err(AdminError::NoSuchId { id: from.into() });
            };
            let common: Vec<String> = from_path
                .iter()
                .zip(&to_path)
                .take_while(|(a, b)| a == b)
                .map(|(a, _)| a.clone())
                .collect();
            let mut subtree = pointer(config, &common).cloned().unwrap_or(Value::Null);
            set_upstreams(
                &mut subtree,
                &from_path[common.len()..],
                kept.unwrap_or(from_now),
            );
            let mut to_upstreams = to_now;
            to_upstreams.extend(added.unwrap_or_default());
            set_upstreams(&mut subtree, &to_path[common.len()..], to_upstreams);
            Ok(Some(Write {
                method: "PATCH",
                path: format!("/config/{}", common.join("/")),
                payload: subtree.to_string(),
            }))
        })
    }

    /// Reads the config, lets `edit` decide on the upstreams of `id`, and
    /// writes that, until `edit` has nothing left to do.
    fn change(&self, id: &str, edit: impl Fn(&[Value]) -> Option<Edit>) -> Result<bool> {
        check_id(id)?;
        self.write_until_done(|config| {
            let handler =
                find_by_id(config, id).ok_or_else(|| AdminError::NoSuchId { id: id.to_owned() })?;
            check_reverse_proxy(id, handler)?;
            let current = upstreams_of(id, handler)?;
            let (method, path, entries) = match edit(&current) {
                None => return Ok(None),
                // `/...` appends each element of the array.
                Some(Edit::Append(new))
                    if handler.get("upstreams").is_some_and(Value::is_array) =>
                {
                    ("POST", format!("/id/{id}/upstreams/..."), new)
                }
                // No `upstreams` yet: POST sets the key.
                Some(Edit::Append(new)) => ("POST", format!("/id/{id}/upstreams"), new),
                Some(Edit::Replace(kept)) => ("PATCH", format!("/id/{id}/upstreams"), kept),
            };
            Ok(Some(Write {
                method,
                path,
                payload: Value::Array(entries).to_string(),
            }))
        })
    }

    /// Reads the whole config, lets `plan` decide on one write, and sends
    /// it with `If-Match` (the hash of the config it read), until `plan`
    /// has nothing left to do: a write refused because the config changed
    /// meanwhile (412) is planned again on a fresh read. `Ok(true)` when a
    /// write of this call was accepted, or may have been (its connection
    /// broke, and the next read found the change done).
    fn write_until_done(&self, plan: impl Fn(&Value) -> Result<Option<Write>>) -> Result<bool> {
        let mut changed = false;
        let mut refused_for: Option<Vec<u8>> = None;
        for _ in 0..ATTEMPTS {
            let (status, body) = self.request("GET", "/config/", None, None)?;
            let config = json_answer("GET /config/", status, &body)?;
            let Some(Write {
                method,
                path,
                payload,
            }) = plan(&config)?
            else {
                return Ok(changed);
            };
            let etag = format!("\"/config/ {}\"", etag_hash(&body));
            let (status, answer) =
                match self.request_once(method, &path, Some(&etag), Some(&payload)) {
                    // Lost on the way, or its answer was: the next read tells.
                    Err(AdminError::Transport { source, .. }) if broken(&source) => {
                        changed = true;
                        continue;
                    }
                    other => other?,
                };
            if status == 412 {
                if refused_for.as_deref() == Some(&body[..]) {
                    return Err(AdminError::EtagRejected);
                }
                refused_for = Some(body);
                continue;
            }
            ok_answer(&format!("{method} {path}"), status, &answer)?;
            changed = true;
            refused_for = None;
        }
        Err(AdminError::Conflict {
            id: "(the config)".to_owned(),
            attempts: ATTEMPTS,
        })
    }

    /// One request; its status and body, whatever the status. Sent again
    /// (up to [`RESENDS`] times) when the connection was refused or broke:
    /// Caddy rebinds its admin listener at every config change, which may
    /// reset a request made at that instant. (Writes go through
    /// [`Admin::change`], which reads the config again instead.)
    fn request(
        &self,
        method: &str,
        path: &str,
        if_match: Option<&str>,
        json: Option<&str>,
    ) -> Result<(u16, Vec<u8>)> {
        let mut tries = 0;
        loop {
            match self.request_once(method, path, if_match, json) {
                Err(AdminError::Transport { source, .. }) if tries < RESENDS && broken(&source) => {
                    tries += 1;
                    std::thread::sleep(RESEND_PAUSE);
                }
                other => return other,
            }
        }
    }

    fn request_once(
        &self,
        method: &str,
        path: &str,
        if_match: Option<&str>,
        json: Option<&str>,
    ) -> Result<(u16, Vec<u8>)> {
        let url = format!("http://{}{path}", self.endpoint);
        let transport = |source| AdminError::Transport {
            endpoint: self.endpoint.clone(),
            request: format!("{method} {path}"),
            source: Box::new(source),
        };
        let response = match (method, json) {
            ("GET", _) => self.agent.get(&url).call(),
            (_, body) => {
                let builder = match method {
                    "PATCH" => self.agent.patch(&url),
                    _ => self.agent.post(&url),
                };
                let builder = match if_match {
                    Some(etag) => builder.header("If-Match", etag),
                    None => builder,
                };
                builder
                    .content_type("application/json")
                    .send(body.unwrap_or("").as_bytes())
            }
        };
        let mut response = response.map_err(transport)?;
        let status = response.status().as_u16();
        let body = response
            .body_mut()
            .with_config()
            .limit(MAX_BODY)
            .read_to_vec()
            .map_err(transport)?;
        Ok((status, body))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_are_host_and_port() {
        for (text, want) in [
            ("localhost:2019", "localhost:2019"),
            ("http://127.0.0.1:2019", "127.0.0.1:2019"),
            ("http://127.0.0.1:2019/", "127.0.0.1:2019"),
            ("[::1]:2019", "[::1]:2019"),
        ] {
            assert_eq!(parse_endpoint(text).as_deref(), Ok(want), "{text}");
        }
        for text in [
            "localhost",
            "https://lb:2019",
            "unix//run/caddy.sock",
            "/run/a.sock",
            "h:2019/config",
            ":2019",
            "h:0",
        ] {
            assert!(parse_endpoint(text).is_err(), "{text}");
        }
        let e = Admin::new("unix//run/caddy/admin.sock")
            .unwrap_err()
            .to_string();
        assert!(e.contains("unix sockets are not supported"), "{e}");
    }

    #[test]
    fn ids_and_dials_are_checked_before_anything_is_sent() {
        let admin = Admin::new("127.0.0.1:9").unwrap();
        assert!(matches!(
            admin.handler("a/b"),
            Err(AdminError::BadId { .. })
        ));
        assert!(matches!(
            admin.add_upstream("api", "no port"),
            Err(AdminError::BadDial { .. })
        ));
        assert!(matches!(
            admin.add_upstream("api", ""),
            Err(AdminError::BadDial { .. })
        ));
        assert!(check_dial("10.0.0.2:8080").is_ok() && check_dial("[::1]:80").is_ok());
    }
}
