//! One instance's container: the spec gantry derives from the pipeline, its labels
//! and spec hash, and the Docker calls that create, swap, restore and remove it.
//!
//! The container is named after its instance. While a replacement is on trial
//! the old container is kept under the instance name plus `PREVIOUS_SUFFIX`,
//! stopped or running, so it can be brought back unchanged.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use bollard::Docker;
use bollard::models::{
    ContainerCreateBody, ContainerInspectResponse, EndpointSettings, HostConfig,
    HostConfigLogConfig, NetworkConnectRequest, NetworkCreateRequest, NetworkingConfig,
    PortBinding, ResourcesUlimits, RestartPolicy, RestartPolicyNameEnum,
};
use bollard::query_parameters::{
    CreateContainerOptions, ListContainersOptions, LogsOptions, RemoveContainerOptions,
    RenameContainerOptions, StopContainerOptions,
};
use futures_util::StreamExt;
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::config::{
    ContainerOptions, ImageRepository, Instance, PREVIOUS_SUFFIX, Pipeline, PortMapping, Service,
    ServiceProxy,
};
use crate::host::describe_error;
use crate::registry::Mirrors;

pub const LABEL_PIPELINE: &str = "gantry.pipeline";
pub const LABEL_SERVICE: &str = "gantry.service";
pub const LABEL_INSTANCE: &str = "gantry.instance";
pub const LABEL_IMAGE: &str = "gantry.image";
pub const LABEL_DIGEST: &str = "gantry.digest";
pub const LABEL_COMMIT: &str = "gantry.commit";
pub const LABEL_SPEC: &str = "gantry.spec";
/// On a release task's container (`deploy::task`): the task's name. It has no instance label.
pub const LABEL_TASK: &str = "gantry.task";

/// Networks every engine has; gantry never creates them.
const BUILTIN_NETWORKS: [&str; 4] = ["bridge", "host", "none", "default"];

/// Everything gantry decides about one instance's container.
#[derive(Debug, Clone)]
pub struct ContainerSpec {
    pub pipeline: String,
    pub service: String,
    pub instance: String,
    pub host: String,
    pub repository: ImageRepository,
    pub digest: String,
    pub commit: Option<String>,
    pub command: Option<Vec<String>>,
    /// Service env with the instance's env on top.
    pub env: BTreeMap<String, String>,
    pub ports: Vec<PortMapping>,
    pub volumes: Vec<String>,
    pub restart: String,
    pub network: Option<String>,
    pub labels: BTreeMap<String, String>,
    pub memory: Option<u64>,
    pub cpus: Option<f64>,
    pub stop_timeout: Option<Duration>,
    /// Reached through the host's proxy.
    pub proxy: Option<ServiceProxy>,
    pub options: ContainerOptions,
    /// An accessory's image reference, run as written (`digest` holds it too).
    pub accessory: Option<String>,
    /// Hash of everything above except the image digest and commit.
    pub spec_hash: String,
}

/// The parts of a spec that make two containers the same, in a stable order.
#[derive(Serialize)]
struct HashedSpec<'a> {
    repository: String,
    command: &'a Option<Vec<String>>,
    env: &'a BTreeMap<String, String>,
    ports: Vec<String>,
    volumes: &'a [String],
    restart: &'a str,
    network: &'a Option<String>,
    labels: &'a BTreeMap<String, String>,
    memory: Option<u64>,
    cpus: Option<f64>,
    stop_timeout_ms: Option<u128>,
    #[serde(skip_serializing_if = "Option::is_none")]
    proxy: &'a Option<ServiceProxy>,
    #[serde(flatten)]
    options: &'a ContainerOptions,
    #[serde(skip_serializing_if = "Option::is_none")]
    accessory: &'a Option<String>,
}

impl ContainerSpec {
    pub fn new(
        pipeline: &Pipeline,
        service: &Service,
        instance: &Instance,
        image: &super::DeployImage,
    ) -> ContainerSpec {
        let mut env = service.env.clone();
        env.extend(instance.env.clone());
        // An accessory runs its own image, by the reference written, whatever is deployed.
        let (repository, digest, commit) = match service.accessory() {
            Some(reference) => (
                &ImageRepository::of_reference(reference)
                    .unwrap_or_else(|_| image.repository.clone()),
                reference,
                None,
            ),
            None => (
                &image.repository,
                image.digest.as_str(),
                image.commit.as_deref(),
            ),
        };
        let mut spec = ContainerSpec {
            pipeline: pipeline.name.clone(),
            service: service.name.clone(),
            instance: instance.name.clone(),
            host: instance.host.clone(),
            repository: repository.clone(),
            digest: digest.to_string(),
            commit: commit.map(str::to_string),
            command: service.command.clone(),
            env,
            ports: [service.ports.as_slice(), instance.ports.as_slice()].concat(),
            volumes: [service.volumes.as_slice(), instance.volumes.as_slice()].concat(),
            restart: service.restart.clone(),
            // A proxied container needs a network the proxy is on.
            network: service.network.clone().or_else(|| {
                service
                    .proxy
                    .as_ref()
                    .map(|_| super::proxy::PROXY_NETWORK.to_string())
            }),
            labels: service.labels.clone(),
            memory: service.memory,
            cpus: service.cpus,
            stop_timeout: service.stop_timeout,
            proxy: service.proxy.clone(),
            options: service.options.clone(),
            accessory: service.accessory().map(str::to_string),
            spec_hash: String::new(),
        };
        spec.spec_hash = spec.hash();
        spec
    }

    fn hash(&self) -> String {
        let hashed = HashedSpec {
            repository: self.repository.to_string(),
            command: &self.command,
            env: &self.env,
            ports: self.ports.iter().map(port_text).collect(),
            volumes: &self.volumes,
            restart: &self.restart,
            network: &self.network,
            labels: &self.labels,
            memory: self.memory,
            cpus: self.cpus,
            stop_timeout_ms: self.stop_timeout.map(|timeout| timeout.as_millis()),
            proxy: &self.proxy,
            options: &self.options,
            accessory: &self.accessory,
        };
        // Serialising plain structs and BTreeMaps cannot fail.
        let json = serde_json::to_vec(&hashed).unwrap_or_default();
        hex::encode(&Sha256::digest(&json)[..8])
    }

    /// A container's aliases on one of its networks: the service's and the instance's
    /// names (not on the proxy's network, which every pipeline shares), and `extra`.
    fn aliases(&self, network: &str, extra: &[String]) -> Vec<String> {
        let mut aliases = Vec::new();
        if network != super::proxy::PROXY_NETWORK {
            aliases.extend([self.service.clone(), self.instance.clone()]);
        }
        aliases.extend(extra.iter().cloned());
        aliases
    }

    /// The old container must stop before the new one starts: they would want the same host port.
    pub fn binds_fixed_host_port(&self) -> bool {
        self.ports.iter().any(|port| port.host_port.is_some())
    }

    pub fn image(&self) -> String {
        match &self.accessory {
            Some(reference) => reference.clone(),
            None => self.repository.with_digest(&self.digest),
        }
    }

    pub(crate) fn all_labels(&self) -> HashMap<String, String> {
        let mut labels: HashMap<String, String> = self.labels.clone().into_iter().collect();
        labels.insert(LABEL_PIPELINE.to_string(), self.pipeline.clone());
        labels.insert(LABEL_SERVICE.to_string(), self.service.clone());
        labels.insert(LABEL_INSTANCE.to_string(), self.instance.clone());
        labels.insert(
            LABEL_IMAGE.to_string(),
            self.accessory
                .clone()
                .unwrap_or_else(|| self.repository.to_string()),
        );
        labels.insert(LABEL_DIGEST.to_string(), self.digest.clone());
        labels.insert(
            LABEL_COMMIT.to_string(),
            self.commit.clone().unwrap_or_default(),
        );
        labels.insert(LABEL_SPEC.to_string(), self.spec_hash.clone());
        labels
    }

    /// The container's settings, created from `image`: the name the engine holds the
    /// spec's image under (`Mirrors::engine_reference`).
    fn create_body(&self, image: &str) -> ContainerCreateBody {
        let mut port_bindings = HashMap::new();
        for port in &self.ports {
            let binding = PortBinding {
                host_ip: port.host_ip.clone(),
                host_port: Some(
                    port.host_port
                        .map(|port| port.to_string())
                        .unwrap_or_default(),
                ),
            };
            port_bindings
                .entry(format!("{}/{}", port.container_port, port.protocol))
                .or_insert_with(|| Some(Vec::new()))
                .get_or_insert_with(Vec::new)
                .push(binding);
        }
        let exposed_ports: Vec<String> = port_bindings.keys().cloned().collect();
        let restart_policy = restart_policy(&self.restart);
        let networking_config = self
            .network
            .as_ref()
            .filter(|network| !is_builtin(network))
            .map(|network| NetworkingConfig {
                endpoints_config: Some(HashMap::from([(
                    network.clone(),
                    EndpointSettings {
                        aliases: Some(self.aliases(network, &self.options.aliases)),
                        ..EndpointSettings::default()
                    },
                )])),
            });
        ContainerCreateBody {
            image: Some(image.to_string()),
            cmd: self.command.clone(),
            env: Some(
                self.env
                    .iter()
                    .map(|(key, value)| format!("{key}={value}"))
                    .collect(),
            ),
            labels: Some(self.all_labels()),
            exposed_ports: (!exposed_ports.is_empty()).then_some(exposed_ports),
            stop_timeout: self
                .stop_timeout
                .map(|timeout| whole_seconds(timeout) as i64),
            entrypoint: self.options.entrypoint.clone(),
            user: self.options.user.clone(),
            host_config: Some(HostConfig {
                log_config: self
                    .options
                    .logging
                    .as_ref()
                    .map(|logging| HostConfigLogConfig {
                        typ: Some(logging.driver.clone()),
                        config: Some(logging.options.clone().into_iter().collect()),
                    }),
                extra_hosts: non_empty(&self.options.extra_hosts),
                ulimits: (!self.options.ulimits.is_empty()).then(|| {
                    self.options
                        .ulimits
                        .iter()
                        .map(|(name, limit)| ResourcesUlimits {
                            name: Some(name.clone()),
                            soft: Some(limit.soft),
                            hard: Some(limit.hard),
                        })
                        .collect()
                }),
                readonly_rootfs: self.options.read_only.then_some(true),
                tmpfs: (!self.options.tmpfs.is_empty()).then(|| {
                    self.options
                        .tmpfs
                        .iter()
                        .map(|mount| match mount.split_once(':') {
                            Some((path, options)) => (path.to_string(), options.to_string()),
                            None => (mount.clone(), String::new()),
                        })
                        .collect()
                }),
                cap_add: non_empty(&self.options.cap_add),
                cap_drop: non_empty(&self.options.cap_drop),
                init: self.options.init.then_some(true),
                port_bindings: (!port_bindings.is_empty()).then_some(port_bindings),
                binds: (!self.volumes.is_empty()).then(|| self.volumes.clone()),
                restart_policy: Some(restart_policy),
                memory: self.memory.map(|bytes| bytes as i64),
                nano_cpus: self.cpus.map(|cpus| (cpus * 1e9) as i64),
                network_mode: self.network.clone(),
                ..HostConfig::default()
            }),
            networking_config,
            ..ContainerCreateBody::default()
        }
    }
}

fn non_empty(list: &[String]) -> Option<Vec<String>> {
    (!list.is_empty()).then(|| list.to_vec())
}

fn port_text(port: &PortMapping) -> String {
    format!(
        "{}:{}:{}/{}",
        port.host_ip.as_deref().unwrap_or(""),
        port.host_port
            .map(|port| port.to_string())
            .unwrap_or_default(),
        port.container_port,
        port.protocol
    )
}

fn restart_policy(text: &str) -> RestartPolicy {
    let (name, count) = match text.split_once(':') {
        Some((name, count)) => (name, count.parse::<i64>().ok()),
        None => (text, None),
    };
    let name = match name {
        "no" => RestartPolicyNameEnum::NO,
        "always" => RestartPolicyNameEnum::ALWAYS,
        "on-failure" => RestartPolicyNameEnum::ON_FAILURE,
        _ => RestartPolicyNameEnum::UNLESS_STOPPED,
    };
    RestartPolicy {
        name: Some(name),
        maximum_retry_count: count,
    }
}

fn is_builtin(network: &str) -> bool {
    BUILTIN_NETWORKS.contains(&network) || network.starts_with("container:")
}

/// Docker takes stop timeouts in whole seconds; round up, so `500ms` still gets a graceful stop.
fn whole_seconds(timeout: Duration) -> u64 {
    timeout.as_secs_f64().ceil() as u64
}

/// The name the old container carries while its replacement is on trial.
pub fn previous_name(instance: &str) -> String {
    format!("{instance}{PREVIOUS_SUFFIX}")
}

/// A Docker call that failed, as one line for the user.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{action}: {reason}")]
pub struct DockerCallError {
    pub action: String,
    pub reason: String,
}

fn failed(action: impl Into<String>) -> impl FnOnce(bollard::errors::Error) -> DockerCallError {
    let action = action.into();
    move |error| DockerCallError {
        action,
        reason: describe_error(&error),
    }
}

fn is_not_found(error: &bollard::errors::Error) -> bool {
    matches!(
        error,
        bollard::errors::Error::DockerResponseServerError {
            status_code: 404,
            ..
        }
    )
}

/// The container named `name`, or `None` when there is none.
pub async fn inspect(
    docker: &Docker,
    name: &str,
) -> Result<Option<ContainerInspectResponse>, DockerCallError> {
    match docker.inspect_container(name, None).await {
        Ok(inspect) => Ok(Some(inspect)),
        Err(error) if is_not_found(&error) => Ok(None),
        Err(error) => Err(failed(format!("inspecting {name}"))(error)),
    }
}

/// Creates the spec's network on this host unless it exists (user-defined networks only).
pub async fn ensure_network(docker: &Docker, spec: &ContainerSpec) -> Result<(), DockerCallError> {
    let networks = spec
        .network
        .iter()
        .chain(
            spec.options
                .networks
                .iter()
                .map(|attachment| &attachment.name),
        )
        .filter(|network| !is_builtin(network));
    for network in networks {
        create_network(docker, network, (LABEL_PIPELINE, &spec.pipeline)).await?;
    }
    Ok(())
}

/// Creates a user-defined bridge network with this label unless it exists.
pub async fn create_network(
    docker: &Docker,
    network: &str,
    (label, value): (&str, &str),
) -> Result<(), DockerCallError> {
    match docker.inspect_network(network, None).await {
        Ok(_) => Ok(()),
        Err(error) if is_not_found(&error) => {
            let request = NetworkCreateRequest {
                name: network.to_string(),
                driver: Some("bridge".to_string()),
                labels: Some(HashMap::from([(label.to_string(), value.to_string())])),
                ..NetworkCreateRequest::default()
            };
            match docker.create_network(request).await {
                Ok(_) => Ok(()),
                // Another instance or rollout created it first.
                Err(bollard::errors::Error::DockerResponseServerError {
                    status_code: 409, ..
                }) => Ok(()),
                Err(error) => Err(failed(format!("creating network {network}"))(error)),
            }
        }
        Err(error) => Err(failed(format!("inspecting network {network}"))(error)),
    }
}

/// Creates (without starting) the spec's container under the instance name, from the
/// name the engine holds its image under; returns its id.
pub async fn create(
    docker: &Docker,
    spec: &ContainerSpec,
    mirrors: &Mirrors,
) -> Result<String, DockerCallError> {
    let image = mirrors.engine_reference(docker, &spec.image()).await;
    let options = CreateContainerOptions {
        name: Some(spec.instance.clone()),
        ..CreateContainerOptions::default()
    };
    let created = docker
        .create_container(Some(options), spec.create_body(&image))
        .await
        .map_err(failed(format!("creating container {}", spec.instance)))?;
    // The engine takes one network at creation; the others join before it starts.
    for attachment in &spec.options.networks {
        let endpoint = EndpointSettings {
            aliases: Some(spec.aliases(&attachment.name, &attachment.aliases)),
            ..EndpointSettings::default()
        };
        docker
            .connect_network(
                &attachment.name,
                NetworkConnectRequest {
                    container: created.id.clone(),
                    endpoint_config: Some(endpoint),
                },
            )
            .await
            .map_err(failed(format!(
                "connecting {} to network {}",
                spec.instance, attachment.name
            )))?;
    }
    Ok(created.id)
}

pub async fn start(docker: &Docker, name: &str) -> Result<(), DockerCallError> {
    match docker.start_container(name, None).await {
        Ok(()) => Ok(()),
        // 304: already running.
        Err(bollard::errors::Error::DockerResponseServerError {
            status_code: 304, ..
        }) => Ok(()),
        Err(error) => Err(failed(format!("starting {name}"))(error)),
    }
}

pub async fn stop(
    docker: &Docker,
    name: &str,
    timeout: Option<Duration>,
) -> Result<(), DockerCallError> {
    let options = StopContainerOptions {
        t: timeout.map(|timeout| whole_seconds(timeout) as i32),
        signal: None,
    };
    match docker.stop_container(name, Some(options)).await {
        Ok(()) => Ok(()),
        // 304: already stopped.
        Err(bollard::errors::Error::DockerResponseServerError {
            status_code: 304, ..
        }) => Ok(()),
        Err(error) => Err(failed(format!("stopping {name}"))(error)),
    }
}

pub async fn rename(docker: &Docker, from: &str, to: &str) -> Result<(), DockerCallError> {
    docker
        .rename_container(
            from,
            RenameContainerOptions {
                name: to.to_string(),
            },
        )
        .await
        .map_err(failed(format!("renaming {from} to {to}")))
}

/// Removes a container, running or not; one that is already gone is fine.
pub async fn remove(docker: &Docker, name: &str) -> Result<(), DockerCallError> {
    let options = RemoveContainerOptions {
        force: true,
        ..RemoveContainerOptions::default()
    };
    match docker.remove_container(name, Some(options)).await {
        Ok(()) => Ok(()),
        Err(error) if is_not_found(&error) => Ok(()),
        Err(error) => Err(failed(format!("removing {name}"))(error)),
    }
}

/// The last `lines` lines the container wrote to stdout and stderr.
pub async fn tail_logs(docker: &Docker, name: &str, lines: usize) -> Vec<String> {
    let options = LogsOptions {
        stdout: true,
        stderr: true,
        tail: lines.to_string(),
        ..LogsOptions::default()
    };
    let mut stream = docker.logs(name, Some(options));
    let mut text = String::new();
    while let Some(Ok(chunk)) = stream.next().await {
        text.push_str(&chunk.to_string());
    }
    text.lines().map(str::to_string).collect()
}

/// The containers of a pipeline on one host, by instance name, from their labels.
pub async fn list_for_pipeline(
    docker: &Docker,
    pipeline: &str,
) -> Result<Vec<bollard::models::ContainerSummary>, DockerCallError> {
    let options = ListContainersOptions {
        all: true,
        filters: Some(HashMap::from([(
            "label".to_string(),
            vec![format!("{LABEL_PIPELINE}={pipeline}")],
        )])),
        ..ListContainersOptions::default()
    };
    docker
        .list_containers(Some(options))
        .await
        .map_err(failed("listing containers"))
}

/// A label of an inspected container.
pub fn label<'a>(inspect: &'a ContainerInspectResponse, key: &str) -> Option<&'a str> {
    inspect
        .config
        .as_ref()?
        .labels
        .as_ref()?
        .get(key)
        .map(String::as_str)
}

/// Refuses a container that gantry did not create for this pipeline and instance: a
/// hand-made one, or another pipeline's that carries the same name. The message names
/// the container and its owner.
pub fn check_owner(
    inspect: &ContainerInspectResponse,
    name: &str,
    host: &str,
    pipeline: &str,
    instance: &str,
) -> Result<(), String> {
    match (
        label(inspect, LABEL_PIPELINE),
        label(inspect, LABEL_INSTANCE),
    ) {
        (Some(owner), Some(owner_instance)) if owner == pipeline && owner_instance == instance => {
            Ok(())
        }
        (Some(owner), Some(owner_instance)) => Err(format!(
            "container `{name}` on `{host}` belongs to pipeline `{owner}` (instance `{owner_instance}`), not to `{pipeline}`'s `{instance}`; gantry leaves it alone (give one of the instances another name)"
        )),
        _ => Err(format!(
            "container `{name}` on `{host}` was not created by gantry; gantry leaves it alone (remove or rename it, or give the instance another name)"
        )),
    }
}

pub fn is_running(inspect: &ContainerInspectResponse) -> bool {
    inspect
        .state
        .as_ref()
        .and_then(|state| state.running)
        .unwrap_or(false)
}

/// Whether an existing container publishes a fixed host port (so a twin could not start beside it).
pub fn holds_fixed_host_port(inspect: &ContainerInspectResponse) -> bool {
    inspect
        .host_config
        .as_ref()
        .and_then(|host_config| host_config.port_bindings.as_ref())
        .is_some_and(|bindings| {
            bindings.values().flatten().flatten().any(|binding| {
                binding
                    .host_port
                    .as_deref()
                    .is_some_and(|port| !port.is_empty() && port != "0")
            })
        })
}

/// The Docker engines a rollout works on, by host name: the real `swap::Containers`.
#[derive(Clone)]
pub struct Hosts {
    docker: std::sync::Arc<BTreeMap<String, Docker>>,
    /// Where each host's published ports are reached, for health checks.
    addresses: std::sync::Arc<BTreeMap<String, String>>,
    /// The ACME account's email, for proxies with `tls: acme` sites.
    email: Option<String>,
    /// Where images pulled through a mirror are found on an engine.
    mirrors: std::sync::Arc<Mirrors>,
}

impl Hosts {
    pub fn new(docker: &BTreeMap<String, Docker>, config: &crate::config::Config) -> Hosts {
        let addresses = docker
            .keys()
            .filter_map(|name| Some((name.clone(), config.hosts.get(name)?.address.clone())))
            .collect();
        Hosts {
            docker: std::sync::Arc::new(docker.clone()),
            addresses: std::sync::Arc::new(addresses),
            email: config.proxy.email.clone(),
            mirrors: std::sync::Arc::new(Mirrors::of(config)),
        }
    }

    fn address(&self, host: &str) -> &str {
        self.addresses.get(host).map_or("127.0.0.1", String::as_str)
    }

    fn engine(&self, host: &str) -> Result<&Docker, DockerCallError> {
        self.docker.get(host).ok_or_else(|| DockerCallError {
            action: format!("reaching host `{host}`"),
            reason: "it is not connected".to_string(),
        })
    }
}

impl super::swap::Containers for Hosts {
    async fn inspect(
        &self,
        host: &str,
        name: &str,
    ) -> Result<Option<super::swap::Existing>, DockerCallError> {
        let found = inspect(self.engine(host)?, name).await?;
        Ok(found.map(|inspect| super::swap::Existing {
            id: inspect.id.clone().unwrap_or_default(),
            running: is_running(&inspect),
            digest: label(&inspect, LABEL_DIGEST).map(str::to_string),
            spec_hash: label(&inspect, LABEL_SPEC).map(str::to_string),
            holds_fixed_host_port: holds_fixed_host_port(&inspect),
        }))
    }

    async fn ensure_network(&self, spec: &ContainerSpec) -> Result<(), DockerCallError> {
        ensure_network(self.engine(&spec.host)?, spec).await
    }

    async fn create(&self, spec: &ContainerSpec) -> Result<String, DockerCallError> {
        create(self.engine(&spec.host)?, spec, &self.mirrors).await
    }

    async fn start(&self, host: &str, name: &str) -> Result<(), DockerCallError> {
        start(self.engine(host)?, name).await
    }

    async fn stop(
        &self,
        host: &str,
        name: &str,
        timeout: Option<Duration>,
    ) -> Result<(), DockerCallError> {
        stop(self.engine(host)?, name, timeout).await
    }

    async fn rename(&self, host: &str, from: &str, to: &str) -> Result<(), DockerCallError> {
        rename(self.engine(host)?, from, to).await
    }

    async fn remove(&self, host: &str, name: &str) -> Result<(), DockerCallError> {
        remove(self.engine(host)?, name).await
    }

    async fn wait_healthy(
        &self,
        host: &str,
        name: &str,
        health: &crate::config::Health,
        via: Option<&super::health::ProbeTarget>,
    ) -> Result<Duration, super::health::HealthFailure> {
        let address = self.address(host);
        let docker = self
            .engine(host)
            .map_err(|error| super::health::HealthFailure {
                check: format!("the host of {name}"),
                result: error.to_string(),
                exited: false,
            })?;
        super::health::wait_healthy(docker, name, health, address, via).await
    }

    async fn open_probe(
        &self,
        spec: &ContainerSpec,
        container_id: &str,
        health: &crate::config::Health,
    ) -> Result<Option<super::health::ProbeTarget>, DockerCallError> {
        let Some(proxy) = &spec.proxy else {
            return Ok(None);
        };
        super::proxy::open_probe(
            self.engine(&spec.host)?,
            &spec.host,
            self.address(&spec.host),
            self.email.as_deref(),
            proxy,
            container_id,
            health,
        )
        .await
    }

    async fn close_probe(
        &self,
        host: &str,
        probe: &super::health::ProbeTarget,
    ) -> Result<(), DockerCallError> {
        super::proxy::close_probe(self.engine(host)?, host, self.email.as_deref(), probe).await
    }

    async fn switch(
        &self,
        spec: &ContainerSpec,
        container_id: &str,
        _probe: Option<&super::health::ProbeTarget>,
    ) -> Result<(), DockerCallError> {
        let Some(proxy) = &spec.proxy else {
            return Ok(());
        };
        super::proxy::switch(
            self.engine(&spec.host)?,
            &spec.host,
            self.email.as_deref(),
            &super::proxy::routes::site_key(&spec.pipeline, &spec.service),
            proxy,
            &spec.instance,
            container_id,
        )
        .await
    }

    async fn tail_logs(&self, host: &str, name: &str, lines: usize) -> Vec<String> {
        let Ok(docker) = self.engine(host) else {
            return Vec::new();
        };
        tail_logs(docker, name, lines).await
    }
}
