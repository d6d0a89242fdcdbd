//! Phase 1 of a rollout, the images: on each host, the release's images its instances
//! and release tasks run and each accessory's image, pulled where the engine lacks them,
//! several hosts at once.

use std::collections::BTreeMap;

use bollard::Docker;
use futures_util::StreamExt;

use super::{Log, MAX_PARALLEL_HOSTS, Release, Target, task};
use crate::config::{Config, ImageRepository, Pipeline, ServiceImage, TaskWhen};
use crate::registry;

/// Has every host hold the images it needs; the first failure as (host, why).
pub async fn pull_images(
    config: &Config,
    pipeline: &Pipeline,
    release: &Release,
    hosts: &BTreeMap<String, Docker>,
    targets: &[Target<'_>],
    log: Log<'_>,
) -> Result<(), (Option<String>, String)> {
    let jobs = pull_jobs(config, pipeline, release, hosts, targets)
        .await
        .map_err(|error| (None, error))?;
    for (reference, on) in describe_pulls(&jobs) {
        log(&format!("pulling {reference} on {on}"));
    }
    let pulls: Vec<_> = futures_util::stream::iter(jobs.iter().map(|job| {
        let docker = &hosts[&job.host];
        async move {
            // An engine that has the image under this reference has what it names
            // (by digest: exactly it; an accessory's tag: the copy it runs until its
            // reference changes), so the registry is not asked again.
            if docker.inspect_image(&job.reference).await.is_ok() {
                return (job.host.clone(), Ok(()));
            }
            let result = registry::pull_reference(
                docker,
                &job.reference,
                &job.repository,
                job.credentials.as_ref(),
            )
            .await;
            (job.host.clone(), result)
        }
    }))
    .buffer_unordered(MAX_PARALLEL_HOSTS)
    .collect()
    .await;
    let mut failures: Vec<(String, String)> = pulls
        .into_iter()
        .filter_map(|(host, result)| result.err().map(|error| (host, error.to_string())))
        .collect();
    failures.sort();
    match failures.into_iter().next() {
        Some((host, reason)) => Err((Some(host.clone()), format!("host `{host}`: {reason}"))),
        None => Ok(()),
    }
}

/// One image to have on one host before any container is touched.
struct PullJob {
    host: String,
    reference: String,
    repository: ImageRepository,
    credentials: Option<registry::Credentials>,
}

/// On each host, the release's images its instances and release tasks run, and each
/// accessory's image.
async fn pull_jobs(
    config: &Config,
    pipeline: &Pipeline,
    release: &Release,
    hosts: &BTreeMap<String, Docker>,
    targets: &[Target<'_>],
) -> Result<Vec<PullJob>, String> {
    let mut credentials: BTreeMap<String, Option<registry::Credentials>> = BTreeMap::new();
    let mut jobs = Vec::new();
    for host in hosts.keys() {
        let here: Vec<&Target<'_>> = targets
            .iter()
            .filter(|target| &target.instance.host == host)
            .collect();
        // The rollout's release tasks run their service's image on their host.
        let tasks = [TaskWhen::Before, TaskWhen::After]
            .into_iter()
            .flat_map(|when| task::selected(pipeline, targets, when))
            .filter(|task| &task.host == host)
            .filter_map(|task| pipeline.deploy.services.get(&task.service));
        let mut references: BTreeMap<String, ImageRepository> = BTreeMap::new();
        for service in here.iter().map(|target| target.service).chain(tasks) {
            let (reference, repository) = match &service.image {
                ServiceImage::Built(_) => {
                    let image = release.image_for(service);
                    (image.reference(), image.repository.clone())
                }
                ServiceImage::Accessory(reference) => {
                    (reference.clone(), ImageRepository::of_reference(reference)?)
                }
            };
            references.insert(reference, repository);
        }
        for (reference, repository) in references {
            let registry = repository.registry().to_string();
            if !credentials.contains_key(&registry) {
                let found = registry::credentials(config, &registry)
                    .await
                    .map_err(|error| error.to_string())?;
                credentials.insert(registry.clone(), found);
            }
            jobs.push(PullJob {
                host: host.clone(),
                reference,
                repository,
                credentials: credentials[&registry].clone(),
            });
        }
    }
    Ok(jobs)
}

/// Each image pulled, with the hosts it is pulled on.
fn describe_pulls(jobs: &[PullJob]) -> BTreeMap<&str, String> {
    let mut hosts: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for job in jobs {
        hosts.entry(&job.reference).or_default().push(&job.host);
    }
    hosts
        .into_iter()
        .map(|(reference, on)| (reference, on.join(", ")))
        .collect()
}
