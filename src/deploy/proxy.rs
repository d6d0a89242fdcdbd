//! gantry's proxy: one Caddy container per host that runs a proxied service, holding
//! the services' fixed ports, so a new container takes over without a gap.
//!
//! The container (`gantry-proxy`, labelled as gantry's, restarted `unless-stopped`)
//! publishes every proxy port the config gives its host; its spec hash is a label, so
//! a changed image or port list replaces it. Its config is gantry's `Routes`, rendered
//! to Caddy's JSON and given to `caddy reload` run inside it, on its standard input:
//! that posts the whole config to Caddy's admin endpoint, which listens on the
//! container's own loopback only and swaps configs atomically, finishing requests in
//! flight on the old one. Then the routes (gantry's record) are written into the
//! container through the engine's archive API. Nothing but the engine's API (which
//! gantry already holds) reaches the admin endpoint.
//!
//! Upstreams are containers' short ids, which Docker's DNS resolves on every network
//! a container is on and a rename does not change: the old container renamed aside
//! keeps its requests until the switch.

mod record;
pub mod routes;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, LazyLock};
use std::time::{Duration, Instant};

use bollard::Docker;
use bollard::models::{
    ContainerCreateBody, EndpointSettings, HostConfig, NetworkConnectRequest, PortBinding,
    RestartPolicy, RestartPolicyNameEnum,
};
use bollard::query_parameters::CreateContainerOptions;
use sha2::{Digest, Sha256};

use self::routes::{Routes, Site, Upstream};
use super::container::{self, DockerCallError, LABEL_SPEC};
use super::health::ProbeTarget;
use super::{Log, short_id};
use crate::config::{Config, Health, HealthCheck, ServiceProxy};
use crate::host::describe_error;

pub const PROXY_CONTAINER: &str = "gantry-proxy";
/// The network proxied containers without a `network` of their own join.
pub const PROXY_NETWORK: &str = "gantry-proxy";
/// Kernel settings of the proxy's network namespace. Caddy opens a new listening socket
/// (`SO_REUSEPORT`) on every config load and closes the old one; the kernel resets the
/// connections still waiting in the old socket's queue unless `tcp_migrate_req` hands
/// them to the new one (Linux 5.14). Without it a switch could refuse a request arriving
/// at that moment (measured: 3 resets among 3,000 new connections during 60 reloads).
/// An engine on an older kernel gets none (Docker would refuse a setting it lacks).
pub const PROXY_SYSCTLS: [(&str, &str); 1] = [("net.ipv4.tcp_migrate_req", "1")];

/// The kernel settings the proxy gets on this engine: `PROXY_SYSCTLS` where its kernel
/// has them.
async fn sysctls_for(docker: &Docker) -> &'static [(&'static str, &'static str)] {
    let kernel = docker
        .version()
        .await
        .ok()
        .and_then(|version| version.kernel_version);
    match kernel.as_deref().is_some_and(migrates_requests) {
        true => &PROXY_SYSCTLS,
        false => &[],
    }
}

/// A Linux kernel version (`6.1.0-13-amd64`) that has `tcp_migrate_req` (5.14 and later).
fn migrates_requests(kernel: &str) -> bool {
    let mut numbers = kernel
        .split(|character: char| !character.is_ascii_digit())
        .map(|part| part.parse::<u32>().ok());
    match (numbers.next().flatten(), numbers.next().flatten()) {
        (Some(major), Some(minor)) => (major, minor) >= (5, 14),
        _ => false,
    }
}
/// Marks the proxy container as gantry's.
pub const LABEL_PROXY: &str = "gantry.proxy";
/// Inside the container: Caddy's config and autosave (a volume), and gantry's files.
const CONFIG_VOLUME: &str = "gantry-proxy-config:/config";
/// Certificates and the internal certificate authority survive a replaced container.
const DATA_VOLUME: &str = "gantry-proxy-data:/data";
pub(super) const FILES_DIR: &str = "/config/gantry";
pub(super) const ROUTES_FILE: &str = "routes.json";
const CADDY_FILE: &str = "caddy.json";
/// How long a fresh proxy may take before its admin endpoint takes a config.
const ADMIN_READY: Duration = Duration::from_secs(20);

/// What the proxy on one host must be, from the whole config (every pipeline's
/// proxied services with an instance there).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxySpec {
    pub host: String,
    pub image: String,
    pub ports: BTreeSet<u16>,
    /// User-defined networks of proxied services, besides `PROXY_NETWORK`.
    pub networks: BTreeSet<String>,
}

impl ProxySpec {
    /// `None` when no proxied service has an instance on `host`.
    pub fn for_host(config: &Config, host: &str) -> Option<ProxySpec> {
        let image = config.proxy.image.clone()?;
        let mut ports = BTreeSet::new();
        let mut networks = BTreeSet::new();
        for service in config
            .pipelines
            .values()
            .flat_map(|pipeline| pipeline.deploy.services.values())
        {
            let Some(proxy) = &service.proxy else {
                continue;
            };
            if !service
                .instances
                .values()
                .any(|instance| instance.host == host)
            {
                continue;
            }
            ports.insert(proxy.port);
            if let Some(network) = &service.network {
                networks.insert(network.clone());
            }
        }
        (!ports.is_empty()).then(|| ProxySpec {
            host: host.to_string(),
            image,
            ports,
            networks,
        })
    }

    fn hash(&self, sysctls: &[(&str, &str)]) -> String {
        let text = format!(
            "{}|{:?}|{:?}|{sysctls:?}",
            self.image, self.ports, self.networks
        );
        hex::encode(&Sha256::digest(text.as_bytes())[..8])
    }
}

/// What `ensure` found before it made the proxy right.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Found {
    Running,
    Stopped,
    Missing,
    /// Its image, ports or networks differ from the spec.
    Outdated,
}

/// Per host, gantry's record of the proxy's routes as this process last read or
/// loaded it (`None`: read it from the proxy first), behind a lock, so changes to one
/// proxy's routes are made one at a time and each does not read the record back.
/// Every rollout looks at it again (`refresh`: a stat, and a read when the proxy's
/// record is not the one held here), so another process's changes are seen.
type HostRoutes = Arc<tokio::sync::Mutex<Option<record::Known>>>;

static HOSTS: LazyLock<std::sync::Mutex<HashMap<String, HostRoutes>>> =
    LazyLock::new(Default::default);

fn host_routes(host: &str) -> HostRoutes {
    let mut hosts = HOSTS
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    hosts.entry(host.to_string()).or_default().clone()
}

/// Reads the host's record from its proxy, for this process to change from now on
/// (unless the record this process holds is still the proxy's, which a stat tells).
pub async fn refresh(docker: &Docker, host: &str) -> Result<Routes, DockerCallError> {
    let state = host_routes(host);
    let mut cached = state.lock().await;
    if let Some(known) = cached.as_ref()
        && known.is_current(docker).await
    {
        return Ok(known.routes.clone());
    }
    let known = record::read_or_empty(docker).await?;
    let routes = known.routes.clone();
    *cached = Some(known);
    Ok(routes)
}

pub(super) fn failure(action: impl Into<String>, reason: impl Into<String>) -> DockerCallError {
    DockerCallError {
        action: action.into(),
        reason: reason.into(),
    }
}

/// Makes the host's proxy container match the spec: started when stopped, created
/// when missing, replaced when outdated (pulling its image first when the engine lacks it).
pub async fn ensure(
    docker: &Docker,
    spec: &ProxySpec,
    credentials: Option<&crate::registry::Credentials>,
    log: Log<'_>,
) -> Result<Found, DockerCallError> {
    let host = &spec.host;
    let (sysctls, existing) = tokio::join!(
        sysctls_for(docker),
        container::inspect(docker, PROXY_CONTAINER)
    );
    let hash = spec.hash(sysctls);
    let found = match existing? {
        Some(existing) if container::label(&existing, LABEL_PROXY).is_none() => {
            return Err(failure(
                format!("starting the proxy on {host}"),
                format!(
                    "a container named {PROXY_CONTAINER} exists that gantry did not make; rename or remove it"
                ),
            ));
        }
        Some(existing) if container::label(&existing, LABEL_SPEC) == Some(hash.as_str()) => {
            if container::is_running(&existing) {
                return Ok(Found::Running);
            }
            log(&format!("proxy on {host} was stopped; starting it"));
            container::start(docker, PROXY_CONTAINER).await?;
            return Ok(Found::Stopped);
        }
        Some(_) => Found::Outdated,
        None => Found::Missing,
    };
    match found {
        Found::Missing => log(&format!(
            "proxy on {host} is missing; starting {}",
            spec.image
        )),
        _ => log(&format!(
            "proxy on {host}: replacing it with {} on ports {}",
            spec.image,
            ports_text(&spec.ports)
        )),
    }
    if docker.inspect_image(&spec.image).await.is_err() {
        let repository = crate::config::ImageRepository::of_reference(&spec.image)
            .map_err(|error| failure(format!("pulling {}", spec.image), error))?;
        crate::registry::pull_reference(docker, &spec.image, &repository, credentials)
            .await
            .map_err(|error| failure(format!("pulling {}", spec.image), error.to_string()))?;
    }
    for network in std::iter::once(PROXY_NETWORK).chain(spec.networks.iter().map(String::as_str)) {
        ensure_network(docker, network).await?;
    }
    container::remove(docker, PROXY_CONTAINER).await?;
    create(docker, spec, &hash, sysctls).await?;
    for network in &spec.networks {
        docker
            .connect_network(
                network,
                NetworkConnectRequest {
                    container: PROXY_CONTAINER.to_string(),
                    endpoint_config: None,
                },
            )
            .await
            .map_err(|error| {
                failure(
                    format!("connecting the proxy to network {network}"),
                    describe_error(&error),
                )
            })?;
    }
    container::start(docker, PROXY_CONTAINER).await?;
    Ok(found)
}

fn ports_text(ports: &BTreeSet<u16>) -> String {
    ports
        .iter()
        .map(u16::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

async fn create(
    docker: &Docker,
    spec: &ProxySpec,
    hash: &str,
    sysctls: &[(&str, &str)],
) -> Result<(), DockerCallError> {
    let port_bindings: HashMap<String, Option<Vec<PortBinding>>> = spec
        .ports
        .iter()
        .map(|port| {
            (
                format!("{port}/tcp"),
                Some(vec![PortBinding {
                    host_ip: None,
                    host_port: Some(port.to_string()),
                }]),
            )
        })
        .collect();
    let body = ContainerCreateBody {
        image: Some(spec.image.clone()),
        entrypoint: Some(vec!["caddy".to_string()]),
        // The last config loaded (Caddy's autosave, in the config volume), so a
        // restarted proxy routes as before.
        cmd: Some(vec!["run".to_string(), "--resume".to_string()]),
        env: Some(vec![
            "XDG_CONFIG_HOME=/config".to_string(),
            "XDG_DATA_HOME=/data".to_string(),
        ]),
        labels: Some(HashMap::from([
            (LABEL_PROXY.to_string(), "caddy".to_string()),
            (LABEL_SPEC.to_string(), hash.to_string()),
        ])),
        exposed_ports: Some(port_bindings.keys().cloned().collect()),
        host_config: Some(HostConfig {
            port_bindings: Some(port_bindings),
            binds: Some(vec![CONFIG_VOLUME.to_string(), DATA_VOLUME.to_string()]),
            restart_policy: Some(RestartPolicy {
                name: Some(RestartPolicyNameEnum::UNLESS_STOPPED),
                maximum_retry_count: None,
            }),
            network_mode: Some(PROXY_NETWORK.to_string()),
            sysctls: Some(
                sysctls
                    .iter()
                    .map(|(name, value)| (name.to_string(), value.to_string()))
                    .collect(),
            ),
            ..HostConfig::default()
        }),
        networking_config: Some(bollard::models::NetworkingConfig {
            endpoints_config: Some(HashMap::from([(
                PROXY_NETWORK.to_string(),
                EndpointSettings::default(),
            )])),
        }),
        ..ContainerCreateBody::default()
    };
    docker
        .create_container(
            Some(CreateContainerOptions {
                name: Some(PROXY_CONTAINER.to_string()),
                ..CreateContainerOptions::default()
            }),
            body,
        )
        .await
        .map_err(|error| failure("creating the proxy container", describe_error(&error)))?;
    Ok(())
}

/// Creates a user-defined bridge network, labelled as the proxy's, unless it exists.
pub async fn ensure_network(docker: &Docker, network: &str) -> Result<(), DockerCallError> {
    container::create_network(docker, network, (LABEL_PROXY, "caddy")).await
}

/// Changes the host's routes and loads them into its proxy, one change at a time per host.
pub async fn change_routes(
    docker: &Docker,
    host: &str,
    email: Option<&str>,
    change: impl FnOnce(&mut Routes),
) -> Result<Routes, DockerCallError> {
    let state = host_routes(host);
    let mut cached = state.lock().await;
    let known = match cached.take() {
        Some(known) => known,
        None => record::read_or_empty(docker).await?,
    };
    let before = known.routes.clone();
    let mut routes = before.clone();
    change(&mut routes);
    if routes == before {
        *cached = Some(known);
        return Ok(routes);
    }
    let config = json(&routes::render(&routes, email));
    // Caddy takes the config on the reload's standard input, so requests switch as soon
    // as it loads; the record (and the config, for whoever looks) are written after.
    // A failed reload leaves Caddy and the record as they were.
    reload(docker, host, &config).await?;
    let stored = json(&routes);
    if let Err(error) =
        record::write(docker, &[(CADDY_FILE, &config), (ROUTES_FILE, &stored)]).await
    {
        // The record still describes the old config: Caddy goes back to it, so the
        // two agree (left unknown if that fails too), and the change fails.
        let previous = json(&routes::render(&before, email));
        if reload(docker, host, &previous).await.is_ok() {
            *cached = Some(record::Known::unstamped(before));
        }
        return Err(error);
    }
    *cached = Some(record::Known::stored_as(routes.clone(), &stored));
    Ok(routes)
}

fn json(value: &impl serde::Serialize) -> Vec<u8> {
    // Plain structs and JSON values always serialise.
    serde_json::to_vec_pretty(value).unwrap_or_default()
}

/// Brings the sites of a pipeline's proxied services on `host` in line with the
/// config and with the containers running now (a fresh proxy knows none of them).
pub async fn sync_sites(
    docker: &Docker,
    config: &Config,
    pipeline: &crate::config::Pipeline,
    host: &str,
) -> Result<(), DockerCallError> {
    let mut wanted: BTreeMap<String, Site> = BTreeMap::new();
    for service in pipeline.deploy.services.values() {
        let Some(proxy) = &service.proxy else {
            continue;
        };
        let mut site = Site::new(proxy);
        for instance in service.instances.values().filter(|i| i.host == host) {
            if service.swarm.is_some() {
                // A Swarm service is reached through its tasks' names on its overlay
                // network: Docker's DNS there lists the tasks that run, as Swarm
                // replaces them.
                site.upstreams.insert(
                    instance.name.clone(),
                    Upstream {
                        container: format!("tasks.{}", instance.name),
                        port: proxy.container_port,
                    },
                );
                continue;
            }
            if let Some(inspect) = container::inspect(docker, &instance.name).await?
                && container::is_running(&inspect)
                && container::label(&inspect, container::LABEL_PIPELINE)
                    == Some(pipeline.name.as_str())
                && let Some(id) = &inspect.id
            {
                site.upstreams.insert(
                    instance.name.clone(),
                    Upstream {
                        container: short_id(id),
                        port: proxy.container_port,
                    },
                );
            }
        }
        if service.instances.values().any(|i| i.host == host) {
            wanted.insert(routes::site_key(&pipeline.name, &service.name), site);
        }
    }
    let prefix = format!("{}/", pipeline.name);
    change_routes(docker, host, config.proxy.email.as_deref(), |routes| {
        // Made here, so the rollout's first check needs no config load of its own.
        routes.probe_secret.get_or_insert_with(probe_secret);
        routes
            .sites
            .retain(|key, _| !key.starts_with(&prefix) || wanted.contains_key(key));
        for (key, site) in wanted {
            match routes.sites.get_mut(&key) {
                // Keep the record's upstreams for instances whose container is not
                // running (being swapped by another process): only add what runs.
                Some(existing) => {
                    existing.port = site.port;
                    existing.hosts = site.hosts;
                    existing.tls = site.tls;
                    existing.upstreams = site.upstreams;
                }
                None => {
                    routes.sites.insert(key, site);
                }
            }
        }
    })
    .await?;
    Ok(())
}

/// How a container on trial is checked through the proxy, when its check is `http`:
/// the proxy's probe route (made with its secret on the first use), as users'
/// requests will come. No config load is needed per trial.
pub async fn open_probe(
    docker: &Docker,
    host: &str,
    address: &str,
    email: Option<&str>,
    proxy: &ServiceProxy,
    container_id: &str,
    health: &Health,
) -> Result<Option<ProbeTarget>, DockerCallError> {
    let HealthCheck::Http { port, .. } = &health.check else {
        return Ok(None);
    };
    let routes = change_routes(docker, host, email, |routes| {
        routes.probe_secret.get_or_insert_with(probe_secret);
    })
    .await?;
    Ok(Some(ProbeTarget {
        address: address.to_string(),
        port: proxy.port,
        secret: routes.probe_secret.unwrap_or_default(),
        upstream: format!("{}:{port}", short_id(container_id)),
        host_name: proxy
            .hosts
            .iter()
            .find(|name| !name.starts_with('*'))
            .cloned(),
        tls: proxy.tls.is_some(),
    }))
}

/// Nothing to undo: the probe route stays, and reaches a container only by its id.
pub async fn close_probe(
    _docker: &Docker,
    _host: &str,
    _email: Option<&str>,
    _probe: &ProbeTarget,
) -> Result<(), DockerCallError> {
    Ok(())
}

/// Sends an instance's requests to `container_id`.
#[allow(clippy::too_many_arguments)]
pub async fn switch(
    docker: &Docker,
    host: &str,
    email: Option<&str>,
    site: &str,
    proxy: &ServiceProxy,
    instance: &str,
    container_id: &str,
) -> Result<(), DockerCallError> {
    change_routes(docker, host, email, |routes| {
        routes
            .sites
            .entry(site.to_string())
            .or_insert_with(|| Site::new(proxy))
            .upstreams
            .insert(
                instance.to_string(),
                Upstream {
                    container: short_id(container_id),
                    port: proxy.container_port,
                },
            );
    })
    .await
    .map(drop)
}

/// Where the host's proxy sends one instance's requests, for `gantry status`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ProxyRoute {
    pub port: u16,
    /// The proxy container's state: `running`, `exited`, ..., `missing`, or `unknown`.
    pub state: String,
    /// The container (short id) the proxy sends the instance's requests to.
    pub upstream: Option<String>,
}

pub async fn route_status(docker: &Docker, port: u16, site: &str, instance: &str) -> ProxyRoute {
    let mut route = ProxyRoute {
        port,
        state: "missing".to_string(),
        upstream: None,
    };
    match container::inspect(docker, PROXY_CONTAINER).await {
        Ok(Some(inspect)) => {
            route.state = inspect
                .state
                .and_then(|state| state.status)
                .map_or_else(|| "unknown".to_string(), |status| status.to_string());
        }
        Ok(None) => return route,
        Err(_) => {
            route.state = "unknown".to_string();
            return route;
        }
    }
    if let Ok(Some(known)) = record::read(docker).await {
        route.upstream = known
            .routes
            .sites
            .get(site)
            .and_then(|site| site.upstreams.get(instance))
            .map(|upstream| upstream.container.clone());
    }
    route
}

/// Loads `config` (Caddy's JSON) through Caddy's admin endpoint, given to `caddy
/// reload` on its standard input (writing a file first through the engine's archive
/// API would cost as much again), waiting for a proxy that is still starting.
async fn reload(docker: &Docker, host: &str, config: &[u8]) -> Result<(), DockerCallError> {
    let deadline = Instant::now() + ADMIN_READY;
    loop {
        let (code, output) = exec(
            docker,
            vec![
                "caddy".to_string(),
                "reload".to_string(),
                "--config".to_string(),
                "/dev/stdin".to_string(),
                "--force".to_string(),
            ],
            Some(config),
        )
        .await?;
        if code == Some(0) {
            return Ok(());
        }
        let starting = output.contains("connection refused") || output.contains("dial tcp");
        if !starting || Instant::now() >= deadline {
            let last: Vec<&str> = output.lines().rev().take(3).collect();
            let last: Vec<&str> = last.into_iter().rev().collect();
            return Err(failure(
                format!("loading the proxy's config on {host}"),
                format!(
                    "caddy reload exited with {}: {}",
                    code.map_or("?".to_string(), |code| code.to_string()),
                    last.join(" / ")
                ),
            ));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Runs a command in the proxy container; its exit code and output.
async fn exec(
    docker: &Docker,
    command: Vec<String>,
    input: Option<&[u8]>,
) -> Result<(Option<i64>, String), DockerCallError> {
    super::health::exec_output(docker, PROXY_CONTAINER, &command, input)
        .await
        .map_err(|error| {
            failure(
                format!("running `{}` in the proxy", command.join(" ")),
                describe_error(&error),
            )
        })
}

/// A fresh secret for a proxy's probe route.
pub fn probe_secret() -> String {
    let mut bytes = [0u8; 16];
    // The OS's generator; should it fail, the time still makes one hard to guess.
    if getrandom::fill(&mut bytes).is_err() {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        bytes[..16].copy_from_slice(&now.as_nanos().to_le_bytes());
    }
    hex::encode(bytes)
}

#[cfg(test)]
mod tests {
    #[test]
    fn request_migration_is_asked_of_kernels_that_have_it() {
        let check = |kernel: &str, expected: bool| {
            assert_eq!(super::migrates_requests(kernel), expected, "{kernel}");
        };
        check("6.1.0-13-amd64", true);
        check("5.14.0", true);
        check("5.15.0-91-generic", true);
        check("6.18.44-fc-v669", true);
        check("5.10.0-26-amd64", false);
        check("4.19.0", false);
        check("5", false);
        check("", false);
    }
}
