//! The pure half of the Caddy client: finding a handler in Caddy's
//! config, deciding the edit of its upstreams, Caddy 2.6's ETag hash, and
//! reading the admin API's answers. Unit-tested on answers captured from
//! Debian's caddy 2.6.2 (`testdata/caddy-*`).

use serde::Deserialize;
use serde_json::Value;

use super::{AdminError, Result};

/// One upstream of `GET /reverse_proxy/upstreams`: Caddy's pool is per
/// process and keyed by address, shared by every handler that names it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct UpstreamStat {
    /// The `dial` address, as written in the config.
    pub address: String,
    /// Requests in flight to it now (from every handler).
    pub num_requests: u64,
    /// Passive-check failures still counted (each for `fail_duration`;
    /// 0 without passive checks). A config change clears them.
    pub fails: u64,
}

/// One line of `caddy_reverse_proxy_upstreams_healthy` in `/metrics`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthGauge {
    pub upstream: String,
    pub healthy: bool,
}

/// What a change writes to the handler's `upstreams`.
#[derive(Debug, PartialEq)]
pub(super) enum Edit {
    /// These upstream objects, appended.
    Append(Vec<Value>),
    /// The whole array, replaced by these (the ones kept, unchanged).
    Replace(Vec<Value>),
}

/// The upstream objects to append so that every one of `dials` is there;
/// `None` when they all are.
pub(super) fn plan_add(current: &[Value], wanted: &[&str]) -> Option<Vec<Value>> {
    let present = dials(current);
    let mut new: Vec<&str> = Vec::new();
    for &dial in wanted {
        if !present.iter().any(|d| d == dial) && !new.contains(&dial) {
            new.push(dial);
        }
    }
    (!new.is_empty()).then(|| {
        new.iter()
            .map(|d| serde_json::json!({ "dial": d }))
            .collect()
    })
}

/// The upstream objects to keep so that none of `dials` is there; `None`
/// when none is.
pub(super) fn plan_remove(current: &[Value], unwanted: &[&str]) -> Option<Vec<Value>> {
    let goes = |u: &Value| dial_of(u).is_some_and(|d| unwanted.contains(&d));
    current
        .iter()
        .any(goes)
        .then(|| current.iter().filter(|u| !goes(u)).cloned().collect())
}

fn dial_of(upstream: &Value) -> Option<&str> {
    upstream.get("dial").and_then(Value::as_str)
}

pub(super) fn dials(upstreams: &[Value]) -> Vec<String> {
    upstreams
        .iter()
        .filter_map(dial_of)
        .map(str::to_owned)
        .collect()
}

/// The handler's static upstreams (none when it has no `upstreams` yet).
pub(super) fn upstreams_of(id: &str, handler: &Value) -> Result<Vec<Value>> {
    let unsupported = |problem: &str| AdminError::Unsupported {
        id: id.to_owned(),
        problem: problem.to_owned(),
    };
    if handler.get("dynamic_upstreams").is_some() {
        return Err(unsupported(
            "takes its upstreams from `dynamic_upstreams`, which zdd does not edit",
        ));
    }
    match handler.get("upstreams") {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Array(upstreams)) => Ok(upstreams.clone()),
        Some(_) => Err(unsupported("has `upstreams` that are not an array")),
    }
}

pub(super) fn check_reverse_proxy(id: &str, handler: &Value) -> Result<()> {
    match handler.get("handler").and_then(Value::as_str) {
        Some("reverse_proxy") => Ok(()),
        other => Err(AdminError::NotReverseProxy {
            id: id.to_owned(),
            handler: other.unwrap_or_default().to_owned(),
        }),
    }
}

/// The first object in `config` (depth first) whose `@id` is `id`: what
/// Caddy's `/id/ID` resolves to (Caddy refuses a config with a duplicate).
pub(super) fn find_by_id<'a>(config: &'a Value, id: &str) -> Option<&'a Value> {
    match config {
        Value::Object(map) => {
            if map.get("@id").and_then(Value::as_str) == Some(id) {
                return Some(config);
            }
            map.values().find_map(|v| find_by_id(v, id))
        }
        Value::Array(items) => items.iter().find_map(|v| find_by_id(v, id)),
        _ => None,
    }
}

/// One write to the admin API.
pub(super) struct Write {
    pub(super) method: &'static str,
    /// Under `/config/` or `/id/`.
    pub(super) path: String,
    pub(super) payload: String,
}

/// The path (object keys and array indexes) of the object whose `@id` is
/// `id`, the one [`find_by_id`] finds.
pub(super) fn path_of(config: &Value, id: &str) -> Option<Vec<String>> {
    match config {
        Value::Object(map) => {
            if map.get("@id").and_then(Value::as_str) == Some(id) {
                return Some(Vec::new());
            }
            map.iter().find_map(|(key, value)| {
                path_of(value, id).map(|mut rest| {
                    rest.insert(0, key.clone());
                    rest
                })
            })
        }
        Value::Array(items) => items.iter().enumerate().find_map(|(index, value)| {
            path_of(value, id).map(|mut rest| {
                rest.insert(0, index.to_string());
                rest
            })
        }),
        _ => None,
    }
}

/// The value at `path` in `config`.
pub(super) fn pointer<'a>(config: &'a Value, path: &[String]) -> Option<&'a Value> {
    path.iter().try_fold(config, |value, key| match value {
        Value::Object(map) => map.get(key),
        Value::Array(items) => key.parse::<usize>().ok().and_then(|i| items.get(i)),
        _ => None,
    })
}

/// Sets `upstreams` of the handler at `path` in `tree`.
pub(super) fn set_upstreams(tree: &mut Value, path: &[String], upstreams: Vec<Value>) {
    let handler = path.iter().try_fold(tree, |value, key| match value {
        Value::Object(map) => map.get_mut(key),
        Value::Array(items) => key.parse::<usize>().ok().and_then(|i| items.get_mut(i)),
        _ => None,
    });
    if let Some(Value::Object(handler)) = handler {
        handler.insert("upstreams".into(), Value::Array(upstreams));
    }
}

/// Caddy 2.6's ETag hash: FNV-1a, 32 bits, of the exact body it answered
/// to the GET, as 8 hex digits.
pub fn etag_hash(body: &[u8]) -> String {
    let hash = body.iter().fold(0x811c_9dc5_u32, |h, &b| {
        (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
    });
    format!("{hash:08x}")
}

/// Parses the JSON array of `GET /reverse_proxy/upstreams`.
pub fn parse_upstream_stats(text: &str) -> std::result::Result<Vec<UpstreamStat>, String> {
    serde_json::from_str(text).map_err(|e| format!("{e}, in `{}`", text.trim()))
}

/// The `caddy_reverse_proxy_upstreams_healthy{upstream="…"} 0|1` lines of
/// a Prometheus text exposition.
pub fn parse_health_gauges(text: &str) -> Vec<HealthGauge> {
    let prefix = "caddy_reverse_proxy_upstreams_healthy{upstream=\"";
    text.lines()
        .filter_map(|line| {
            let rest = line.strip_prefix(prefix)?;
            let (upstream, value) = rest.split_once("\"}")?;
            let healthy = value.trim().parse::<f64>().ok()? >= 1.0;
            Some(HealthGauge {
                upstream: upstream.to_owned(),
                healthy,
            })
        })
        .collect()
}

/// `host:port` from `host:port` or `http://host:port[/]`.
pub(super) fn parse_endpoint(text: &str) -> std::result::Result<String, String> {
    let text = text.trim();
    if text.starts_with("https://") {
        return Err("TLS admin endpoints (`admin.remote`) are not supported".into());
    }
    if text.starts_with("unix/") || text.starts_with('/') || text.ends_with(".sock") {
        return Err(
            "unix sockets are not supported; let Caddy's admin listen on a loopback TCP address"
                .into(),
        );
    }
    let rest = text.strip_prefix("http://").unwrap_or(text);
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    if rest.contains(['/', '?', '#', ' ']) {
        return Err("only HOST:PORT, without a path".into());
    }
    match rest.rsplit_once(':') {
        Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0) => {
            Ok(rest.to_owned())
        }
        _ => Err("no HOST:PORT".into()),
    }
}

pub(super) fn check_id(id: &str) -> Result<()> {
    if id.is_empty() || id.contains(['/', '?', '#', '%']) || id.contains(char::is_whitespace) {
        return Err(AdminError::BadId { id: id.to_owned() });
    }
    Ok(())
}

pub(super) fn check_dial(dial: &str) -> Result<()> {
    let ok = !dial.is_empty()
        && !dial.contains(char::is_whitespace)
        && dial
            .rsplit_once(':')
            .is_some_and(|(host, port)| !host.is_empty() && !port.is_empty());
    if ok {
        Ok(())
    } else {
        Err(AdminError::BadDial {
            dial: dial.to_owned(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    // Captured from Debian's caddy 2.6.2: two slow requests in flight, one
    // upstream refusing connections counted by the passive check.
    const STATS: &str = include_str!("../../testdata/caddy-upstreams.json");
    // `GET /id/api` of the same Caddy.
    const HANDLER: &str = include_str!("../../testdata/caddy-handler.json");
    // `GET /metrics` (the reverse_proxy lines and their neighbours).
    const METRICS: &str = include_str!("../../testdata/caddy-metrics.txt");

    #[test]
    fn parses_the_upstream_pool() {
        let stats = parse_upstream_stats(STATS).unwrap();
        let by = |a: &str| stats.iter().find(|s| s.address == a).unwrap().clone();
        assert_eq!(stats.len(), 3);
        assert_eq!(by("127.0.0.1:20001").num_requests, 1);
        assert_eq!(by("127.0.0.1:20005").fails, 1);
        assert_eq!(by("127.0.0.1:20005").num_requests, 0);
        assert_eq!(parse_upstream_stats("[]\n").unwrap(), []);
        assert!(parse_upstream_stats("{\"error\":\"x\"}").is_err());
    }

    #[test]
    fn the_etag_hash_is_caddy_2_6s() {
        // Caddy 2.6.2 answered this body with
        // `Etag: "/config/apps/http/servers/zdd/routes/0/handle/0/upstreams 912ae873"`.
        assert_eq!(etag_hash(b"[{\"dial\":\"127.0.0.1:20001\"}]\n"), "912ae873");
        assert_eq!(etag_hash(b""), "811c9dc5");
    }

    #[test]
    fn finds_a_handler_by_its_id_anywhere() {
        let config = json!({"apps": {"http": {"servers": {"s": {"routes": [
            {"handle": [{"handler": "subroute", "routes": [{"handle": [
                {"@id": "deep", "handler": "reverse_proxy"}]}]}]},
            {"handle": [serde_json::from_str::<Value>(HANDLER).unwrap()]}]}}}}});
        let api = find_by_id(&config, "api").unwrap();
        assert_eq!(api["handler"], "reverse_proxy");
        assert_eq!(find_by_id(&config, "deep").unwrap()["@id"], "deep");
        assert!(find_by_id(&config, "nope").is_none());
        assert!(check_reverse_proxy("api", api).is_ok());
    }

    #[test]
    fn only_a_reverse_proxy_will_do() {
        let e = check_reverse_proxy("x", &json!({"@id": "x", "handler": "static_response"}));
        let e = e.unwrap_err().to_string();
        assert!(
            e.contains("`static_response` handler, not a `reverse_proxy`"),
            "{e}"
        );
        let e = check_reverse_proxy("x", &json!({"@id": "x"})).unwrap_err();
        assert!(e.to_string().contains("not a handler"), "{e}");
        let dynamic = json!({"handler": "reverse_proxy", "dynamic_upstreams": {"source": "a"}});
        assert!(upstreams_of("x", &dynamic).is_err());
        assert!(upstreams_of("x", &json!({"handler": "reverse_proxy"}))
            .unwrap()
            .is_empty());
    }

    #[test]
    fn adding_appends_only_what_is_missing() {
        let current = [
            json!({"dial": "a:1"}),
            json!({"dial": "b:1", "max_requests": 5}),
        ];
        assert_eq!(plan_add(&current, &["a:1"]), None);
        assert_eq!(
            plan_add(&current, &["c:1", "a:1", "c:1"]),
            Some(vec![json!({"dial": "c:1"})])
        );
        assert_eq!(plan_add(&[], &["a:1"]), Some(vec![json!({"dial": "a:1"})]));
    }

    #[test]
    fn removing_keeps_the_others_as_they_are() {
        let current = [
            json!({"dial": "a:1"}),
            json!({"dial": "b:1", "max_requests": 5}),
            json!({"dial": "a:1"}),
        ];
        assert_eq!(plan_remove(&current, &["c:1"]), None);
        assert_eq!(
            plan_remove(&current, &["a:1"]),
            Some(vec![json!({"dial": "b:1", "max_requests": 5})])
        );
        assert_eq!(plan_remove(&current, &["a:1", "b:1"]), Some(vec![]));
    }

    #[test]
    fn parses_the_health_gauges() {
        let gauges = parse_health_gauges(METRICS);
        assert_eq!(
            gauges,
            [
                HealthGauge {
                    upstream: "127.0.0.1:20001".into(),
                    healthy: true
                },
                HealthGauge {
                    upstream: "127.0.0.1:20003".into(),
                    healthy: false
                },
            ]
        );
    }

    #[test]
    fn a_handler_is_found_by_its_path_and_its_upstreams_set_there() {
        let config = serde_json::json!({"apps": {"http": {"servers": {"zdd": {"routes": [
            {"handle": [{"handler": "reverse_proxy", "@id": "api-draining"}]},
            {"handle": [{"handler": "reverse_proxy", "@id": "api", "upstreams": [{"dial": "a:1"}]}]}
        ]}}}}});
        let api = path_of(&config, "api").unwrap();
        assert_eq!(api.join("/"), "apps/http/servers/zdd/routes/1/handle/0");
        let parking = path_of(&config, "api-draining").unwrap();
        assert_eq!(pointer(&config, &api), find_by_id(&config, "api"));
        assert!(path_of(&config, "nope").is_none());
        let common = &api[..5];
        let mut subtree = pointer(&config, common).unwrap().clone();
        set_upstreams(
            &mut subtree,
            &parking[5..],
            vec![serde_json::json!({"dial": "a:1"})],
        );
        set_upstreams(&mut subtree, &api[5..], vec![]);
        assert_eq!(subtree[0]["handle"][0]["upstreams"][0]["dial"], "a:1");
        assert_eq!(subtree[1]["handle"][0]["upstreams"], serde_json::json!([]));
    }
}
