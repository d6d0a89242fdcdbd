//! Runs: one pass of a pipeline for one commit, stage by stage, recorded as it goes.
//!
//! A build run is checkout (fetch into the cache, resolve the commit), context
//! (the tar, `.dockerignore` applied), build, and push (every tag, then the digest
//! confirmed with the registry). A failed stage is data: the run is stored as
//! failed with its stage and message and returned as a report; `Err` means gantry
//! itself could not go on (the state store failed). Only this module writes run state.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::build;
use crate::build::context::ContextSummary;
use crate::config::{Config, Pipeline, TemplateValues};
use crate::registry::{self, RefusalKind, RegistryError};
use crate::run::{Outcome, RunId, RunKind, RunState, Stage, Trigger};
use crate::source::{self, Commit, FetchReport};
use crate::store::{CommitDetails, RunResult, Store, StoreError};

mod deployment;
pub mod images;
pub mod intake;
mod lease;
pub mod metrics;
pub mod notification;
pub mod poller;
pub mod prune;
mod record;
pub mod reload;
pub mod replica;
mod resolve;
pub mod scheduler;
pub mod status;
pub mod task;

pub use deployment::{
    DeployOptions, DeployReport, RollbackTarget, RunReport, deploy, rollback, run_pipeline,
};
pub use lease::LEASE_TTL;
pub use record::{
    MAX_LINE_BYTES, MAX_LOG_BYTES, MAX_LOG_LINES, Progress, Recording, RunLog, RunRecorder, Silent,
};

/// The folder inside the state directory where build contexts are spooled (as unnamed
/// files, gone when closed).
pub const SPOOL_DIR: &str = "tmp";
/// The folder of git caches inside the state directory.
pub const GIT_CACHE_DIR: &str = "git";

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("a blocking task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
}

/// What a build run did, whether it succeeded or not.
#[derive(Debug, Clone, Serialize)]
pub struct BuildReport {
    pub pipeline: String,
    pub run: RunId,
    pub outcome: Outcome,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub commit: Option<Commit>,
    /// The first image (by name) as a repository, its digest and builder; `images` has
    /// every one, and `tags` every tag pushed.
    pub image: String,
    pub images: Vec<images::ImageReport>,
    pub tags: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fetch: Option<FetchReport>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub context: Option<ContextSummary>,
    /// The engine's builder that built the image (`buildkit` or `classic`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub builder: Option<build::BuilderKind>,
    pub stages: Vec<StageReport>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failure: Option<Failure>,
    /// Why the run stopped after its checkout with nothing to build (`skipped`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub skipped: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct StageReport {
    pub name: Stage,
    pub outcome: Outcome,
    pub duration_ms: u128,
}

/// Why a run failed: the stage, one line of cause, and the lines that show it.
#[derive(Debug, Clone, Serialize)]
pub struct Failure {
    pub stage: Stage,
    pub message: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub details: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refusal: Option<RefusalKind>,
    /// The health check that stopped a deploy.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub check: Option<Box<crate::deploy::health::HealthFailure>>,
}

impl Failure {
    pub(crate) fn new(stage: Stage, message: impl Into<String>) -> Failure {
        Failure {
            stage,
            message: message.into(),
            details: Vec::new(),
            refusal: None,
            check: None,
        }
    }
}

/// A build run in progress: its report, and the run's recorder.
struct BuildRun<'r, 'a> {
    recorder: &'r mut RunRecorder<'a>,
    report: BuildReport,
}

impl BuildRun<'_, '_> {
    /// Times a stage, records it and reports it; the stage's failure ends the run.
    async fn stage<T>(
        &mut self,
        name: Stage,
        work: impl AsyncFnOnce(&mut dyn Progress) -> Result<T, Failure>,
    ) -> Result<Result<T, Failure>, EngineError> {
        let result = self.recorder.stage(name, work).await?;
        if let Some(stage) = self.recorder.stages.last() {
            self.report.stages.push(stage.clone());
        }
        Ok(result)
    }

    async fn fail(self, failure: Failure) -> Result<BuildReport, EngineError> {
        self.recorder.fail(&failure).await?;
        let mut report = self.report;
        report.outcome = Outcome::Failed;
        report.failure = Some(failure);
        Ok(report)
    }
}

/// Checks out, builds and pushes one commit of a pipeline (the branch head unless `reference` names one).
pub async fn build(
    config: &Config,
    pipeline: &Pipeline,
    store: &Store,
    reference: Option<&str>,
    trigger: &Trigger,
    progress: &mut dyn Progress,
) -> Result<BuildReport, EngineError> {
    let run = store
        .start_run(&pipeline.name, RunKind::Build, trigger, reference)
        .await?;
    let mut recorder = RunRecorder::new(store, run, progress);
    let gate = BuildGate {
        kind: RunKind::Build,
        not_before: None,
    };
    let report = build_run(config, pipeline, reference, &gate, &mut recorder).await;
    recorder.finish().await;
    report
}

/// What a build run is, and what it must not build.
struct BuildGate<'a> {
    /// `Build`, or `Run` when a deploy follows in the same run.
    kind: RunKind,
    /// The deployed commit: a commit that does not come after it is skipped (an older
    /// push never replaces a newer deploy), checked right after the checkout's fetch.
    not_before: Option<&'a str>,
}

/// A build recorded as a run.
async fn build_run(
    config: &Config,
    pipeline: &Pipeline,
    reference: Option<&str>,
    gate: &BuildGate<'_>,
    recorder: &mut RunRecorder<'_>,
) -> Result<BuildReport, EngineError> {
    let kind = gate.kind;
    let store = recorder.store();
    let run_id = recorder.run;
    let mut run = BuildRun {
        recorder,
        report: BuildReport {
            pipeline: pipeline.name.clone(),
            run: run_id,
            outcome: Outcome::Succeeded,
            commit: None,
            image: String::new(),
            images: Vec::new(),
            tags: Vec::new(),
            digest: None,
            fetch: None,
            context: None,
            builder: None,
            stages: Vec::new(),
            failure: None,
            skipped: None,
        },
    };

    // Checkout: fetch into the cache and resolve the commit.
    let cache_root = config.state_dir.join(GIT_CACHE_DIR);
    let source = pipeline.source.clone();
    let wanted = reference.map(str::to_string);
    let checkout = run
        .stage(Stage::Checkout, async |progress: &mut dyn Progress| {
            progress.line(&format!("fetching {}", source::display_url(&source.repo)));
            let fetched = tokio::task::spawn_blocking(move || {
                let fetch = source::fetch(&source, &cache_root)?;
                let commit = source::resolve(&fetch.cache, &source, wanted.as_deref())?;
                Ok::<_, source::SourceError>((fetch, commit))
            })
            .await
            .map_err(|error| Failure::new(Stage::Checkout, error.to_string()))?
            .map_err(|error| Failure::new(Stage::Checkout, error.to_string()))?;
            progress.line(&format!(
                "{} {}: {}",
                if fetched.0.created {
                    "cloned"
                } else {
                    "fetched"
                },
                fetched.1.short,
                fetched.1.message
            ));
            Ok(fetched)
        })
        .await?;
    let (fetch, commit) = match checkout {
        Ok(checkout) => checkout,
        Err(failure) => return run.fail(failure).await,
    };
    let subject = commit.message.lines().next().unwrap_or_default();
    store
        .set_commit(
            run_id,
            &commit.sha,
            Some(CommitDetails {
                subject,
                author: &commit.author,
            }),
        )
        .await?;
    run.report.fetch = Some(fetch.clone());
    run.report.commit = Some(commit.clone());

    // A commit that does not come after the deployed one is not built.
    if let Some(deployed) = gate.not_before
        && let Some(reason) = older_than(&fetch.cache, &commit, deployed).await
    {
        run.recorder.end(RunState::Skipped, &reason).await?;
        run.report.skipped = Some(reason);
        return Ok(run.report);
    }

    // Each image's tags and build arguments; templates were checked at load time, but
    // a ref given on the command line can still render to something Docker refuses.
    let values = TemplateValues {
        commit_sha: commit.sha.clone(),
        branch: pipeline.source.branch.clone(),
        run_number: run_id.number,
    };
    let mut plans = match images::plan(pipeline, &commit, &values) {
        Ok(plans) => plans,
        Err(message) => return run.fail(Failure::new(Stage::Checkout, message)).await,
    };
    run.report.tags = plans
        .iter()
        .flat_map(images::ImagePlan::references)
        .collect();

    // Context: each image's files of the commit, filtered by its `.dockerignore`.
    let spool = config.state_dir.join(SPOOL_DIR);
    let cache = fetch.cache.clone();
    let contexts = run
        .stage(Stage::Context, async |progress: &mut dyn Progress| {
            images::make_contexts(&mut plans, &spool, &cache, &commit, progress).await
        })
        .await?;
    match contexts {
        Ok(summary) => run.report.context = summary,
        Err(failure) => return run.fail(failure).await,
    }

    // Build every image on the build host, several at once.
    let logins = build_logins(config, pipeline).await;
    let built = run
        .stage(Stage::Build, async |progress: &mut dyn Progress| {
            images::build_all(config, pipeline, &mut plans, logins, progress).await
        })
        .await?;
    let docker = match built {
        Ok(docker) => docker,
        Err(failure) => return run.fail(failure).await,
    };

    // Push every tag of every image, each digest confirmed with the registry.
    let pushed = run
        .stage(Stage::Push, async |progress: &mut dyn Progress| {
            images::push_all(config, &docker, &mut plans, progress).await
        })
        .await?;
    if let Err(failure) = pushed {
        return run.fail(failure).await;
    }

    run.report.images = plans.iter().map(images::ImagePlan::report).collect();
    let first = &run.report.images[0];
    run.report.image = first.image.clone();
    run.report.digest = first.digest.clone();
    run.report.builder = first.builder;
    let digest = first.digest.clone().unwrap_or_default();
    let references: BTreeMap<String, String> = run
        .report
        .images
        .iter()
        .map(|image| {
            (
                image.name.clone(),
                format!(
                    "{}@{}",
                    image.image,
                    image.digest.as_deref().unwrap_or_default()
                ),
            )
        })
        .collect();
    let result = RunResult::Succeeded {
        image: first.image.clone(),
        tags: run.report.tags.clone(),
        digest: digest.clone(),
        images: references,
    };
    if kind == RunKind::Run {
        // The deploy that follows ends the run; until then it is still running.
        store.record_build(run_id, &result).await?;
    } else {
        run.recorder.succeed(&result).await?;
    }
    Ok(run.report)
}

/// Credentials for the registries a build reads from: its `cache_from` images' and its
/// own images' (a common base). A registry without credentials, or with only an
/// identity token (which the build's session cannot pass on), is read anonymously.
async fn build_logins(config: &Config, pipeline: &Pipeline) -> Vec<build::RegistryLogin> {
    let mut registries = Vec::new();
    for image in pipeline.images.values() {
        registries.push(image.repository.registry().to_string());
        for reference in &image.build.cache_from {
            if let Ok(repository) = crate::config::ImageRepository::of_reference(reference) {
                registries.push(repository.registry().to_string());
            }
        }
    }
    registries.sort();
    registries.dedup();
    let mut logins = Vec::new();
    for registry in registries {
        // Unreadable Docker credentials only matter to the push, which reports them.
        if let Ok(Some(registry::Credentials::Password { username, password })) =
            registry::credentials(config, &registry).await
        {
            logins.push(build::RegistryLogin {
                registry,
                username,
                password,
            });
        }
    }
    logins
}

fn registry_failure(error: RegistryError) -> Failure {
    let refusal = match &error {
        RegistryError::Push { kind, .. } | RegistryError::Manifest { kind, .. } => Some(*kind),
        _ => None,
    };
    Failure {
        refusal,
        ..Failure::new(Stage::Push, error.to_string())
    }
}

/// Why `commit` must not be deployed over `deployed`: it is not a descendant of it.
/// `None` when it may go ahead, or when the ancestry cannot be told (the deployed
/// commit is not in the cache any more; the build goes on).
async fn older_than(cache: &std::path::Path, commit: &Commit, deployed: &str) -> Option<String> {
    let (cache, sha, deployed) = (
        cache.to_path_buf(),
        commit.sha.clone(),
        deployed.to_string(),
    );
    let newer = tokio::task::spawn_blocking(move || {
        source::is_descendant(&cache, &sha, &deployed).map(|newer| (newer, deployed))
    })
    .await
    .ok()?
    .ok()?;
    match newer {
        (true, _) => None,
        (false, deployed) => Some(format!(
            "commit {} is not a descendant of the deployed {}; an older push never replaces a newer deploy",
            commit.short,
            source::short_commit(&deployed)
        )),
    }
}
