//! A build run's images: each one's tags and arguments, its context, its build and its
//! push. The images of a pipeline are built from one commit, several at once on the
//! build host, and pushed several at once; the first failure fails the run's stage.

use std::collections::{BTreeMap, HashMap};

use bollard::Docker;
use futures_util::StreamExt;
use serde::Serialize;

use super::{Failure, Progress, registry_failure};
use crate::build::context::{ContextSummary, Packer};
use crate::build::dockerignore::DockerIgnore;
use crate::build::{self, BuildError, BuildRequest, BuilderKind};
use crate::config::{Builder, Config, Image, Pipeline, TemplateValues};
use crate::deploy::SharedLog;
use crate::registry::{self, RegistryError};
use crate::run::Stage;
use crate::source::{self, Commit, TreeFile, TreeFileKind};

/// How many of a pipeline's images are built, or pushed, at once.
pub const MAX_PARALLEL_IMAGES: usize = 4;
/// A push the registry did not answer is tried this many times in all, waiting
/// `PUSH_RETRY_WAIT` times the attempt's number between tries (2 s, then 4 s): a
/// registry restarting comes back within that. A refusal (credentials, a bad manifest)
/// is not retried.
pub const PUSH_ATTEMPTS: u32 = 3;
pub const PUSH_RETRY_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// The registry did not answer (it may answer the next try).
fn unreachable(error: &RegistryError) -> bool {
    matches!(
        error,
        RegistryError::Push {
            kind: crate::registry::RefusalKind::Unreachable,
            ..
        } | RegistryError::Manifest {
            kind: crate::registry::RefusalKind::Unreachable,
            ..
        }
    )
}

/// What a run built of one image.
#[derive(Debug, Clone, Serialize)]
pub struct ImageReport {
    pub name: String,
    /// The repository.
    pub image: String,
    /// Full references.
    pub tags: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub builder: Option<BuilderKind>,
}

/// One image of a run, from its tags to its pushed digest.
pub struct ImagePlan<'p> {
    pub image: &'p Image,
    /// The tags, rendered.
    tags: Vec<String>,
    args: HashMap<String, String>,
    labels: BTreeMap<String, String>,
    /// For the classic builder without a target stage the labels go into the Dockerfile
    /// as one instruction (one build step instead of one per label).
    inline_labels: bool,
    context: Option<std::fs::File>,
    builder: Option<BuilderKind>,
    digest: Option<String>,
}

impl ImagePlan<'_> {
    /// Every tag as a full reference.
    pub fn references(&self) -> Vec<String> {
        self.tags
            .iter()
            .map(|tag| self.image.repository.with_tag(tag))
            .collect()
    }

    pub fn report(&self) -> ImageReport {
        ImageReport {
            name: self.image.name.clone(),
            image: self.image.repository.to_string(),
            tags: self.references(),
            digest: self.digest.clone(),
            builder: self.builder,
        }
    }
}

/// Each image's tags, build arguments and labels for one commit.
pub fn plan<'p>(
    pipeline: &'p Pipeline,
    commit: &Commit,
    values: &TemplateValues,
) -> Result<Vec<ImagePlan<'p>>, String> {
    let mut plans = Vec::new();
    for image in pipeline.images.values() {
        let mut tags: Vec<String> = Vec::new();
        for template in &image.tags {
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
        for (name, template) in &image.build.args {
            args.insert(name.clone(), template.render(values)?);
        }
        // The image's labels: the user's, and where it came from.
        let mut labels = image.build.labels.clone();
        labels.insert(
            "org.opencontainers.image.revision".to_string(),
            commit.sha.clone(),
        );
        labels.insert(
            "org.opencontainers.image.source".to_string(),
            source::display_url(&pipeline.source.repo),
        );
        labels.insert("gantry.pipeline".to_string(), pipeline.name.clone());
        plans.push(ImagePlan {
            image,
            tags,
            args,
            labels,
            inline_labels: image.build.target.is_none() && image.build.builder == Builder::Classic,
            context: None,
            builder: None,
            digest: None,
        });
    }
    Ok(plans)
}

/// Packs each image's context; the first image's summary is the run's.
pub async fn make_contexts(
    plans: &mut [ImagePlan<'_>],
    spool: &std::path::Path,
    cache: &std::path::Path,
    commit: &Commit,
    progress: &mut dyn Progress,
) -> Result<Option<ContextSummary>, Failure> {
    let several = plans.len() > 1;
    let mut first = None;
    for plan in plans.iter_mut() {
        let (spool, cache, sha) = (spool.to_path_buf(), cache.to_path_buf(), commit.sha.clone());
        let (context, dockerfile) = (
            plan.image.build.context.clone(),
            plan.image.build.dockerfile.clone(),
        );
        let inline = plan.inline_labels.then(|| plan.labels.clone());
        let commit_time = commit.time.max(0) as u64;
        let (file, summary, inlined) = tokio::task::spawn_blocking(move || {
            make_context(
                &spool,
                &cache,
                &sha,
                &context,
                &dockerfile,
                commit_time,
                inline.as_ref(),
            )
        })
        .await
        .map_err(|error| Failure::new(Stage::Context, error.to_string()))??;
        progress.line(&format!(
            "{}{} files, {} symlinks, {} ignored, {} bytes",
            prefix(several, plan.image),
            summary.files,
            summary.symlinks,
            summary.ignored,
            summary.bytes
        ));
        plan.inline_labels = inlined;
        plan.context = Some(file);
        first.get_or_insert(summary);
    }
    Ok(first)
}

/// Builds every image on the pipeline's build host, several at once; the connection
/// that built them, which the push uses.
pub async fn build_all(
    config: &Config,
    pipeline: &Pipeline,
    plans: &mut [ImagePlan<'_>],
    logins: Vec<build::RegistryLogin>,
    progress: &mut dyn Progress,
) -> Result<Docker, Failure> {
    let host = pipeline.build_host();
    let build_host = config
        .hosts
        .get(host)
        .ok_or_else(|| Failure::new(Stage::Build, format!("build host `{host}` is not defined")))?;
    let connection = crate::host::connect(build_host)
        .await
        .map_err(|error| Failure::new(Stage::Build, error.to_string()))?;
    progress.line(&format!(
        "building on `{}` (engine {}, API {})",
        connection.name, connection.engine_version, connection.api_version
    ));
    let several = plans.len() > 1;
    let shared = SharedLog::new(|line: &str| progress.line(line));
    let (connection, logins, shared) = (&connection, &logins, &shared);
    let results: Vec<Result<BuilderKind, Failure>> =
        futures_util::stream::iter(plans.iter_mut().map(|plan| async move {
            let request = BuildRequest {
                context: plan
                    .context
                    .take()
                    .ok_or_else(|| Failure::new(Stage::Build, "the build context was not made"))?,
                dockerfile: plan.image.build.dockerfile.clone(),
                tags: plan.references(),
                args: plan.args.clone(),
                target: plan.image.build.target.clone(),
                labels: if plan.inline_labels {
                    HashMap::new()
                } else {
                    plan.labels.clone().into_iter().collect()
                },
                builder: plan.image.build.builder,
                cache_from: plan.image.build.cache_from.clone(),
                secrets: plan.image.build.secrets.clone(),
                logins: logins.clone(),
            };
            let label = prefix(several, plan.image);
            let mut on_line = |line: &str| shared.line(&format!("{label}{line}"));
            let built = build::build_image(connection, request, &mut on_line)
                .await
                .map_err(|error| {
                    let details = match &error {
                        BuildError::Failed { last_lines, .. } => last_lines.clone(),
                        _ => Vec::new(),
                    };
                    Failure {
                        details,
                        ..Failure::new(Stage::Build, format!("{label}{error}"))
                    }
                })?;
            plan.builder = Some(built.builder);
            Ok(built.builder)
        }))
        .buffer_unordered(MAX_PARALLEL_IMAGES)
        .collect()
        .await;
    first_failure(results)?;
    Ok(connection.docker.clone())
}

/// Pushes every tag of every image, several images at once, and asks the registry
/// which digest it serves for each tag: all of an image's tags must name one digest.
pub async fn push_all(
    config: &Config,
    docker: &Docker,
    plans: &mut [ImagePlan<'_>],
    progress: &mut dyn Progress,
) -> Result<(), Failure> {
    let shared = SharedLog::new(|line: &str| progress.line(line));
    let shared = &shared;
    let results: Vec<Result<(), Failure>> =
        futures_util::stream::iter(plans.iter_mut().map(|plan| async move {
            let log = |line: &str| shared.line(line);
            plan.digest = Some(push_image(config, docker, plan.image, &plan.tags, &log).await?);
            Ok(())
        }))
        .buffer_unordered(MAX_PARALLEL_IMAGES)
        .collect()
        .await;
    first_failure(results)
}

async fn push_image(
    config: &Config,
    docker: &Docker,
    image: &Image,
    tags: &[String],
    log: &(dyn Fn(&str) + Sync),
) -> Result<String, Failure> {
    let repository = &image.repository;
    let credentials = registry::credentials(config, repository.registry())
        .await
        .map_err(registry_failure)?;
    let mut digest: Option<String> = None;
    for tag in tags {
        let reference = repository.with_tag(tag);
        let mut attempt = 1;
        let (reported, served) = loop {
            let pushed = async {
                let mut on_line = |line: &str| log(line);
                let reported =
                    registry::push(docker, repository, tag, credentials.as_ref(), &mut on_line)
                        .await?;
                let served =
                    registry::manifest_digest(config, repository, tag, credentials.as_ref())
                        .await?;
                Ok::<_, RegistryError>((reported, served))
            }
            .await;
            match pushed {
                Ok(pushed) => break pushed,
                Err(error) if attempt < PUSH_ATTEMPTS && unreachable(&error) => {
                    let wait = PUSH_RETRY_WAIT * attempt;
                    log(&format!(
                        "{error}; trying again in {}s (attempt {} of {PUSH_ATTEMPTS})",
                        wait.as_secs(),
                        attempt + 1
                    ));
                    tokio::time::sleep(wait).await;
                    attempt += 1;
                }
                Err(error) => {
                    let mut failure = registry_failure(error);
                    if attempt > 1 {
                        failure.message = format!("{} (after {attempt} attempts)", failure.message);
                    }
                    return Err(failure);
                }
            }
        };
        if let Some(reported) = reported
            && reported != served
        {
            return Err(registry_failure(RegistryError::DigestMismatch {
                reference: reference.clone(),
                pushed: reported,
                served,
            }));
        }
        if let Some(previous) = &digest
            && *previous != served
        {
            return Err(registry_failure(RegistryError::DigestMismatch {
                reference: reference.clone(),
                pushed: previous.clone(),
                served,
            }));
        }
        log(&format!("{reference} is {served}"));
        digest = Some(served);
    }
    digest.ok_or_else(|| Failure::new(Stage::Push, "no tag to push"))
}

/// `[web] ` before an image's lines when a run builds several.
fn prefix(several: bool, image: &Image) -> String {
    if several {
        format!("[{}] ", image.name)
    } else {
        String::new()
    }
}

/// The first failure, in the order the images are listed.
fn first_failure<T>(results: Vec<Result<T, Failure>>) -> Result<(), Failure> {
    match results.into_iter().find_map(Result::err) {
        Some(failure) => Err(failure),
        None => Ok(()),
    }
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
