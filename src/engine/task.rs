//! `gantry task PIPELINE NAME`: one release task run by hand, under the pipeline's
//! deploy lease (so it never runs beside a deploy of the same pipeline), against the
//! image its service runs now (`deploy::task::run_by_hand` decides, given the newest
//! successful deployment the state store holds). It is not a run: nothing is
//! recorded but the lease, and its output goes to the caller's log.

use std::time::Duration;

use serde::Serialize;
use tokio_util::sync::CancellationToken;

use super::lease::{HeldLease, acquire_lease, lease_owner_doing};
use super::{EngineError, Failure, Progress};
use crate::config::{Pipeline, Task};
use crate::deploy::task::{HandImage, TaskReport, run_by_hand};
use crate::deploy::{DeployImage, Log};
use crate::run::{Outcome, RunState, Stage};
use crate::store::Store;

/// Deployments looked through for the newest successful one (as `rollback` does).
const DEPLOYMENTS_SEARCHED: i64 = 1000;

/// What `gantry task` did.
#[derive(Debug, Clone, Serialize)]
pub struct TaskRunReport {
    pub pipeline: String,
    pub task: String,
    pub service: String,
    pub host: String,
    pub outcome: Outcome,
    /// The image it ran, and whether the running containers or the store named it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub image: Option<HandImage>,
    /// The task's container: exit code, timing, last lines.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub run: Option<TaskReport>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failure: Option<Failure>,
}

/// Runs `task` of `pipeline` by hand; `wait` waits for a deploy that holds the lease.
/// A cancelled `interrupt` (Ctrl-C) stops the wait, or kills and removes the task.
pub async fn run_task(
    config: &crate::config::Config,
    pipeline: &Pipeline,
    store: &Store,
    task: &Task,
    wait: bool,
    interrupt: &CancellationToken,
    log: Log<'_>,
) -> Result<TaskRunReport, EngineError> {
    let mut report = TaskRunReport {
        pipeline: pipeline.name.clone(),
        task: task.name.clone(),
        service: task.service.clone(),
        host: task.host.clone(),
        outcome: Outcome::Failed,
        image: None,
        run: None,
        failure: None,
    };
    let owner = lease_owner_doing(&format!("task {}", task.name));
    let mut lines = LogProgress(log);
    let leased = tokio::select! {
        leased = acquire_lease(store, &pipeline.name, &owner, wait, &mut lines) => leased,
        () = interrupt.cancelled() => Err(Failure::new(Stage::Lease, "interrupted while waiting for the deploy lease")),
    };
    if let Err(failure) = leased {
        report.failure = Some(failure);
        return Ok(report);
    }
    // The lease is renewed while the task runs; a task cannot be stopped halfway
    // with any good result, so a lost lease is only told.
    let held = HeldLease::keep(store, &pipeline.name, &owner);
    let result = async {
        let recorded = newest_deployed(store, pipeline, &task.service).await?;
        Ok::<_, EngineError>(run_by_hand(config, pipeline, task, recorded, interrupt, log).await)
    }
    .await;
    if let Some(reason) = held.lost() {
        log(&format!("warning: {reason} while the task ran"));
    }
    let released = held.release().await;
    released?;
    match result? {
        Err(message) => report.failure = Some(Failure::new(Stage::Resolve, message)),
        Ok((image, run)) => {
            if let Some(error) = &run.error {
                let mut failure = Failure::new(Stage::Deploy, error.clone());
                if !run.logs.is_empty() {
                    failure.details.push(format!(
                        "last {} lines of the task's output:",
                        run.logs.len()
                    ));
                    failure
                        .details
                        .extend(run.logs.iter().map(|line| format!("  {line}")));
                }
                report.failure = Some(failure);
            } else {
                report.outcome = Outcome::Succeeded;
            }
            report.image = Some(image);
            report.run = Some(run);
        }
    }
    Ok(report)
}

/// The image the pipeline's newest successful deployment gave `service`.
async fn newest_deployed(
    store: &Store,
    pipeline: &Pipeline,
    service: &str,
) -> Result<Option<DeployImage>, EngineError> {
    let history = store
        .deployments(&pipeline.name, DEPLOYMENTS_SEARCHED)
        .await?;
    let (Some(deployment), Some(service)) = (
        history
            .iter()
            .find(|deployment| deployment.state == RunState::Succeeded),
        pipeline.deploy.services.get(service),
    ) else {
        return Ok(None);
    };
    // A deployment of images the pipeline no longer builds tells nothing.
    Ok(super::resolve::deployed_release(pipeline, deployment)
        .ok()
        .map(|release| release.image_for(service).clone()))
}

/// The lease's "waiting for another deploy" line, sent to the task's log.
struct LogProgress<'a>(Log<'a>);

impl Progress for LogProgress<'_> {
    fn stage_started(&mut self, _stage: Stage) {}

    fn line(&mut self, line: &str) {
        (self.0)(line);
    }

    fn stage_finished(&mut self, _stage: Stage, _outcome: Outcome, _elapsed: Duration) {}
}
