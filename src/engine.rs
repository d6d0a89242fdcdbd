//! Runs: one pass of a pipeline for one commit, stage by stage, recorded as it goes.
//!
//! A build run is checkout (fetch into the cache, resolve the commit), context
//! (the tar, `.dockerignore` applied), build, and push (every tag, then the digest
//! confirmed with the registry). A failed stage is data: the run is stored as
//! failed with its stage and message and returned as a report; `Err` means gantry
//! itself could not go on (the state store failed). Only this module writes run state.

use std::collections::{BTreeMap, HashMap};

use serde::Serialize;

use crate::build::context::{ContextSummary, Packer};
use crate::build::dockerignore::DockerIgnore;
use crate::build::{self, BuildError, BuildRequest};
use crate::config::{Config, Pipeline, TemplateValues};
use crate::registry::{self, RefusalKind, RegistryError};
use crate::run::{Outcome, RunId, RunKind, RunState, Stage, Trigger};
use crate::source::{self, Commit, FetchReport, TreeFile, TreeFileKind};
use crate::store::{CommitDetails, RunResult, Store, StoreError};

mod deployment;
pub mod intake;
mod lease;
pub mod metrics;
pub mod notification;
pub mod poller;
pub mod prune;
mod record;
pub mod reload;
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
    pub image: String,
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
            image: pipeline.image.repository.to_string(),
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

    // The tags this run pushes; templates were checked at load time, but a ref
    // given on the command line can still render to something Docker refuses.
    let values = TemplateValues {
        commit_sha: commit.sha.clone(),
        branch: pipeline.source.branch.clone(),
        run_number: run_id.number,
    };
    let rendered = render_tags_and_args(pipeline, &values);
    let (tags, args) = match rendered {
        Ok(rendered) => rendered,
        Err(message) => return run.fail(Failure::new(Stage::Checkout, message)).await,
    };
    run.report.tags = tags
        .iter()
        .map(|tag| pipeline.image.repository.with_tag(tag))
        .collect();

    // The image's labels: the user's, and where it came from.
    let mut labels: BTreeMap<String, String> = pipeline.build.labels.clone();
    labels.insert(
        "org.opencontainers.image.revision".to_string(),
        commit.sha.clone(),
    );
    labels.insert(
        "org.opencontainers.image.source".to_string(),
        source::display_url(&pipeline.source.repo),
    );
    labels.insert("gantry.pipeline".to_string(), pipeline.name.clone());
    // For the classic builder without a target stage they go into the Dockerfile as one
    // instruction (one build step instead of one per label); otherwise the engine adds
    // them to the image (BuildKit at no cost, whether it runs by `buildkit` or `auto`).
    let inline_labels = (pipeline.build.target.is_none()
        && pipeline.build.builder == crate::config::Builder::Classic)
        .then(|| labels.clone());

    // Context: the commit's files under `build.context`, filtered by `.dockerignore`.
    let cache = fetch.cache.clone();
    let sha = commit.sha.clone();
    let build_config = pipeline.build.clone();
    let commit_time = commit.time.max(0) as u64;
    let spool = config.state_dir.join(SPOOL_DIR);
    let context = run
        .stage(Stage::Context, async |progress: &mut dyn Progress| {
            let made = tokio::task::spawn_blocking(move || {
                make_context(
                    &spool,
                    &cache,
                    &sha,
                    &build_config.context,
                    &build_config.dockerfile,
                    commit_time,
                    inline_labels.as_ref(),
                )
            })
            .await
            .map_err(|error| Failure::new(Stage::Context, error.to_string()))??;
            progress.line(&format!(
                "{} files, {} symlinks, {} ignored, {} bytes",
                made.1.files, made.1.symlinks, made.1.ignored, made.1.bytes
            ));
            Ok(made)
        })
        .await?;
    let (context_tar, summary, labels_inlined) = match context {
        Ok(context) => context,
        Err(failure) => return run.fail(failure).await,
    };
    run.report.context = Some(summary);

    // Build on the build host.
    let request = BuildRequest {
        context: context_tar,
        dockerfile: pipeline.build.dockerfile.clone(),
        tags: run.report.tags.clone(),
        args,
        target: pipeline.build.target.clone(),
        labels: if labels_inlined {
            HashMap::new()
        } else {
            labels.into_iter().collect()
        },
        builder: pipeline.build.builder,
        cache_from: pipeline.build.cache_from.clone(),
        secrets: pipeline.build.secrets.clone(),
        logins: build_logins(config, pipeline).await,
    };
    let built = run
        .stage(Stage::Build, async |progress: &mut dyn Progress| {
            let build_host = config.hosts.get(&pipeline.build.host).ok_or_else(|| {
                Failure::new(
                    Stage::Build,
                    format!("build host `{}` is not defined", pipeline.build.host),
                )
            })?;
            let connection = crate::host::connect(build_host)
                .await
                .map_err(|error| Failure::new(Stage::Build, error.to_string()))?;
            progress.line(&format!(
                "building on `{}` (engine {}, API {})",
                connection.name, connection.engine_version, connection.api_version
            ));
            let mut on_line = |line: &str| progress.line(line);
            let image = build::build_image(&connection, request, &mut on_line)
                .await
                .map_err(|error| {
                    let details = match &error {
                        BuildError::Failed { last_lines, .. } => last_lines.clone(),
                        _ => Vec::new(),
                    };
                    Failure {
                        details,
                        ..Failure::new(Stage::Build, error.to_string())
                    }
                })?;
            Ok((connection.docker, image.builder))
        })
        .await?;
    let docker = match built {
        Ok((docker, builder)) => {
            run.report.builder = Some(builder);
            docker
        }
        Err(failure) => return run.fail(failure).await,
    };

    // Push every tag, then ask the registry which digest it serves.
    let repository = pipeline.image.repository.clone();
    let pushed = run
        .stage(Stage::Push, async |progress: &mut dyn Progress| {
            let credentials = registry::credentials(config, repository.registry())
                .await
                .map_err(registry_failure)?;
            let mut digest: Option<String> = None;
            for tag in &tags {
                let mut on_line = |line: &str| progress.line(line);
                let reported = registry::push(
                    &docker,
                    &repository,
                    tag,
                    credentials.as_ref(),
                    &mut on_line,
                )
                .await
                .map_err(registry_failure)?;
                let served =
                    registry::manifest_digest(config, &repository, tag, credentials.as_ref())
                        .await
                        .map_err(registry_failure)?;
                if let Some(reported) = reported
                    && reported != served
                {
                    return Err(registry_failure(RegistryError::DigestMismatch {
                        reference: repository.with_tag(tag),
                        pushed: reported,
                        served,
                    }));
                }
                if let Some(previous) = &digest
                    && *previous != served
                {
                    return Err(registry_failure(RegistryError::DigestMismatch {
                        reference: repository.with_tag(tag),
                        pushed: previous.clone(),
                        served,
                    }));
                }
                progress.line(&format!("{} is {served}", repository.with_tag(tag)));
                digest = Some(served);
            }
            digest.ok_or_else(|| Failure::new(Stage::Push, "no tag to push"))
        })
        .await?;
    let digest = match pushed {
        Ok(digest) => digest,
        Err(failure) => return run.fail(failure).await,
    };

    let result = RunResult::Succeeded {
        image: pipeline.image.repository.to_string(),
        tags: run.report.tags.clone(),
        digest: digest.clone(),
    };
    if kind == RunKind::Run {
        // The deploy that follows ends the run; until then it is still running.
        store.record_build(run_id, &result).await?;
    } else {
        run.recorder.succeed(&result).await?;
    }
    run.report.digest = Some(digest);
    Ok(run.report)
}

/// Credentials for the registries a build reads from: its `cache_from` images' and its
/// own image's (a common base). A registry without credentials, or with only an
/// identity token (which the build's session cannot pass on), is read anonymously.
async fn build_logins(config: &Config, pipeline: &Pipeline) -> Vec<build::RegistryLogin> {
    let mut registries = vec![pipeline.image.repository.registry().to_string()];
    for reference in &pipeline.build.cache_from {
        if let Ok(repository) = crate::config::ImageRepository::of_reference(reference) {
            registries.push(repository.registry().to_string());
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

/// Renders the tag templates and build arguments for one run.
fn render_tags_and_args(
    pipeline: &Pipeline,
    values: &TemplateValues,
) -> Result<(Vec<String>, HashMap<String, String>), String> {
    let mut tags = Vec::new();
    for template in &pipeline.image.tags {
        let tag = template.render(values)?;
        if !crate::config::is_valid_tag(&tag) {
            return Err(format!(
                "tag template `{}` gives `{tag}`, which Docker refuses as a tag",
                template.source()
            ));
        }
        if !tags.contains(&tag) {
            tags.push(tag);
        }
    }
    let mut args = HashMap::new();
    for (name, template) in &pipeline.build.args {
        args.insert(name.clone(), template.render(values)?);
    }
    Ok((tags, args))
}

/// Reads the commit's files for the context, applying `.dockerignore`, and packs them
/// into an unnamed file under `spool` (the state directory's): one file's content is
/// in memory at a time, however large the context.
fn make_context(
    spool: &std::path::Path,
    cache: &std::path::Path,
    commit: &str,
    context: &str,
    dockerfile: &str,
    mtime: u64,
    inline_labels: Option<&BTreeMap<String, String>>,
) -> Result<(std::fs::File, ContextSummary, bool), Failure> {
    let fail = |message: String| Failure::new(Stage::Context, message);
    let in_context = |path: &str| {
        if context.is_empty() {
            path.to_string()
        } else {
            format!("{context}/{path}")
        }
    };
    let ignore_text = source::read_file(cache, commit, &in_context(".dockerignore"))
        .map_err(|error| fail(error.to_string()))?;
    let rules = match ignore_text {
        Some(bytes) => DockerIgnore::parse(&String::from_utf8_lossy(&bytes))
            .map_err(|error| fail(format!(".dockerignore {error}")))?,
        None => DockerIgnore::default(),
    };
    let ignored = std::sync::atomic::AtomicUsize::new(0);
    // The Dockerfile and .dockerignore are always sent, as the Docker CLI does,
    // even when the rules exclude them.
    let keep = |path: &str| {
        let kept = path == dockerfile || path == ".dockerignore" || !rules.is_excluded(path);
        if !kept {
            ignored.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        kept
    };
    std::fs::create_dir_all(spool).map_err(|error| fail(error.to_string()))?;
    let file = tempfile::tempfile_in(spool).map_err(|error| fail(error.to_string()))?;
    let mut packer = Packer::new(std::io::BufWriter::new(file), mtime);
    let mut found_dockerfile: Option<TreeFileKind> = None;
    let mut labels_inlined = false;
    source::walk_tree(cache, commit, context, &keep, &mut |mut file: TreeFile<
        '_,
    >| {
        if file.path == dockerfile {
            found_dockerfile = Some(file.kind);
            if file.kind != TreeFileKind::Symlink
                && let Some(labels) = inline_labels
                && let Some(patched) = build::with_label_instruction(&file.content, labels)
            {
                file.content = patched.into();
                labels_inlined = true;
            }
        }
        packer.append(&file).map_err(|error| error.to_string())
    })
    .map_err(|error| fail(error.to_string()))?;
    match found_dockerfile {
        None => {
            return Err(fail(format!(
                "the Dockerfile `{dockerfile}` does not exist in the build context at commit {}",
                source::short_commit(commit)
            )));
        }
        Some(TreeFileKind::Symlink) => {
            return Err(fail(format!(
                "the Dockerfile `{dockerfile}` is a symlink; gantry builds only from a Dockerfile inside the context"
            )));
        }
        Some(_) => {}
    }
    let (writer, mut summary) = packer.finish().map_err(|error| fail(error.to_string()))?;
    let mut file = writer
        .into_inner()
        .map_err(|error| fail(error.error().to_string()))?;
    let bytes = std::io::Seek::seek(&mut file, std::io::SeekFrom::Current(0))
        .map_err(|error| fail(error.to_string()))?;
    std::io::Seek::rewind(&mut file).map_err(|error| fail(error.to_string()))?;
    summary.ignored = ignored.into_inner();
    summary.bytes = bytes as usize;
    Ok((file, summary, labels_inlined))
}
