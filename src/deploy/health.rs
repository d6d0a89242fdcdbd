//! Health gates: whether a freshly started container may take over from the old one.
//!
//! A check is asked every `interval` until it passes or `timeout` has passed since
//! the container started. Before each attempt the container itself is inspected
//! (after a failed one, for a check through the proxy), so one that exits (or
//! restarts) fails the gate at once instead of at the deadline. `http` and `tcp`
//! probe the host port Docker published for the named container port, at the host's
//! `address`; `exec` runs a command inside the container; `docker` reads the
//! engine's verdict on the image's own HEALTHCHECK.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{LazyLock, Mutex};
use std::time::{Duration, Instant};

use bollard::Docker;
use bollard::exec::{CreateExecOptions, StartExecResults};
use bollard::models::HealthStatusEnum;
use futures_util::StreamExt;
use serde::Serialize;

use crate::config::{Health, HealthCheck};
use crate::host::describe_error;

/// The longest one probe (an HTTP request, a TCP connect, an exec) may take.
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);

const UNHEALTHY: &str = "the engine reports it unhealthy";
const NO_HEALTHCHECK: &str = "the image has no HEALTHCHECK";

/// Where an `http` check of a proxied container goes: the host's proxy, with the
/// secret of its probe route and the container on trial.
#[derive(Debug, Clone)]
pub struct ProbeTarget {
    /// The host's address and the proxy port.
    pub address: String,
    pub port: u16,
    pub secret: String,
    /// The container on trial as the probe route reaches it: `<short id>:<port>`.
    pub upstream: String,
    /// A host name the route answers for (sent as Host and TLS server name).
    pub host_name: Option<String>,
    pub tls: bool,
}

/// Why a container did not become healthy.
#[derive(Debug, Clone, Serialize)]
pub struct HealthFailure {
    /// The check, as a person would describe it: `http GET 10.0.0.11:32768/healthz`.
    pub check: String,
    /// The last result the check got: `HTTP 500`, `connection refused`, `exit code 1`.
    pub result: String,
    /// Set when the container stopped running during the gate.
    pub exited: bool,
}

impl std::fmt::Display for HealthFailure {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.exited {
            write!(formatter, "{} ({})", self.result, self.check)
        } else {
            write!(formatter, "{} failed: {}", self.check, self.result)
        }
    }
}

/// Waits until the container passes its check; returns how long that took.
pub async fn wait_healthy(
    docker: &Docker,
    container: &str,
    health: &Health,
    address: &str,
    via: Option<&ProbeTarget>,
) -> Result<Duration, HealthFailure> {
    let started = Instant::now();
    let deadline = started + health.timeout;
    let mut check = describe_check(&health.check, address, None);
    if let (Some(via), HealthCheck::Http { path, .. }) = (via, &health.check) {
        check = format!(
            "http GET {}:{}{path} through the proxy",
            bracket_ipv6(&via.address),
            via.port
        );
    }
    let mut last_result: String;
    loop {
        let attempt = match (via, &health.check) {
            // Through the proxy, an answer proves the container runs: it is inspected
            // only when the probe fails, to tell an exited one at once.
            (
                Some(via),
                HealthCheck::Http {
                    path, status, body, ..
                },
            ) => match probe_through_proxy(via, path, *status, body.as_deref()).await {
                Ok(()) => Ok(()),
                Err(result) => match container_state(docker, container).await {
                    ContainerState::Gone(reason) => {
                        return Err(HealthFailure {
                            check,
                            result: reason,
                            exited: true,
                        });
                    }
                    _ => Err(result),
                },
            },
            _ => match container_state(docker, container).await {
                ContainerState::Gone(reason) => {
                    return Err(HealthFailure {
                        check,
                        result: reason,
                        exited: true,
                    });
                }
                ContainerState::Unknown(reason) => Err(reason),
                ContainerState::Running { published } => {
                    if let Some(host_port) = check_port(&health.check)
                        .filter(|_| via.is_none())
                        .and_then(|container_port| published_port(&published, container_port))
                    {
                        check = describe_check(&health.check, address, Some(host_port));
                    }
                    probe(docker, container, health, address, &published, started).await
                }
            },
        };
        match attempt {
            Ok(()) => return Ok(started.elapsed()),
            Err(result) => last_result = result,
        }
        // The engine's verdict on the image's own HEALTHCHECK (or its absence) is final.
        if matches!(health.check, HealthCheck::Docker)
            && (last_result == UNHEALTHY || last_result == NO_HEALTHCHECK)
        {
            break;
        }
        let now = Instant::now();
        if now >= deadline {
            break;
        }
        tokio::time::sleep(health.interval.min(deadline - now)).await;
    }
    Err(HealthFailure {
        check,
        result: format!(
            "{last_result} (not healthy after {})",
            humantime::format_duration(Duration::from_millis(started.elapsed().as_millis() as u64))
        ),
        exited: false,
    })
}

/// The container port an `http` or `tcp` check names.
fn check_port(check: &HealthCheck) -> Option<u16> {
    match check {
        HealthCheck::Http { port, .. } | HealthCheck::Tcp { port } => Some(*port),
        _ => None,
    }
}

/// One attempt of the check against a running container.
async fn probe(
    docker: &Docker,
    container: &str,
    health: &Health,
    address: &str,
    published: &[(u16, u16)],
    started: Instant,
) -> Result<(), String> {
    let host_port = |container_port: u16| {
        published_port(published, container_port)
            .ok_or_else(|| format!("container port {container_port} is not published"))
    };
    match &health.check {
        // Nothing to ask: the container counts as healthy once it has kept
        // running for one interval.
        HealthCheck::None if started.elapsed() >= health.interval => Ok(()),
        HealthCheck::None => Err("still starting".to_string()),
        HealthCheck::Http {
            port,
            path,
            status,
            body,
        } => probe_http(address, host_port(*port)?, path, *status, body.as_deref()).await,
        HealthCheck::Tcp { port } => probe_tcp(address, host_port(*port)?).await,
        HealthCheck::Exec { command } => probe_exec(docker, container, command).await,
        HealthCheck::Docker => probe_docker(docker, container).await,
    }
}

/// The check in words, with the host port once it is known.
fn describe_check(check: &HealthCheck, address: &str, host_port: Option<u16>) -> String {
    let at = |container_port: u16| match host_port {
        Some(host_port) => format!("{address}:{host_port}"),
        None => format!("{address}:<port {container_port}>"),
    };
    match check {
        HealthCheck::None => "the container keeps running".to_string(),
        HealthCheck::Http { port, path, .. } => format!("http GET {}{path}", at(*port)),
        HealthCheck::Tcp { port } => format!("tcp connect {}", at(*port)),
        HealthCheck::Exec { command } => format!("exec `{}`", command.join(" ")),
        HealthCheck::Docker => "the image's HEALTHCHECK".to_string(),
    }
}

enum ContainerState {
    /// Running, with the (container port, host port) pairs Docker published.
    Running { published: Vec<(u16, u16)> },
    /// Exited, restarting or removed: it will not become healthy.
    Gone(String),
    /// The engine did not answer this time.
    Unknown(String),
}

async fn container_state(docker: &Docker, container: &str) -> ContainerState {
    let inspect = match docker.inspect_container(container, None).await {
        Ok(inspect) => inspect,
        Err(error) => return ContainerState::Unknown(describe_error(&error)),
    };
    let state = inspect.state.unwrap_or_default();
    if state.restarting == Some(true) || inspect.restart_count.unwrap_or(0) > 0 {
        return ContainerState::Gone(format!(
            "the container exited with code {} and is being restarted",
            state.exit_code.unwrap_or_default()
        ));
    }
    if state.running != Some(true) {
        return ContainerState::Gone(format!(
            "the container exited with code {}",
            state.exit_code.unwrap_or_default()
        ));
    }
    let published = inspect
        .network_settings
        .and_then(|settings| settings.ports)
        .unwrap_or_default()
        .into_iter()
        .filter_map(|(key, bindings)| {
            let container_port = key.split('/').next()?.parse::<u16>().ok()?;
            // Engines may publish different ports for IPv4 and IPv6; the host's
            // address is usually IPv4, so its binding comes first.
            let bindings = bindings?;
            let is_ipv6 = |binding: &&bollard::models::PortBinding| {
                binding
                    .host_ip
                    .as_deref()
                    .is_some_and(|ip| ip.contains(':'))
            };
            let host_port = bindings
                .iter()
                .filter(|binding| !is_ipv6(binding))
                .chain(bindings.iter().filter(is_ipv6))
                .find_map(|binding| binding.host_port.as_deref()?.parse::<u16>().ok())?;
            Some((container_port, host_port))
        })
        .collect();
    ContainerState::Running { published }
}

fn published_port(published: &[(u16, u16)], container_port: u16) -> Option<u16> {
    published
        .iter()
        .find(|(port, _)| *port == container_port)
        .map(|(_, host_port)| *host_port)
}

async fn probe_http(
    address: &str,
    port: u16,
    path: &str,
    expected_status: u16,
    body_pattern: Option<&str>,
) -> Result<(), String> {
    let client = crate::http::direct()?;
    let url = format!("http://{}:{port}{path}", bracket_ipv6(address));
    let request = client.get(&url);
    check_response(request, expected_status, body_pattern).await
}

/// Clients for probes through a proxy, by (TLS, the host name and the address it is
/// sent to). Building one loads the system's certificates, which takes longer than
/// the probe itself; a rollout probes the same proxies again and again.
type ProxyClients = HashMap<(bool, Option<(String, SocketAddr)>), reqwest::Client>;
static PROXY_CLIENTS: LazyLock<Mutex<ProxyClients>> = LazyLock::new(Mutex::default);

/// The client for probes through `via`'s proxy, and the authority to ask for.
async fn proxy_client(via: &ProbeTarget) -> Result<(reqwest::Client, String), String> {
    let target = format!("{}:{}", bracket_ipv6(&via.address), via.port);
    let (name, authority) = match &via.host_name {
        Some(name) => {
            let resolved = tokio::net::lookup_host(&target)
                .await
                .map_err(|error| format!("{target}: {error}"))?
                .next()
                .ok_or_else(|| format!("{target} resolves to no address"))?;
            (
                Some((name.clone(), resolved)),
                format!("{name}:{}", via.port),
            )
        }
        None => (None, target),
    };
    let key = (via.tls, name);
    let mut clients = PROXY_CLIENTS
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    if let Some(client) = clients.get(&key) {
        return Ok((client.clone(), authority));
    }
    crate::http::install_crypto();
    let mut builder = reqwest::Client::builder()
        .no_proxy()
        // A connection kept from an earlier probe may have been closed by a config
        // load since; each probe opens its own.
        .pool_max_idle_per_host(0)
        .tls_danger_accept_invalid_certs(via.tls);
    if let Some((name, resolved)) = &key.1 {
        builder = builder.resolve(name, *resolved);
    }
    let client = builder
        .build()
        .map_err(|error| format!("cannot make an HTTP client: {error}"))?;
    clients.insert(key, client.clone());
    Ok((client, authority))
}

/// An `http` check through the proxy's probe route. Over TLS the proxy's certificate
/// is not verified: the request goes to the proxy gantry configured on a host it
/// reaches through the engine, and the check only reads a status.
async fn probe_through_proxy(
    via: &ProbeTarget,
    path: &str,
    expected_status: u16,
    body_pattern: Option<&str>,
) -> Result<(), String> {
    let (client, authority) = proxy_client(via).await?;
    let scheme = if via.tls { "https" } else { "http" };
    let request = client
        .get(format!("{scheme}://{authority}{path}"))
        .header(super::proxy::routes::PROBE_HEADER, &via.secret)
        .header(super::proxy::routes::UPSTREAM_HEADER, &via.upstream);
    check_response(request, expected_status, body_pattern).await
}

async fn check_response(
    request: reqwest::RequestBuilder,
    expected_status: u16,
    body_pattern: Option<&str>,
) -> Result<(), String> {
    let response = request
        .timeout(PROBE_TIMEOUT)
        .send()
        .await
        .map_err(|error| crate::http::innermost_cause(&error))?;
    let status = response.status().as_u16();
    if status != expected_status {
        return Err(format!("HTTP {status}, expected {expected_status}"));
    }
    if let Some(pattern) = body_pattern {
        let body = response.text().await.map_err(|error| error.to_string())?;
        // Validated when the config was loaded.
        let regex = regex::Regex::new(pattern).map_err(|error| error.to_string())?;
        if !regex.is_match(&body) {
            let shown: String = body.chars().take(120).collect();
            return Err(format!(
                "HTTP {status}, but the body does not match /{pattern}/: {shown:?}"
            ));
        }
    }
    Ok(())
}

async fn probe_tcp(address: &str, port: u16) -> Result<(), String> {
    let target = format!("{}:{port}", bracket_ipv6(address));
    match tokio::time::timeout(PROBE_TIMEOUT, tokio::net::TcpStream::connect(&target)).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(error)) => Err(error.to_string()),
        Err(_) => Err("the connection timed out".to_string()),
    }
}

async fn probe_exec(docker: &Docker, container: &str, command: &[String]) -> Result<(), String> {
    let run = async {
        let (code, output) = exec_output(docker, container, command, None)
            .await
            .map_err(|error| describe_error(&error))?;
        match code {
            Some(0) => Ok(()),
            code => {
                let last_line = output.lines().last().unwrap_or("").trim().to_string();
                Err(format!(
                    "exit code {}{}",
                    code.map_or("?".to_string(), |code| code.to_string()),
                    if last_line.is_empty() {
                        String::new()
                    } else {
                        format!(": {last_line}")
                    }
                ))
            }
        }
    };
    tokio::time::timeout(PROBE_TIMEOUT, run)
        .await
        .unwrap_or_else(|_| Err("the command did not finish in time".to_string()))
}

/// Runs a command in a running container and waits for it: its exit code (when the
/// engine knows it) and what it wrote to stdout and stderr. `input`, when given, is
/// its standard input, closed after it.
pub(super) async fn exec_output(
    docker: &Docker,
    container: &str,
    command: &[String],
    input: Option<&[u8]>,
) -> Result<(Option<i64>, String), bollard::errors::Error> {
    let exec = docker
        .create_exec(
            container,
            CreateExecOptions {
                cmd: Some(command.to_vec()),
                attach_stdin: Some(input.is_some()),
                attach_stdout: Some(true),
                attach_stderr: Some(true),
                ..CreateExecOptions::default()
            },
        )
        .await?;
    let mut output = String::new();
    if let StartExecResults::Attached {
        output: mut stream,
        input: mut stdin,
    } = docker.start_exec(&exec.id, None).await?
    {
        if let Some(input) = input {
            use tokio::io::AsyncWriteExt;
            stdin.write_all(input).await?;
            stdin.shutdown().await?;
        }
        while let Some(Ok(chunk)) = stream.next().await {
            output.push_str(&chunk.to_string());
        }
    }
    let inspect = docker.inspect_exec(&exec.id).await?;
    Ok((inspect.exit_code, output))
}

async fn probe_docker(docker: &Docker, container: &str) -> Result<(), String> {
    let inspect = docker
        .inspect_container(container, None)
        .await
        .map_err(|error| describe_error(&error))?;
    let health = inspect.state.and_then(|state| state.health);
    match health.and_then(|health| health.status) {
        Some(HealthStatusEnum::HEALTHY) => Ok(()),
        Some(HealthStatusEnum::UNHEALTHY) => Err(UNHEALTHY.to_string()),
        Some(HealthStatusEnum::STARTING) => Err("starting".to_string()),
        _ => Err(NO_HEALTHCHECK.to_string()),
    }
}

fn bracket_ipv6(address: &str) -> String {
    if address.contains(':') && !address.starts_with('[') {
        format!("[{address}]")
    } else {
        address.to_string()
    }
}
