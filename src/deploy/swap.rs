//! Phase 2 of a rollout: the swaps themselves, service by service in `requires` order
//! and `batch` instances at a time, with the gate, the restore of one instance and the
//! revert of those already swapped. The logic is written against `Containers`, the
//! few container operations it makes: Docker's (`container::Hosts`) in gantry, one in
//! memory in the unit tests, so the order of swaps and reverts is tested without Docker.

use std::future::Future;
use std::time::Duration;

use super::container::{self, ContainerSpec, DockerCallError};
use super::health::{HealthFailure, ProbeTarget};
use super::{
    Action, FAILURE_LOG_LINES, InstanceReport, Log, Phase, RolloutFailure, RolloutReport, Target,
    report, service_order, short_digest, short_id,
};
use crate::config::{Health, OnFailure, Pipeline, Service};

/// What a rollout needs to know of a container it may replace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Existing {
    pub id: String,
    pub running: bool,
    /// Its `gantry.digest` and `gantry.spec` labels.
    pub digest: Option<String>,
    pub spec_hash: Option<String>,
    /// It publishes a fixed host port, so a twin could not start beside it.
    pub holds_fixed_host_port: bool,
}

/// The container operations a rollout makes, each on the host an instance lives on.
pub trait Containers: Clone + Send + Sync + 'static {
    fn inspect(
        &self,
        host: &str,
        name: &str,
    ) -> impl Future<Output = Result<Option<Existing>, DockerCallError>> + Send;
    fn ensure_network(
        &self,
        spec: &ContainerSpec,
    ) -> impl Future<Output = Result<(), DockerCallError>> + Send;
    /// Creates (not starts) the spec's container; its id.
    fn create(
        &self,
        spec: &ContainerSpec,
    ) -> impl Future<Output = Result<String, DockerCallError>> + Send;
    fn start(
        &self,
        host: &str,
        name: &str,
    ) -> impl Future<Output = Result<(), DockerCallError>> + Send;
    fn stop(
        &self,
        host: &str,
        name: &str,
        timeout: Option<Duration>,
    ) -> impl Future<Output = Result<(), DockerCallError>> + Send;
    fn rename(
        &self,
        host: &str,
        from: &str,
        to: &str,
    ) -> impl Future<Output = Result<(), DockerCallError>> + Send;
    fn remove(
        &self,
        host: &str,
        name: &str,
    ) -> impl Future<Output = Result<(), DockerCallError>> + Send;
    /// Waits for the health gate (through the proxy's probe route when `via` is
    /// given); how long it took.
    fn wait_healthy(
        &self,
        host: &str,
        name: &str,
        health: &Health,
        via: Option<&ProbeTarget>,
    ) -> impl Future<Output = Result<Duration, HealthFailure>> + Send;
    /// Opens a probe route to a proxied container on trial, for its `http` check;
    /// `None` when the spec is not proxied or its check is not `http`.
    fn open_probe(
        &self,
        spec: &ContainerSpec,
        container_id: &str,
        health: &Health,
    ) -> impl Future<Output = Result<Option<ProbeTarget>, DockerCallError>> + Send;
    fn close_probe(
        &self,
        host: &str,
        probe: &ProbeTarget,
    ) -> impl Future<Output = Result<(), DockerCallError>> + Send;
    /// Sends a proxied instance's requests to `container_id` from now on (closing
    /// `probe` in the same change).
    fn switch(
        &self,
        spec: &ContainerSpec,
        container_id: &str,
        probe: Option<&ProbeTarget>,
    ) -> impl Future<Output = Result<(), DockerCallError>> + Send;
    fn tail_logs(
        &self,
        host: &str,
        name: &str,
        lines: usize,
    ) -> impl Future<Output = Vec<String>> + Send;
}

/// What phase 2 rolls out, and where.
pub struct Plan<'a> {
    pub pipeline: &'a Pipeline,
    pub release: &'a super::Release,
    /// The instances, in `requires` order (`super::targets`).
    pub targets: &'a [Target<'a>],
    pub force: bool,
    pub stop: Option<&'a (dyn Fn() -> Option<String> + Sync)>,
}

/// Swaps the plan's instances, service by service and batch by batch; on a failure,
/// stops there and (with `on_failure: rollback`) returns those already swapped.
pub async fn roll_out<C: Containers>(
    containers: &C,
    plan: &Plan<'_>,
    log: Log<'_>,
) -> RolloutReport {
    let pipeline = plan.pipeline;
    let batch_size = pipeline.deploy.batch.max(1) as usize;
    let mut reports: Vec<InstanceReport> = Vec::new();
    let mut swapped: Vec<Swapped> = Vec::new();
    let mut failure: Option<RolloutFailure> = None;
    let mut remaining = plan.targets;
    'services: for service in service_order(pipeline) {
        let service_targets: Vec<Target<'_>> = remaining
            .iter()
            .take_while(|target| target.service.name == service.name)
            .copied()
            .collect();
        remaining = &remaining[service_targets.len()..];
        for (index, batch) in service_targets.chunks(batch_size).enumerate() {
            // The instances after this batch, when the rollout ends before them.
            let later = || {
                service_targets[((index + 1) * batch_size).min(service_targets.len())..]
                    .iter()
                    .map(|target| report(target, Action::NotReached))
                    .collect::<Vec<_>>()
            };
            if let Some(reason) = plan.stop.and_then(|stop| stop()) {
                log(&format!("stopping the rollout: {reason}"));
                failure = Some(RolloutFailure {
                    phase: Phase::Rollout,
                    host: None,
                    instance: None,
                    message: format!("stopped before changing more containers: {reason}"),
                    check: None,
                    logs: Vec::new(),
                });
                reports.extend(
                    batch
                        .iter()
                        .map(|target| report(target, Action::NotReached)),
                );
                reports.extend(later());
                break 'services;
            }
            let outcomes = futures_util::future::join_all(batch.iter().map(|target| {
                let spec = ContainerSpec::new(
                    pipeline,
                    target.service,
                    target.instance,
                    plan.release.image_for(target.service),
                );
                async move {
                    let outcome =
                        swap_instance(containers, &spec, target.service, plan.force, log).await;
                    (target, spec, outcome)
                }
            }))
            .await;
            for (target, spec, outcome) in outcomes {
                let mut instance_report = report(target, Action::Updated);
                match outcome {
                    Ok(SwapOutcome::Unchanged) => {
                        instance_report.action = Action::Unchanged;
                        instance_report.previous_digest = Some(spec.digest.clone());
                        instance_report.digest = Some(spec.digest.clone());
                    }
                    Ok(SwapOutcome::Swapped(done)) => {
                        instance_report.container = Some(short_id(&done.container_id));
                        instance_report.previous_digest =
                            done.previous.as_ref().and_then(|old| old.digest.clone());
                        instance_report.digest = Some(spec.digest.clone());
                        instance_report.healthy_after_ms = Some(done.healthy_after.as_millis());
                        swapped.push(*done);
                    }
                    Err(instance_failure) => {
                        instance_report.action = Action::Failed;
                        instance_report.previous_digest = instance_failure.previous_digest.clone();
                        instance_report.digest = instance_failure.previous_digest.clone();
                        instance_report.message = Some(instance_failure.message.clone());
                        // In a batch, the first failure is the one reported.
                        if failure.is_none() {
                            failure = Some(RolloutFailure {
                                phase: Phase::Rollout,
                                host: Some(target.instance.host.clone()),
                                instance: Some(target.instance.name.clone()),
                                message: instance_failure.message,
                                check: instance_failure.check,
                                logs: instance_failure.logs,
                            });
                        }
                    }
                }
                reports.push(instance_report);
            }
            if failure.is_some() {
                reports.extend(later());
                break 'services;
            }
        }
    }
    reports.extend(
        remaining
            .iter()
            .map(|target| report(target, Action::NotReached)),
    );

    if failure.is_some() && pipeline.deploy.on_failure == OnFailure::Rollback {
        // Newest first, so that dependents go back before what they require.
        for mut done in swapped.drain(..).rev() {
            // A failed stop leaves it running, which suits a container coming back.
            let _ = done.stopped().await;
            let result = revert(containers, &done, log).await;
            if let Some(instance_report) = reports
                .iter_mut()
                .find(|report| report.instance == done.instance)
            {
                match result {
                    Ok(()) => {
                        instance_report.action = Action::Reverted;
                        instance_report.digest = instance_report.previous_digest.clone();
                    }
                    Err(error) => {
                        instance_report.message = Some(format!(
                            "could not be returned to its old container: {error}"
                        ));
                    }
                }
            }
        }
    }
    // What was replaced and stays replaced: its old container is no longer needed
    // once it has stopped. All hosts at once.
    futures_util::future::join_all(swapped.iter_mut().map(|done| async move {
        if let Err(error) = done.stopped().await {
            log(&format!("{}: {error}", done.instance));
        }
        if let Some(previous) = &done.previous
            && let Err(error) = containers.remove(&done.host, &previous.name).await
        {
            log(&format!("{}: {error}", done.instance));
        }
    }))
    .await;
    RolloutReport {
        instances: reports,
        failure,
    }
}

/// The old container, kept under another name while the new one is on trial.
#[derive(Debug, Clone)]
struct PreviousContainer {
    name: String,
    id: String,
    was_running: bool,
    digest: Option<String>,
    /// It had to stop before the new one started (a fixed host port).
    stop_first: bool,
}

/// An instance whose new container passed its gate.
#[derive(Debug)]
struct Swapped {
    instance: String,
    host: String,
    /// The new container's spec: a revert of a proxied instance switches back.
    spec: ContainerSpec,
    container_id: String,
    previous: Option<PreviousContainer>,
    /// The old container's graceful stop, running in the background.
    stopping: Option<tokio::task::JoinHandle<Result<(), DockerCallError>>>,
    healthy_after: Duration,
}

impl Swapped {
    /// Waits for the old container's background stop, if there is one.
    async fn stopped(&mut self) -> Result<(), DockerCallError> {
        match self.stopping.take() {
            Some(stopping) => stopping.await.unwrap_or_else(|error| {
                Err(DockerCallError {
                    action: format!("stopping {}", container::previous_name(&self.instance)),
                    reason: error.to_string(),
                })
            }),
            None => Ok(()),
        }
    }
}

enum SwapOutcome {
    Unchanged,
    Swapped(Box<Swapped>),
}

struct InstanceFailure {
    message: String,
    check: Option<HealthFailure>,
    logs: Vec<String>,
    previous_digest: Option<String>,
}

/// Replaces one instance's container with the spec's, health-gated.
async fn swap_instance<C: Containers>(
    containers: &C,
    spec: &ContainerSpec,
    service: &Service,
    force: bool,
    log: Log<'_>,
) -> Result<SwapOutcome, InstanceFailure> {
    let host = spec.host.as_str();
    let name = spec.instance.as_str();
    let previous_name = container::previous_name(name);
    let plain_failure = |error: DockerCallError, previous_digest: Option<String>| InstanceFailure {
        message: format!("{name} on {}: {error}", spec.host),
        check: None,
        logs: Vec::new(),
        previous_digest,
    };

    // Both names are looked at, and the network made sure of, at once: none of them
    // changes a container.
    let (current, kept, network) = tokio::join!(
        containers.inspect(host, name),
        containers.inspect(host, &previous_name),
        containers.ensure_network(spec),
    );
    let mut current = current.map_err(|error| plain_failure(error, None))?;
    // A kept old container means an earlier rollout was interrupted mid-swap.
    if kept.map_err(|error| plain_failure(error, None))?.is_some() {
        if current.is_some() {
            log(&format!(
                "{name}: removing {previous_name} left by an interrupted deploy"
            ));
            containers
                .remove(host, &previous_name)
                .await
                .map_err(|error| plain_failure(error, None))?;
        } else {
            log(&format!(
                "{name}: bringing back {previous_name} left by an interrupted deploy"
            ));
            containers
                .rename(host, &previous_name, name)
                .await
                .map_err(|error| plain_failure(error, None))?;
            current = containers
                .inspect(host, name)
                .await
                .map_err(|error| plain_failure(error, None))?;
        }
    }
    let previous_digest = current
        .as_ref()
        .and_then(|existing| existing.digest.clone());
    // `--force` replaces the pipeline's containers, never an accessory's.
    if let Some(existing) = &current
        && (!force || spec.accessory.is_some())
        && existing.running
        && existing.digest.as_deref() == Some(spec.digest.as_str())
        && existing.spec_hash.as_deref() == Some(spec.spec_hash.as_str())
    {
        log(&format!("{name} on {}: unchanged", spec.host));
        return Ok(SwapOutcome::Unchanged);
    }
    network.map_err(|error| plain_failure(error, previous_digest.clone()))?;

    // Keep the old container under another name while the new one is on trial.
    let previous = match &current {
        Some(existing) => {
            containers
                .rename(host, name, &previous_name)
                .await
                .map_err(|error| plain_failure(error, previous_digest.clone()))?;
            Some(PreviousContainer {
                name: previous_name.clone(),
                id: existing.id.clone(),
                was_running: existing.running,
                digest: previous_digest.clone(),
                // Behind the proxy, neither holds the port users reach.
                stop_first: spec.proxy.is_none()
                    && (spec.binds_fixed_host_port() || existing.holds_fixed_host_port),
            })
        }
        None => None,
    };
    // Created before the old one stops, so a stop-first swap is down only while the
    // new container starts.
    let started = async {
        let id = containers.create(spec).await?;
        if let Some(previous) = &previous
            && previous.stop_first
            && previous.was_running
        {
            log(&format!(
                "{name} on {}: stopping the old container (it holds a fixed host port)",
                spec.host
            ));
            containers
                .stop(host, &previous.name, spec.stop_timeout)
                .await?;
        }
        log(&format!(
            "{name} on {}: starting {}",
            spec.host,
            short_digest(&spec.digest)
        ));
        // Behind the proxy, its probe route opens while the container starts.
        let (start, probe) = tokio::join!(
            containers.start(host, name),
            containers.open_probe(spec, &id, &service.health)
        );
        if let Err(error) = start {
            if let Ok(Some(probe)) = &probe {
                let _ = containers.close_probe(host, probe).await;
            }
            return Err(error);
        }
        Ok::<_, DockerCallError>((id, probe?))
    }
    .await;
    let outcome = match started {
        Ok((id, probe)) => gate(containers, spec, service, &id, probe, log)
            .await
            .map(|healthy_after| (id, healthy_after))
            .map_err(|mut failure| {
                failure.previous_digest = previous_digest.clone();
                failure
            }),
        Err(error) => Err(plain_failure(error, previous_digest.clone())),
    };
    match outcome {
        Ok((container_id, healthy_after)) => {
            log(&format!(
                "{name} on {}: healthy after {}",
                spec.host,
                humantime::format_duration(Duration::from_millis(healthy_after.as_millis() as u64))
            ));
            // The old container stops gracefully in the background (it may take its
            // whole stop timeout) and stays until the whole rollout is done. Behind
            // the proxy it first finishes the requests it has (`drain`).
            let drain = spec
                .proxy
                .as_ref()
                .map_or(Duration::ZERO, |proxy| proxy.drain);
            let stopping = previous
                .as_ref()
                .filter(|previous| previous.was_running && !previous.stop_first)
                .map(|previous| {
                    let containers = containers.clone();
                    let (host, old) = (host.to_string(), previous.name.clone());
                    let timeout = spec.stop_timeout;
                    tokio::spawn(async move {
                        tokio::time::sleep(drain).await;
                        containers.stop(&host, &old, timeout).await
                    })
                });
            Ok(SwapOutcome::Swapped(Box::new(Swapped {
                instance: name.to_string(),
                host: spec.host.clone(),
                spec: spec.clone(),
                container_id,
                previous,
                stopping,
                healthy_after,
            })))
        }
        Err(mut failure) => {
            log(&format!(
                "{}; bringing the old container back",
                failure.message
            ));
            if let Err(error) = containers.remove(host, name).await {
                failure.message.push_str(&format!(" (and {error})"));
            }
            if let Some(previous) = &previous
                && let Err(error) = restore(containers, host, previous, name).await
            {
                failure.message.push_str(&format!(
                    " (and restoring the old container failed: {error})"
                ));
            }
            Err(failure)
        }
    }
}

/// Health-gates a started container (through `probe`, its probe route, behind the
/// proxy) and then switches the instance's requests to it; a failed gate leaves the proxy on the old container.
async fn gate<C: Containers>(
    containers: &C,
    spec: &ContainerSpec,
    service: &Service,
    id: &str,
    probe: Option<ProbeTarget>,
    log: Log<'_>,
) -> Result<Duration, InstanceFailure> {
    let (host, name) = (spec.host.as_str(), spec.instance.as_str());
    let plain = |error: DockerCallError| InstanceFailure {
        message: format!("{name} on {host}: {error}"),
        check: None,
        logs: Vec::new(),
        previous_digest: None,
    };
    let healthy = containers
        .wait_healthy(host, name, &service.health, probe.as_ref())
        .await;
    let healthy_after = match healthy {
        Ok(healthy_after) => healthy_after,
        Err(check) => {
            if let Some(probe) = &probe
                && let Err(error) = containers.close_probe(host, probe).await
            {
                log(&format!("{name} on {host}: {error}"));
            }
            let logs = containers.tail_logs(host, name, FAILURE_LOG_LINES).await;
            return Err(InstanceFailure {
                message: format!("{name} on {host}: {check}"),
                check: Some(check),
                logs,
                previous_digest: None,
            });
        }
    };
    if spec.proxy.is_some() {
        if let Err(error) = containers.switch(spec, id, probe.as_ref()).await {
            if let Some(probe) = &probe {
                let _ = containers.close_probe(host, probe).await;
            }
            return Err(plain(error));
        }
        log(&format!(
            "{name} on {host}: the proxy sends its requests to {}",
            short_id(id)
        ));
    }
    Ok(healthy_after)
}

/// Puts a kept old container back under the instance name, running if it was.
async fn restore<C: Containers>(
    containers: &C,
    host: &str,
    previous: &PreviousContainer,
    name: &str,
) -> Result<(), DockerCallError> {
    containers.rename(host, &previous.name, name).await?;
    if previous.was_running {
        containers.start(host, name).await?;
    }
    Ok(())
}

/// Returns an updated instance to its old container after a later instance failed.
async fn revert<C: Containers>(
    containers: &C,
    done: &Swapped,
    log: Log<'_>,
) -> Result<(), DockerCallError> {
    log(&format!(
        "{} on {}: returning to the old container",
        done.instance, done.host
    ));
    if let (Some(_), Some(previous)) = (&done.spec.proxy, &done.previous) {
        // Behind the proxy the old container takes the requests back before the
        // new one goes.
        if previous.was_running {
            containers.start(&done.host, &previous.name).await?;
            containers.switch(&done.spec, &previous.id, None).await?;
        }
        containers.remove(&done.host, &done.instance).await?;
        return containers
            .rename(&done.host, &previous.name, &done.instance)
            .await;
    }
    containers.remove(&done.host, &done.instance).await?;
    if let Some(previous) = &done.previous {
        restore(containers, &done.host, previous, &done.instance).await?;
    }
    Ok(())
}
