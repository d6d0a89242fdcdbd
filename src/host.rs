//! Docker hosts: engines gantry talks to directly over their API (`unix://`, `tcp://`,
//! `tcp://` + TLS, `ssh://`), with no agent on them.
//!
//! A `Host` from the config becomes a connected `bollard::Docker` here, with the
//! engine's version read (engines as old as 20.10 speak only API 1.41) and every call
//! bounded by the host's timeout. This module connects and reports; it never
//! builds, pushes or changes a container.

use std::time::{Duration, Instant};

use bollard::{API_DEFAULT_VERSION, Docker};
use serde::Serialize;

use crate::config::{DockerEndpoint, Host};

/// The longest one Docker API call may take once the host has answered: stopping a
/// container waits out its stop timeout, and pulls and builds stream for long.
/// The host's own (short) `timeout` bounds only the first handshake.
pub const OPERATION_TIMEOUT: Duration = Duration::from_secs(300);

#[derive(Debug, thiserror::Error)]
pub enum HostError {
    #[error("host `{host}` ({endpoint}): {reason}")]
    Unreachable {
        host: String,
        endpoint: String,
        reason: String,
    },
    #[error("host `{host}` ({endpoint}) did not answer within {}", humantime::format_duration(*.timeout))]
    Timeout {
        host: String,
        endpoint: String,
        timeout: Duration,
    },
}

/// A host with a live connection.
#[derive(Debug, Clone)]
pub struct Connection {
    pub name: String,
    pub docker: Docker,
    pub engine_version: String,
    pub api_version: String,
    /// The engine's operating system (`linux`, `windows`), as it reports it.
    pub os: String,
}

/// What `gantry hosts` prints for one host.
#[derive(Debug, Clone, Serialize)]
pub struct HostReport {
    pub name: String,
    pub endpoint: String,
    pub reachable: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub engine_version: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub api_version: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub os: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub elapsed_ms: u128,
}

/// Connects to a host and reads the engine's version, within the host's timeout.
pub async fn connect(host: &Host) -> Result<Connection, HostError> {
    let endpoint = host.docker.to_string();
    let unreachable = |reason: String| HostError::Unreachable {
        host: host.name.clone(),
        endpoint: endpoint.clone(),
        reason,
    };
    // bollard takes whole seconds; round up so that a 500ms timeout is not zero.
    let timeout_seconds = host.timeout.as_secs_f64().ceil().max(1.0) as u64;
    let client = match (&host.docker, &host.tls) {
        (DockerEndpoint::Unix(path), _) => Docker::connect_with_unix(
            &path.to_string_lossy(),
            timeout_seconds,
            API_DEFAULT_VERSION,
        ),
        (DockerEndpoint::Tcp(authority), None) => {
            Docker::connect_with_http(authority, timeout_seconds, API_DEFAULT_VERSION)
        }
        (DockerEndpoint::Tcp(authority), Some(tls)) => {
            for file in [&tls.ca, &tls.cert, &tls.key] {
                if !file.is_file() {
                    return Err(unreachable(format!(
                        "TLS file {} does not exist",
                        file.display()
                    )));
                }
            }
            Docker::connect_with_ssl(
                &format!("https://{authority}"),
                &tls.key,
                &tls.cert,
                &tls.ca,
                timeout_seconds,
                API_DEFAULT_VERSION,
            )
        }
        // Runs `ssh HOST docker system dial-stdio`: the engine's socket over the ssh channel,
        // with ssh's own config (~/.ssh/config, known_hosts, agent) as the user has it.
        (DockerEndpoint::Ssh(destination), _) => {
            if let Some(key) = &host.ssh_key
                && !key.is_file()
            {
                return Err(unreachable(format!(
                    "ssh key {} does not exist",
                    key.display()
                )));
            }
            Docker::connect_with_ssh(
                &format!("ssh://{destination}"),
                timeout_seconds,
                API_DEFAULT_VERSION,
                host.ssh_key
                    .as_ref()
                    .map(|key| key.to_string_lossy().into_owned()),
            )
        }
    }
    .map_err(|error| unreachable(error.to_string()))?;

    // One `/version` call is the whole handshake. bollard sends every request on the
    // engine's unversioned path (it joins the absolute path over its `/vX.Y` prefix), so
    // each engine answers in its own API version and `negotiate_version`, a second
    // `/version` (about 10 ms: the engine runs `runc --version` for it), would change
    // nothing that is sent.
    let handshake = async {
        let version = client.version().await?;
        Ok::<_, bollard::errors::Error>((client, version))
    };
    let (client, version) = match tokio::time::timeout(host.timeout, handshake).await {
        Ok(Ok(answer)) => answer,
        Ok(Err(error)) if !matches!(error, bollard::errors::Error::RequestTimeoutError) => {
            let mut reason = describe_error(&error);
            if matches!(host.docker, DockerEndpoint::Tcp(_))
                && host.tls.is_none()
                && looks_like_a_tls_port(&reason)
            {
                reason.push_str(TLS_HINT);
            }
            return Err(unreachable(reason));
        }
        // bollard's own timeout and ours are the same length; either one means no answer.
        Ok(Err(_)) | Err(_) => {
            return Err(HostError::Timeout {
                host: host.name.clone(),
                endpoint,
                timeout: host.timeout,
            });
        }
    };
    Ok(Connection {
        name: host.name.clone(),
        docker: client.with_timeout(OPERATION_TIMEOUT),
        engine_version: version.version.unwrap_or_default(),
        api_version: version.api_version.unwrap_or_default(),
        os: version.os.unwrap_or_default(),
    })
}

/// Said when plain HTTP to a `tcp://` host fails as it does on an engine's TLS port.
const TLS_HINT: &str = " (hint: if the engine listens with TLS, give the host \
    `tls: { ca, cert, key }`, or for `local` set DOCKER_TLS_VERIFY=1 and DOCKER_CERT_PATH)";

/// Whether a failed plain-HTTP handshake reads as a TLS listener's answer: Go's TLS
/// server answers plain HTTP with a 400 naming HTTPS, or (asking for a client
/// certificate) drops the connection.
fn looks_like_a_tls_port(reason: &str) -> bool {
    let lower = reason.to_ascii_lowercase();
    lower.contains("reset by peer") || lower.contains("https server")
}

/// Reaches a host and reports what answered, or why nothing did.
pub async fn report(host: &Host) -> HostReport {
    let started = Instant::now();
    let mut report = HostReport {
        name: host.name.clone(),
        endpoint: host.docker.to_string(),
        reachable: false,
        engine_version: None,
        api_version: None,
        os: None,
        error: None,
        elapsed_ms: 0,
    };
    match connect(host).await {
        Ok(connection) => {
            report.reachable = true;
            report.engine_version = Some(connection.engine_version);
            report.api_version = Some(connection.api_version);
            report.os = tokio::time::timeout(host.timeout, connection.docker.info())
                .await
                .ok()
                .and_then(Result::ok)
                .and_then(|info| info.operating_system);
        }
        Err(error) => report.error = Some(error.to_string()),
    }
    report.elapsed_ms = started.elapsed().as_millis();
    report
}

/// A Docker API error as one readable line: the engine's own message where there is one.
pub fn describe_error(error: &bollard::errors::Error) -> String {
    use bollard::errors::Error;
    match error {
        Error::DockerResponseServerError { message, .. } => message.clone(),
        Error::DockerStreamError { error } => error.clone(),
        Error::RequestTimeoutError => "the request timed out".to_string(),
        Error::SocketNotFoundError(path) => format!("no Docker socket at {path}"),
        other => crate::http::innermost_cause(other),
    }
}
