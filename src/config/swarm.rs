//! A service's `swarm:`: how it runs when its instances are on Swarm managers
//! (`hosts.NAME.swarm: true`). Each such instance is one Swarm service named after
//! it; this module reads the settings and checks what a Swarm service cannot do.
//!
//! ```yaml
//! swarm:
//!   replicas: 3
//!   placement: ["node.role==worker"]
//!   publish: host          # or ingress (Docker's default)
//!   update: { parallelism: 1, order: start-first, failure_action: rollback, monitor: 5s, delay: 0s }
//! ```

use std::time::Duration;

use serde::Serialize;

use super::decode::{Decoder, Fields};
use super::global::Global;
use super::yaml;
use super::*;

/// How long Swarm watches an updated task for failure by default (Docker's own default).
pub const DEFAULT_MONITOR: Duration = Duration::from_secs(5);
/// Replicas a Swarm service is given by far: past this, a typo (an extra zero) is more
/// likely than an intent, and each replica is a container on some node.
pub const MAX_REPLICAS: u64 = 1000;

/// A service's Swarm settings, validated.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SwarmSettings {
    pub replicas: u64,
    /// Placement constraints as Docker writes them (`node.role==worker`).
    pub placement: Vec<String>,
    pub publish: PublishMode,
    pub update: SwarmUpdate,
}

/// How a Swarm service's `ports` are published.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PublishMode {
    /// The routing mesh: every node answers on the port.
    Ingress,
    /// Only the nodes running a task, each on its own port: one task per node and port.
    Host,
}

/// `swarm.update`: Swarm's update config.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SwarmUpdate {
    /// Tasks replaced at a time.
    pub parallelism: u64,
    pub order: UpdateOrder,
    pub failure_action: FailureAction,
    /// How long Swarm watches each updated task before it counts as updated.
    #[serde(with = "millis")]
    pub monitor: Duration,
    /// The pause between batches.
    #[serde(with = "millis")]
    pub delay: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum UpdateOrder {
    /// The new task starts (and becomes healthy) before the old one stops.
    StartFirst,
    StopFirst,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum FailureAction {
    /// Swarm returns the service to its previous spec.
    Rollback,
    /// Swarm stops updating and leaves the service as it is.
    Pause,
    Continue,
}

mod millis {
    pub fn serialize<S: serde::Serializer>(
        duration: &std::time::Duration,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        serializer.serialize_u64(duration.as_millis() as u64)
    }
}

/// The parts of a service that decide what Swarm may be asked.
pub(super) struct SwarmContext<'a> {
    pub path: &'a str,
    pub ports: &'a [PortMapping],
    pub health: Option<&'a Health>,
    pub proxied: bool,
    pub network: Option<&'a str>,
    pub instances: &'a std::collections::BTreeMap<String, Instance>,
    pub options: &'a ContainerOptions,
    pub accessory: bool,
}

/// Reads `swarm:` and checks the service against where its instances run: all on
/// Swarm managers (then settings, the defaults when `swarm:` is absent) or none
/// (then no `swarm:`).
pub(super) fn read_swarm(
    decoder: &mut Decoder,
    fields: &Fields,
    global: &Global,
    service: SwarmContext<'_>,
) -> Option<SwarmSettings> {
    let path = service.path;
    let on_swarm = |instance: &Instance| {
        global
            .hosts
            .get(&instance.host)
            .is_some_and(|host| host.swarm)
    };
    let swarm_instances = service.instances.values().filter(|i| on_swarm(i)).count();
    let node = fields.get("swarm");
    if swarm_instances == 0 {
        if node.is_some() {
            decoder.error(
                fields.key_position("swarm"),
                format!(
                    "`{path}.swarm`: none of its instances is on a Swarm manager \
                     (a host with `swarm: true` in gantry.yaml)"
                ),
            );
        }
        return None;
    }
    if swarm_instances < service.instances.len() {
        let plain = service
            .instances
            .values()
            .find(|instance| !on_swarm(instance))?;
        decoder.error(
            plain.position,
            format!(
                "`{path}.instances.{}`: host `{}` is not a Swarm manager, but other instances \
                 of this service are; a service runs either as Swarm services or as containers",
                plain.name, plain.host
            ),
        );
    }
    let settings = match node {
        Some(node) => read_settings(decoder, node, &format!("{path}.swarm"), service.ports)?,
        None => SwarmSettings {
            replicas: 1,
            placement: Vec::new(),
            publish: PublishMode::Ingress,
            update: default_update(PublishMode::Ingress, service.ports),
        },
    };
    check_service(decoder, fields, &service);
    Some(settings)
}

/// Start-first, unless a fixed port published on the host would make the new task wait
/// for the old one's node port forever.
fn default_update(publish: PublishMode, ports: &[PortMapping]) -> SwarmUpdate {
    SwarmUpdate {
        parallelism: 1,
        order: if holds_node_port(publish, ports) {
            UpdateOrder::StopFirst
        } else {
            UpdateOrder::StartFirst
        },
        failure_action: FailureAction::Rollback,
        monitor: DEFAULT_MONITOR,
        delay: Duration::ZERO,
    }
}

/// A task holds a fixed port of its node: Swarm places one such task per node.
fn holds_node_port(publish: PublishMode, ports: &[PortMapping]) -> bool {
    publish == PublishMode::Host && ports.iter().any(|port| port.host_port.is_some())
}

fn read_settings(
    decoder: &mut Decoder,
    node: &yaml::Node,
    path: &str,
    ports: &[PortMapping],
) -> Option<SwarmSettings> {
    let fields = decoder.mapping(node, path, &["replicas", "placement", "publish", "update"])?;
    let replicas = decoder
        .optional_number::<u64>(&fields, "replicas", "a whole number of tasks")
        .unwrap_or(1);
    if replicas == 0 || replicas > MAX_REPLICAS {
        decoder.error(
            fields.key_position("replicas"),
            format!("`{path}.replicas` must be 1 to {MAX_REPLICAS}, not {replicas}"),
        );
    }
    let mut placement = Vec::new();
    for (constraint, position) in decoder.positioned_list(&fields, "placement") {
        {
            if !is_constraint(&constraint) {
                decoder.error(
                    position,
                    format!(
                        "`{path}.placement`: `{constraint}` is not a constraint like \
                         `node.role==worker` or `node.labels.zone!=b`"
                    ),
                );
            }
            placement.push(constraint);
        }
    }
    let publish = match decoder.optional_string(&fields, "publish").as_deref() {
        None | Some("ingress") => PublishMode::Ingress,
        Some("host") => PublishMode::Host,
        Some(other) => {
            decoder.error(
                fields.key_position("publish"),
                format!("`{path}.publish` must be `ingress` or `host`, not `{other}`"),
            );
            PublishMode::Ingress
        }
    };
    let mut update = default_update(publish, ports);
    if let Some(update_node) = fields.get("update") {
        let update_path = format!("{path}.update");
        let update_fields = decoder.mapping(
            update_node,
            &update_path,
            &["parallelism", "order", "failure_action", "monitor", "delay"],
        )?;
        if let Some(parallelism) =
            decoder.optional_number::<u64>(&update_fields, "parallelism", "a whole number of tasks")
        {
            if parallelism == 0 {
                decoder.error(
                    update_fields.key_position("parallelism"),
                    format!("`{update_path}.parallelism` must be at least 1"),
                );
            }
            update.parallelism = parallelism.max(1);
        }
        match decoder.optional_string(&update_fields, "order").as_deref() {
            None => {}
            Some("start-first") => {
                update.order = UpdateOrder::StartFirst;
                if holds_node_port(publish, ports) {
                    decoder.error(
                        update_fields.key_position("order"),
                        format!(
                            "`{update_path}.order: start-first` cannot work with a fixed port \
                             published in `host` mode: a node's port is held by its old task, so \
                             Swarm would never place the new one; use `stop-first`, \
                             `publish: ingress`, or let Docker choose the host port"
                        ),
                    );
                }
            }
            Some("stop-first") => update.order = UpdateOrder::StopFirst,
            Some(other) => decoder.error(
                update_fields.key_position("order"),
                format!(
                    "`{update_path}.order` must be `start-first` or `stop-first`, not `{other}`"
                ),
            ),
        }
        match decoder
            .optional_string(&update_fields, "failure_action")
            .as_deref()
        {
            None => {}
            Some("rollback") => update.failure_action = FailureAction::Rollback,
            Some("pause") => update.failure_action = FailureAction::Pause,
            Some("continue") => update.failure_action = FailureAction::Continue,
            Some(other) => decoder.error(
                update_fields.key_position("failure_action"),
                format!(
                    "`{update_path}.failure_action` must be `rollback`, `pause` or `continue`, not `{other}`"
                ),
            ),
        }
        if let Some(monitor) = decoder.optional_duration(&update_fields, "monitor") {
            update.monitor = monitor;
        }
        if let Some(delay) = decoder.optional_duration(&update_fields, "delay") {
            update.delay = delay;
        }
    }
    Some(SwarmSettings {
        replicas: replicas.clamp(1, MAX_REPLICAS),
        placement,
        publish,
        update,
    })
}

/// What a Swarm service cannot have, each reported where it is written.
fn check_service(decoder: &mut Decoder, fields: &Fields, service: &SwarmContext<'_>) {
    let path = service.path;
    if service.proxied && service.network.is_none() {
        decoder.error(
            fields.key_position("proxy"),
            format!(
                "`{path}.proxy`: a Swarm service behind gantry's proxy needs `network:`, the \
                 overlay network the manager's proxy joins to reach its tasks"
            ),
        );
    }
    if service.accessory {
        decoder.error(
            fields.key_position("accessory"),
            format!("`{path}`: an accessory cannot run as a Swarm service"),
        );
    }
    if let Some(health) = service.health
        && matches!(
            health.check,
            HealthCheck::Http { .. } | HealthCheck::Tcp { .. }
        )
    {
        decoder.error(
            fields.key_position("health"),
            format!(
                "`{path}.health`: Swarm gates its own tasks, which gantry does not reach; \
                 use an `exec` check (it runs in each task) or the image's HEALTHCHECK (`docker: true`)"
            ),
        );
    }
    if *service.options != ContainerOptions::default() {
        decoder.error(
            fields.position(),
            format!(
                "`{path}`: a Swarm service takes command, env, env_file, ports, volumes, network, \
                 labels, memory, cpus, stop_timeout and health; remove the other container settings"
            ),
        );
    }
    for instance in service.instances.values() {
        if !instance.ports.is_empty() {
            decoder.error(
                instance.position,
                format!(
                    "`{path}.instances.{}.ports`: a Swarm service publishes the service's `ports`; \
                     an instance has none of its own",
                    instance.name
                ),
            );
        }
    }
}

/// `KEY==VALUE` or `KEY!=VALUE` with a dotted key (`node.labels.zone`), as Docker takes it.
fn is_constraint(text: &str) -> bool {
    let Some((key, value)) = text.split_once("==").or_else(|| text.split_once("!=")) else {
        return false;
    };
    let key = key.trim();
    let value = value.trim();
    !key.is_empty()
        && !value.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
        && !value.contains("==")
        && !value.contains("!=")
}
