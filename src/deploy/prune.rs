//! Pruning a pipeline's hosts: its images beyond `deploy.keep_images`, and the stopped
//! `NAME.previous` containers an interrupted deploy left behind.
//!
//! An image is the pipeline's only when gantry can tell: it carries the labels every
//! build of the pipeline gets (`gantry.pipeline` naming it, and the commit as
//! `org.opencontainers.image.revision`) and a name in the pipeline's repository (a
//! digest it was pushed or pulled by, or a tag). Newest means by the image's creation
//! time: the build's, the same on every host that pulled it, and known without the
//! state store. The newest `keep_images` stay, and so does, whatever its age, every
//! image the caller protects (what instances run, the rollback target), every image a
//! container uses (running or stopped, anyone's), and every image that also has a
//! name outside the pipeline's repository (someone else refers to it).
//!
//! A `.previous` container goes only when it carries this pipeline's labels for the
//! instance it is named after, is stopped, and that instance's own container exists
//! (without one, the next deploy brings the old container back).
//!
//! Nothing is forced: the engine refuses to remove what is in use, and a refusal keeps
//! it. The decisions are pure functions over what an engine lists (`pipeline_image`,
//! `plan_images`, `plan_leftovers`), tested without Docker. Callers prune only while no
//! rollout of the pipeline runs (they hold its deploy lease): during a swap a
//! `.previous` container is live even when stopped. This module records nothing.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use bollard::Docker;
use bollard::models::{ContainerSummary, ContainerSummaryStateEnum, ImageSummary};
use bollard::query_parameters::{
    ListContainersOptions, ListImagesOptions, RemoveContainerOptions, RemoveImageOptions,
};
use futures_util::StreamExt;
use serde::Serialize;

use super::container::{LABEL_INSTANCE, LABEL_PIPELINE};
use super::{Log, MAX_PARALLEL_HOSTS, short_digest, short_id};
use crate::config::{Config, ImageRepository, PREVIOUS_SUFFIX, Pipeline};
use crate::host::{self, describe_error};

/// The build label that holds the commit an image was built from.
pub const LABEL_REVISION: &str = "org.opencontainers.image.revision";

/// Why something of the pipeline stays on a host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Keep {
    /// An instance runs it, or should by the newest deployment record.
    Deployed,
    /// `gantry rollback` would return to it.
    RollbackTarget,
    /// One of the newest `keep_images`.
    Newest,
    /// A container uses it.
    InUse,
    /// It also has a name outside the pipeline's repository.
    NamedElsewhere,
    /// A `.previous` container that is not stopped.
    Running,
    /// A `.previous` container whose instance has no container of its own.
    OnlyCopy,
    /// The engine refused to remove it.
    Refused,
}

impl Keep {
    pub fn describe(self) -> &'static str {
        match self {
            Keep::Deployed => "an instance runs it",
            Keep::RollbackTarget => "the rollback target",
            Keep::Newest => "among the newest",
            Keep::InUse => "a container uses it",
            Keep::NamedElsewhere => "also named outside the pipeline's repository",
            Keep::Running => "not stopped",
            Keep::OnlyCopy => "its instance has no other container",
            Keep::Refused => "the engine refused to remove it",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ItemKind {
    Image,
    Container,
}

/// An image or container of the pipeline on one host, removed or kept.
#[derive(Debug, Clone, Serialize)]
pub struct Item {
    pub host: String,
    pub kind: ItemKind,
    /// The image's or container's id.
    pub id: String,
    /// The image as `repository@digest` (`repository:tag` before a push), or the container's name.
    pub name: String,
    /// The image's creation time (RFC 3339).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub created: Option<String>,
    /// Why it stays; `None` for what is removed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<Keep>,
    /// The engine's answer when it refused.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// A host that could not be read, or a removal that failed.
#[derive(Debug, Clone, Serialize)]
pub struct PruneError {
    pub host: String,
    pub message: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct PruneReport {
    pub pipeline: String,
    pub keep_images: u32,
    pub dry_run: bool,
    /// What was removed or, with `dry_run`, what would be.
    pub removed: Vec<Item>,
    /// The pipeline's images and leftovers that stay, each with why.
    pub kept: Vec<Item>,
    pub errors: Vec<PruneError>,
}

/// What to prune.
pub struct PruneRequest<'a> {
    pub config: &'a Config,
    pub pipeline: &'a Pipeline,
    /// Digests that stay on every host whatever their age, and why.
    pub protected: &'a BTreeMap<String, Keep>,
    /// Decide and list, remove nothing.
    pub dry_run: bool,
}

/// Prunes every host the pipeline deploys to or builds on, several at a time.
pub async fn prune(request: &PruneRequest<'_>, log: Log<'_>) -> PruneReport {
    let pipeline = request.pipeline;
    let hosts: BTreeSet<&str> = pipeline
        .deploy
        .services
        .values()
        .flat_map(|service| service.instances.values())
        .map(|instance| instance.host.as_str())
        .chain([pipeline.build_host()])
        .collect();
    let outcomes: Vec<(Vec<Item>, Vec<PruneError>)> =
        futures_util::stream::iter(hosts.into_iter().map(|host| prune_host(request, host, log)))
            .buffer_unordered(MAX_PARALLEL_HOSTS)
            .collect()
            .await;
    let mut report = PruneReport {
        pipeline: pipeline.name.clone(),
        keep_images: pipeline.deploy.keep_images,
        dry_run: request.dry_run,
        removed: Vec::new(),
        kept: Vec::new(),
        errors: Vec::new(),
    };
    for (items, errors) in outcomes {
        for item in items {
            match item.reason {
                None => report.removed.push(item),
                Some(_) => report.kept.push(item),
            }
        }
        report.errors.extend(errors);
    }
    let order = |item: &Item| (item.host.clone(), item.kind == ItemKind::Image);
    report.removed.sort_by_key(order);
    report.kept.sort_by_key(order);
    report.errors.sort_by(|a, b| a.host.cmp(&b.host));
    report
}

/// One host: what is there, what goes, and (unless a dry run) its removal.
async fn prune_host(
    request: &PruneRequest<'_>,
    host: &str,
    log: Log<'_>,
) -> (Vec<Item>, Vec<PruneError>) {
    let error = |message: String| PruneError {
        host: host.to_string(),
        message,
    };
    let docker = match request.config.hosts.get(host) {
        Some(definition) => match host::connect(definition).await {
            Ok(connection) => connection.docker,
            Err(reason) => return (Vec::new(), vec![error(reason.to_string())]),
        },
        None => {
            return (
                Vec::new(),
                vec![error(format!("host `{host}` is not defined"))],
            );
        }
    };
    let listed = list(&docker, request.config, request.pipeline).await;
    let (images, containers) = match listed {
        Ok(listed) => listed,
        Err(reason) => return (Vec::new(), vec![error(reason)]),
    };

    let leftovers = plan_leftovers(&containers, &request.pipeline.name);
    let removing: BTreeSet<&str> = leftovers
        .iter()
        .filter(|leftover| leftover.keep.is_none())
        .map(|leftover| leftover.id.as_str())
        .collect();
    // What stays in use once the leftovers are gone, so a dry run lists what a real run removes.
    let in_use: BTreeSet<String> = containers
        .iter()
        .filter(|summary| !removing.contains(summary.id.as_deref().unwrap_or_default()))
        .filter_map(|summary| summary.image_id.clone())
        .collect();
    // `keep_images` of each of the pipeline's images.
    let planned: Vec<_> = images
        .into_values()
        .flat_map(|images| {
            plan_images(
                images,
                request.pipeline.deploy.keep_images as usize,
                request.protected,
                &in_use,
            )
        })
        .collect();

    let mut items = Vec::new();
    let mut errors = Vec::new();
    for leftover in leftovers {
        let mut item = Item {
            host: host.to_string(),
            kind: ItemKind::Container,
            id: leftover.id.clone(),
            name: leftover.name.clone(),
            created: None,
            reason: leftover.keep,
            message: None,
        };
        if item.reason.is_none() && !request.dry_run {
            match remove_container(&docker, &leftover.id).await {
                Ok(()) => log(&format!("{host}: removed stopped {}", leftover.name)),
                Err(Removal::Refused(message)) => {
                    item.reason = Some(Keep::Refused);
                    item.message = Some(message);
                }
                Err(Removal::Failed(message)) => {
                    errors.push(error(format!("removing {}: {message}", leftover.name)));
                    continue;
                }
            }
        }
        items.push(item);
    }
    for (image, keep) in planned {
        let mut item = Item {
            host: host.to_string(),
            kind: ItemKind::Image,
            id: image.id.clone(),
            name: image.name.clone(),
            created: Some(humantime::format_rfc3339_nanos(image.created).to_string()),
            reason: keep,
            message: None,
        };
        if keep.is_none() && !request.dry_run {
            match remove_image(&docker, &image.id).await {
                Ok(()) => log(&format!("{host}: removed image {}", shown(&image.name))),
                Err(Removal::Refused(message)) => {
                    item.reason = Some(Keep::Refused);
                    item.message = Some(message);
                }
                Err(Removal::Failed(message)) => {
                    errors.push(error(format!("removing {}: {message}", image.name)));
                    continue;
                }
            }
        }
        items.push(item);
    }
    (items, errors)
}

/// The pipeline's images (with their exact creation times) by the pipeline's image they
/// are a build of, and every container on a host.
async fn list<'p>(
    docker: &Docker,
    config: &Config,
    pipeline: &'p Pipeline,
) -> Result<(BTreeMap<&'p str, Vec<PipelineImage>>, Vec<ContainerSummary>), String> {
    let options = ListImagesOptions {
        filters: Some(HashMap::from([(
            "label".to_string(),
            vec![format!("{LABEL_PIPELINE}={}", pipeline.name)],
        )])),
        ..ListImagesOptions::default()
    };
    let summaries = docker
        .list_images(Some(options))
        .await
        .map_err(|error| format!("listing images: {}", describe_error(&error)))?;
    let mut images: BTreeMap<&str, Vec<PipelineImage>> = BTreeMap::new();
    for summary in &summaries {
        let Some((name, mut image)) = pipeline.images.values().find_map(|built| {
            let mirror = config
                .registries
                .get(built.repository.registry())
                .and_then(|registry| registry.mirror.as_deref());
            pipeline_image(summary, &pipeline.name, &built.repository, mirror)
                .map(|image| (built.name.as_str(), image))
        }) else {
            continue;
        };
        // The listing has whole seconds; two builds can fall in one.
        if let Ok(inspect) = docker.inspect_image(&image.id).await
            && let Some(created) = inspect.created
        {
            image.created = created.into();
        }
        images.entry(name).or_default().push(image);
    }
    let options = ListContainersOptions {
        all: true,
        ..ListContainersOptions::default()
    };
    let containers = docker
        .list_containers(Some(options))
        .await
        .map_err(|error| format!("listing containers: {}", describe_error(&error)))?;
    Ok((images, containers))
}

enum Removal {
    /// The engine said no (409: in use, or referenced elsewhere); the thing stays.
    Refused(String),
    Failed(String),
}

fn removal(error: bollard::errors::Error) -> Result<(), Removal> {
    match error {
        // Removed meanwhile: what was wanted.
        bollard::errors::Error::DockerResponseServerError {
            status_code: 404, ..
        } => Ok(()),
        bollard::errors::Error::DockerResponseServerError {
            status_code: 409,
            message,
        } => Err(Removal::Refused(message)),
        error => Err(Removal::Failed(describe_error(&error))),
    }
}

/// Removes an image by id without force: the engine refuses one a container uses.
/// Its untagged parent layers go too, unless another image is built on them.
async fn remove_image(docker: &Docker, id: &str) -> Result<(), Removal> {
    let options = RemoveImageOptions {
        force: false,
        noprune: false,
        ..RemoveImageOptions::default()
    };
    match docker.remove_image(id, Some(options), None).await {
        Ok(_) => Ok(()),
        Err(error) => removal(error),
    }
}

/// Removes a container by id without force: the engine refuses one that runs.
async fn remove_container(docker: &Docker, id: &str) -> Result<(), Removal> {
    let options = RemoveContainerOptions {
        force: false,
        ..RemoveContainerOptions::default()
    };
    match docker.remove_container(id, Some(options)).await {
        Ok(()) => Ok(()),
        Err(error) => removal(error),
    }
}

/// `repository@sha256:0123456789ab`: a name short enough for a log line.
fn shown(name: &str) -> String {
    match name.split_once('@') {
        Some((repository, digest)) => format!("{repository}@{}", short_digest(digest)),
        None => name.to_string(),
    }
}

/// An image of the pipeline on one host.
#[derive(Debug, Clone, PartialEq)]
pub struct PipelineImage {
    pub id: String,
    /// Its manifest digests in the pipeline's repository (`sha256:...`).
    pub digests: Vec<String>,
    /// `repository@digest`, or `repository:tag` for an image not pushed.
    pub name: String,
    pub created: std::time::SystemTime,
    /// It has a tag or digest outside the pipeline's repository too.
    pub named_elsewhere: bool,
}

/// The image as the pipeline's, when its labels and a name say it is: a name in its
/// repository, or in the same path on the registry's `mirror` (an image pulled
/// through the mirror is known by that name only).
pub fn pipeline_image(
    summary: &ImageSummary,
    pipeline: &str,
    repository: &ImageRepository,
    mirror: Option<&str>,
) -> Option<PipelineImage> {
    let labels = &summary.labels;
    if labels.get(LABEL_PIPELINE).map(String::as_str) != Some(pipeline)
        || !labels.contains_key(LABEL_REVISION)
    {
        return None;
    }
    let ours = |name: &str| {
        ImageRepository::parse(name).is_ok_and(|named| {
            (named.registry() == repository.registry() || Some(named.registry()) == mirror)
                && named.path() == repository.path()
        })
    };
    let mut digests = Vec::new();
    let mut tags = Vec::new();
    let mut named_elsewhere = false;
    for reference in &summary.repo_digests {
        match reference.split_once('@') {
            Some((name, digest)) if ours(name) => digests.push(digest.to_string()),
            _ => named_elsewhere = true,
        }
    }
    for reference in summary
        .repo_tags
        .iter()
        .filter(|reference| reference.as_str() != "<none>:<none>")
    {
        let (name, _) = crate::build::split_reference(reference);
        if ours(name) {
            tags.push(reference.clone());
        } else {
            named_elsewhere = true;
        }
    }
    let name = match (digests.first(), tags.first()) {
        (Some(digest), _) => repository.with_digest(digest),
        (None, Some(tag)) => tag.clone(),
        (None, None) => return None,
    };
    let created = std::time::UNIX_EPOCH
        + std::time::Duration::from_secs(u64::try_from(summary.created).unwrap_or(0));
    Some(PipelineImage {
        id: summary.id.clone(),
        digests,
        name,
        created,
        named_elsewhere,
    })
}

/// Each of the pipeline's images on a host, newest first, with why it stays (`None`:
/// it goes). The newest `keep` stay, and besides them whatever is protected, in use
/// (by image id) or named elsewhere.
pub fn plan_images(
    mut images: Vec<PipelineImage>,
    keep: usize,
    protected: &BTreeMap<String, Keep>,
    in_use: &BTreeSet<String>,
) -> Vec<(PipelineImage, Option<Keep>)> {
    images.sort_by(|a, b| b.created.cmp(&a.created).then_with(|| a.id.cmp(&b.id)));
    images
        .into_iter()
        .enumerate()
        .map(|(position, image)| {
            let keep = image
                .digests
                .iter()
                .filter_map(|digest| protected.get(digest).copied())
                .min()
                .or((position < keep).then_some(Keep::Newest))
                .or(in_use.contains(&image.id).then_some(Keep::InUse))
                .or(image.named_elsewhere.then_some(Keep::NamedElsewhere));
            (image, keep)
        })
        .collect()
}

/// A `NAME.previous` container of the pipeline on a host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Leftover {
    pub id: String,
    pub name: String,
    /// Why it stays; `None`: it goes.
    pub keep: Option<Keep>,
}

/// The pipeline's `.previous` containers among a host's containers, with why each stays.
pub fn plan_leftovers(containers: &[ContainerSummary], pipeline: &str) -> Vec<Leftover> {
    let name_of = |summary: &ContainerSummary| -> Option<String> {
        let names = summary.names.as_ref()?;
        names
            .first()
            .map(|name| name.trim_start_matches('/').to_string())
    };
    let label = |summary: &ContainerSummary, key: &str| -> Option<String> {
        summary.labels.as_ref()?.get(key).cloned()
    };
    let owned = |summary: &ContainerSummary, instance: &str| {
        label(summary, LABEL_PIPELINE).as_deref() == Some(pipeline)
            && label(summary, LABEL_INSTANCE).as_deref() == Some(instance)
    };
    let mut leftovers: Vec<Leftover> = containers
        .iter()
        .filter_map(|summary| {
            let name = name_of(summary)?;
            let instance = name.strip_suffix(PREVIOUS_SUFFIX)?;
            if !owned(summary, instance) {
                return None;
            }
            let stopped = matches!(
                summary.state,
                Some(
                    ContainerSummaryStateEnum::EXITED
                        | ContainerSummaryStateEnum::CREATED
                        | ContainerSummaryStateEnum::DEAD
                )
            );
            let instance_has_container = containers
                .iter()
                .any(|other| name_of(other).as_deref() == Some(instance) && owned(other, instance));
            let keep = if !stopped {
                Some(Keep::Running)
            } else if !instance_has_container {
                Some(Keep::OnlyCopy)
            } else {
                None
            };
            Some(Leftover {
                id: summary.id.clone()?,
                name,
                keep,
            })
        })
        .collect();
    leftovers.sort_by(|a, b| a.name.cmp(&b.name));
    leftovers
}

/// One line per item, for people: `host  image  repository@sha256:0123…  reason`.
pub fn describe(item: &Item) -> String {
    let what = match item.kind {
        ItemKind::Image => format!("image      {}", shown(&item.name)),
        ItemKind::Container => format!("container  {} ({})", item.name, short_id(&item.id)),
    };
    let why = match (item.reason, &item.message) {
        (Some(reason), Some(message)) => format!("  ({}: {message})", reason.describe()),
        (Some(reason), None) => format!("  ({})", reason.describe()),
        (None, _) => String::new(),
    };
    format!("{}  {what}{why}", item.host)
}
