//! Phase 1 of a rollout, the images: on each host, the release's images its instances
//! and release tasks run and each accessory's image, pulled where the engine lacks them,
//! several hosts at once.

use std::collections::BTreeMap;

use bollard::Docker;
use futures_util::StreamExt;
use tokio::sync::Semaphore;

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
    let limits = config
        .registries
        .iter()
        .filter_map(|(name, registry)| Some((name.clone(), registry.max_pulls? as usize)))
        .collect();
    let present = async |job: &PullJob| {
        // An engine that has the image under this reference has what it names (by
        // digest: exactly it; an accessory's tag: the copy it runs until its reference
        // changes), so the registry is not asked again.
        hosts[&job.host].inspect_image(&job.reference).await.is_ok()
    };
    let pull = async |job: &PullJob| {
        registry::pull_reference(
            &hosts[&job.host],
            &job.reference,
            &job.repository,
            job.credentials.as_ref(),
        )
        .await
        .map_err(|error| error.to_string())
    };
    let pulls = pull_each(&jobs, &limits, present, pull).await;
    let mut failures: Vec<(String, String)> = pulls
        .into_iter()
        .filter_map(|(host, result)| result.err().map(|error| (host, error)))
        .collect();
    failures.sort();
    match failures.into_iter().next() {
        Some((host, reason)) => Err((Some(host.clone()), format!("host `{host}`: {reason}"))),
        None => Ok(()),
    }
}

/// Runs the jobs, `MAX_PARALLEL_HOSTS` at once, a job whose image the host lacks
/// pulling it once one of its registry's `limits` pulls is free: each job's host and
/// outcome.
async fn pull_each(
    jobs: &[PullJob],
    limits: &BTreeMap<String, usize>,
    present: impl AsyncFn(&PullJob) -> bool,
    pull: impl AsyncFn(&PullJob) -> Result<(), String>,
) -> Vec<(String, Result<(), String>)> {
    let slots: BTreeMap<&str, Semaphore> = limits
        .iter()
        .map(|(registry, limit)| (registry.as_str(), Semaphore::new(*limit)))
        .collect();
    let (slots, present, pull) = (&slots, &present, &pull);
    futures_util::stream::iter(jobs.iter().map(|job| async move {
        if present(job).await {
            return (job.host.clone(), Ok(()));
        }
        // The semaphores live as long as this function and are never closed.
        let _slot = match slots.get(job.repository.registry()) {
            Some(slots) => Some(slots.acquire().await),
            None => None,
        };
        (job.host.clone(), pull(job).await)
    }))
    .buffer_unordered(MAX_PARALLEL_HOSTS)
    .collect()
    .await
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
        // A Swarm service's nodes pull its image themselves when they get a task.
        let here: Vec<&Target<'_>> = targets
            .iter()
            .filter(|target| &target.instance.host == host && target.service.swarm.is_none())
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

#[cfg(test)]
mod tests {
    use std::sync::Mutex;
    use std::time::Duration;

    use super::*;

    /// Pulls that take a while, counting how many run at once per registry.
    #[tokio::test]
    async fn pulls_from_a_bounded_registry_never_exceed_its_limit_across_hosts() {
        let job = |host: usize, reference: &str| PullJob {
            host: format!("h{host}"),
            reference: reference.to_string(),
            repository: ImageRepository::of_reference(reference).unwrap(),
            credentials: None,
        };
        let mut jobs = Vec::new();
        for host in 0..6 {
            jobs.push(job(host, "bounded.example.com/team/app:v1"));
            jobs.push(job(host, "open.example.com/team/db:16"));
        }
        jobs.push(job(9, "bounded.example.com/team/present:v1"));
        let limits = BTreeMap::from([("bounded.example.com".to_string(), 2)]);
        // (running now, most at once, pulls) per registry.
        let seen: Mutex<BTreeMap<String, (usize, usize, usize)>> = Mutex::default();
        let present = async |job: &PullJob| job.reference.contains("present");
        let pull = async |job: &PullJob| {
            let registry = job.repository.registry().to_string();
            {
                let mut seen = seen.lock().unwrap();
                let counts = seen.entry(registry.clone()).or_default();
                counts.0 += 1;
                counts.1 = counts.1.max(counts.0);
                counts.2 += 1;
            }
            tokio::time::sleep(Duration::from_millis(30)).await;
            seen.lock().unwrap().get_mut(&registry).unwrap().0 -= 1;
            match job.host.as_str() {
                "h3" => Err("refused".to_string()),
                _ => Ok(()),
            }
        };
        let outcomes = pull_each(&jobs, &limits, present, pull).await;
        let seen = seen.into_inner().unwrap();
        assert_eq!(
            seen["bounded.example.com"],
            (0, 2, 6),
            "at most 2 at once, each pulled"
        );
        let (_, most, pulls) = seen["open.example.com"];
        assert!(
            most > 2,
            "an unbounded registry is pulled from on several hosts at once"
        );
        assert_eq!(pulls, 6);
        assert_eq!(outcomes.len(), jobs.len());
        let failed: Vec<&str> = outcomes
            .iter()
            .filter(|(_, result)| result.is_err())
            .map(|(host, _)| host.as_str())
            .collect();
        assert_eq!(failed, ["h3", "h3"]);
    }
}
