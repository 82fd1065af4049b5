//! The spec file: how to run a service's first replicas.
//!
//! Once a service runs, `zdd-scale` clones its newest container, so the
//! configuration lives where Docker keeps it. Before that there is nothing
//! to clone, and this small JSON file says what `docker run` flags would
//! have said. Unknown keys are errors: a misspelt `"netwroks"` must not be
//! silently ignored on a first deploy.

use std::collections::HashMap;
use std::path::Path;

use bollard::models::{
    ContainerCreateBody, EndpointSettings, HealthConfig, HostConfig, RestartPolicy,
    RestartPolicyNameEnum,
};
use serde::Deserialize;
use zdd_core::{duration, Error, Result};

use crate::template::{Endpoint, Template};

/// The spec file's contents.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Spec {
    /// `KEY=value` entries added to the image's environment.
    #[serde(default)]
    pub env: Vec<String>,
    /// Replaces the image's CMD.
    pub command: Option<Vec<String>>,
    /// Extra container labels.
    #[serde(default)]
    pub labels: HashMap<String, String>,
    /// Networks to join, the first one at creation.
    #[serde(default)]
    pub networks: Vec<SpecNetwork>,
    /// The port the service listens on (default: the image's lowest exposed TCP port).
    pub port: Option<u16>,
    /// `no`, `always`, `unless-stopped`, `on-failure`.
    pub restart: Option<String>,
    /// Bind mounts and named volumes, as `docker run -v` writes them.
    #[serde(default)]
    pub volumes: Vec<String>,
    /// Replaces the image's HEALTHCHECK.
    pub healthcheck: Option<SpecHealthcheck>,
}

/// A network to join, with the DNS aliases the replica answers to.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum SpecNetwork {
    Name(String),
    Detailed {
        name: String,
        #[serde(default)]
        aliases: Vec<String>,
    },
}

/// A healthcheck in `docker run --health-*` terms; durations as `1s`, `500ms`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SpecHealthcheck {
    /// `["CMD", "/app", "--probe"]` or `["CMD-SHELL", "curl -f …"]`.
    pub test: Vec<String>,
    pub interval: Option<String>,
    pub timeout: Option<String>,
    pub retries: Option<i64>,
    pub start_period: Option<String>,
}

impl Spec {
    /// Reads and checks a spec file; every problem is a usage error naming
    /// the file.
    pub fn load(path: &Path) -> Result<Spec> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::Usage(format!("cannot read spec file {}: {e}", path.display())))?;
        let spec: Spec = serde_json::from_str(&text)
            .map_err(|e| Error::Usage(format!("spec file {}: {e}", path.display())))?;
        spec.check()
            .map_err(|e| Error::Usage(format!("spec file {}: {e}", path.display())))?;
        Ok(spec)
    }

    fn check(&self) -> std::result::Result<(), String> {
        for entry in &self.env {
            if !entry.contains('=') || entry.starts_with('=') {
                return Err(format!("env entry `{entry}` is not KEY=value"));
            }
        }
        if let Some(restart) = &self.restart {
            restart_policy(restart)?;
        }
        if let Some(health) = &self.healthcheck {
            health_config(health)?;
        }
        Ok(())
    }

    /// The template a first deploy creates its replicas from.
    pub fn template(&self) -> Template {
        let (restart_policy, host_mode) = (
            self.restart
                .as_deref()
                .map(|r| restart_policy(r).expect("checked on load")),
            self.networks.first().map(|n| n.name().to_owned()),
        );
        let host_config = HostConfig {
            binds: (!self.volumes.is_empty()).then(|| self.volumes.clone()),
            restart_policy,
            network_mode: host_mode,
            ..Default::default()
        };
        let body = ContainerCreateBody {
            env: (!self.env.is_empty()).then(|| self.env.clone()),
            cmd: self.command.clone(),
            labels: Some(self.labels.clone()),
            healthcheck: self
                .healthcheck
                .as_ref()
                .map(|h| health_config(h).expect("checked on load")),
            host_config: Some(host_config),
            ..Default::default()
        };
        let networks = self
            .networks
            .iter()
            .map(|n| Endpoint {
                network: n.name().to_owned(),
                settings: EndpointSettings {
                    aliases: match n {
                        SpecNetwork::Name(_) => None,
                        SpecNetwork::Detailed { aliases, .. } => Some(aliases.clone()),
                    },
                    ..Default::default()
                },
            })
            .collect();
        Template {
            body,
            networks,
            compose: None,
        }
    }
}

impl SpecNetwork {
    fn name(&self) -> &str {
        match self {
            SpecNetwork::Name(name) | SpecNetwork::Detailed { name, .. } => name,
        }
    }
}

fn restart_policy(name: &str) -> std::result::Result<RestartPolicy, String> {
    let name = match name {
        "no" => RestartPolicyNameEnum::NO,
        "always" => RestartPolicyNameEnum::ALWAYS,
        "unless-stopped" => RestartPolicyNameEnum::UNLESS_STOPPED,
        "on-failure" => RestartPolicyNameEnum::ON_FAILURE,
        other => {
            return Err(format!(
                "restart `{other}` is not one of no, always, unless-stopped, on-failure"
            ))
        }
    };
    Ok(RestartPolicy {
        name: Some(name),
        maximum_retry_count: None,
    })
}

fn health_config(spec: &SpecHealthcheck) -> std::result::Result<HealthConfig, String> {
    let nanos = |field: &str, value: &Option<String>| -> std::result::Result<Option<i64>, String> {
        value
            .as_deref()
            .map(|text| {
                duration::parse(text)
                    .map(|d| d.as_nanos() as i64)
                    .map_err(|e| format!("healthcheck {field}: {e}"))
            })
            .transpose()
    };
    match spec.test.first().map(String::as_str) {
        Some("CMD" | "CMD-SHELL" | "NONE") => {}
        _ => return Err("healthcheck test must start with CMD, CMD-SHELL or NONE".into()),
    }
    Ok(HealthConfig {
        test: Some(spec.test.clone()),
        interval: nanos("interval", &spec.interval)?,
        timeout: nanos("timeout", &spec.timeout)?,
        retries: spec.retries,
        start_period: nanos("start_period", &spec.start_period)?,
        start_interval: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> std::result::Result<Spec, String> {
        let spec: Spec = serde_json::from_str(text).map_err(|e| e.to_string())?;
        spec.check()?;
        Ok(spec)
    }

    #[test]
    fn a_full_spec_becomes_a_template() {
        let spec = parse(
            r#"{"env":["A=1"],"networks":[{"name":"web","aliases":["api"]},"db"],"port":8080,
                "restart":"unless-stopped","healthcheck":{"test":["CMD","/app","--probe"],"interval":"1s","retries":3}}"#,
        )
        .unwrap();
        let template = spec.template();
        assert_eq!(template.body.env, Some(vec!["A=1".to_string()]));
        assert_eq!(template.networks.len(), 2);
        assert_eq!(
            template.networks[0].settings.aliases,
            Some(vec!["api".to_string()])
        );
        let host = template.body.host_config.unwrap();
        assert_eq!(host.network_mode.as_deref(), Some("web"));
        let health = template.body.healthcheck.unwrap();
        assert_eq!(health.interval, Some(1_000_000_000));
    }

    #[test]
    fn mistakes_are_named() {
        assert!(parse(r#"{"netwroks":[]}"#)
            .unwrap_err()
            .contains("unknown field `netwroks`"));
        assert!(parse(r#"{"env":["NOVALUE"]}"#)
            .unwrap_err()
            .contains("NOVALUE"));
        assert!(parse(r#"{"restart":"sometimes"}"#)
            .unwrap_err()
            .contains("sometimes"));
        assert!(parse(r#"{"healthcheck":{"test":["/app"]}}"#)
            .unwrap_err()
            .contains("CMD"));
        assert!(
            parse(r#"{"healthcheck":{"test":["CMD","x"],"interval":"soon"}}"#)
                .unwrap_err()
                .contains("interval")
        );
    }
}
