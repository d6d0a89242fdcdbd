//! Deploys: an image digest rolled out to a pipeline's instances on their hosts.
//!
//! A rollout has two phases. First the image is pulled by digest on every target
//! host, in parallel with a bound, before any container is touched: an
//! unreachable host or a failed pull ends the deploy with nothing changed. Then,
//! service by service in `requires` order and `batch` instances at a time, each
//! instance is swapped: skipped when its container already runs this digest with
//! this spec; otherwise the old container is kept (renamed, and stopped first only
//! when the two would fight over a fixed host port), the new one is started and
//! health-gated, and the old one is removed only when the whole rollout is done.
//! A failed gate brings the old container back and, with `on_failure: rollback`,
//! every instance already swapped in this rollout too. Release tasks (`task`) run
//! between the two phases (`when: before`) and after the second (`when: after`).
//!
//! This module talks to the Docker hosts only; recording what happened is the
//! caller's (`engine`) job, from the returned report.

pub mod container;
pub mod health;
pub mod proxy;
pub mod prune;
mod pull;
pub mod status;
pub mod swap;
pub mod swarm;
pub mod task;

#[cfg(test)]
mod prune_tests;
#[cfg(test)]
mod swap_tests;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::sync::Mutex;

use bollard::Docker;
use futures_util::StreamExt;
use serde::Serialize;

use crate::config::{Config, ImageRepository, Instance, Pipeline, Service, ServiceImage, TaskWhen};
use crate::host;
use crate::registry;

/// How many hosts are connected to and pulled on at once.
pub const MAX_PARALLEL_HOSTS: usize = 8;
/// How many lines of a failed container's log are shown.
pub const FAILURE_LOG_LINES: usize = 20;

/// The image a deploy rolls out.
#[derive(Debug, Clone, Serialize)]
pub struct DeployImage {
    pub repository: ImageRepository,
    pub digest: String,
    /// The commit it was built from, when gantry built it.
    pub commit: Option<String>,
}

impl DeployImage {
    pub fn reference(&self) -> String {
        self.repository.with_digest(&self.digest)
    }
}

/// The images a deploy rolls out together: one for each of the pipeline's images, by
/// name (a rollback returns all of them to one earlier deployment's).
#[derive(Debug, Clone, Serialize)]
#[serde(transparent)]
pub struct Release {
    images: BTreeMap<String, DeployImage>,
}

impl Release {
    /// A release of `pipeline` from its images' digests; every image of the pipeline
    /// must have one, and no other may be given.
    pub fn new(
        pipeline: &Pipeline,
        images: BTreeMap<String, DeployImage>,
    ) -> Result<Release, String> {
        if let Some(missing) = pipeline
            .images
            .keys()
            .find(|name| !images.contains_key(*name))
        {
            return Err(format!("no digest is known for image `{missing}`"));
        }
        if let Some(unknown) = images
            .keys()
            .find(|name| !pipeline.images.contains_key(*name))
        {
            return Err(format!(
                "`{}` builds no image named `{unknown}`",
                pipeline.name
            ));
        }
        Ok(Release { images })
    }

    /// The image `service` runs (an accessory runs its own; it gets the first, unused).
    pub fn image_for(&self, service: &Service) -> &DeployImage {
        let named = match &service.image {
            ServiceImage::Built(name) => self.images.get(name),
            ServiceImage::Accessory(_) => None,
        };
        named.unwrap_or_else(|| self.first())
    }

    /// The first image by name: what a record with room for one image keeps.
    pub fn first(&self) -> &DeployImage {
        // `Release::new` took one image per pipeline image, and a pipeline has one at least.
        self.images
            .values()
            .next()
            .expect("a release holds an image")
    }

    pub fn images(&self) -> &BTreeMap<String, DeployImage> {
        &self.images
    }

    /// The commit the images were built from (the same for all when gantry built them).
    pub fn commit(&self) -> Option<&str> {
        self.images
            .values()
            .find_map(|image| image.commit.as_deref())
    }

    /// `name` → `repository@digest`, as the state store keeps it.
    pub fn references(&self) -> BTreeMap<String, String> {
        self.images
            .iter()
            .map(|(name, image)| (name.clone(), image.reference()))
            .collect()
    }
}

/// What a rollout should do.
pub struct Rollout<'a> {
    pub config: &'a Config,
    pub pipeline: &'a Pipeline,
    pub release: &'a Release,
    /// Only instances (or services) whose name matches.
    pub only: Option<&'a glob::Pattern>,
    /// Replace containers even when they already run this digest and spec.
    pub force: bool,
    /// Asked before each batch is changed: `Some(why)` stops the rollout there, as
    /// a failure (the caller's deploy lease was lost, say). `on_failure` then applies.
    pub stop: Option<&'a (dyn Fn() -> Option<String> + Sync)>,
}

/// What happened to one instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// A new container runs the new image.
    Updated,
    /// It already ran this digest with this spec.
    Unchanged,
    /// Its new container failed; the old one is back.
    Failed,
    /// It was updated, then returned to its old container after another instance failed.
    Reverted,
    /// The rollout stopped before reaching it.
    NotReached,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Updated => "updated",
            Action::Unchanged => "unchanged",
            Action::Failed => "failed",
            Action::Reverted => "reverted",
            Action::NotReached => "not_reached",
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct InstanceReport {
    pub service: String,
    pub instance: String,
    pub host: String,
    pub action: Action,
    /// The new container's id, when one was started.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub container: Option<String>,
    /// The digest the instance ran before, if it had a container.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub previous_digest: Option<String>,
    /// The digest it runs now, when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub healthy_after_ms: Option<u128>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// Where a rollout stopped: in phase 1 (`pull`, `check`: nothing was touched), in
/// phase 2 (`rollout`), or in a release task around it (`task`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    /// Reaching the hosts or pulling the image.
    Pull,
    /// Checking that every container to touch is the pipeline's.
    Check,
    /// Starting or updating the proxy of a host with proxied instances.
    Proxy,
    Rollout,
    /// A release task (`deploy::task`): before any swap (nothing was swapped), or after
    /// every instance passed its gate (the new containers stay).
    Task,
}

/// Why a rollout stopped.
#[derive(Debug, Clone, Serialize)]
pub struct RolloutFailure {
    pub phase: Phase,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub instance: Option<String>,
    pub message: String,
    /// The failed health check, when that is what failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub check: Option<health::HealthFailure>,
    /// The new container's last log lines.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub logs: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct RolloutReport {
    pub instances: Vec<InstanceReport>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failure: Option<RolloutFailure>,
}

/// Where a rollout reports progress; called from several instances at once.
pub type Log<'a> = &'a (dyn Fn(&str) + Sync);

/// One instance to roll out, with its service.
#[derive(Clone, Copy)]
pub struct Target<'a> {
    pub service: &'a Service,
    pub instance: &'a Instance,
}

/// The pipeline's services, each after every service it requires (config validation ruled out cycles).
pub fn service_order(pipeline: &Pipeline) -> Vec<&Service> {
    fn visit<'p>(name: &str, services: &'p BTreeMap<String, Service>, done: &mut Vec<&'p Service>) {
        let Some(service) = services.get(name) else {
            return;
        };
        if done.iter().any(|seen| seen.name == name) {
            return;
        }
        for required in &service.requires {
            visit(required, services, done);
        }
        if !done.iter().any(|seen| seen.name == name) {
            done.push(service);
        }
    }
    let mut order = Vec::new();
    for name in pipeline.deploy.services.keys() {
        visit(name, &pipeline.deploy.services, &mut order);
    }
    order
}

/// The instances selected by `only` (matched against instance and service names), in `requires` order.
pub fn targets<'p>(pipeline: &'p Pipeline, only: Option<&glob::Pattern>) -> Vec<Target<'p>> {
    service_order(pipeline)
        .into_iter()
        .flat_map(|service| {
            service
                .instances
                .values()
                .map(move |instance| Target { service, instance })
        })
        .filter(|target| {
            only.is_none_or(|pattern| {
                pattern.matches(&target.instance.name) || pattern.matches(&target.service.name)
            })
        })
        .collect()
}

/// Connects to each named host, several at a time; the first failure names its host.
pub async fn connect_hosts(
    config: &Config,
    names: impl IntoIterator<Item = String>,
) -> Result<BTreeMap<String, Docker>, (String, String)> {
    let mut names: Vec<String> = names.into_iter().collect();
    names.sort();
    names.dedup();
    let results: Vec<_> = futures_util::stream::iter(names.into_iter().map(|name| async move {
        let result = match config.hosts.get(&name) {
            Some(host) => host::connect(host)
                .await
                .map(|connection| connection.docker)
                .map_err(|error| error.to_string()),
            None => Err(format!("host `{name}` is not defined")),
        };
        (name, result)
    }))
    .buffer_unordered(MAX_PARALLEL_HOSTS)
    .collect()
    .await;
    let mut connected = BTreeMap::new();
    let mut failures: Vec<(String, String)> = Vec::new();
    for (name, result) in results {
        match result {
            Ok(docker) => {
                connected.insert(name, docker);
            }
            Err(reason) => failures.push((name, reason)),
        }
    }
    failures.sort();
    match failures.into_iter().next() {
        Some(failure) => Err(failure),
        None => Ok(connected),
    }
}

/// Rolls the image out to the selected instances.
pub async fn rollout(request: &Rollout<'_>, log: Log<'_>) -> RolloutReport {
    let pipeline = request.pipeline;
    let all_targets = targets(pipeline, request.only);
    // Instances on Swarm managers are Swarm services (`deploy::swarm`), updated after
    // the containers. Phase 1 connects their managers and pulls there only what a
    // release task of theirs runs (as a container); the nodes pull a service's image
    // when Swarm gives them a task.
    let (swarm_targets, targets): (Vec<Target<'_>>, Vec<Target<'_>>) = all_targets
        .iter()
        .partition(|target| swarm::is_swarm(target));
    // A failure of phase 1: no instance was reached.
    let untouched =
        |phase: Phase, host: Option<String>, instance: Option<String>, message| RolloutReport {
            instances: all_targets
                .iter()
                .map(|target| report(target, Action::NotReached))
                .collect(),
            failure: Some(RolloutFailure {
                phase,
                host,
                instance,
                message,
                check: None,
                logs: Vec::new(),
            }),
        };

    // Phase 1: every host reachable and holding the image, or nothing is touched.
    let hosts = match connect_hosts(
        request.config,
        targets
            .iter()
            .chain(&swarm_targets)
            .map(|target| target.instance.host.clone())
            .chain(task::hosts(pipeline, &all_targets)),
    )
    .await
    {
        Ok(hosts) => hosts,
        Err((host, reason)) => {
            let message = format!("{reason}; no container was touched");
            return untouched(Phase::Pull, Some(host), None, message);
        }
    };
    // Every container the rollout would touch is this pipeline's; every host holds the
    // images; the proxy of every host with a proxied instance runs and routes to the
    // containers running now. All three are asked at once (none changes a container of
    // the pipeline); the first that fails, in this order, ends the rollout untouched.
    let release = request.release;
    let (owned, pulled, proxied) = tokio::join!(
        check_ownership(&hosts, &targets, pipeline),
        pull::pull_images(request.config, pipeline, release, &hosts, &all_targets, log),
        prepare_proxies(request.config, pipeline, &hosts, &targets, log),
    );
    if let Err((host, instance, message)) = owned {
        let message = format!("{message}; no container was touched");
        return untouched(Phase::Check, Some(host), Some(instance), message);
    }
    if let Err((host, message)) = pulled {
        let message = format!("{message}; no container was touched");
        return untouched(Phase::Pull, host, None, message);
    }
    if let Err((host, message)) = proxied {
        let message = format!("{message}; no container was touched");
        return untouched(Phase::Proxy, Some(host), None, message);
    }

    // Release tasks that must pass before any instance is swapped (migrations).
    if let Err(failure) =
        task::run_tasks(&hosts, request, &all_targets, TaskWhen::Before, log).await
    {
        return RolloutReport {
            instances: all_targets
                .iter()
                .map(|target| report(target, Action::NotReached))
                .collect(),
            failure: Some(failure),
        };
    }

    // Phase 2: service by service, batch by batch.
    let containers = container::Hosts::new(&hosts, request.config);
    let plan = swap::Plan {
        pipeline,
        release,
        targets: &targets,
        force: request.force,
        stop: request.stop,
    };
    let mut rolled_out = swap::roll_out(&containers, &plan, log).await;
    // Then the Swarm services, once every container passed its gate.
    if rolled_out.failure.is_none() {
        let (reports, failure) = swarm::roll_out(&hosts, request, &swarm_targets, log).await;
        rolled_out.instances.extend(reports);
        rolled_out.failure = failure;
        // A proxied Swarm service is routed once its overlay network and tasks exist;
        // Swarm replaces the tasks behind the route, which stays as it is.
        if rolled_out.failure.is_none()
            && let Err((host, message)) =
                prepare_proxies(request.config, pipeline, &hosts, &swarm_targets, log).await
        {
            rolled_out.failure = Some(RolloutFailure {
                phase: Phase::Proxy,
                host: Some(host),
                instance: None,
                message,
                check: None,
                logs: Vec::new(),
            });
        }
    } else {
        rolled_out.instances.extend(
            swarm_targets
                .iter()
                .map(|target| report(target, Action::NotReached)),
        );
    }
    // Release tasks for once every instance runs the new image; their failure fails
    // the rollout but swaps nothing back.
    if rolled_out.failure.is_none()
        && let Err(failure) =
            task::run_tasks(&hosts, request, &all_targets, TaskWhen::After, log).await
    {
        rolled_out.failure = Some(failure);
    }
    rolled_out
}

/// Makes the proxy right on every host where a target is proxied (all hosts at once);
/// the first failure as (host, why).
async fn prepare_proxies(
    config: &Config,
    pipeline: &Pipeline,
    hosts: &BTreeMap<String, Docker>,
    targets: &[Target<'_>],
    log: Log<'_>,
) -> Result<(), (String, String)> {
    let proxied: std::collections::BTreeSet<&str> = targets
        .iter()
        .filter(|target| target.service.proxy.is_some())
        .map(|target| target.instance.host.as_str())
        .collect();
    let results: Vec<_> = futures_util::stream::iter(proxied.into_iter().map(|host| async move {
        let outcome = async {
            let Some(mut spec) = proxy::ProxySpec::for_host(config, host) else {
                return Ok(());
            };
            let docker = &hosts[host];
            let registry = ImageRepository::of_reference(&spec.image)
                .map(|repository| repository.registry().to_string())
                .unwrap_or_default();
            let (recorded, credentials) = tokio::join!(
                proxy::refresh(docker, host),
                registry::credentials(config, &registry)
            );
            let recorded = recorded.map_err(|error| error.to_string())?;
            let credentials = credentials.map_err(|error| error.to_string())?;
            // On a Swarm manager the proxy joins overlay networks Swarm services made;
            // one not made yet (a service not deployed yet) is joined when it is.
            if config.hosts.get(host).is_some_and(|host| host.swarm) {
                let mut existing = std::collections::BTreeSet::new();
                for network in &spec.networks {
                    if docker.inspect_network(network, None).await.is_ok() {
                        existing.insert(network.clone());
                    }
                }
                spec.networks = existing;
            }
            // Sites of pipelines this config does not know (another config sharing the
            // host) keep their ports.
            spec.ports
                .extend(recorded.sites.iter().filter_map(|(key, site)| {
                    let owner = key.split('/').next().unwrap_or_default();
                    (!config.pipelines.contains_key(owner)).then_some(site.port)
                }));
            let found = proxy::ensure(docker, &spec, credentials.as_ref(), log)
                .await
                .map_err(|error| error.to_string())?;
            if found != proxy::Found::Running {
                // A new container: its record is the one in the config volume.
                proxy::refresh(docker, host)
                    .await
                    .map_err(|error| error.to_string())?;
            }
            proxy::sync_sites(docker, config, pipeline, host)
                .await
                .map_err(|error| error.to_string())
        }
        .await;
        (host.to_string(), outcome)
    }))
    .buffer_unordered(MAX_PARALLEL_HOSTS)
    .collect()
    .await;
    let mut failures: Vec<(String, String)> = results
        .into_iter()
        .filter_map(|(host, result)| result.err().map(|error| (host, error)))
        .collect();
    failures.sort();
    match failures.into_iter().next() {
        Some(failure) => Err(failure),
        None => Ok(()),
    }
}

/// Checks that each target's container (and a kept `.previous` one) is this pipeline's
/// instance, on every host at once; the first that is not, as (host, instance, why).
pub async fn check_ownership(
    hosts: &BTreeMap<String, Docker>,
    targets: &[Target<'_>],
    pipeline: &Pipeline,
) -> Result<(), (String, String, String)> {
    let checks = futures_util::stream::iter(targets.iter().flat_map(|target| {
        let instance = &target.instance.name;
        [instance.clone(), container::previous_name(instance)]
            .into_iter()
            .map(move |name| async move {
                let host = &target.instance.host;
                let verdict = match container::inspect(&hosts[host], &name).await {
                    Ok(Some(inspect)) => container::check_owner(
                        &inspect,
                        &name,
                        host,
                        &pipeline.name,
                        &target.instance.name,
                    ),
                    Ok(None) => Ok(()),
                    Err(error) => Err(error.to_string()),
                };
                verdict.map_err(|message| (host.clone(), target.instance.name.clone(), message))
            })
    }))
    .buffer_unordered(MAX_PARALLEL_HOSTS)
    .collect::<Vec<_>>()
    .await;
    let mut refusals: Vec<_> = checks.into_iter().filter_map(Result::err).collect();
    refusals.sort();
    match refusals.into_iter().next() {
        Some(refusal) => Err(refusal),
        None => Ok(()),
    }
}

pub(crate) fn report(target: &Target<'_>, action: Action) -> InstanceReport {
    InstanceReport {
        service: target.service.name.clone(),
        instance: target.instance.name.clone(),
        host: target.instance.host.clone(),
        action,
        container: None,
        previous_digest: None,
        digest: None,
        healthy_after_ms: None,
        message: None,
    }
}

/// `sha256:0123456789ab`: enough of a digest to tell images apart in a log line.
pub fn short_digest(digest: &str) -> String {
    digest.chars().take("sha256:".len() + 12).collect()
}

/// A container id as Docker shows it: its first 12 characters.
pub fn short_id(id: &str) -> String {
    id.chars().take(12).collect()
}

/// Wraps a progress callback that is not `Sync` so that parallel instances can share it.
pub struct SharedLog<F: FnMut(&str) + Send> {
    inner: Mutex<F>,
}

impl<F: FnMut(&str) + Send> SharedLog<F> {
    pub fn new(inner: F) -> SharedLog<F> {
        SharedLog {
            inner: Mutex::new(inner),
        }
    }

    pub fn line(&self, line: &str) {
        // A poisoned lock means a reporter panicked; the line is still worth printing.
        let mut inner = self
            .inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        inner(line);
    }
}
