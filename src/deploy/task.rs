//! Release tasks: one-off containers of the image being deployed, run once per
//! deploy on their host with their service's env, volumes, network and limits
//! (`when: before` after the image is pulled everywhere and before any instance is
//! swapped, `when: after` once every instance passed its gate), or by hand with
//! `gantry task`.
//!
//! A task's container is named `<pipeline>-task-<task>-<random>`, carries gantry's
//! labels plus `gantry.task`, publishes no port and never restarts. Its output goes to
//! the rollout's log line by line; it is removed when it ends, killed first when it
//! outlives its `timeout` or is interrupted (Ctrl-C on `gantry task`), and removed in
//! the background when the rollout is dropped mid-task. One left behind by a killed
//! gantry is removed before that task runs again; while it still runs, the task
//! refuses to start beside it. This module records nothing and swaps nothing.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bollard::Docker;
use bollard::container::LogOutput;
use bollard::models::{
    ContainerCreateBody, ContainerSummaryStateEnum, HostConfig, RestartPolicy,
    RestartPolicyNameEnum,
};
use bollard::query_parameters::{
    CreateContainerOptions, KillContainerOptions, ListContainersOptions, LogsOptions,
};
use futures_util::StreamExt;
use futures_util::future::{FusedFuture, FutureExt};
use serde::Serialize;
use sha2::{Digest, Sha256};
use tokio_util::sync::CancellationToken;

use super::container::{
    self, ContainerSpec, DockerCallError, LABEL_COMMIT, LABEL_DIGEST, LABEL_IMAGE, LABEL_PIPELINE,
    LABEL_SERVICE, LABEL_TASK,
};
use super::{DeployImage, FAILURE_LOG_LINES, Log, Phase, RolloutFailure, Target};
use crate::config::{Instance, Pipeline, Task, TaskWhen};
use crate::host::describe_error;
use crate::registry::Mirrors;

mod hand;
pub use hand::{HandImage, run_by_hand};

/// The longest line of a task's output kept for its failure message; the run's log
/// cuts its own lines (`engine::record`).
const MAX_TAIL_LINE_BYTES: usize = 4096;
/// Added to a task's timeout for the Docker call that waits for it, so the engine
/// call never gives up before the task's own deadline does.
const WAIT_MARGIN: Duration = Duration::from_secs(60);
/// How long the output of a task that was killed may take to come in full.
const OUTPUT_AFTER_KILL: Duration = Duration::from_secs(5);

/// What one task did.
#[derive(Debug, Clone, Serialize)]
pub struct TaskReport {
    pub task: String,
    pub service: String,
    pub host: String,
    pub when: &'static str,
    /// The container's name (it is gone by the time the report is read).
    pub container: String,
    /// The command's exit code; `None` when it did not end by itself.
    pub exit_code: Option<i64>,
    pub timed_out: bool,
    pub duration_ms: u128,
    /// Why it failed, when it did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The last lines of its output.
    pub logs: Vec<String>,
}

/// The tasks that run `when` in a rollout of `targets`: those of the services that
/// have an instance among them, in the order written.
pub fn selected<'p>(
    pipeline: &'p Pipeline,
    targets: &[Target<'_>],
    when: TaskWhen,
) -> Vec<&'p Task> {
    pipeline
        .deploy
        .tasks
        .iter()
        .filter(|task| task.when == when)
        .filter(|task| {
            targets
                .iter()
                .any(|target| target.service.name == task.service)
        })
        .collect()
}

/// The hosts the rollout's tasks run on, which phase 1 connects to and pulls on too.
pub fn hosts(pipeline: &Pipeline, targets: &[Target<'_>]) -> Vec<String> {
    [TaskWhen::Before, TaskWhen::After]
        .into_iter()
        .flat_map(|when| selected(pipeline, targets, when))
        .map(|task| task.host.clone())
        .collect()
}

/// Runs the rollout's tasks of one kind one after another; the first that fails (or
/// a stop asked before a task) ends it as the rollout's failure.
pub async fn run_tasks(
    hosts: &BTreeMap<String, Docker>,
    request: &super::Rollout<'_>,
    targets: &[Target<'_>],
    when: TaskWhen,
    log: Log<'_>,
) -> Result<(), RolloutFailure> {
    for task in selected(request.pipeline, targets, when) {
        let consequence = match when {
            TaskWhen::Before => "no container was swapped",
            TaskWhen::After => {
                "the instances keep the new image (a failed after-task swaps nothing back)"
            }
        };
        let failure = |message: String, logs: Vec<String>| RolloutFailure {
            phase: Phase::Task,
            host: Some(task.host.clone()),
            instance: None,
            message: format!("{message}; {consequence}"),
            check: None,
            logs,
        };
        if let Some(reason) = request.stop.and_then(|stop| stop()) {
            log(&format!("stopping before task {}: {reason}", task.name));
            return Err(failure(
                format!("stopped before task `{}`: {reason}", task.name),
                Vec::new(),
            ));
        }
        let Some(docker) = hosts.get(&task.host) else {
            return Err(failure(
                format!(
                    "task `{}`: host `{}` is not connected",
                    task.name, task.host
                ),
                Vec::new(),
            ));
        };
        let Some(service) = request.pipeline.deploy.services.get(&task.service) else {
            return Err(failure(
                format!(
                    "task `{}`: service `{}` is not defined",
                    task.name, task.service
                ),
                Vec::new(),
            ));
        };
        let image = request.release.image_for(service);
        let mirrors = Mirrors::of(request.config);
        let report = run_task(docker, request.pipeline, task, image, &mirrors, None, log).await;
        if let Some(error) = report.error {
            return Err(failure(error, report.logs));
        }
    }
    Ok(())
}

/// Runs one task in a new container of `image` on `docker` (which holds the image
/// already) and removes the container, whatever happened: killed first when it
/// outlives its timeout or `interrupt` is cancelled.
pub async fn run_task(
    docker: &Docker,
    pipeline: &Pipeline,
    task: &Task,
    image: &DeployImage,
    mirrors: &Mirrors,
    interrupt: Option<&CancellationToken>,
    log: Log<'_>,
) -> TaskReport {
    let started = Instant::now();
    let name = container_name(&pipeline.name, &task.name);
    let mut report = TaskReport {
        task: task.name.clone(),
        service: task.service.clone(),
        host: task.host.clone(),
        when: task.when.as_str(),
        container: name.clone(),
        exit_code: None,
        timed_out: false,
        duration_ms: 0,
        error: None,
        logs: Vec::new(),
    };
    let what = format!("task `{}` on {}", task.name, task.host);
    let Some(service) = pipeline.deploy.services.get(&task.service) else {
        report.error = Some(format!("{what}: service `{}` is not defined", task.service));
        return report;
    };
    if let Err(error) = remove_leftovers(docker, &pipeline.name, &task.name, log).await {
        report.error = Some(format!("{what}: {error}"));
        return report;
    }
    // The task's container is its service's, without ports, restarts or the
    // service's own labels (a proxy that follows labels must not route to it).
    let spec = ContainerSpec::new(
        pipeline,
        service,
        &Instance {
            name: name.clone(),
            host: task.host.clone(),
            env: BTreeMap::new(),
            ports: Vec::new(),
            volumes: Vec::new(),
            position: Default::default(),
        },
        image,
    );
    let created = async {
        container::ensure_network(docker, &spec).await?;
        create(docker, &spec, task, mirrors).await
    }
    .await;
    if let Err(error) = created {
        report.error = Some(format!("{what}: {error}"));
        return report;
    }
    // From here on the container is removed however this ends, even when the
    // rollout is dropped while the task runs.
    let guard = RemoveOnDrop {
        docker: docker.clone(),
        name: Some(name.clone()),
    };
    // The command is not shown: it may hold a secret from the environment.
    log(&format!(
        "task {}: running in {name} on {} ({})",
        task.name,
        task.host,
        super::short_digest(&image.digest)
    ));
    let mut tail = VecDeque::new();
    let outcome = match container::start(docker, &name).await {
        Ok(()) => {
            // Kept beyond an interruption: what the task printed before it was killed
            // is shown, not dropped with a stream not yet read.
            let output = follow_output(docker, &name, task, &mut tail, log).fuse();
            tokio::pin!(output);
            let ending = tokio::select! {
                finished = tokio::time::timeout(task.timeout, async {
                    let (exit, ()) =
                        tokio::join!(wait_exit(docker, &name, task.timeout), &mut output);
                    exit
                }) => finished.ok(),
                () = interrupted(interrupt) => None,
            };
            match ending {
                Some(exit) => exit,
                None => {
                    let why = if interrupt.is_some_and(CancellationToken::is_cancelled) {
                        "interrupted".to_string()
                    } else {
                        report.timed_out = true;
                        format!(
                            "did not finish within {}",
                            humantime::format_duration(task.timeout)
                        )
                    };
                    log(&format!("task {}: {why}; killing it", task.name));
                    let kill = docker
                        .kill_container(&name, None::<KillContainerOptions>)
                        .await;
                    if let Err(error) = kill {
                        tracing::warn!(
                            container = name,
                            error = describe_error(&error),
                            "killing a task"
                        );
                    }
                    // The killed container's output ends; whatever of it is unread comes now.
                    if !output.is_terminated() {
                        let _ = tokio::time::timeout(OUTPUT_AFTER_KILL, &mut output).await;
                    }
                    Err(format!("{why} and was killed"))
                }
            }
        }
        Err(error) => Err(error.to_string()),
    };
    if let Err(error) = guard.remove().await {
        log(&format!("task {}: {error}", task.name));
    }
    report.logs = tail.into_iter().collect();
    report.duration_ms = started.elapsed().as_millis();
    match outcome {
        Ok(0) => {
            report.exit_code = Some(0);
            log(&format!(
                "task {}: done in {}",
                task.name,
                humantime::format_duration(Duration::from_millis(report.duration_ms as u64))
            ));
        }
        Ok(code) => {
            report.exit_code = Some(code);
            report.error = Some(format!("{what} exited with code {code}"));
            log(&format!("task {}: exited with code {code}", task.name));
        }
        Err(reason) => report.error = Some(format!("{what}: {reason}")),
    }
    report
}

/// `<pipeline>-task-<task>-<8 hex digits>`: unique per run, so a task never meets an
/// earlier one's container under its name.
fn container_name(pipeline: &str, task: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_nanos());
    let seed = format!(
        "{pipeline}/{task}/{}/{nanos}/{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    );
    let digest = Sha256::digest(seed.as_bytes());
    format!("{pipeline}-task-{task}-{}", hex::encode(&digest[..4]))
}

/// The task's container, from the name the engine holds the image under.
async fn create(
    docker: &Docker,
    spec: &ContainerSpec,
    task: &Task,
    mirrors: &Mirrors,
) -> Result<String, DockerCallError> {
    let labels = HashMap::from([
        (LABEL_PIPELINE.to_string(), spec.pipeline.clone()),
        (LABEL_SERVICE.to_string(), spec.service.clone()),
        (LABEL_TASK.to_string(), task.name.clone()),
        (LABEL_IMAGE.to_string(), spec.repository.to_string()),
        (LABEL_DIGEST.to_string(), spec.digest.clone()),
        (
            LABEL_COMMIT.to_string(),
            spec.commit.clone().unwrap_or_default(),
        ),
    ]);
    let body = ContainerCreateBody {
        image: Some(mirrors.engine_reference(docker, &spec.image()).await),
        cmd: Some(task.command.clone()),
        env: Some(
            spec.env
                .iter()
                .map(|(key, value)| format!("{key}={value}"))
                .collect(),
        ),
        labels: Some(labels),
        host_config: Some(HostConfig {
            binds: (!spec.volumes.is_empty()).then(|| spec.volumes.clone()),
            network_mode: spec.network.clone(),
            memory: spec.memory.map(|bytes| bytes as i64),
            nano_cpus: spec.cpus.map(|cpus| (cpus * 1e9) as i64),
            restart_policy: Some(RestartPolicy {
                name: Some(RestartPolicyNameEnum::NO),
                maximum_retry_count: None,
            }),
            ..HostConfig::default()
        }),
        ..ContainerCreateBody::default()
    };
    let options = CreateContainerOptions {
        name: Some(spec.instance.clone()),
        ..CreateContainerOptions::default()
    };
    docker
        .create_container(Some(options), body)
        .await
        .map(|created| created.id)
        .map_err(|error| DockerCallError {
            action: format!("creating container {}", spec.instance),
            reason: describe_error(&error),
        })
}

/// Waits for the container to stop; its exit code.
async fn wait_exit(docker: &Docker, name: &str, timeout: Duration) -> Result<i64, String> {
    // The client's own request timeout must not end the wait before the task's does.
    let patient = docker.clone().with_timeout(timeout + WAIT_MARGIN);
    let mut waiting = patient.wait_container(name, None);
    match waiting.next().await {
        Some(Ok(response)) => Ok(response.status_code),
        // bollard turns a non-zero exit into this error.
        Some(Err(bollard::errors::Error::DockerContainerWaitError { code, .. })) => Ok(code),
        Some(Err(error)) => Err(format!("waiting for {name}: {}", describe_error(&error))),
        None => Err(format!(
            "waiting for {name}: the engine did not say how it ended"
        )),
    }
}

/// Sends the container's output to the log line by line until it stops, keeping the
/// last `FAILURE_LOG_LINES` lines in `tail`.
async fn follow_output(
    docker: &Docker,
    name: &str,
    task: &Task,
    tail: &mut VecDeque<String>,
    log: Log<'_>,
) {
    let options = LogsOptions {
        follow: true,
        stdout: true,
        stderr: true,
        ..LogsOptions::default()
    };
    let patient = docker.clone().with_timeout(task.timeout + WAIT_MARGIN);
    let mut stream = patient.logs(name, Some(options));
    // Output may arrive in pieces that are not whole lines; one buffer per stream.
    let mut partial: [Vec<u8>; 2] = [Vec::new(), Vec::new()];
    let mut emit = |bytes: &[u8]| {
        let line = String::from_utf8_lossy(bytes);
        let line = line.trim_end_matches('\r');
        log(&format!("task {}: {line}", task.name));
        if tail.len() == FAILURE_LOG_LINES {
            tail.pop_front();
        }
        tail.push_back(cut(line));
    };
    while let Some(Ok(chunk)) = stream.next().await {
        let (index, bytes) = match chunk {
            LogOutput::StdErr { message } => (1, message),
            LogOutput::StdOut { message }
            | LogOutput::Console { message }
            | LogOutput::StdIn { message } => (0, message),
        };
        let buffer = &mut partial[index];
        buffer.extend_from_slice(&bytes);
        while let Some(end) = buffer.iter().position(|byte| *byte == b'\n') {
            let line: Vec<u8> = buffer.drain(..=end).collect();
            emit(&line[..line.len() - 1]);
        }
    }
    for rest in partial.iter().filter(|rest| !rest.is_empty()) {
        emit(rest);
    }
}

/// A line cut to `MAX_TAIL_LINE_BYTES`, at a character boundary.
fn cut(line: &str) -> String {
    if line.len() <= MAX_TAIL_LINE_BYTES {
        return line.to_string();
    }
    let mut end = MAX_TAIL_LINE_BYTES;
    while !line.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &line[..end])
}

/// Removes the containers of this pipeline's task that an earlier gantry left behind
/// (it was killed while the task ran). One that still runs is not killed: a
/// migration stopped halfway, or run twice at once, is worse than a deploy that
/// waits for it; the error says so.
async fn remove_leftovers(
    docker: &Docker,
    pipeline: &str,
    task: &str,
    log: Log<'_>,
) -> Result<(), String> {
    let options = ListContainersOptions {
        all: true,
        filters: Some(HashMap::from([(
            "label".to_string(),
            vec![
                format!("{LABEL_PIPELINE}={pipeline}"),
                format!("{LABEL_TASK}={task}"),
            ],
        )])),
        ..ListContainersOptions::default()
    };
    let leftovers = docker
        .list_containers(Some(options))
        .await
        .map_err(|error| format!("listing task containers: {}", describe_error(&error)))?;
    for leftover in leftovers {
        let Some(id) = leftover.id else { continue };
        let name = leftover
            .names
            .and_then(|names| names.into_iter().next())
            .map_or_else(
                || super::short_id(&id),
                |name| name.trim_start_matches('/').to_string(),
            );
        if leftover.state == Some(ContainerSummaryStateEnum::RUNNING) {
            return Err(format!(
                "{name}, an earlier run of this task, is still running (gantry stopped while it ran); \
                 wait for it to end, or stop it with `docker rm -f {name}`"
            ));
        }
        log(&format!(
            "task {task}: removing {name} left by an interrupted run"
        ));
        container::remove(docker, &id)
            .await
            .map_err(|error| error.to_string())?;
    }
    Ok(())
}

/// Resolves when `interrupt` is cancelled; never without one.
async fn interrupted(interrupt: Option<&CancellationToken>) {
    match interrupt {
        Some(token) => token.cancelled().await,
        None => std::future::pending().await,
    }
}

/// Removes a task's container: by `remove`, or in the background when dropped first
/// (a rollout abandoned mid-task), so that none is left behind.
struct RemoveOnDrop {
    docker: Docker,
    /// `None` once removed.
    name: Option<String>,
}

impl RemoveOnDrop {
    async fn remove(mut self) -> Result<(), DockerCallError> {
        match self.name.take() {
            Some(name) => container::remove(&self.docker, &name).await,
            None => Ok(()),
        }
    }
}

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let Some(name) = self.name.take() else {
            return;
        };
        let docker = self.docker.clone();
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                runtime.spawn(async move {
                    if let Err(error) = container::remove(&docker, &name).await {
                        tracing::warn!(%error, "removing an abandoned task container");
                    }
                });
            }
            Err(_) => tracing::warn!(
                container = name,
                "a task container could not be removed: no runtime; the next run of the task removes it"
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn task_containers_are_named_after_pipeline_and_task_and_never_twice() {
        let first = container_name("shop", "migrate");
        let second = container_name("shop", "migrate");
        assert!(first.starts_with("shop-task-migrate-"), "{first}");
        assert_eq!(first.len(), "shop-task-migrate-".len() + 8);
        assert_ne!(first, second);
    }

    #[test]
    fn long_lines_are_cut_at_a_character_boundary() {
        assert_eq!(cut("short"), "short");
        let long = "é".repeat(MAX_TAIL_LINE_BYTES);
        let kept = cut(&long);
        assert!(kept.len() <= MAX_TAIL_LINE_BYTES + "…".len());
        assert!(kept.ends_with('…'));
    }
}
