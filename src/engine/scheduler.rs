//! The scheduler: the queue of runs, taken and run one per pipeline at a time.
//!
//! Every trigger (webhook, poll, `gantry trigger`, a retry after a crash) is first a
//! `queued` run in the state store; the scheduler only ever takes work from there,
//! so nothing answered 2xx is lost. Runs of one pipeline never overlap: while one
//! runs, newer triggers wait, and when it ends the newest queued one is taken and
//! the older ones are coalesced into it. A semaphore bounds concurrent runs. A
//! pinned pipeline's runs are recorded as `held`; a commit that is not a descendant
//! of the deployed one is `skipped`, so an older push never replaces a newer deploy.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{Semaphore, mpsc, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::metrics::{Metrics, PipelineLabels, RunLabels, StageLabels};
use super::notification;
use super::reload::LiveConfig;
use super::replica::{self, Replica};
use super::{DeployOptions, Progress, run_pipeline};
use crate::config::{Config, Pipeline};
use crate::run::{Outcome, RunKind, RunState, Stage};

use crate::store::{Backend, Interrupted, QueuedRun, Store, StoreError};

/// How often the scheduler looks at the store for work it was not told about
/// (`gantry trigger` from another process, a missed event).
const SCAN_EVERY: Duration = Duration::from_secs(1);
/// How long the end of a run that broke on a store error is tried, and how often.
const RECORD_RETRY_FOR: Duration = Duration::from_secs(120);
const RECORD_RETRY_EVERY: Duration = Duration::from_secs(2);
/// How many scans pass between prunings of every pipeline's deliveries.
const PRUNE_EVERY_SCANS: u64 = 60;
/// How long a running run may take to finish after a shutdown request.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(30);
/// Events waiting for the scheduler; senders fall back on the store scan when it is full.
const EVENT_CAPACITY: usize = 1024;

/// What the scheduler reacts to.
#[derive(Debug, Clone)]
pub enum Event {
    /// A run of the pipeline was queued.
    Queued { pipeline: String },
    /// A run of the pipeline ended.
    Finished { pipeline: String },
}

/// The channel the scheduler listens on.
pub fn events() -> (mpsc::Sender<Event>, mpsc::Receiver<Event>) {
    mpsc::channel(EVENT_CAPACITY)
}

/// The scheduler: takes queued runs and runs them, one per pipeline at a time.
pub struct Scheduler {
    pub config: watch::Receiver<LiveConfig>,
    pub store: Store,
    /// The same store, for the scan every `SCAN_EVERY` and its pruning
    /// (`Store::on_timers`).
    pub timed: Store,
    pub metrics: Metrics,
    /// Receives `Queued` from the server and the poller, `Finished` from its own runs.
    pub events: mpsc::Receiver<Event>,
    pub sender: mpsc::Sender<Event>,
    /// Poked when a run ends, so the instances are read again at once.
    pub status_refresh: Arc<tokio::sync::Notify>,
    /// This process among the replicas sharing the state: the runs it takes name it.
    pub replica: Arc<Replica>,
}

impl Scheduler {
    /// Runs until `shutdown`, then gives running runs `SHUTDOWN_GRACE` to end; a run
    /// still going after that is abandoned, and recorded as interrupted and queued
    /// again (by this daemon when the store takes the write within intake's wait, else
    /// by the next start). Writes of a run's end are not retried once `shutdown` is
    /// cancelled.
    pub async fn run(mut self, shutdown: CancellationToken) {
        // Alone on a SQLite state, a starting daemon recovers every run left running;
        // among replicas, those of replicas that died (the others' runs go on).
        let left = match self.store.backend() {
            Backend::Sqlite => Interrupted::All,
            Backend::Postgres => Interrupted::OfDeadReplicas,
        };
        replica::recover(&self.store, left, false).await;
        let max_builds = self.config.borrow().config.server.max_builds.max(1) as usize;
        let permits = Arc::new(Semaphore::new(max_builds));
        let tracker = TaskTracker::new();
        let stops = Stops {
            shutdown: shutdown.clone(),
            abandon: CancellationToken::new(),
        };
        let mut busy: BTreeSet<String> = BTreeSet::new();
        let mut scan = tokio::time::interval(SCAN_EVERY);
        let mut scans: u64 = 0;
        loop {
            let first = tokio::select! {
                _ = shutdown.cancelled() => break,
                event = self.events.recv() => match event {
                    Some(event) => Some(event),
                    None => break,
                },
                _ = scan.tick() => None,
            };
            // Take every event already waiting, so a flood of pushes costs one look
            // at the queue, and a run's end is not stuck behind them.
            let mut events: Vec<Event> = first.into_iter().collect();
            while let Ok(event) = self.events.try_recv() {
                events.push(event);
            }
            let mut worth_a_look = events.is_empty();
            if worth_a_look {
                scans += 1;
                // Deliveries that queue nothing (pings, other branches) end no run;
                // they are pruned on this slower beat.
                if scans.is_multiple_of(PRUNE_EVERY_SCANS) {
                    let pipelines: Vec<String> = self
                        .config
                        .borrow()
                        .config
                        .pipelines
                        .keys()
                        .cloned()
                        .collect();
                    for pipeline in pipelines {
                        self.prune(&self.timed, &pipeline).await;
                    }
                }
            }
            for event in events {
                match event {
                    Event::Finished { pipeline } => {
                        busy.remove(&pipeline);
                        self.prune(&self.store, &pipeline).await;
                        worth_a_look = true;
                    }
                    // A push to a pipeline that is running waits for its end anyway.
                    Event::Queued { pipeline } => worth_a_look |= !busy.contains(&pipeline),
                }
            }
            if worth_a_look {
                self.schedule(&mut busy, &permits, &tracker, &stops).await;
            }
        }
        tracker.close();
        if tokio::time::timeout(SHUTDOWN_GRACE, tracker.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                "runs still going after the grace period are abandoned; they will be retried"
            );
            stops.abandon.cancel();
            tracker.wait().await;
        }
        // Whatever did not finish is recorded as interrupted and queued again.
        replica::recover(&self.store, Interrupted::Of(&self.replica.id), true).await;
    }

    /// Deletes a pipeline's runs beyond `server.keep_runs`, and as many of its
    /// deliveries that no longer answer for a run.
    async fn prune(&self, store: &Store, pipeline: &str) {
        let keep = self.config.borrow().config.server.keep_runs;
        if let Err(error) = store.prune_runs(pipeline, keep).await {
            tracing::warn!(pipeline, %error, "pruning old runs");
        }
        if let Err(error) = store.prune_deliveries(pipeline, keep).await {
            tracing::warn!(pipeline, %error, "pruning old deliveries");
        }
    }

    /// Starts a run for every pipeline that has queued work and none running.
    async fn schedule(
        &self,
        busy: &mut BTreeSet<String>,
        permits: &Arc<Semaphore>,
        tracker: &TaskTracker,
        stops: &Stops,
    ) {
        let pipelines = match self.timed.queued_pipelines().await {
            Ok(pipelines) => pipelines,
            Err(error) => {
                tracing::error!(%error, "reading the queue");
                return;
            }
        };
        for pipeline in pipelines {
            if busy.contains(&pipeline) {
                continue;
            }
            busy.insert(pipeline.clone());
            let store = self.store.clone();
            let config = self.config.clone();
            let permits = permits.clone();
            let sender = self.sender.clone();
            let metrics = self.metrics.clone();
            let status_refresh = self.status_refresh.clone();
            let replica = self.replica.clone();
            let stops = stops.clone();
            tracker.spawn(async move {
                // The permit bounds concurrent runs across pipelines; the queue is
                // read only once it is held, so the newest trigger is what runs. Once
                // the daemon is stopping, no run starts (a run that ends in the grace
                // frees a permit, and what waited for it stays queued).
                let permit = tokio::select! {
                    permit = permits.acquire_owned() => permit.ok(),
                    () = stops.shutdown.cancelled() => None,
                };
                if let Some(_permit) = permit.filter(|_| !stops.shutdown.is_cancelled()) {
                    let live = config.borrow().config.clone();
                    let taken = tokio::select! {
                        taken = store.take_queued(&pipeline, &replica.id) => taken,
                        () = stops.abandon.cancelled() => Ok(None),
                    };
                    match taken {
                        Ok(Some(queued)) => {
                            // The run's future borrows across its stages in a way the
                            // compiler cannot prove `Send` for; it runs on a blocking
                            // thread of its own, driven by this runtime.
                            let runtime = tokio::runtime::Handle::current();
                            let name = pipeline.clone();
                            let ran = tokio::task::spawn_blocking(move || {
                                runtime.block_on(async {
                                    let run = queued.run.number;
                                    tokio::select! {
                                        () = execute(&live, &store, &metrics, queued, &stops.shutdown) => {}
                                        () = stops.abandon.cancelled() => {
                                            tracing::warn!(pipeline = name, run, "run abandoned at shutdown");
                                        }
                                    }
                                });
                            })
                            .await;
                            if let Err(error) = ran {
                                tracing::error!(pipeline, %error, "a run panicked");
                            }
                        }
                        Ok(None) => {}
                        Err(error) => tracing::error!(pipeline, %error, "taking a queued run"),
                    }
                }
                status_refresh.notify_one();
                let _ = sender.send(Event::Finished { pipeline }).await;
            });
        }
    }
}

/// What stops the runs: `shutdown` (their ends are no longer retried), then, after
/// the grace, `abandon` (they are dropped where they are).
#[derive(Clone)]
struct Stops {
    shutdown: CancellationToken,
    abandon: CancellationToken,
}

/// Runs one queued run to its end with the config it started with.
async fn execute(
    config: &Config,
    store: &Store,
    metrics: &Metrics,
    queued: QueuedRun,
    stopping: &CancellationToken,
) {
    let Some(pipeline) = config.pipeline(&queued.pipeline) else {
        end(
            store,
            &queued,
            RunState::Skipped,
            "the pipeline is no longer configured",
            stopping,
        )
        .await;
        return;
    };
    match queued.kind {
        RunKind::Run => {}
        RunKind::Deploy | RunKind::Rollback => {
            execute_deploy(config, store, metrics, pipeline, &queued, stopping).await;
            return;
        }
        // Nothing queues one: `gantry build` runs in the foreground.
        RunKind::Build => {
            let reason = "a build is not run from the queue; `gantry build` runs one";
            end(store, &queued, RunState::Skipped, reason, stopping).await;
            return;
        }
    }
    // A pinned pipeline's run is held, a commit deployed already or older than the
    // deployed one skipped: the engine checks that, once, in the run itself.
    let mut progress = Logged::start(metrics, pipeline, &queued);
    let options = DeployOptions {
        wait: true,
        trigger: queued.trigger.clone(),
        ..DeployOptions::default()
    };
    match run_pipeline(
        config,
        pipeline,
        store,
        queued.requested.as_deref(),
        &options,
        Some(queued.run),
        &mut progress,
    )
    .await
    {
        Ok(report) => {
            if let Some(nothing) = &report.nothing_to_do {
                tracing::info!(
                    pipeline = queued.pipeline,
                    run = queued.run.number,
                    state = nothing.state.as_str(),
                    reason = nothing.reason,
                    "run ended with nothing to do"
                );
                return;
            }
            let succeeded = report.outcome() == crate::run::Outcome::Succeeded;
            let build = report.build.as_ref();
            let commit = build.and_then(|build| build.commit.as_ref());
            let deploy_failure = report
                .deploy
                .as_ref()
                .and_then(|deploy| deploy.failure.as_ref());
            let failure = deploy_failure.or(build.and_then(|build| build.failure.as_ref()));
            ended(
                config,
                store,
                metrics,
                &queued,
                Ended {
                    succeeded,
                    stopped_by_check: deploy_failure.is_some_and(|failure| failure.check.is_some()),
                    notice: if succeeded { "success" } else { "failure" },
                    commit: commit.map(|commit| commit.sha.clone()),
                    author: commit.map(|commit| commit.author.clone()),
                    message: failure
                        .map(|failure| format!("failed at {}: {}", failure.stage, failure.message))
                        .or_else(|| commit.map(|commit| commit.message.clone())),
                },
            );
        }
        Err(error) => record_broken(store, &queued, &error, stopping).await,
    }
}

/// A queued `deploy` (of an image) or `rollback` (to an earlier deployment): the
/// engine's own checks apply (a pinned pipeline refuses a deploy; a rollback pins).
async fn execute_deploy(
    config: &Config,
    store: &Store,
    metrics: &Metrics,
    pipeline: &Pipeline,
    queued: &QueuedRun,
    stopping: &CancellationToken,
) {
    let mut progress = Logged::start(metrics, pipeline, queued);
    let options = DeployOptions {
        wait: true,
        trigger: queued.trigger.clone(),
        queued: Some(queued.run),
        image: if queued.kind == RunKind::Deploy {
            queued.requested.clone()
        } else {
            None
        },
        ..DeployOptions::default()
    };
    let report = if queued.kind == RunKind::Rollback {
        super::rollback(
            config,
            pipeline,
            store,
            &super::RollbackTarget(queued.requested.clone()),
            &options,
            &mut progress,
        )
        .await
    } else {
        super::deploy(config, pipeline, store, &options, &mut progress).await
    };
    match report {
        Ok(report) => {
            let succeeded = report.outcome == crate::run::Outcome::Succeeded;
            ended(
                config,
                store,
                metrics,
                queued,
                Ended {
                    succeeded,
                    stopped_by_check: report
                        .failure
                        .as_ref()
                        .is_some_and(|failure| failure.check.is_some()),
                    notice: match (succeeded, queued.kind.as_str()) {
                        (true, "rollback") => "rollback",
                        (true, _) => "success",
                        (false, _) => "failure",
                    },
                    commit: report.image.as_ref().and_then(|image| image.commit.clone()),
                    author: None,
                    message: report
                        .failure
                        .as_ref()
                        .map(|failure| format!("failed at {}: {}", failure.stage, failure.message)),
                },
            );
        }
        Err(error) => record_broken(store, queued, &error, stopping).await,
    }
}

/// How a daemon run that did its work ended.
struct Ended {
    succeeded: bool,
    /// A health check stopped its deploy.
    stopped_by_check: bool,
    /// `success`, `failure` or `rollback`, as notifications name it.
    notice: &'static str,
    commit: Option<String>,
    author: Option<String>,
    message: Option<String>,
}

/// Counts the run, logs its end and announces it to the notification targets.
fn ended(config: &Config, store: &Store, metrics: &Metrics, queued: &QueuedRun, run: Ended) {
    let outcome = if run.succeeded {
        Outcome::Succeeded
    } else {
        Outcome::Failed
    };
    metrics
        .runs
        .get_or_create(&RunLabels {
            pipeline: queued.pipeline.clone(),
            outcome: outcome.as_str().to_string(),
        })
        .inc();
    if run.stopped_by_check {
        metrics
            .health_check_failures
            .get_or_create(&PipelineLabels {
                pipeline: queued.pipeline.clone(),
            })
            .inc();
    }
    tracing::info!(
        pipeline = queued.pipeline,
        run = queued.run.number,
        kind = %queued.kind,
        outcome = outcome.as_str(),
        "run ended"
    );
    notification::announce(
        config,
        store,
        notification::Notice {
            pipeline: queued.pipeline.clone(),
            run: queued.run.number,
            run_id: queued.run.id,
            kind: queued.kind,
            outcome: run.notice.to_string(),
            commit: run.commit,
            author: run.author,
            message: run.message,
            url: notification::run_url(config, queued.run.id),
        },
    );
}

/// A run that broke on gantry's side (its state store failed a write) still ends with
/// an outcome: recorded as failed once the store takes writes again.
async fn record_broken(
    store: &Store,
    queued: &QueuedRun,
    error: &super::EngineError,
    stopping: &CancellationToken,
) {
    tracing::error!(pipeline = queued.pipeline, run = queued.run.number, %error, "run broke");
    let result = crate::store::RunResult::Failed {
        stage: Stage::Record,
        message: format!("gantry could not record this run: {error}"),
    };
    retrying("recording the end of a broken run", stopping, async || {
        store.finish_run(queued.run, &result).await
    })
    .await;
}

async fn end(
    store: &Store,
    queued: &QueuedRun,
    state: RunState,
    message: &str,
    stopping: &CancellationToken,
) {
    tracing::info!(
        pipeline = queued.pipeline,
        run = queued.run.number,
        state = state.as_str(),
        message
    );
    retrying("recording the end of a run", stopping, async || {
        store.end_run(queued.run, state, message).await
    })
    .await;
}

/// Tries a write of a run's end until the store takes it, for `RECORD_RETRY_FOR` (a
/// full disk may get space back) or until `stopping`; after that a restarted daemon
/// finds the run interrupted and queues it again.
async fn retrying(
    what: &str,
    stopping: &CancellationToken,
    mut write: impl AsyncFnMut() -> Result<(), StoreError>,
) {
    let deadline = Instant::now() + RECORD_RETRY_FOR;
    loop {
        match write().await {
            Ok(()) => return,
            Err(error) if Instant::now() < deadline && !stopping.is_cancelled() => {
                tracing::warn!(%error, "{what}; trying again");
                tokio::select! {
                    () = tokio::time::sleep(RECORD_RETRY_EVERY) => {}
                    () = stopping.cancelled() => {}
                }
            }
            Err(error) => {
                tracing::error!(%error, "{what}: giving up");
                return;
            }
        }
    }
}

/// Progress of a daemon run: into the daemon's log (the run's own log is stored by the
/// engine) and the stage-duration histogram.
struct Logged {
    pipeline: String,
    run: i64,
    metrics: Metrics,
}

impl Logged {
    /// Logs that the queued run starts; its progress goes to the daemon's log.
    fn start(metrics: &Metrics, pipeline: &Pipeline, queued: &QueuedRun) -> Logged {
        tracing::info!(
            pipeline = pipeline.name,
            run = queued.run.number,
            kind = %queued.kind,
            trigger = %queued.trigger,
            "run started"
        );
        Logged {
            pipeline: pipeline.name.clone(),
            run: queued.run.number,
            metrics: metrics.clone(),
        }
    }
}

impl Progress for Logged {
    fn stage_started(&mut self, stage: Stage) {
        tracing::debug!(
            pipeline = self.pipeline,
            run = self.run,
            stage = stage.as_str(),
            "stage started"
        );
    }

    fn line(&mut self, line: &str) {
        tracing::trace!(pipeline = self.pipeline, run = self.run, "{line}");
    }

    fn stage_finished(&mut self, stage: Stage, outcome: crate::run::Outcome, elapsed: Duration) {
        self.metrics
            .stage_seconds
            .get_or_create(&StageLabels {
                pipeline: self.pipeline.clone(),
                stage: stage.to_string(),
            })
            .observe(elapsed.as_secs_f64());
        tracing::info!(
            pipeline = self.pipeline,
            run = self.run,
            stage = stage.as_str(),
            ?outcome,
            elapsed_ms = elapsed.as_millis() as u64,
            "stage finished"
        );
    }
}
