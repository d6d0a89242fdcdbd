//! Swarm services: an instance on a Swarm manager (`hosts.NAME.swarm: true`) is one
//! Swarm service named after it, created or updated by image digest through the
//! manager's service API. Swarm replaces the tasks itself (`swarm.update`: batch size,
//! start-first or stop-first, what to do on failure), gated by the task's health check
//! (an `exec` check of the service, or the image's HEALTHCHECK); gantry waits until the
//! service converges on the new digest, logs each task's changes, and reports an
//! update Swarm rolled back or paused as the instance's failure.
//!
//! Services are updated one after another in `requires` order, after the pipeline's
//! containers (phase 2 of `deploy::rollout`). With `on_failure: rollback`, a failure
//! asks Swarm to roll back the services this rollout already updated. This module never
//! touches a Swarm service without this pipeline's and instance's labels, and creates
//! only overlay networks (labelled with the pipeline); it records nothing.

mod spec;
pub mod status;
pub mod tasks;

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use bollard::Docker;
use bollard::models::{NetworkCreateRequest, ServiceUpdateStatusStateEnum};
use bollard::query_parameters::{InspectServiceOptions, UpdateServiceOptionsBuilder};

use super::container::{ContainerSpec, LABEL_DIGEST, LABEL_INSTANCE, LABEL_PIPELINE, LABEL_SPEC};
use super::{Action, InstanceReport, Log, Phase, Rollout, RolloutFailure, Target, report};
use crate::config::{HealthCheck, ImageRepository, OnFailure, Service, UpdateOrder};
use crate::host::describe_error;
pub use spec::service_spec;
use tasks::{SwarmTask, TaskLog};

/// How often the manager is asked about a service while it converges.
pub const POLL_INTERVAL: Duration = Duration::from_millis(250);
/// What one batch of tasks may take beyond its health check and Swarm's monitor period:
/// pulling the image on a node and starting the container.
pub const TASK_START_ALLOWANCE: Duration = Duration::from_secs(60);
/// A new service (no earlier spec to roll back to) whose tasks failed this many times
/// per replica is reported failed at once, not at the deadline.
const FAILURES_PER_REPLICA: usize = 3;

/// Is this target a Swarm service?
pub fn is_swarm(target: &Target<'_>) -> bool {
    target.service.swarm.is_some()
}

/// Rolls the Swarm targets out one after another; the report of each, and the failure
/// that stopped them.
pub async fn roll_out(
    hosts: &BTreeMap<String, Docker>,
    request: &Rollout<'_>,
    targets: &[Target<'_>],
    log: Log<'_>,
) -> (Vec<InstanceReport>, Option<RolloutFailure>) {
    let mut reports: Vec<InstanceReport> = Vec::new();
    let mut updated: Vec<usize> = Vec::new();
    for (index, target) in targets.iter().enumerate() {
        let stopped = request.stop.and_then(|stop| stop());
        let outcome = match stopped {
            Some(why) => Err(Box::new((
                report(target, Action::NotReached),
                failure(target, why, Vec::new()),
            ))),
            None => update_one(&hosts[&target.instance.host], request, target, log).await,
        };
        match outcome {
            Ok(done) => {
                if done.action == Action::Updated {
                    updated.push(index);
                }
                reports.push(done);
            }
            Err(failed) => {
                let (failed, why) = *failed;
                reports.push(failed);
                reports.extend(
                    targets[index + 1..]
                        .iter()
                        .map(|target| report(target, Action::NotReached)),
                );
                if request.pipeline.deploy.on_failure == OnFailure::Rollback {
                    for &earlier in updated.iter().rev() {
                        let target = &targets[earlier];
                        let docker = &hosts[&target.instance.host];
                        let Some(previous) = reports[earlier].previous_digest.clone() else {
                            // A service this rollout created has nothing to go back to.
                            continue;
                        };
                        let reverted = revert(docker, target, &previous, log).await;
                        let entry = &mut reports[earlier];
                        match reverted {
                            Ok(()) => {
                                entry.action = Action::Reverted;
                                entry.digest = entry.previous_digest.clone();
                            }
                            Err(message) => entry.message = Some(message),
                        }
                    }
                }
                return (reports, Some(why));
            }
        }
    }
    (reports, None)
}

/// A failed service: its report and why (boxed: the pair is large).
type Failed = Box<(InstanceReport, RolloutFailure)>;

fn failure(target: &Target<'_>, message: String, logs: Vec<String>) -> RolloutFailure {
    RolloutFailure {
        phase: Phase::Rollout,
        host: Some(target.instance.host.clone()),
        instance: Some(target.instance.name.clone()),
        message,
        check: None,
        logs,
    }
}

/// Creates or updates one Swarm service and waits for it to converge.
async fn update_one(
    docker: &Docker,
    request: &Rollout<'_>,
    target: &Target<'_>,
    log: Log<'_>,
) -> Result<InstanceReport, Failed> {
    let name = &target.instance.name;
    let host = &target.instance.host;
    let image = request.release.image_for(target.service);
    let spec = ContainerSpec::new(request.pipeline, target.service, target.instance, image);
    let mut entry = report(target, Action::Failed);
    let fail = |entry: &InstanceReport, message: String, logs: Vec<String>| {
        Err(Box::new((entry.clone(), failure(target, message, logs))))
    };
    let Some(settings) = target.service.swarm.as_ref() else {
        entry.action = Action::NotReached;
        return fail(&entry, format!("{name} is not a Swarm service"), Vec::new());
    };
    let body = service_spec(&spec, target.service, settings);
    let spec_label = body
        .labels
        .as_ref()
        .and_then(|labels| labels.get(LABEL_SPEC))
        .cloned()
        .unwrap_or_default();

    let existing = match docker
        .inspect_service(name, None::<InspectServiceOptions>)
        .await
    {
        Ok(service) => Some(service),
        Err(bollard::errors::Error::DockerResponseServerError {
            status_code: 404, ..
        }) => None,
        Err(error) => {
            entry.action = Action::NotReached;
            let message = format!(
                "inspecting Swarm service {name} on {host}: {}",
                describe_error(&error)
            );
            return fail(&entry, message, Vec::new());
        }
    };
    let labels = existing
        .as_ref()
        .and_then(|service| service.spec.as_ref()?.labels.clone())
        .unwrap_or_default();
    if existing.is_some()
        && (labels.get(LABEL_PIPELINE) != Some(&request.pipeline.name)
            || labels.get(LABEL_INSTANCE) != Some(name))
    {
        entry.action = Action::NotReached;
        let message = format!(
            "Swarm service {name} on {host} is not gantry's instance `{name}` of pipeline `{}` \
             (its labels say otherwise); gantry leaves it alone: remove or rename it",
            request.pipeline.name
        );
        return Err(Box::new((
            entry,
            RolloutFailure {
                phase: Phase::Check,
                ..failure(target, message, Vec::new())
            },
        )));
    }
    entry.previous_digest = labels.get(LABEL_DIGEST).cloned();
    if !request.force
        && entry.previous_digest.as_deref() == Some(spec.digest.as_str())
        && labels.get(LABEL_SPEC) == Some(&spec_label)
    {
        log(&format!(
            "{name}: Swarm service already runs {} with this spec",
            super::short_digest(&spec.digest)
        ));
        entry.action = Action::Unchanged;
        entry.digest = Some(spec.digest.clone());
        return Ok(entry);
    }
    if let Some(network) = &spec.network
        && let Err(message) = ensure_overlay(docker, network, &request.pipeline.name, host).await
    {
        entry.action = Action::NotReached;
        return fail(&entry, message, Vec::new());
    }
    let credentials = match ImageRepository::of_reference(&spec.image()) {
        Ok(repository) => crate::registry::credentials(request.config, repository.registry())
            .await
            .map_err(|error| error.to_string())
            .map(|found| found.map(|found| crate::registry::for_engine(&found, &repository))),
        Err(message) => Err(message),
    };
    let credentials = match credentials {
        Ok(credentials) => credentials,
        Err(message) => {
            entry.action = Action::NotReached;
            return fail(&entry, message, Vec::new());
        }
    };

    let nodes = tasks::node_names(docker).await;
    let before = tasks::list(docker, name, &nodes).await.unwrap_or_default();
    let mut task_log = TaskLog::baseline(&before);
    let replicas = settings.replicas;
    let started = Instant::now();
    let previous_update = existing
        .as_ref()
        .and_then(|service| service.update_status.as_ref())
        .and_then(|status| status.started_at.as_ref())
        .map(|time| format!("{time:?}"));
    let sent = match &existing {
        None => {
            log(&format!(
                "{name}: creating Swarm service on {host}, {replicas} replica(s) of {}",
                super::short_digest(&spec.digest)
            ));
            docker
                .create_service(body, credentials)
                .await
                .map(|created| created.id.unwrap_or_default())
        }
        Some(service) => {
            let version = service
                .version
                .as_ref()
                .and_then(|version| version.index)
                .unwrap_or_default();
            log(&format!(
                "{name}: updating Swarm service on {host} to {}: {} replica(s), {} at a time, {}",
                super::short_digest(&spec.digest),
                replicas,
                settings.update.parallelism,
                order_text(settings.update.order)
            ));
            let options = UpdateServiceOptionsBuilder::default()
                .version(version as i32)
                .build();
            docker
                .update_service(name, body, options, credentials)
                .await
                .map(|_| service.id.clone().unwrap_or_default())
        }
    };
    let service_id = match sent {
        Ok(id) => id,
        Err(error) => {
            entry.action = Action::NotReached;
            let message = format!(
                "{} Swarm service {name} on {host}: {}",
                if existing.is_some() {
                    "updating"
                } else {
                    "creating"
                },
                describe_error(&error)
            );
            return fail(&entry, message, Vec::new());
        }
    };
    entry.container = Some(super::short_id(&service_id));

    let deadline = started + converge_limit(target.service);
    let watched = Watch {
        docker,
        service: name,
        digest: &spec.digest,
        replicas,
        nodes: &nodes,
        previous_update,
        created: existing.is_none(),
        deadline,
    }
    .run(&mut task_log, log)
    .await;
    match watched {
        Converged::Yes => {
            log(&format!(
                "{name}: {replicas} task(s) run {} ({:.1}s)",
                super::short_digest(&spec.digest),
                started.elapsed().as_secs_f64()
            ));
            entry.action = Action::Updated;
            entry.digest = Some(spec.digest.clone());
            entry.healthy_after_ms = Some(started.elapsed().as_millis());
            Ok(entry)
        }
        Converged::No { message, tasks } => {
            log(&format!("{name}: {message}"));
            entry.message = Some(message.clone());
            // After Swarm's rollback the service runs what it ran before.
            entry.digest = entry.previous_digest.clone();
            let logs = tasks
                .iter()
                .filter_map(|task| {
                    let error = task.error.as_ref()?;
                    Some(format!(
                        "task {}: {} ({error})",
                        task.describe(name),
                        task.state
                    ))
                })
                .take(super::FAILURE_LOG_LINES)
                .collect();
            fail(&entry, message, logs)
        }
    }
}

/// How long a service may take to converge: each batch its health check, Swarm's
/// monitor period and the delay, plus `TASK_START_ALLOWANCE`; twice, for a rollback.
fn converge_limit(service: &Service) -> Duration {
    let Some(settings) = &service.swarm else {
        return TASK_START_ALLOWANCE;
    };
    let batches = settings
        .replicas
        .div_ceil(settings.update.parallelism.max(1)) as u32;
    let health = match service.health.check {
        HealthCheck::None => Duration::ZERO,
        HealthCheck::Exec { .. } => spec::unhealthy_within(service),
        _ => service.health.timeout,
    };
    let per_batch = health + settings.update.monitor + settings.update.delay + TASK_START_ALLOWANCE;
    per_batch * batches * 2
}

enum Converged {
    Yes,
    No {
        message: String,
        tasks: Vec<SwarmTask>,
    },
}

/// Waiting for one service to converge on a digest.
struct Watch<'a> {
    docker: &'a Docker,
    service: &'a str,
    digest: &'a str,
    replicas: u64,
    nodes: &'a HashMap<String, tasks::NodeName>,
    /// When the update before this one started: its status says nothing of this one.
    previous_update: Option<String>,
    created: bool,
    deadline: Instant,
}

impl Watch<'_> {
    async fn run(self, task_log: &mut TaskLog, log: Log<'_>) -> Converged {
        let mut rolling_back = false;
        let mut last_tasks = Vec::new();
        loop {
            if let Ok(tasks) = tasks::list(self.docker, self.service, self.nodes).await {
                for line in task_log.changes(self.service, &tasks) {
                    log(&format!("{}: {line}", self.service));
                }
                last_tasks = tasks;
            }
            let status = self
                .docker
                .inspect_service(self.service, None::<InspectServiceOptions>)
                .await
                .ok()
                .and_then(|service| service.update_status)
                .filter(|status| {
                    status.started_at.as_ref().map(|time| format!("{time:?}"))
                        != self.previous_update
                });
            let state = status.as_ref().and_then(|status| status.state);
            let message = status
                .as_ref()
                .and_then(|status| status.message.clone())
                .unwrap_or_default();
            match state {
                Some(ServiceUpdateStatusStateEnum::ROLLBACK_COMPLETED) => {
                    return Converged::No {
                        message: format!("the update failed and Swarm rolled it back ({message})"),
                        tasks: last_tasks,
                    };
                }
                Some(ServiceUpdateStatusStateEnum::PAUSED)
                | Some(ServiceUpdateStatusStateEnum::ROLLBACK_PAUSED) => {
                    return Converged::No {
                        message: format!("Swarm paused the update ({message})"),
                        tasks: last_tasks,
                    };
                }
                Some(ServiceUpdateStatusStateEnum::ROLLBACK_STARTED) if !rolling_back => {
                    rolling_back = true;
                    log(&format!(
                        "{}: Swarm is rolling the update back ({message})",
                        self.service
                    ));
                }
                _ => {}
            }
            let updating = matches!(
                state,
                Some(ServiceUpdateStatusStateEnum::UPDATING)
                    | Some(ServiceUpdateStatusStateEnum::ROLLBACK_STARTED)
            );
            if !updating && converged(&last_tasks, self.digest, self.replicas) {
                return Converged::Yes;
            }
            let failed = last_tasks
                .iter()
                .filter(|task| task.digest.as_deref() == Some(self.digest))
                .filter(|task| matches!(task.state.as_str(), "failed" | "rejected"))
                .count();
            if self.created && failed >= FAILURES_PER_REPLICA * self.replicas as usize {
                return Converged::No {
                    message: format!(
                        "the new Swarm service's tasks keep failing ({failed} failed); \
                         it has no earlier version to roll back to"
                    ),
                    tasks: last_tasks,
                };
            }
            if Instant::now() >= self.deadline {
                let serving = last_tasks
                    .iter()
                    .filter(|task| task.is_serving() && task.digest.as_deref() == Some(self.digest))
                    .count();
                return Converged::No {
                    message: format!(
                        "the Swarm service did not converge in time: {serving} of {} task(s) run the new image",
                        self.replicas
                    ),
                    tasks: last_tasks,
                };
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }
}

/// Exactly `replicas` tasks serve, all of them the digest, and no other is meant to.
fn converged(tasks: &[SwarmTask], digest: &str, replicas: u64) -> bool {
    let current = tasks::current(tasks);
    current.len() as u64 == replicas
        && current
            .iter()
            .all(|task| task.is_serving() && task.digest.as_deref() == Some(digest))
}

/// Asks Swarm to return a service to its previous spec (which ran `previous`), and
/// waits until its tasks run that digest again.
async fn revert(
    docker: &Docker,
    target: &Target<'_>,
    previous: &str,
    log: Log<'_>,
) -> Result<(), String> {
    let name = &target.instance.name;
    let service = docker
        .inspect_service(name, None::<InspectServiceOptions>)
        .await
        .map_err(|error| {
            format!(
                "inspecting Swarm service {name}: {}",
                describe_error(&error)
            )
        })?;
    let version = service
        .version
        .as_ref()
        .and_then(|version| version.index)
        .unwrap_or_default();
    log(&format!(
        "{name}: rolling the Swarm service back to {}",
        super::short_digest(previous)
    ));
    let options = UpdateServiceOptionsBuilder::default()
        .version(version as i32)
        .rollback("previous")
        .build();
    docker
        .update_service(
            name,
            service.spec.clone().unwrap_or_default(),
            options,
            None,
        )
        .await
        .map_err(|error| {
            format!(
                "rolling back Swarm service {name}: {}",
                describe_error(&error)
            )
        })?;
    let nodes = tasks::node_names(docker).await;
    let mut task_log =
        TaskLog::baseline(&tasks::list(docker, name, &nodes).await.unwrap_or_default());
    let replicas = target
        .service
        .swarm
        .as_ref()
        .map_or(1, |settings| settings.replicas);
    let deadline = Instant::now() + converge_limit(target.service);
    loop {
        let tasks = tasks::list(docker, name, &nodes).await.unwrap_or_default();
        for line in task_log.changes(name, &tasks) {
            log(&format!("{name}: {line}"));
        }
        if converged(&tasks, previous, replicas) {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(format!(
                "Swarm service {name} did not return to {} in time",
                super::short_digest(previous)
            ));
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

fn order_text(order: UpdateOrder) -> &'static str {
    match order {
        UpdateOrder::StartFirst => "start-first",
        UpdateOrder::StopFirst => "stop-first",
    }
}

/// Creates the attachable overlay network `network` (labelled with the pipeline) unless
/// it exists; one that exists must be Swarm-scoped.
async fn ensure_overlay(
    docker: &Docker,
    network: &str,
    pipeline: &str,
    host: &str,
) -> Result<(), String> {
    match docker.inspect_network(network, None).await {
        Ok(found) => {
            if found.scope.as_deref() == Some("swarm") {
                Ok(())
            } else {
                Err(format!(
                    "network {network} on {host} is a {} network of one engine; a Swarm service \
                     needs an overlay network: name another",
                    found.driver.as_deref().unwrap_or("local")
                ))
            }
        }
        Err(bollard::errors::Error::DockerResponseServerError {
            status_code: 404, ..
        }) => {
            let request = NetworkCreateRequest {
                name: network.to_string(),
                driver: Some("overlay".to_string()),
                attachable: Some(true),
                labels: Some(HashMap::from([(
                    LABEL_PIPELINE.to_string(),
                    pipeline.to_string(),
                )])),
                ..NetworkCreateRequest::default()
            };
            match docker.create_network(request).await {
                Ok(_) => Ok(()),
                Err(bollard::errors::Error::DockerResponseServerError {
                    status_code: 409, ..
                }) => Ok(()),
                Err(error) => Err(format!(
                    "creating overlay network {network} on {host}: {}",
                    describe_error(&error)
                )),
            }
        }
        Err(error) => Err(format!(
            "inspecting network {network} on {host}: {}",
            describe_error(&error)
        )),
    }
}

/// The labels of an instance's Swarm service, when it exists.
pub async fn service_labels(
    docker: &Docker,
    name: &str,
) -> Result<Option<HashMap<String, String>>, String> {
    match docker
        .inspect_service(name, None::<InspectServiceOptions>)
        .await
    {
        Ok(service) => Ok(Some(
            service
                .spec
                .and_then(|spec| spec.labels)
                .unwrap_or_default(),
        )),
        Err(bollard::errors::Error::DockerResponseServerError {
            status_code: 404, ..
        }) => Ok(None),
        Err(error) => Err(format!(
            "inspecting Swarm service {name}: {}",
            describe_error(&error)
        )),
    }
}

/// The label of a container spec's owner check, shared with `deploy::status`.
pub fn owned_by(labels: &HashMap<String, String>, pipeline: &str, instance: &str) -> bool {
    labels.get(LABEL_PIPELINE).map(String::as_str) == Some(pipeline)
        && labels.get(LABEL_INSTANCE).map(String::as_str) == Some(instance)
}

#[cfg(test)]
mod tests {
    use super::converged;
    use super::tasks::SwarmTask;

    fn task(slot: i64, state: &str, desired: &str, digest: &str) -> SwarmTask {
        SwarmTask {
            id: format!("{slot}{state}{digest}"),
            slot: Some(slot),
            node: None,
            state: state.to_string(),
            desired_state: desired.to_string(),
            digest: Some(digest.to_string()),
            error: None,
            published: Vec::new(),
        }
    }

    #[test]
    fn a_service_converged_when_exactly_its_replicas_serve_the_digest() {
        let new = |slot| task(slot, "running", "running", "sha256:new");
        assert!(converged(&[new(1), new(2)], "sha256:new", 2));
        // An old task still meant to run, one still starting, one too few.
        assert!(!converged(
            &[new(1), task(2, "running", "running", "sha256:old")],
            "sha256:new",
            2
        ));
        assert!(!converged(
            &[new(1), task(2, "starting", "running", "sha256:new")],
            "sha256:new",
            2
        ));
        assert!(!converged(&[new(1)], "sha256:new", 2));
        // Old tasks on their way out do not count.
        assert!(converged(
            &[new(1), new(2), task(1, "running", "shutdown", "sha256:old")],
            "sha256:new",
            2
        ));
    }
}
