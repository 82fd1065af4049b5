//! Cloning a running replica's configuration for the next release.
//!
//! A container's inspected configuration mixes what the operator chose
//! (`docker run -e`, `--network`, `-v`) with what the old *image* supplied
//! (its ENV, CMD, labels, HEALTHCHECK). Copying it whole would pin the old
//! image's defaults onto the new release (`APP_VERSION=v1` from the v1
//! Dockerfile would override v2's). So every image-supplied value that the
//! container merely inherited is dropped, and the new image supplies its
//! own; values the operator set on the container are kept.

use std::collections::HashMap;

use bollard::models::{
    ContainerConfig, ContainerCreateBody, ContainerInspectResponse, EndpointSettings, ImageConfig,
    ImageInspect,
};
use zdd_core::labels;
use zdd_core::{Error, Result};

/// What a new replica is created from: everything but the image and the
/// identity labels.
#[derive(Debug, Clone, Default)]
pub struct Template {
    pub body: ContainerCreateBody,
    /// Networks to join, in order; the first is joined at creation (the
    /// API accepts one there), the rest before the container starts.
    pub networks: Vec<Endpoint>,
    /// Set when the cloned container was created by Docker Compose.
    pub compose: Option<ComposeService>,
}

/// A network and the endpoint settings (aliases) to join it with.
#[derive(Debug, Clone)]
pub struct Endpoint {
    pub network: String,
    pub settings: EndpointSettings,
}

/// The Compose identity of a cloned container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ComposeService {
    pub project: String,
    pub service: String,
}

impl Template {
    /// The template for a service with nothing to clone and no spec: the
    /// image's defaults on the default network.
    pub fn image_defaults() -> Self {
        Template {
            body: ContainerCreateBody {
                labels: Some(HashMap::new()),
                ..Default::default()
            },
            ..Default::default()
        }
    }

    /// Clones `container`, dropping what it inherited from `old_image`.
    pub fn clone_from(
        container: &ContainerInspectResponse,
        old_image: Option<&ImageInspect>,
    ) -> Self {
        let empty_config = ContainerConfig::default();
        let config = container.config.as_ref().unwrap_or(&empty_config);
        let empty_image = ImageConfig::default();
        let image = old_image
            .and_then(|i| i.config.as_ref())
            .unwrap_or(&empty_image);
        let short_id = container.id.as_deref().map(|id| &id[..id.len().min(12)]);

        let mut container_labels = config.labels.clone().unwrap_or_default();
        if let Some(image_labels) = &image.labels {
            container_labels.retain(|key, value| image_labels.get(key) != Some(value));
        }
        let compose = match (
            container_labels.get(labels::compose::PROJECT),
            container_labels.get(labels::compose::SERVICE),
        ) {
            (Some(project), Some(service)) => Some(ComposeService {
                project: project.clone(),
                service: service.clone(),
            }),
            _ => None,
        };

        let body = ContainerCreateBody {
            // Docker sets the hostname to the short id unless told otherwise.
            hostname: config
                .hostname
                .clone()
                .filter(|h| Some(h.as_str()) != short_id),
            domainname: config.domainname.clone().filter(|d| !d.is_empty()),
            user: unless_inherited(&config.user, &image.user).filter(|u| !u.is_empty()),
            tty: config.tty,
            open_stdin: config.open_stdin,
            env: config.env.as_ref().map(|env| {
                let inherited = image.env.as_deref().unwrap_or_default();
                env.iter()
                    .filter(|entry| !inherited.contains(entry))
                    .cloned()
                    .collect()
            }),
            cmd: unless_inherited(&config.cmd, &image.cmd),
            entrypoint: unless_inherited(&config.entrypoint, &image.entrypoint),
            working_dir: unless_inherited(&config.working_dir, &image.working_dir)
                .filter(|w| !w.is_empty()),
            healthcheck: unless_inherited(&config.healthcheck, &image.healthcheck),
            exposed_ports: config.exposed_ports.as_ref().map(|ports| {
                let inherited = image.exposed_ports.as_deref().unwrap_or_default();
                ports
                    .iter()
                    .filter(|p| !inherited.contains(p))
                    .cloned()
                    .collect()
            }),
            volumes: unless_inherited(&config.volumes, &image.volumes),
            stop_signal: unless_inherited(&config.stop_signal, &image.stop_signal),
            stop_timeout: config.stop_timeout,
            labels: Some(container_labels),
            host_config: container.host_config.clone(),
            ..Default::default()
        };

        let mut networks: Vec<Endpoint> = container
            .network_settings
            .as_ref()
            .and_then(|n| n.networks.as_ref())
            .map(|networks| {
                networks
                    .iter()
                    .map(|(name, endpoint)| Endpoint {
                        network: name.clone(),
                        settings: EndpointSettings {
                            // The engine adds the short id itself; a fixed
                            // address would collide with the old replica.
                            aliases: endpoint.aliases.as_ref().map(|aliases| {
                                aliases
                                    .iter()
                                    .filter(|a| Some(a.as_str()) != short_id)
                                    .cloned()
                                    .collect()
                            }),
                            links: endpoint.links.clone(),
                            driver_opts: endpoint.driver_opts.clone(),
                            ..Default::default()
                        },
                    })
                    .collect()
            })
            .unwrap_or_default();
        // The network named by the network mode is the one joined at
        // creation; the rest follow in name order.
        let primary = body
            .host_config
            .as_ref()
            .and_then(|h| h.network_mode.clone());
        networks.sort_by_key(|e| (Some(&e.network) != primary.as_ref(), e.network.clone()));

        Template {
            body,
            networks,
            compose,
        }
    }

    /// Host ports a new replica could not bind while the old one holds them.
    pub fn check_startable_beside(&self, service: &str) -> Result<()> {
        let bindings = self
            .body
            .host_config
            .as_ref()
            .and_then(|h| h.port_bindings.as_ref());
        for (port, binds) in bindings.into_iter().flatten() {
            for bind in binds.iter().flatten() {
                if let Some(host_port) = bind
                    .host_port
                    .as_deref()
                    .filter(|p| !p.is_empty() && *p != "0")
                {
                    return Err(Error::Usage(format!(
                        "service `{service}` publishes container port {port} on fixed host port {host_port}: \
                         a new replica cannot start beside the old one while it holds that port; \
                         publish a load balancer's port instead and route to the replicas' addresses"
                    )));
                }
            }
        }
        Ok(())
    }
}

/// The container's value, unless it is just what the image supplied.
fn unless_inherited<T: PartialEq + Clone>(container: &Option<T>, image: &Option<T>) -> Option<T> {
    match (container, image) {
        (Some(value), Some(inherited)) if value == inherited => None,
        (value, _) => value.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bollard::models::{HostConfig, NetworkSettings, PortBinding};

    fn label_map(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn container(env: &[&str], labels: &[(&str, &str)]) -> ContainerInspectResponse {
        ContainerInspectResponse {
            id: Some("0123456789abcdef".into()),
            config: Some(ContainerConfig {
                hostname: Some("0123456789ab".into()),
                env: Some(env.iter().map(|s| s.to_string()).collect()),
                cmd: Some(vec!["/app".into()]),
                labels: Some(label_map(labels)),
                ..Default::default()
            }),
            host_config: Some(HostConfig {
                network_mode: Some("web".into()),
                ..Default::default()
            }),
            network_settings: Some(NetworkSettings {
                networks: Some(HashMap::from([
                    (
                        "web".to_string(),
                        EndpointSettings {
                            aliases: Some(vec!["api".into(), "0123456789ab".into()]),
                            ip_address: Some("172.18.0.2".into()),
                            ..Default::default()
                        },
                    ),
                    ("aaa".to_string(), EndpointSettings::default()),
                ])),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn image(env: &[&str], labels: &[(&str, &str)]) -> ImageInspect {
        ImageInspect {
            config: Some(ImageConfig {
                env: Some(env.iter().map(|s| s.to_string()).collect()),
                cmd: Some(vec!["/app".into()]),
                labels: Some(label_map(labels)),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn drops_what_the_old_image_supplied_and_keeps_what_the_operator_set() {
        let old = container(
            &["PATH=/bin", "APP_VERSION=v1", "DATABASE_URL=postgres://db"],
            &[
                ("zdd.service", "api"),
                ("maintainer", "me"),
                ("team", "web"),
            ],
        );
        let old_image = image(&["PATH=/bin", "APP_VERSION=v1"], &[("maintainer", "me")]);
        let template = Template::clone_from(&old, Some(&old_image));
        assert_eq!(
            template.body.env,
            Some(vec!["DATABASE_URL=postgres://db".to_string()])
        );
        assert_eq!(
            template.body.cmd, None,
            "the image's CMD is the new image's business"
        );
        assert_eq!(
            template.body.hostname, None,
            "the short-id hostname is not copied"
        );
        let labels = template.body.labels.unwrap();
        assert!(labels.contains_key("team") && !labels.contains_key("maintainer"));
    }

    #[test]
    fn joins_the_primary_network_first_without_the_old_short_id_alias() {
        let template = Template::clone_from(&container(&[], &[]), None);
        let names: Vec<_> = template
            .networks
            .iter()
            .map(|e| e.network.as_str())
            .collect();
        assert_eq!(names, ["web", "aaa"]);
        assert_eq!(
            template.networks[0].settings.aliases,
            Some(vec!["api".to_string()])
        );
        assert_eq!(template.networks[0].settings.ip_address, None);
    }

    #[test]
    fn recognises_compose_containers() {
        let template = Template::clone_from(
            &container(
                &[],
                &[
                    ("com.docker.compose.project", "shop"),
                    ("com.docker.compose.service", "api"),
                ],
            ),
            None,
        );
        assert_eq!(
            template.compose,
            Some(ComposeService {
                project: "shop".into(),
                service: "api".into()
            })
        );
    }

    #[test]
    fn a_fixed_host_port_cannot_start_beside() {
        let mut old = container(&[], &[]);
        old.host_config.as_mut().unwrap().port_bindings = Some(HashMap::from([(
            "8080/tcp".to_string(),
            Some(vec![PortBinding {
                host_ip: None,
                host_port: Some("80".into()),
            }]),
        )]));
        let err = Template::clone_from(&old, None)
            .check_startable_beside("api")
            .unwrap_err();
        assert!(err.to_string().contains("fixed host port 80"), "{err}");
    }
}
