//! Phase 1 of a rollout, the images: on each host, the release's images its instances
//! and release tasks run and each accessory's image, pulled where the engine lacks them,
//! several hosts at once.
//!
//! A registry with a `mirror` is pulled from through it first; when the mirror fails
//! (unreachable, an error, or it lacks the image) the same image comes from the
//! registry itself, and the run's log says which was used and why. A registry's (or a
//! mirror's) `max_pulls` bounds the pulls that go to it at once across all hosts: a
//! pull through a mirror counts against the mirror, a fallback against the registry.

use std::collections::BTreeMap;

use bollard::Docker;
use futures_util::StreamExt;
use tokio::sync::Semaphore;

use super::{Log, MAX_PARALLEL_HOSTS, Release, Target, task};
use crate::config::{Config, ImageRepository, Pipeline, ServiceImage, TaskWhen};
use crate::registry::{self, Mirrored, Mirrors};

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
    let (held, missing) = partition_held(config, hosts, jobs).await;
    for (reference, on) in describe_pulls(&held, false) {
        log(&format!("{reference} is on {on} already"));
    }
    for (reference, on) in describe_pulls(&missing, true) {
        log(&format!("pulling {reference} on {on}"));
    }
    pull_jobs_on(config, hosts, &missing, log).await
}

/// The jobs whose host holds their image already, and the others; the engines are
/// asked `MAX_PARALLEL_HOSTS` at once.
async fn partition_held(
    config: &Config,
    hosts: &BTreeMap<String, Docker>,
    jobs: Vec<PullJob>,
) -> (Vec<PullJob>, Vec<PullJob>) {
    let mirrors = Mirrors::of(config);
    let mirrors = &mirrors;
    let checked: Vec<(bool, PullJob)> =
        futures_util::stream::iter(jobs.into_iter().map(async |job| {
            let held = mirrors
                .held_as(&hosts[&job.host], &job.reference)
                .await
                .is_some();
            (held, job)
        }))
        .buffered(MAX_PARALLEL_HOSTS)
        .collect()
        .await;
    let (held, missing): (Vec<_>, Vec<_>) = checked.into_iter().partition(|(held, _)| *held);
    (
        held.into_iter().map(|(_, job)| job).collect(),
        missing.into_iter().map(|(_, job)| job).collect(),
    )
}

/// Has `docker` (host `host`) hold `reference`, through its registry's mirror when it
/// has one: for a release task run by hand.
pub async fn pull_one(
    config: &Config,
    host: &str,
    docker: &Docker,
    reference: &str,
    log: Log<'_>,
) -> Result<(), String> {
    let repository = ImageRepository::of_reference(reference)?;
    let mirrors = Mirrors::of(config);
    let mut credentials = BTreeMap::new();
    let job = pull_job(
        config,
        &mirrors,
        &mut credentials,
        host,
        reference.to_string(),
        repository,
    )
    .await?;
    let hosts = BTreeMap::from([(host.to_string(), docker.clone())]);
    pull_jobs_on(config, &hosts, &[job], log)
        .await
        .map_err(|(_, reason)| reason)
}

/// Pulls the jobs on their hosts, bounded per registry; the first failure as (host, why).
async fn pull_jobs_on(
    config: &Config,
    hosts: &BTreeMap<String, Docker>,
    jobs: &[PullJob],
    log: Log<'_>,
) -> Result<(), (Option<String>, String)> {
    let limits = config
        .registries
        .iter()
        .filter_map(|(name, registry)| Some((name.clone(), registry.max_pulls? as usize)))
        .collect();
    let mirrors = Mirrors::of(config);
    let present = async |job: &PullJob| {
        // An engine that has the image under this reference (or the mirror's name for
        // it) has what it names (by digest: exactly it; an accessory's tag: the copy it
        // runs until its reference changes), so no registry is asked again.
        mirrors
            .held_as(&hosts[&job.host], &job.reference)
            .await
            .is_some()
    };
    let pull = async |job: &PullJob, source: Source| {
        let docker = &hosts[&job.host];
        let pulled = match (source, &job.mirror) {
            (Source::Mirror, Some(mirror)) => {
                registry::pull_reference(
                    docker,
                    &mirror.to.reference,
                    &mirror.to.repository,
                    mirror.credentials.as_ref(),
                )
                .await
            }
            _ => {
                registry::pull_reference(
                    docker,
                    &job.reference,
                    &job.repository,
                    job.credentials.as_ref(),
                )
                .await
            }
        };
        pulled.map_err(|error| error.to_string())
    };
    let pulls = pull_each(jobs, &limits, present, pull, log).await;
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

/// Where a pull goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Source {
    /// The registry's mirror (only for a job with one).
    Mirror,
    /// The registry the image's name says.
    Registry,
}

/// How a host came to hold a job's image.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Pulled {
    /// It held it already.
    Present,
    /// Through the registry's mirror.
    Mirror,
    /// From the registry; `mirror_failed` says why its mirror was not used.
    Registry { mirror_failed: Option<String> },
}

/// Runs the jobs, `MAX_PARALLEL_HOSTS` at once, a job whose image the host lacks
/// pulling it once one of `limits` pulls of the registry it goes to is free: through
/// the mirror first when the job has one, and from the registry when that fails (each
/// fallback logged with why). Each job's host and outcome.
async fn pull_each(
    jobs: &[PullJob],
    limits: &BTreeMap<String, usize>,
    present: impl AsyncFn(&PullJob) -> bool,
    pull: impl AsyncFn(&PullJob, Source) -> Result<(), String>,
    log: Log<'_>,
) -> Vec<(String, Result<Pulled, String>)> {
    let slots: BTreeMap<&str, Semaphore> = limits
        .iter()
        .map(|(registry, limit)| (registry.as_str(), Semaphore::new(*limit)))
        .collect();
    let (slots, present, pull) = (&slots, &present, &pull);
    // A pull of `registry`, once one of its slots is free (at once when it has no limit).
    let bounded = async |registry: &str, job: &PullJob, source: Source| {
        // The semaphores live as long as this function and are never closed.
        let _slot = match slots.get(registry) {
            Some(slots) => Some(slots.acquire().await),
            None => None,
        };
        pull(job, source).await
    };
    let bounded = &bounded;
    futures_util::stream::iter(jobs.iter().map(|job| async move {
        if present(job).await {
            return (job.host.clone(), Ok(Pulled::Present));
        }
        let mut mirror_failed = None;
        if let Some(mirror) = &job.mirror {
            let host = &job.host;
            match bounded(&mirror.to.mirror, job, Source::Mirror).await {
                Ok(()) => {
                    log(&format!(
                        "{host}: pulled {} through mirror {}",
                        job.reference, mirror.to.mirror
                    ));
                    return (job.host.clone(), Ok(Pulled::Mirror));
                }
                Err(why) => {
                    log(&format!(
                        "{host}: mirror {} failed ({why}); pulling {} from {} instead",
                        mirror.to.mirror,
                        job.reference,
                        job.repository.registry()
                    ));
                    mirror_failed = Some(why);
                }
            }
        }
        let pulled = bounded(job.repository.registry(), job, Source::Registry).await;
        (
            job.host.clone(),
            pulled.map(|()| Pulled::Registry { mirror_failed }),
        )
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
    /// The registry's mirror, tried first.
    mirror: Option<MirrorPull>,
}

/// A job's image through its registry's mirror.
struct MirrorPull {
    to: Mirrored,
    /// The mirror's own (from its `registries` entry or the Docker config), never the
    /// registry's: a mirror is another server, and the registry's password is not its.
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
    let mirrors = Mirrors::of(config);
    let mut credentials = BTreeMap::new();
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
            jobs.push(
                pull_job(
                    config,
                    &mirrors,
                    &mut credentials,
                    host,
                    reference,
                    repository,
                )
                .await?,
            );
        }
    }
    Ok(jobs)
}

/// One job, with the credentials of its registry and its mirror (asked once per
/// registry and kept in `credentials`).
async fn pull_job(
    config: &Config,
    mirrors: &Mirrors,
    credentials: &mut BTreeMap<String, Option<registry::Credentials>>,
    host: &str,
    reference: String,
    repository: ImageRepository,
) -> Result<PullJob, String> {
    let mut credentials_of = async |registry: &str| {
        if !credentials.contains_key(registry) {
            let found = registry::credentials(config, registry)
                .await
                .map_err(|error| error.to_string())?;
            credentials.insert(registry.to_string(), found);
        }
        Ok::<_, String>(credentials[registry].clone())
    };
    let mirror = match mirrors.mirrored(&reference) {
        Some(to) => Some(MirrorPull {
            credentials: credentials_of(&to.mirror).await?,
            to,
        }),
        None => None,
    };
    Ok(PullJob {
        host: host.to_string(),
        credentials: credentials_of(repository.registry()).await?,
        reference,
        repository,
        mirror,
    })
}

/// Each image of `jobs`, with their hosts (and, `through` the mirror, the mirror it goes
/// through).
fn describe_pulls(jobs: &[PullJob], through: bool) -> BTreeMap<&str, String> {
    let mut hosts: BTreeMap<&str, (Vec<&str>, Option<&str>)> = BTreeMap::new();
    for job in jobs {
        let entry = hosts.entry(&job.reference).or_default();
        entry.0.push(&job.host);
        entry.1 = job
            .mirror
            .as_ref()
            .filter(|_| through)
            .map(|mirror| mirror.to.mirror.as_str());
    }
    hosts
        .into_iter()
        .map(|(reference, (on, mirror))| {
            let through =
                mirror.map_or_else(String::new, |mirror| format!(" through mirror {mirror}"));
            (reference, format!("{}{through}", on.join(", ")))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;
    use std::time::Duration;

    use super::*;

    fn job(host: usize, reference: &str, mirror: Option<&str>) -> PullJob {
        let mirrors = Mirrors::of_pairs(mirror.map(|mirror| {
            let registry = ImageRepository::of_reference(reference).unwrap();
            (registry.registry().to_string(), mirror.to_string())
        }));
        PullJob {
            host: format!("h{host}"),
            reference: reference.to_string(),
            repository: ImageRepository::of_reference(reference).unwrap(),
            credentials: None,
            mirror: mirrors.mirrored(reference).map(|to| MirrorPull {
                to,
                credentials: None,
            }),
        }
    }

    /// Pulls that take a while, counting how many run at once per registry (or mirror).
    #[derive(Default)]
    struct Counts(Mutex<BTreeMap<String, (usize, usize, usize)>>);

    impl Counts {
        async fn pull(&self, registry: String) {
            {
                let mut seen = self.0.lock().unwrap();
                let counts = seen.entry(registry.clone()).or_default();
                counts.0 += 1;
                counts.1 = counts.1.max(counts.0);
                counts.2 += 1;
            }
            tokio::time::sleep(Duration::from_millis(30)).await;
            self.0.lock().unwrap().get_mut(&registry).unwrap().0 -= 1;
        }

        /// (running now, most at once, pulls) of each registry.
        fn seen(self) -> BTreeMap<String, (usize, usize, usize)> {
            self.0.into_inner().unwrap()
        }
    }

    #[tokio::test]
    async fn pulls_from_a_bounded_registry_never_exceed_its_limit_across_hosts() {
        let mut jobs = Vec::new();
        for host in 0..6 {
            jobs.push(job(host, "bounded.example.com/team/app:v1", None));
            jobs.push(job(host, "open.example.com/team/db:16", None));
        }
        jobs.push(job(9, "bounded.example.com/team/present:v1", None));
        let limits = BTreeMap::from([("bounded.example.com".to_string(), 2)]);
        let counts = Counts::default();
        let present = async |job: &PullJob| job.reference.contains("present");
        let pull = async |job: &PullJob, source: Source| {
            assert_eq!(source, Source::Registry);
            counts.pull(job.repository.registry().to_string()).await;
            match job.host.as_str() {
                "h3" => Err("refused".to_string()),
                _ => Ok(()),
            }
        };
        let outcomes = pull_each(&jobs, &limits, present, pull, &|_: &str| {}).await;
        let seen = counts.seen();
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
        assert!(outcomes.contains(&("h9".to_string(), Ok(Pulled::Present))));
    }

    /// A mirror that fails on some hosts: those fall back to the registry and the log
    /// says why; the mirror's pulls count against the mirror's limit, the fallbacks
    /// against the registry's.
    #[tokio::test]
    async fn a_failing_mirror_falls_back_to_the_registry_within_each_limit() {
        let reference = "reg.example.com/team/app@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
        let jobs: Vec<PullJob> = (0..6)
            .map(|host| job(host, reference, Some("mirror.internal:5000")))
            .collect();
        let limits = BTreeMap::from([
            ("reg.example.com".to_string(), 1),
            ("mirror.internal:5000".to_string(), 3),
        ]);
        let counts = Counts::default();
        let present = async |_: &PullJob| false;
        let pull = async |job: &PullJob, source: Source| {
            let to = match source {
                Source::Mirror => job.mirror.as_ref().unwrap().to.mirror.clone(),
                Source::Registry => job.repository.registry().to_string(),
            };
            counts.pull(to).await;
            match (source, job.host.as_str()) {
                (Source::Mirror, "h1" | "h4") => Err("manifest unknown".to_string()),
                (Source::Registry, "h4") => Err("connection refused".to_string()),
                _ => Ok(()),
            }
        };
        let lines = Mutex::new(Vec::new());
        let log = |line: &str| lines.lock().unwrap().push(line.to_string());
        let mut outcomes = pull_each(&jobs, &limits, present, pull, &log).await;
        outcomes.sort_by(|a, b| a.0.cmp(&b.0));
        let fell_back = Pulled::Registry {
            mirror_failed: Some("manifest unknown".to_string()),
        };
        assert_eq!(
            outcomes,
            [
                ("h0".to_string(), Ok(Pulled::Mirror)),
                ("h1".to_string(), Ok(fell_back)),
                ("h2".to_string(), Ok(Pulled::Mirror)),
                ("h3".to_string(), Ok(Pulled::Mirror)),
                ("h4".to_string(), Err("connection refused".to_string())),
                ("h5".to_string(), Ok(Pulled::Mirror)),
            ]
        );
        let seen = counts.seen();
        assert_eq!(seen["mirror.internal:5000"], (0, 3, 6));
        assert_eq!(seen["reg.example.com"], (0, 1, 2));
        let mut lines = lines.into_inner().unwrap();
        lines.sort();
        assert_eq!(lines.len(), 6, "{lines:#?}");
        assert_eq!(
            lines[0],
            format!("h0: pulled {reference} through mirror mirror.internal:5000")
        );
        assert_eq!(
            lines[1],
            format!(
                "h1: mirror mirror.internal:5000 failed (manifest unknown); pulling {reference} from reg.example.com instead"
            )
        );
    }
}
