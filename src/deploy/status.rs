//! What runs where, and the operator's stop/start/restart of it.
//!
//! Status reads every instance's container on its host and compares it with what
//! the state store recorded (drift: missing, stopped, another image). Lifecycle
//! commands walk the `requires` order: stopping goes from dependents to what they
//! require, starting the other way, each start health-gated, so a service never
//! runs without what it needs.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use bollard::Docker;
use bollard::models::HealthStatusEnum;
use serde::Serialize;

use super::{Log, Target, connect_hosts, container, health, proxy, targets};
use crate::config::{Config, Pipeline};

/// One instance as it is on its host.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct InstanceStatus {
    pub pipeline: String,
    pub service: String,
    pub instance: String,
    pub host: String,
    /// Short container id; `None` when there is no container.
    pub container: Option<String>,
    pub image: Option<String>,
    /// The tags gantry pushed for this digest (full references).
    pub tags: Vec<String>,
    pub digest: Option<String>,
    pub commit: Option<String>,
    /// `running`, `exited`, `created`, ..., `missing`, `unreachable`, or `foreign` (a
    /// container under its name that gantry did not create for it).
    pub state: String,
    /// The engine's health verdict, for images with a HEALTHCHECK.
    pub health: Option<String>,
    pub uptime_seconds: Option<u64>,
    /// The digest the state store says this instance should run.
    pub recorded_digest: Option<String>,
    /// What differs from the recorded deployment; empty when nothing does.
    pub drift: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The container's last log lines, when they were asked for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub logs: Option<Vec<String>>,
    /// Where the host's proxy sends this instance's requests, for a proxied service.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proxy: Option<proxy::ProxyRoute>,
    /// A Swarm service's tasks that are meant to run: node, state, digest.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tasks: Vec<super::swarm::tasks::SwarmTask>,
}

/// What the state store knows of a pipeline, for status.
#[derive(Debug, Clone, Default)]
pub struct Recorded {
    /// Instance → the digest it should run.
    pub digests: BTreeMap<String, String>,
    /// Digest → the tags gantry pushed for it.
    pub tags: BTreeMap<String, Vec<String>>,
}

/// Every instance of the pipelines, read from their hosts and compared with what
/// the state store recorded for each pipeline.
pub async fn status(
    config: &Config,
    pipelines: &[&Pipeline],
    recorded: &BTreeMap<String, Recorded>,
    log_lines: usize,
) -> Vec<InstanceStatus> {
    let all_targets: Vec<(&Pipeline, Target<'_>)> = pipelines
        .iter()
        .flat_map(|pipeline| {
            targets(pipeline, None)
                .into_iter()
                .map(move |target| (*pipeline, target))
        })
        .collect();
    // Each host is connected on its own, so one down host does not hide the others.
    let mut host_names: Vec<String> = all_targets
        .iter()
        .map(|(_, target)| target.instance.host.clone())
        .collect();
    host_names.sort();
    host_names.dedup();
    let connections: BTreeMap<String, Result<Docker, String>> =
        futures_util::future::join_all(host_names.into_iter().map(|name| async move {
            let result = connect_hosts(config, [name.clone()])
                .await
                .map(|mut hosts| hosts.remove(&name))
                .map_err(|(_, reason)| reason)
                .and_then(|docker| docker.ok_or_else(|| "not connected".to_string()));
            (name, result)
        }))
        .await
        .into_iter()
        .collect();

    let statuses = all_targets.iter().map(|(pipeline, target)| {
        let connection = &connections[&target.instance.host];
        let known = recorded.get(&pipeline.name);
        let recorded_digest = known
            .and_then(|known| known.digests.get(&target.instance.name))
            .cloned();
        let reading = async move {
            let mut status = unread(pipeline, target, "missing", recorded_digest);
            let docker = match connection {
                Ok(docker) => docker,
                Err(reason) => {
                    status.state = "unreachable".to_string();
                    status.error = Some(reason.clone());
                    status.drift.push("host unreachable".to_string());
                    return status;
                }
            };
            if let Some(settings) = &target.service.swarm {
                super::swarm::status::read(docker, pipeline, target, settings, known, &mut status)
                    .await;
                return status;
            }
            if let Some(service_proxy) = &target.service.proxy {
                let route = proxy::route_status(
                    docker,
                    service_proxy.port,
                    &proxy::routes::site_key(&pipeline.name, &target.service.name),
                    &target.instance.name,
                )
                .await;
                if route.state != "running" {
                    status.drift.push(format!(
                        "the proxy on {} is {}",
                        target.instance.host, route.state
                    ));
                }
                status.proxy = Some(route);
            }
            let inspect = match container::inspect(docker, &target.instance.name).await {
                Ok(Some(inspect)) => inspect,
                Ok(None) => {
                    if status.recorded_digest.is_some() {
                        status.drift.push("container missing".to_string());
                    }
                    return status;
                }
                Err(error) => {
                    status.state = "unknown".to_string();
                    status.error = Some(error.to_string());
                    return status;
                }
            };
            status.container = inspect.id.as_deref().map(super::short_id);
            if let Some(route) = &status.proxy
                && route.state == "running"
                && route.upstream != status.container
            {
                status.drift.push(match &route.upstream {
                    Some(other) => format!("the proxy sends its requests to {other}"),
                    None => "the proxy does not route to it".to_string(),
                });
            }
            // A container under this name that is not this instance's says nothing of it.
            if let Err(message) = container::check_owner(
                &inspect,
                &target.instance.name,
                &target.instance.host,
                &pipeline.name,
                &target.instance.name,
            ) {
                status.state = "foreign".to_string();
                status.error = Some(message);
                status
                    .drift
                    .push("the container under its name is not this instance's".to_string());
                return status;
            }
            status.image = container::label(&inspect, container::LABEL_IMAGE)
                .map(str::to_string)
                .or_else(|| {
                    inspect
                        .config
                        .as_ref()
                        .and_then(|config| config.image.clone())
                });
            status.digest = container::label(&inspect, container::LABEL_DIGEST).map(str::to_string);
            status.tags = status
                .digest
                .as_ref()
                .and_then(|digest| known?.tags.get(digest).cloned())
                .unwrap_or_default();
            status.commit = container::label(&inspect, container::LABEL_COMMIT)
                .filter(|commit| !commit.is_empty())
                .map(str::to_string);
            let state = inspect.state.clone().unwrap_or_default();
            status.state = state
                .status
                .map(|status| status.to_string())
                .unwrap_or_else(|| "unknown".to_string());
            status.health = state
                .health
                .and_then(|health| health.status)
                .filter(|health| {
                    *health != HealthStatusEnum::NONE && *health != HealthStatusEnum::EMPTY
                })
                .map(|health| health.to_string());
            if state.running == Some(true) {
                status.uptime_seconds = state
                    .started_at
                    .as_deref()
                    .and_then(|started| humantime::parse_rfc3339_weak(started).ok())
                    .and_then(|started| SystemTime::now().duration_since(started).ok())
                    .map(|uptime| uptime.as_secs());
            } else {
                status.drift.push(format!("container {}", status.state));
            }
            if let Some(recorded) = &status.recorded_digest
                && status.digest.as_deref() != Some(recorded.as_str())
            {
                status.drift.push(format!(
                    "runs {} instead of the deployed {}",
                    status.digest.as_deref().map_or_else(
                        || "an image gantry did not deploy".to_string(),
                        super::short_digest
                    ),
                    super::short_digest(recorded)
                ));
            }
            if log_lines > 0 {
                status.logs =
                    Some(container::tail_logs(docker, &target.instance.name, log_lines).await);
            }
            status
        };
        within(READING_LIMIT, reading, || {
            tracing::warn!(
                host = %target.instance.host,
                instance = %target.instance.name,
                "the engine did not answer a status reading within {}",
                humantime::format_duration(READING_LIMIT)
            );
            unanswered(pipeline, target)
        })
    });
    futures_util::future::join_all(statuses).await
}

/// An instance as it stands before (or without) a reading of its container: `state`
/// and what the store recorded for it, nothing read from the host.
fn unread(
    pipeline: &Pipeline,
    target: &Target<'_>,
    state: &str,
    recorded_digest: Option<String>,
) -> InstanceStatus {
    InstanceStatus {
        pipeline: pipeline.name.clone(),
        service: target.service.name.clone(),
        instance: target.instance.name.clone(),
        host: target.instance.host.clone(),
        container: None,
        image: None,
        tags: Vec::new(),
        digest: None,
        commit: None,
        state: state.to_string(),
        health: None,
        uptime_seconds: None,
        recorded_digest,
        drift: Vec::new(),
        error: None,
        logs: None,
        proxy: None,
        tasks: Vec::new(),
    }
}

/// An instance whose host did not answer its reading in time.
fn unanswered(pipeline: &Pipeline, target: &Target<'_>) -> InstanceStatus {
    InstanceStatus {
        error: Some(format!(
            "the engine on {} did not answer within {}",
            target.instance.host,
            humantime::format_duration(READING_LIMIT)
        )),
        ..unread(pipeline, target, "unknown", None)
    }
}

/// How long one instance's reading may take once its host has answered the handshake
/// (whose own `timeout` bounds it). An engine that answers and then stalls (its
/// container or image locks held by other work) makes that instance `unknown` for this
/// reading, instead of holding back every other instance's: the daemon reads them all
/// together every few seconds, and each Docker call may otherwise take up to
/// `host::OPERATION_TIMEOUT`.
pub const READING_LIMIT: Duration = Duration::from_secs(15);

/// `reading`, or `unanswered()` once `limit` has passed without its answer.
async fn within<T>(
    limit: Duration,
    reading: impl Future<Output = T>,
    unanswered: impl FnOnce() -> T,
) -> T {
    tokio::time::timeout(limit, reading)
        .await
        .unwrap_or_else(|_| unanswered())
}

/// An operator's lifecycle command.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Lifecycle {
    Stop,
    Start,
    Restart,
}

/// One step of a lifecycle command, in the order it was taken.
#[derive(Debug, Clone, Serialize)]
pub struct LifecycleStep {
    pub service: String,
    pub instance: String,
    pub host: String,
    /// `stop` or `start`.
    pub action: String,
    pub ok: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct LifecycleReport {
    pub steps: Vec<LifecycleStep>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failure: Option<String>,
}

/// Stops, starts or restarts the selected instances in dependency order; the first failure ends it.
pub async fn lifecycle(
    config: &Config,
    pipeline: &Pipeline,
    command: Lifecycle,
    only: Option<&glob::Pattern>,
    log: Log<'_>,
) -> LifecycleReport {
    let selected = targets(pipeline, only);
    let mut report = LifecycleReport {
        steps: Vec::new(),
        failure: None,
    };
    let hosts = match connect_hosts(
        config,
        selected.iter().map(|target| target.instance.host.clone()),
    )
    .await
    {
        Ok(hosts) => hosts,
        Err((host, reason)) => {
            report.failure = Some(format!("host `{host}`: {reason}; nothing was changed"));
            return report;
        }
    };
    if let Err((_, _, message)) = super::check_ownership(&hosts, &selected, pipeline).await {
        report.failure = Some(format!("{message}; nothing was changed"));
        return report;
    }
    if matches!(command, Lifecycle::Stop | Lifecycle::Restart) {
        // Dependents first: nothing runs without what it requires.
        for target in selected.iter().rev() {
            let docker = &hosts[&target.instance.host];
            log(&format!(
                "stopping {} on {}",
                target.instance.name, target.instance.host
            ));
            let result =
                container::stop(docker, &target.instance.name, target.service.stop_timeout)
                    .await
                    .map_err(|error| error.to_string());
            if !record(&mut report, target, "stop", result) {
                return report;
            }
        }
    }
    if matches!(command, Lifecycle::Start | Lifecycle::Restart) {
        for target in &selected {
            let docker = &hosts[&target.instance.host];
            let address = &config.hosts[&target.instance.host].address;
            log(&format!(
                "starting {} on {}",
                target.instance.name, target.instance.host
            ));
            let result = start_gated(docker, target, address, config.proxy.email.as_deref()).await;
            if !record(&mut report, target, "start", result) {
                return report;
            }
        }
    }
    report
}

/// Starts an instance's container and waits for its health check.
/// Behind the proxy the check goes through a probe route, as in a rollout.
async fn start_gated(
    docker: &Docker,
    target: &Target<'_>,
    address: &str,
    email: Option<&str>,
) -> Result<(), String> {
    let name = &target.instance.name;
    let host = &target.instance.host;
    let Some(existing) = container::inspect(docker, name)
        .await
        .map_err(|error| error.to_string())?
    else {
        return Err(format!(
            "{name} has no container on {host}; deploy it first"
        ));
    };
    container::start(docker, name)
        .await
        .map_err(|error| error.to_string())?;
    let health = &target.service.health;
    let probe = match (&target.service.proxy, &existing.id) {
        (Some(proxy), Some(id)) => {
            proxy::open_probe(docker, host, address, email, proxy, id, health)
                .await
                .map_err(|error| error.to_string())?
        }
        _ => None,
    };
    let healthy = health::wait_healthy(docker, name, health, address, probe.as_ref()).await;
    if let Some(probe) = &probe {
        proxy::close_probe(docker, host, email, probe)
            .await
            .map_err(|error| error.to_string())?;
    }
    healthy
        .map(|_: Duration| ())
        .map_err(|failure| failure.to_string())
}

/// Adds a step; returns whether to go on.
fn record(
    report: &mut LifecycleReport,
    target: &Target<'_>,
    action: &str,
    result: Result<(), String>,
) -> bool {
    let ok = result.is_ok();
    if let Err(message) = &result {
        report.failure = Some(format!("{} {}: {message}", action, target.instance.name));
    }
    report.steps.push(LifecycleStep {
        service: target.service.name.clone(),
        instance: target.instance.name.clone(),
        host: target.instance.host.clone(),
        action: action.to_string(),
        ok,
        message: result.err(),
    });
    ok
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::within;

    /// A reading the engine never answers ends at the limit with what stands for it;
    /// one that is answered in time is that answer.
    #[tokio::test]
    async fn a_reading_left_unanswered_ends_at_its_limit() {
        let limit = Duration::from_millis(50);
        let started = std::time::Instant::now();
        let answer = within(limit, std::future::pending::<&str>(), || "unknown").await;
        assert_eq!(answer, "unknown");
        assert!(started.elapsed() >= limit);

        let answer = within(limit, async { "running" }, || "unknown").await;
        assert_eq!(answer, "running");
    }
}
