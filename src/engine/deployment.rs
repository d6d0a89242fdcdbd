//! Deploy runs: `gantry deploy`, `gantry rollback` and the deploy half of `gantry run`.
//!
//! Each is a run in the state store with stages `resolve` (which image; a pinned
//! pipeline refuses unless forced), `lease` (one deploy per pipeline across
//! processes) and `deploy` (the rollout itself, recorded per instance). The lease
//! is renewed while the rollout works and released at the end; a holder that
//! dies stops renewing, and its lease expires after `LEASE_TTL`.

use serde::Serialize;

use super::lease::{HeldLease, acquire_lease, lease_owner};
use super::resolve::{describe_release, resolve_release, rollback_release, stored_release};
use super::{
    BuildGate, BuildReport, EngineError, Failure, Progress, RunRecorder, StageReport, build_run,
};
use crate::config::{Config, Pipeline};
use crate::deploy::{
    self, Action, DeployImage, InstanceReport, Phase, Release, Rollout, RolloutFailure, SharedLog,
};

use crate::run::{Outcome, RunId, RunKind, RunState, Stage, Trigger};
use crate::store::{DeploymentId, InstanceRecord, NewDeployment, Pin, RunResult, Store};

/// What a deploy should roll out, and how.
#[derive(Debug, Clone, Default)]
pub struct DeployOptions {
    /// An image reference (`repo:tag` or `repo@digest`; `NAME=REF` for one of several
    /// images, the others as the latest build made them); the latest built images when `None`.
    pub image: Option<String>,
    pub only: Option<glob::Pattern>,
    /// Replace unchanged containers too, and deploy a pinned pipeline.
    pub force: bool,
    /// Wait for another deploy's lease instead of giving up.
    pub wait: bool,
    /// What started it: `manual` from the command line.
    pub trigger: Trigger,
    /// A deploy or rollback the daemon took from the queue, already recorded (and running).
    pub queued: Option<RunId>,
}

/// What `gantry rollback` returns to: a deployment number, a digest or a commit (prefixes work).
#[derive(Debug, Clone)]
pub struct RollbackTarget(pub Option<String>);

/// What a deploy run did.
#[derive(Debug, Clone, Serialize)]
pub struct DeployReport {
    pub pipeline: String,
    pub run: RunId,
    pub kind: RunKind,
    pub outcome: Outcome,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deployment: Option<DeploymentId>,
    /// The first image rolled out (by name); `images` has every one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub image: Option<DeployImage>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub images: Option<Release>,
    pub instances: Vec<InstanceReport>,
    pub stages: Vec<StageReport>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failure: Option<Failure>,
    /// Set when the pipeline is pinned after this run (a rollback pins it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pinned: Option<Pin>,
}

/// What `gantry run` did: the build, then the deploy when the build succeeded; or
/// nothing, and why (a forge's or the poller's run of a pinned pipeline is held, of a
/// commit that is deployed already or older than the deployed one is skipped).
#[derive(Debug, Clone, Serialize)]
pub struct RunReport {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub build: Option<BuildReport>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deploy: Option<DeployReport>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nothing_to_do: Option<NothingToDo>,
}

/// Why a run ended without doing anything.
#[derive(Debug, Clone, Serialize)]
pub struct NothingToDo {
    /// `held` or `skipped`.
    pub state: RunState,
    pub reason: String,
}

impl RunReport {
    pub fn outcome(&self) -> Outcome {
        match (&self.deploy, &self.nothing_to_do) {
            (Some(deploy), _) => deploy.outcome,
            (None, Some(_)) => Outcome::Succeeded,
            (None, None) => Outcome::Failed,
        }
    }
}

/// The run a deploy or rollback records into: the queued one the daemon took, or a
/// new one asking for `requested`.
async fn run_of(
    store: &Store,
    pipeline: &Pipeline,
    kind: RunKind,
    options: &DeployOptions,
    requested: Option<&str>,
) -> Result<RunId, EngineError> {
    match options.queued {
        Some(run) => Ok(run),
        None => Ok(store
            .start_run(&pipeline.name, kind, &options.trigger, requested)
            .await?),
    }
}

/// Deploys an image (the latest built one unless `options.image` names one) to a pipeline's instances.
pub async fn deploy(
    config: &Config,
    pipeline: &Pipeline,
    store: &Store,
    options: &DeployOptions,
    progress: &mut dyn Progress,
) -> Result<DeployReport, EngineError> {
    let requested = options.image.as_deref();
    let run = run_of(store, pipeline, RunKind::Deploy, options, requested).await?;
    let mut recorder = RunRecorder::new(store, run, progress);
    let report = deploy_run(config, pipeline, options, &mut recorder).await;
    recorder.finish().await;
    report
}

async fn deploy_run(
    config: &Config,
    pipeline: &Pipeline,
    options: &DeployOptions,
    recorder: &mut RunRecorder<'_>,
) -> Result<DeployReport, EngineError> {
    let store = recorder.store();
    let pin = store.pin_of(&pipeline.name).await?;
    let mut deploying = DeployRun::new(recorder, pipeline, RunKind::Deploy);
    let resolved = deploying
        .stage(Stage::Resolve, async |progress: &mut dyn Progress| {
            refuse_if_pinned(pin.as_ref(), pipeline, options.force)?;
            let release =
                resolve_release(config, pipeline, store, options.image.as_deref()).await?;
            progress.line(&describe_release(&release));
            Ok(release)
        })
        .await?;
    let release = match resolved {
        Ok(release) => release,
        Err(failure) => return deploying.fail(failure).await,
    };
    deploy_release(deploying, config, release, options, None).await
}

/// Builds, pushes and deploys one commit as a single run (`queued`: a run the
/// daemon took from the queue, already recorded).
pub async fn run_pipeline(
    config: &Config,
    pipeline: &Pipeline,
    store: &Store,
    reference: Option<&str>,
    options: &DeployOptions,
    queued: Option<RunId>,
    progress: &mut dyn Progress,
) -> Result<RunReport, EngineError> {
    let from_queue = queued.is_some();
    let run = match queued {
        Some(run) => run,
        None => {
            store
                .start_run(&pipeline.name, RunKind::Run, &options.trigger, reference)
                .await?
        }
    };
    let mut recorder = RunRecorder::new(store, run, progress);
    let report = build_and_deploy(
        config,
        pipeline,
        reference,
        options,
        from_queue,
        &mut recorder,
    )
    .await;
    recorder.finish().await;
    report
}

async fn build_and_deploy(
    config: &Config,
    pipeline: &Pipeline,
    reference: Option<&str>,
    options: &DeployOptions,
    from_queue: bool,
    recorder: &mut RunRecorder<'_>,
) -> Result<RunReport, EngineError> {
    let store = recorder.store();
    // The pin is read once per run. A run the daemon took from the queue (whoever
    // queued it) is held by a pin before anything is done; a foreground `gantry run`
    // is refused at `resolve`, after its build, unless forced.
    let pin = store.pin_of(&pipeline.name).await?;
    let nothing = match &pin {
        Some(pin) if from_queue => Some(NothingToDo {
            state: RunState::Held,
            reason: format!("held: the pipeline is pinned ({})", pin.reason),
        }),
        // Forges redeliver, and a push and a poll may both see one commit.
        _ if options.trigger.is_automatic() => already_deployed(store, pipeline, reference)
            .await?
            .map(|reason| NothingToDo {
                state: RunState::Skipped,
                reason,
            }),
        _ => None,
    };
    if let Some(nothing) = nothing {
        recorder.end(nothing.state, &nothing.reason).await?;
        return Ok(RunReport {
            build: None,
            deploy: None,
            nothing_to_do: Some(nothing),
        });
    }
    // A queued commit older than the deployed one is skipped; checked after the
    // checkout, on the one fetch the run makes.
    let not_before = match reference {
        Some(_) if from_queue => store.deployed_commit(&pipeline.name).await?,
        _ => None,
    };
    let build = build_run(
        config,
        pipeline,
        reference,
        &BuildGate {
            kind: RunKind::Run,
            not_before: not_before.as_deref(),
        },
        recorder,
    )
    .await?;
    if let Some(reason) = &build.skipped {
        let nothing = NothingToDo {
            state: RunState::Skipped,
            reason: reason.clone(),
        };
        return Ok(RunReport {
            build: Some(build),
            deploy: None,
            nothing_to_do: Some(nothing),
        });
    }
    if build.failure.is_some() || build.images.iter().any(|image| image.digest.is_none()) {
        return Ok(RunReport {
            build: Some(build),
            deploy: None,
            nothing_to_do: None,
        });
    }
    let built: std::collections::BTreeMap<String, String> = build
        .images
        .iter()
        .map(|image| {
            let digest = image.digest.as_deref().unwrap_or_default();
            (image.name.clone(), format!("{}@{digest}", image.image))
        })
        .collect();
    let commit = build.commit.as_ref().map(|commit| commit.sha.as_str());
    let mut deploying = DeployRun::new(recorder, pipeline, RunKind::Run);
    let allowed = deploying
        .stage(Stage::Resolve, async |progress: &mut dyn Progress| {
            refuse_if_pinned(pin.as_ref(), pipeline, options.force)?;
            let release = stored_release(pipeline, &built, "", commit, "this run's build")
                .map_err(|message| Failure::new(Stage::Resolve, message))?;
            progress.line(&describe_release(&release));
            Ok(release)
        })
        .await?;
    let deploy = match allowed {
        Ok(release) => deploy_release(deploying, config, release, options, None).await?,
        Err(failure) => deploying.fail(failure).await?,
    };
    Ok(RunReport {
        build: Some(build),
        deploy: Some(deploy),
        nothing_to_do: None,
    })
}

/// Why a forge's or the poller's run of `reference` has nothing to do: the pipeline's
/// newest deployment rolled that very commit out (forges redeliver; a push and a poll
/// may both see one commit).
async fn already_deployed(
    store: &Store,
    pipeline: &Pipeline,
    reference: Option<&str>,
) -> Result<Option<String>, EngineError> {
    let Some(requested) = reference else {
        return Ok(None);
    };
    let newest = store
        .deployments(&pipeline.name, 1)
        .await?
        .into_iter()
        .next();
    Ok(newest
        .filter(|newest| {
            newest.state == RunState::Succeeded && newest.commit.as_deref() == Some(requested)
        })
        .map(|newest| {
            format!(
                "commit {} is already deployed (deployment #{})",
                crate::source::short_commit(requested),
                newest.number
            )
        }))
}

/// Redeploys the previous image (or the one `target` names) and pins the pipeline.
pub async fn rollback(
    config: &Config,
    pipeline: &Pipeline,
    store: &Store,
    target: &RollbackTarget,
    options: &DeployOptions,
    progress: &mut dyn Progress,
) -> Result<DeployReport, EngineError> {
    let requested = target.0.as_deref();
    let run = run_of(store, pipeline, RunKind::Rollback, options, requested).await?;
    let mut recorder = RunRecorder::new(store, run, progress);
    let report = rollback_run(config, pipeline, target, options, &mut recorder).await;
    recorder.finish().await;
    report
}

async fn rollback_run(
    config: &Config,
    pipeline: &Pipeline,
    target: &RollbackTarget,
    options: &DeployOptions,
    recorder: &mut RunRecorder<'_>,
) -> Result<DeployReport, EngineError> {
    let store = recorder.store();
    let mut deploying = DeployRun::new(recorder, pipeline, RunKind::Rollback);
    let resolved = deploying
        .stage(Stage::Resolve, async |progress: &mut dyn Progress| {
            let (release, number) = rollback_release(pipeline, store, target.0.as_deref()).await?;
            progress.line(&format!(
                "rolling back to deployment #{number}: {}",
                describe_release(&release)
            ));
            Ok((release, number))
        })
        .await?;
    let (release, number) = match resolved {
        Ok(resolved) => resolved,
        Err(failure) => return deploying.fail(failure).await,
    };
    let reason = format!(
        "rolled back to deployment #{number} ({})",
        deploy::short_digest(&release.first().digest)
    );
    deploy_release(deploying, config, release, options, Some(reason)).await
}

/// Refuses a deploy of a pinned pipeline unless forced.
fn refuse_if_pinned(pin: Option<&Pin>, pipeline: &Pipeline, force: bool) -> Result<(), Failure> {
    match pin {
        Some(pin) if !force => Err(Failure::new(
            Stage::Resolve,
            format!(
                "`{}` is pinned: {} (hint: `gantry unpin {}`, or deploy anyway with --force)",
                pipeline.name, pin.reason, pipeline.name
            ),
        )),
        _ => Ok(()),
    }
}

/// The lease, the rollout and its record; `pin_reason` pins the pipeline on success (rollback).
async fn deploy_release(
    mut deploying: DeployRun<'_, '_>,
    config: &Config,
    release: Release,
    options: &DeployOptions,
    pin_reason: Option<String>,
) -> Result<DeployReport, EngineError> {
    let store = deploying.recorder.store();
    let pipeline = deploying.pipeline;
    deploying.report.image = Some(release.first().clone());
    deploying.report.images = Some(release.clone());
    if let Some(commit) = release.commit() {
        store
            .set_commit(deploying.recorder.run, commit, None)
            .await?;
    }
    let owner = lease_owner(deploying.report.kind);
    let leased = deploying
        .stage(Stage::Lease, async |progress: &mut dyn Progress| {
            acquire_lease(store, &pipeline.name, &owner, options.wait, progress).await
        })
        .await?;
    if let Err(failure) = leased {
        return deploying.fail(failure).await;
    }
    // Renew while the rollout works; the task ends when the rollout does. A lease that
    // is lost (taken over, or not renewed before it expired) stops the rollout before
    // it changes another container.
    let held = HeldLease::keep(store, &pipeline.name, &owner);
    let stop = || held.lost();
    let result =
        rollout_recorded(&mut deploying, config, &release, options, pin_reason, &stop).await;
    let released = held.release().await;
    let report = result?;
    released?;
    Ok(report)
}

async fn rollout_recorded(
    deploying: &mut DeployRun<'_, '_>,
    config: &Config,
    release: &Release,
    options: &DeployOptions,
    pin_reason: Option<String>,
    stop: &(dyn Fn() -> Option<String> + Sync),
) -> Result<DeployReport, EngineError> {
    let store = deploying.recorder.store();
    let pipeline = deploying.pipeline;
    let first = release.first();
    let references = release.references();
    let deployment = store
        .start_deployment(&NewDeployment {
            pipeline: &pipeline.name,
            run: Some(deploying.recorder.run),
            kind: deploying.report.kind,
            image: &first.reference(),
            digest: &first.digest,
            commit: release.commit(),
            images: &references,
        })
        .await?;
    deploying.report.deployment = Some(deployment);
    let request = Rollout {
        config,
        pipeline,
        release,
        only: options.only.as_ref(),
        force: options.force,
        stop: Some(stop),
    };
    // The stage fails when the rollout does; its report (what each instance became)
    // is recorded either way.
    let mut rollout = None;
    let rolled = deploying
        .stage(Stage::Deploy, async |progress: &mut dyn Progress| {
            let shared = SharedLog::new(|line: &str| progress.line(line));
            let log = |line: &str| shared.line(line);
            let report = deploy::rollout(&request, &log).await;
            let failed = report
                .failure
                .as_ref()
                .map(|failure| rollout_failure(failure, &report.instances));
            rollout = Some(report);
            failed.map_or(Ok(()), Err)
        })
        .await?;
    let rollout = rollout.expect("the deploy stage always rolls out");
    for instance in &rollout.instances {
        store
            .record_instance(
                deployment,
                &InstanceRecord {
                    service: instance.service.clone(),
                    instance: instance.instance.clone(),
                    host: instance.host.clone(),
                    action: instance.action.as_str().to_string(),
                    digest: match instance.action {
                        Action::NotReached => None,
                        _ => instance.digest.clone(),
                    },
                    previous_digest: instance.previous_digest.clone(),
                    message: instance.message.clone(),
                },
            )
            .await?;
    }
    deploying.report.instances = rollout.instances;
    match rolled {
        Ok(()) => {
            store
                .finish_deployment(deployment, Outcome::Succeeded, None)
                .await?;
            if let Some(reason) = pin_reason {
                store.pin(&pipeline.name, &first.digest, &reason).await?;
            }
            deploying.report.pinned = store.pin_of(&pipeline.name).await?;
            // Old images and stopped leftovers go now, while the lease is still held.
            super::prune::after_deploy(config, pipeline, deploying.recorder).await;
            deploying
                .recorder
                .succeed(&RunResult::Deployed {
                    image: first.repository.to_string(),
                    digest: first.digest.clone(),
                    images: references.clone(),
                })
                .await?;
            Ok(deploying.report.clone())
        }
        Err(failure) => {
            store
                .finish_deployment(deployment, Outcome::Failed, Some(&failure.message))
                .await?;
            deploying.fail(failure).await
        }
    }
}

/// A failed rollout as the run tells it: the check that failed, the new container's
/// last lines, and the instances returned to their previous image.
fn rollout_failure(failure: &RolloutFailure, instances: &[InstanceReport]) -> Failure {
    let mut details = Vec::new();
    if let Some(check) = &failure.check {
        details.push(format!("check: {}", check.check));
        details.push(format!("result: {}", check.result));
    }
    if !failure.logs.is_empty() {
        details.push(match failure.phase {
            Phase::Task => format!("last {} lines of the task's output:", failure.logs.len()),
            _ => format!(
                "last {} log lines of the new container:",
                failure.logs.len()
            ),
        });
        details.extend(failure.logs.iter().map(|line| format!("  {line}")));
    }
    let reverted = instances
        .iter()
        .filter(|instance| instance.action == Action::Reverted)
        .map(|instance| instance.instance.as_str())
        .collect::<Vec<_>>();
    if !reverted.is_empty() {
        details.push(format!(
            "returned to their previous image: {}",
            reverted.join(", ")
        ));
    }
    let stage = match failure.phase {
        Phase::Pull => Stage::Pull,
        Phase::Check | Phase::Proxy | Phase::Rollout | Phase::Task => Stage::Deploy,
    };
    Failure {
        details,
        check: failure.check.clone().map(Box::new),
        ..Failure::new(stage, failure.message.clone())
    }
}

/// A deploy in progress (a deploy or rollback run, or the deploy half of a `run`): its
/// report, and the run's recorder, whose stages it continues.
struct DeployRun<'r, 'a> {
    recorder: &'r mut RunRecorder<'a>,
    pipeline: &'r Pipeline,
    report: DeployReport,
    /// The recorder's stages before this deploy's (a `run`'s build's).
    first_stage: usize,
}

impl<'r, 'a> DeployRun<'r, 'a> {
    fn new(
        recorder: &'r mut RunRecorder<'a>,
        pipeline: &'r Pipeline,
        kind: RunKind,
    ) -> DeployRun<'r, 'a> {
        let first_stage = recorder.stages.len();
        let run = recorder.run;
        DeployRun {
            recorder,
            pipeline,
            first_stage,
            report: DeployReport {
                pipeline: pipeline.name.clone(),
                run,
                kind,
                outcome: Outcome::Succeeded,
                deployment: None,
                image: None,
                images: None,
                instances: Vec::new(),
                stages: Vec::new(),
                failure: None,
                pinned: None,
            },
        }
    }

    async fn stage<T>(
        &mut self,
        name: Stage,
        work: impl AsyncFnOnce(&mut dyn Progress) -> Result<T, Failure>,
    ) -> Result<Result<T, Failure>, EngineError> {
        let result = self.recorder.stage(name, work).await?;
        self.report.stages = self.recorder.stages[self.first_stage..].to_vec();
        Ok(result)
    }

    async fn fail(&mut self, failure: Failure) -> Result<DeployReport, EngineError> {
        self.recorder.fail(&failure).await?;
        self.report.pinned = self.recorder.store().pin_of(&self.pipeline.name).await?;
        self.report.outcome = Outcome::Failed;
        self.report.failure = Some(failure);
        Ok(self.report.clone())
    }
}
