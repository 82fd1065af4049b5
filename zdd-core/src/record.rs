//! The record types passed between zdd tools.
//!
//! Every record is one JSON object with a `"type"` field. Tools act on the
//! types they know and pass every other record through untouched; within a
//! record they act on the fields they know and keep every other field
//! (`extra`), so a custom step can add its own without a tool losing them.
//! The full schema is documented in `docs/protocol.md`.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// `"type": "image"`: what `zdd-build` produced.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ImageRecord {
    /// The service the image is for, when the build was told.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
    /// Image reference, `repository:tag`; the tag is the release.
    pub image: String,
    /// The engine's image id (`sha256:…`).
    pub image_id: String,
    /// The release name: the tag, a prefix of the context hash.
    pub release: String,
    /// `sha256:…` of the canonical tar of the build context.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context_hash: Option<String>,
    /// `true` if this run built it, `false` if the tag already existed.
    #[serde(default)]
    pub built: bool,
    /// Fields this version of zdd does not know, kept as they came.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// Which side of a rollout a container is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// A replica of the release being rolled out.
    New,
    /// A replica of the release being replaced.
    Old,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::New => "new",
            Role::Old => "old",
        }
    }
}

/// Parses `new` or `old`, as the tools' `--role` options take it.
impl std::str::FromStr for Role {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "new" => Ok(Role::New),
            "old" => Ok(Role::Old),
            other => Err(format!("`{other}` is not a role (use `new` or `old`)")),
        }
    }
}

/// What `zdd-health` learned about a container.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Health {
    /// Still inside its deadline, not ready yet.
    Starting,
    /// Ready: its healthcheck or probe passed.
    Healthy,
    /// Its healthcheck or probe failed, or it was not ready by the deadline.
    Unhealthy,
    /// The container stopped or restarted.
    Exited,
    /// Nothing could tell (no healthcheck, no address to probe).
    None,
}

impl Health {
    pub fn as_str(self) -> &'static str {
        match self {
            Health::Starting => "starting",
            Health::Healthy => "healthy",
            Health::Unhealthy => "unhealthy",
            Health::Exited => "exited",
            Health::None => "none",
        }
    }
}

/// How the watch window after the switch went for a new replica.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Watch {
    /// Up, healthy and answering for the whole window.
    Passed,
    /// The window ended early: this replica or another new one failed
    /// (`health_reason` says how).
    Failed,
}

/// `"type": "container"`: one container of a service.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ContainerRecord {
    /// Full container id.
    pub id: String,
    /// Container name, without Docker's leading `/`.
    #[serde(default)]
    pub name: String,
    /// The service it is a replica of.
    pub service: String,
    /// The Compose project, for containers that belong to one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub project: Option<String>,
    /// The release it runs (the image's content-hash tag, or the image id
    /// for containers zdd did not create).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub release: Option<String>,
    /// The image reference it was created from.
    #[serde(default)]
    pub image: String,
    /// `ip:port` on its network, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    /// `new` or `old`; absent in a plain listing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<Role>,
    /// The engine's state when the record was made (`running`, `exited`, …).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
    /// Set by `zdd-scale` on `new` records: `true` when this run created
    /// the container, `false` when it served before the run (reused). A
    /// rollback withdraws and removes only what its run started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health: Option<Health>,
    /// Why the health is what it is (probe answer, exit code, deadline).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_reason: Option<String>,
    /// Set by a routing step: the load balancer sends it traffic.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub routed: Option<bool>,
    /// Set by a routing step: it gets no new requests.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drained: Option<bool>,
    /// Set by `zdd-watch` on `new` records: whether the replica stayed
    /// up, healthy and answering through the watch window.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub watch: Option<Watch>,
    /// Set by `zdd-retire`: stopped and removed (or already gone).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retired: Option<bool>,
    /// Fields this version of zdd does not know, kept as they came.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl ContainerRecord {
    /// A record for a container with only its identity known.
    pub fn new(id: impl Into<String>, service: impl Into<String>) -> Self {
        ContainerRecord {
            id: id.into(),
            name: String::new(),
            service: service.into(),
            project: None,
            release: None,
            image: String::new(),
            address: None,
            role: None,
            state: None,
            started: None,
            health: None,
            health_reason: None,
            routed: None,
            drained: None,
            watch: None,
            retired: None,
            extra: Map::new(),
        }
    }

    /// The short id people see in `docker ps`.
    pub fn short_id(&self) -> &str {
        &self.id[..self.id.len().min(12)]
    }

    /// A name for progress messages: the container name, else the short id.
    pub fn label(&self) -> &str {
        if self.name.is_empty() {
            self.short_id()
        } else {
            &self.name
        }
    }
}

/// The record types zdd itself defines.
pub mod kind {
    pub const IMAGE: &str = "image";
    pub const CONTAINER: &str = "container";
}

/// Serializes `body` as a record of type `kind`, `"type"` first.
/// Record types zdd once spelled differently: read as an input error naming
/// today's spelling, so an old records file is not silently passed through
/// as a type nothing acts on. Every zdd record type is snake_case
/// (`asset_release`, `migration_status`), like the fields.
const RESPELLED: &[(&str, &str)] = &[
    ("asset-release", "asset_release"),
    ("asset-prune", "asset_prune"),
];

/// Today's spelling of a record type zdd once spelled `kind`.
pub fn respelled(kind: &str) -> Option<&'static str> {
    RESPELLED
        .iter()
        .find(|(old, _)| *old == kind)
        .map(|(_, now)| *now)
}

pub fn to_object<T: Serialize>(kind: &str, body: &T) -> Map<String, Value> {
    let mut object = Map::new();
    object.insert("type".into(), Value::String(kind.into()));
    match serde_json::to_value(body) {
        Ok(Value::Object(fields)) => {
            for (key, value) in fields {
                if key != "type" {
                    object.insert(key, value);
                }
            }
        }
        Ok(other) => unreachable!("record bodies serialize as objects, got {other}"),
        Err(e) => unreachable!("record bodies always serialize: {e}"),
    }
    object
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_fields_survive_a_round_trip() {
        let line =
            r#"{"type":"container","id":"abc","service":"api","team":"web","nested":{"a":[1,2]}}"#;
        let object: Map<String, Value> = serde_json::from_str(line).unwrap();
        let mut record: ContainerRecord = serde_json::from_value(Value::Object(object)).unwrap();
        record.extra.shift_remove("type");
        record.health = Some(Health::Healthy);
        let out = serde_json::to_string(&to_object(kind::CONTAINER, &record)).unwrap();
        assert_eq!(
            out,
            r#"{"type":"container","id":"abc","name":"","service":"api","image":"","health":"healthy","team":"web","nested":{"a":[1,2]}}"#
        );
    }

    #[test]
    fn unknown_role_is_rejected() {
        let v = serde_json::json!({"id": "a", "service": "s", "role": "older"});
        let err = serde_json::from_value::<ContainerRecord>(v).unwrap_err();
        assert!(err.to_string().contains("unknown variant `older`"), "{err}");
    }
}
