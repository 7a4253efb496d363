//! cutover's data plane on every node of the swarm: one Swarm service in global mode (one
//! `cutover lb` per worker), attached to the overlay so that it reaches every task, its listener
//! ports and its admin port published in host mode on each node's own address. Its admin API
//! answers only requests carrying a token, which reaches the instances as a Swarm secret (kept
//! encrypted in the managers' Raft log and mounted in memory), never on a command line or in an
//! environment variable that `docker service inspect` would print.

use std::collections::{BTreeSet, HashMap};
use std::net::IpAddr;

use base64::Engine as _;
use bollard::models::{
    EndpointPortConfig, EndpointPortConfigPublishModeEnum, EndpointSpec, EndpointSpecModeEnum,
    NetworkAttachmentConfig, NodeSpecRoleEnum, NodeState, SecretSpec, ServiceSpec, ServiceSpecMode,
    TaskSpec as SwarmTaskSpec, TaskSpecContainerSpec, TaskSpecContainerSpecFile,
    TaskSpecContainerSpecSecrets, TaskSpecPlacement, TaskSpecRestartPolicy,
    TaskSpecRestartPolicyConditionEnum,
};
use bollard::query_parameters::{InspectServiceOptions, ListNodesOptions, UpdateServiceOptions};

use super::SwarmRuntime;
use crate::RuntimeError;
use crate::docker::{LABEL_INSTANCE, LABEL_MANAGED, engine_err, is_status};

/// Marks the data plane's service and secrets, beside `cutover.instance`.
pub const LABEL_DATA_PLANE: &str = "cutover.data-plane";
/// Where an instance reads its admin token (a Swarm secret, mounted in memory).
const TOKEN_PATH: &str = "/run/secrets/cutover-lb-admin-token";

/// What the data plane on every node runs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DataPlaneSpec {
    /// An image holding the `cutover` binary at `/cutover` (`lb_image` makes one).
    pub image: String,
    /// The listener ports of the load balancers the swarm serves, published on every node.
    pub listener_ports: BTreeSet<u16>,
    /// The admin API's port, published on every node.
    pub admin_port: u16,
    /// The admin API's token; a secret.
    pub token: String,
    pub network: String,
    /// Worker threads of each instance.
    pub threads: usize,
}

/// A worker that runs (or will run) one instance of the data plane.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DataPlaneNode {
    pub hostname: String,
    /// The node's address in the swarm, where its instance's published ports answer.
    pub addr: IpAddr,
    /// Swarm has the node ready (not down or disconnected).
    pub ready: bool,
}

/// The data plane's service name for installation `instance`.
pub fn data_plane_service_name(instance: &str) -> String {
    let short: String = instance.chars().take(12).collect();
    format!("cutover-lb-{short}")
}

/// The Swarm secret holding `token` for installation `instance`: named by a fingerprint of the
/// token (not the token), since a secret cannot change, so a new token is a new secret.
fn secret_name(instance: &str, token: &str) -> String {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(token.as_bytes());
    let fingerprint: String = digest.iter().take(6).map(|b| format!("{b:02x}")).collect();
    format!("{}-token-{fingerprint}", data_plane_service_name(instance))
}

/// A Swarm secret as a service refers to it: by name and id.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SecretRef {
    pub name: String,
    pub id: String,
}

/// The global service running `spec` for installation `instance`, its token in `secret`.
pub fn data_plane_service_spec(
    spec: &DataPlaneSpec,
    instance: &str,
    secret: &SecretRef,
) -> ServiceSpec {
    let labels = HashMap::from([
        (LABEL_INSTANCE.to_string(), instance.to_string()),
        (LABEL_DATA_PLANE.to_string(), "true".to_string()),
    ]);
    let args = vec![
        "lb".to_string(),
        "--admin".to_string(),
        format!("0.0.0.0:{}", spec.admin_port),
        "--admin-token-file".to_string(),
        TOKEN_PATH.to_string(),
        "--threads".to_string(),
        spec.threads.to_string(),
    ];
    let container_spec = TaskSpecContainerSpec {
        image: Some(spec.image.clone()),
        labels: Some(labels.clone()),
        command: Some(vec!["/cutover".to_string()]),
        args: Some(args),
        secrets: Some(vec![TaskSpecContainerSpecSecrets {
            file: Some(TaskSpecContainerSpecFile {
                name: Some(TOKEN_PATH.trim_start_matches("/run/secrets/").to_string()),
                uid: Some("0".into()),
                gid: Some("0".into()),
                mode: Some(0o400),
            }),
            secret_name: Some(secret.name.clone()),
            secret_id: Some(secret.id.clone()),
        }]),
        ..Default::default()
    };
    let published = |port: u16| EndpointPortConfig {
        target_port: Some(i64::from(port)),
        published_port: Some(i64::from(port)),
        publish_mode: Some(EndpointPortConfigPublishModeEnum::HOST),
        ..Default::default()
    };
    let ports = std::iter::once(spec.admin_port).chain(spec.listener_ports.iter().copied());
    ServiceSpec {
        name: Some(data_plane_service_name(instance)),
        labels: Some(labels),
        task_template: Some(SwarmTaskSpec {
            container_spec: Some(container_spec),
            // Swarm starts an instance that ended again: a node must keep its load balancer,
            // which restores nothing itself (the control plane pushes it the current table).
            restart_policy: Some(TaskSpecRestartPolicy {
                condition: Some(TaskSpecRestartPolicyConditionEnum::ANY),
                delay: Some(200_000_000),
                ..Default::default()
            }),
            placement: Some(TaskSpecPlacement {
                constraints: Some(vec!["node.role==worker".to_string()]),
                ..Default::default()
            }),
            networks: Some(vec![NetworkAttachmentConfig {
                target: Some(spec.network.clone()),
                ..Default::default()
            }]),
            ..Default::default()
        }),
        mode: Some(ServiceSpecMode { global: Some(HashMap::new()), ..Default::default() }),
        endpoint_spec: Some(EndpointSpec {
            mode: Some(EndpointSpecModeEnum::DNSRR),
            ports: Some(ports.map(published).collect()),
        }),
        ..Default::default()
    }
}

/// Whether a running service must be updated to `wanted`: what cutover decides of it differs
/// (Swarm fills in defaults of its own, which are not compared).
pub fn needs_update(current: &ServiceSpec, wanted: &ServiceSpec) -> bool {
    let container = |s: &ServiceSpec| {
        let c = s.task_template.as_ref().and_then(|t| t.container_spec.clone());
        c.map(|c| {
            let secrets: Option<Vec<Option<String>>> =
                c.secrets.map(|s| s.into_iter().map(|s| s.secret_name).collect());
            (c.image, c.args, secrets)
        })
    };
    let ports = |s: &ServiceSpec| {
        let mut ports: Vec<(Option<i64>, Option<i64>)> = s
            .endpoint_spec
            .as_ref()
            .and_then(|e| e.ports.as_ref())
            .map(|p| p.iter().map(|p| (p.target_port, p.published_port)).collect())
            .unwrap_or_default();
        ports.sort();
        ports
    };
    container(current) != container(wanted) || ports(current) != ports(wanted)
}

impl SwarmRuntime {
    /// Makes the data plane run `spec` on every worker: creates its secret and service, or
    /// updates the service when its image, ports or token changed (Swarm then replaces the
    /// instances one by one; each is sent the current table when it answers).
    pub async fn ensure_data_plane(&self, spec: &DataPlaneSpec) -> Result<(), RuntimeError> {
        self.ensure_overlay(&spec.network, "data-plane").await?;
        let secret =
            self.ensure_secret(&secret_name(&self.instance, &spec.token), &spec.token).await?;
        let image = self.resolve_image(&spec.image, "data-plane").await?;
        let wanted = data_plane_service_spec(
            &DataPlaneSpec { image, ..spec.clone() },
            &self.instance,
            &secret,
        );
        let name = data_plane_service_name(&self.instance);
        match self.docker.inspect_service(&name, None::<InspectServiceOptions>).await {
            Ok(current) => {
                let current_spec = current.spec.clone().unwrap_or_default();
                if !needs_update(&current_spec, &wanted) {
                    return Ok(());
                }
                let version = current.version.as_ref().and_then(|v| v.index).unwrap_or(0);
                let options = UpdateServiceOptions {
                    version: i32::try_from(version).unwrap_or(i32::MAX),
                    ..Default::default()
                };
                let id = current.id.unwrap_or(name);
                self.docker
                    .update_service(&id, wanted, options, None)
                    .await
                    .map_err(|e| engine_err(format!("cannot update the data plane {id}"), &e))?;
                tracing::info!(service = %id, "data plane updated");
            }
            Err(e) if is_status(&e, 404) => match self.docker.create_service(wanted, None).await {
                Ok(_) => tracing::info!(service = %name, "data plane created on every node"),
                Err(e) if is_status(&e, 409) => {}
                Err(e) => {
                    return Err(engine_err(format!("cannot create the data plane {name}"), &e));
                }
            },
            Err(e) => return Err(engine_err(format!("cannot inspect service {name}"), &e)),
        }
        Ok(())
    }

    /// The secret `name` holding `token`, created when missing.
    async fn ensure_secret(&self, name: &str, token: &str) -> Result<SecretRef, RuntimeError> {
        let found =
            |id: Option<String>| SecretRef { name: name.to_string(), id: id.unwrap_or_default() };
        match self.docker.inspect_secret(name).await {
            Ok(secret) => return Ok(found(secret.id)),
            Err(e) if is_status(&e, 404) => {}
            Err(e) => return Err(engine_err(format!("cannot inspect secret {name}"), &e)),
        }
        let spec = SecretSpec {
            name: Some(name.to_string()),
            labels: Some(HashMap::from([
                (LABEL_INSTANCE.to_string(), self.instance.clone()),
                (LABEL_DATA_PLANE.to_string(), "true".to_string()),
                (LABEL_MANAGED.to_string(), "true".to_string()),
            ])),
            data: Some(base64::engine::general_purpose::STANDARD.encode(token)),
            ..Default::default()
        };
        match self.docker.create_secret(spec).await {
            Ok(created) => Ok(found(Some(created.id))),
            // Created meanwhile by another `cutover up` of this installation: read its id.
            Err(e) if is_status(&e, 409) => match self.docker.inspect_secret(name).await {
                Ok(secret) => Ok(found(secret.id)),
                Err(e) => Err(engine_err(format!("cannot inspect secret {name}"), &e)),
            },
            Err(e) => Err(engine_err(format!("cannot create secret {name}"), &e)),
        }
    }

    /// The workers, each with the address its data-plane instance answers on.
    pub async fn data_plane_nodes(&self) -> Result<Vec<DataPlaneNode>, RuntimeError> {
        let nodes = self
            .docker
            .list_nodes(None::<ListNodesOptions>)
            .await
            .map_err(|e| engine_err("cannot list swarm nodes", &e))?;
        let mut found: Vec<DataPlaneNode> = nodes
            .into_iter()
            .filter(|n| n.spec.as_ref().and_then(|s| s.role) == Some(NodeSpecRoleEnum::WORKER))
            .filter_map(|n| {
                let status = n.status?;
                Some(DataPlaneNode {
                    hostname: n.description.and_then(|d| d.hostname).unwrap_or_default(),
                    addr: status.addr?.parse().ok()?,
                    ready: status.state == Some(NodeState::READY),
                })
            })
            .collect();
        found.sort_by(|a, b| a.hostname.cmp(&b.hostname));
        Ok(found)
    }

    /// Removes the data plane's service and secrets (`cutover down`); nothing left is no error.
    pub async fn remove_data_plane(&self) -> Result<(), RuntimeError> {
        let name = data_plane_service_name(&self.instance);
        match self.docker.delete_service(&name).await {
            Ok(()) => {}
            Err(e) if is_status(&e, 404) => {}
            Err(e) => return Err(engine_err(format!("cannot remove the data plane {name}"), &e)),
        }
        let options = bollard::query_parameters::ListSecretsOptions {
            filters: Some(HashMap::from([(
                "label".to_string(),
                vec![format!("{LABEL_INSTANCE}={}", self.instance), LABEL_DATA_PLANE.to_string()],
            )])),
        };
        let secrets = self
            .docker
            .list_secrets(Some(options))
            .await
            .map_err(|e| engine_err("cannot list secrets", &e))?;
        for secret in secrets.into_iter().filter_map(|s| s.id) {
            // A secret is in use until Swarm has removed the service's tasks: it is left for the
            // next `down` then, which is harmless (it is the same installation's).
            if let Err(e) = self.docker.delete_secret(&secret).await {
                tracing::info!(%secret, "data plane secret kept for now: {e}");
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret(name: &str) -> SecretRef {
        SecretRef { name: name.into(), id: format!("id-{name}") }
    }

    fn spec() -> DataPlaneSpec {
        DataPlaneSpec {
            image: "10.99.0.1:5000/cutover@sha256:abc".into(),
            listener_ports: BTreeSet::from([8080, 8443]),
            admin_port: 9900,
            token: "t".repeat(32),
            network: "cutover-overlay".into(),
            threads: 2,
        }
    }

    #[test]
    fn the_data_plane_is_global_on_the_overlay_with_every_port_published_on_its_node() {
        let s = data_plane_service_spec(&spec(), "inst", &secret("cutover-lb-inst-token-1"));
        assert!(s.mode.as_ref().unwrap().global.is_some());
        let endpoint = s.endpoint_spec.unwrap();
        assert_eq!(endpoint.mode, Some(EndpointSpecModeEnum::DNSRR));
        let ports: Vec<(Option<i64>, Option<i64>, Option<EndpointPortConfigPublishModeEnum>)> =
            endpoint
                .ports
                .unwrap()
                .into_iter()
                .map(|p| (p.target_port, p.published_port, p.publish_mode))
                .collect();
        let host = Some(EndpointPortConfigPublishModeEnum::HOST);
        assert_eq!(
            ports,
            [
                (Some(9900), Some(9900), host),
                (Some(8080), Some(8080), host),
                (Some(8443), Some(8443), host)
            ]
        );
        let task = s.task_template.unwrap();
        assert_eq!(task.networks.unwrap()[0].target.as_deref(), Some("cutover-overlay"));
        let container = task.container_spec.unwrap();
        let args = container.args.unwrap().join(" ");
        assert_eq!(
            args,
            "lb --admin 0.0.0.0:9900 --admin-token-file /run/secrets/cutover-lb-admin-token --threads 2"
        );
        // The token is in no field Swarm prints: only the secret's name is.
        let printed = format!("{:?}{:?}", container.env, args);
        assert!(!printed.contains(&"t".repeat(32)), "{printed}");
        assert_eq!(
            container.secrets.unwrap()[0].secret_name.as_deref(),
            Some("cutover-lb-inst-token-1")
        );
    }

    #[test]
    fn a_new_listener_port_or_image_updates_the_service_and_the_same_spec_does_not() {
        let current = data_plane_service_spec(&spec(), "inst", &secret("s"));
        assert!(!needs_update(&current, &data_plane_service_spec(&spec(), "inst", &secret("s"))));
        let more_ports =
            DataPlaneSpec { listener_ports: BTreeSet::from([8080, 8443, 9000]), ..spec() };
        assert!(needs_update(
            &current,
            &data_plane_service_spec(&more_ports, "inst", &secret("s"))
        ));
        let image = DataPlaneSpec { image: "r/cutover@sha256:def".into(), ..spec() };
        assert!(needs_update(&current, &data_plane_service_spec(&image, "inst", &secret("s"))));
        assert!(needs_update(&current, &data_plane_service_spec(&spec(), "inst", &secret("s2"))));
    }

    #[test]
    fn a_secret_is_named_by_a_fingerprint_of_its_token_never_by_the_token() {
        let token = "0123456789abcdef0123456789abcdef";
        let name = secret_name("inst", token);
        assert!(name.starts_with("cutover-lb-inst-token-"), "{name}");
        assert!(!name.contains("0123456789"), "{name}");
        assert_ne!(name, secret_name("inst", &token.replace('0', "1")));
    }
}
