//! `gantry task`'s half of release tasks: which image a task run by hand uses (what
//! its service's instances run, when they agree; else the newest successful
//! deployment the caller read from the store), pulled on the task's host when it is
//! not there, then run like any task.

use std::collections::BTreeMap;

use bollard::Docker;
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use super::run_task;
use crate::config::{Config, ImageRepository, Pipeline, Service, Task};
use crate::deploy::container::{self, LABEL_COMMIT, LABEL_DIGEST};
use crate::deploy::pull;
use crate::deploy::task::TaskReport;
use crate::deploy::{DeployImage, Log, connect_hosts, short_digest};
use crate::host::describe_error;
use crate::registry::Mirrors;

/// The image a task run by hand uses, and where it came from.
#[derive(Debug, Clone, Serialize)]
pub struct HandImage {
    pub image: DeployImage,
    /// `running` (what the service's containers run) or `recorded` (the newest
    /// successful deployment in the state store).
    pub source: &'static str,
}

/// `gantry task`: runs one task against the image its service runs now (what its
/// instances' containers run, when they agree; else `recorded`, the newest successful
/// deployment), pulled on the task's host first when it is not there.
pub async fn run_by_hand(
    config: &Config,
    pipeline: &Pipeline,
    task: &Task,
    recorded: Option<DeployImage>,
    interrupt: &CancellationToken,
    log: Log<'_>,
) -> Result<(HandImage, TaskReport), String> {
    let prepared = tokio::select! {
        prepared = prepare_by_hand(config, pipeline, task, recorded, log) => prepared?,
        () = interrupt.cancelled() => return Err("interrupted before the task started".to_string()),
    };
    let (docker, chosen) = prepared;
    let mirrors = Mirrors::of(config);
    let report = run_task(
        &docker,
        pipeline,
        task,
        &chosen.image,
        &mirrors,
        Some(interrupt),
        log,
    )
    .await;
    Ok((chosen, report))
}

/// Connects, chooses the image and pulls it on the task's host when it is not there.
async fn prepare_by_hand(
    config: &Config,
    pipeline: &Pipeline,
    task: &Task,
    recorded: Option<DeployImage>,
    log: Log<'_>,
) -> Result<(Docker, HandImage), String> {
    let service = pipeline
        .deploy
        .services
        .get(&task.service)
        .ok_or_else(|| format!("service `{}` is not defined", task.service))?;
    let hosts = connect_hosts(
        config,
        service
            .instances
            .values()
            .map(|instance| instance.host.clone())
            .chain([task.host.clone()]),
    )
    .await
    .map_err(|(host, reason)| format!("host `{host}`: {reason}"))?;
    let running = running_images(&hosts, pipeline, service).await?;
    let image = pipeline.image_of(service).ok_or_else(|| {
        format!(
            "service `{}` runs no image the pipeline builds",
            task.service
        )
    })?;
    let chosen = choose_image(
        &pipeline.name,
        &image.repository,
        &task.service,
        &running,
        recorded,
    )?;
    let docker = &hosts[&task.host];
    let image = &chosen.image;
    if image_is_present(docker, &image.reference()).await?
        || Mirrors::of(config)
            .held_as(docker, &image.reference())
            .await
            .is_some()
    {
        log(&format!("task {}: using {}", task.name, image.reference()));
    } else {
        log(&format!(
            "task {}: pulling {} on {}",
            task.name,
            image.reference(),
            task.host
        ));
        pull::pull_one(config, &task.host, docker, &image.reference(), log).await?;
    }
    Ok((docker.clone(), chosen))
}

/// The digests (with commits) that the service's instances' running containers carry,
/// each once; containers that are not this pipeline's instance are left out.
async fn running_images(
    hosts: &BTreeMap<String, Docker>,
    pipeline: &Pipeline,
    service: &Service,
) -> Result<Vec<(String, Option<String>)>, String> {
    let mut images = Vec::new();
    for instance in service.instances.values() {
        let inspect = container::inspect(&hosts[&instance.host], &instance.name)
            .await
            .map_err(|error| error.to_string())?;
        let Some(inspect) = inspect else { continue };
        let owned = container::check_owner(
            &inspect,
            &instance.name,
            &instance.host,
            &pipeline.name,
            &instance.name,
        );
        if owned.is_err() || !container::is_running(&inspect) {
            continue;
        }
        if let Some(digest) = container::label(&inspect, LABEL_DIGEST) {
            let commit = container::label(&inspect, LABEL_COMMIT)
                .filter(|commit| !commit.is_empty())
                .map(str::to_string);
            if !images.iter().any(|(seen, _)| seen == digest) {
                images.push((digest.to_string(), commit));
            }
        }
    }
    Ok(images)
}

/// What the instances run when they agree; the recorded deployment when they run
/// nothing, or disagree and it is one of theirs.
fn choose_image(
    name: &str,
    repository: &ImageRepository,
    service: &str,
    running: &[(String, Option<String>)],
    recorded: Option<DeployImage>,
) -> Result<HandImage, String> {
    let recorded_is_running = recorded
        .as_ref()
        .is_some_and(|image| running.iter().any(|(digest, _)| *digest == image.digest));
    match (running, recorded) {
        ([(digest, commit)], _) => Ok(HandImage {
            image: DeployImage {
                repository: repository.clone(),
                digest: digest.clone(),
                commit: commit.clone(),
            },
            source: "running",
        }),
        ([], Some(recorded)) => Ok(HandImage {
            image: recorded,
            source: "recorded",
        }),
        (_, Some(recorded)) if recorded_is_running => Ok(HandImage {
            image: recorded,
            source: "recorded",
        }),
        ([], None) => Err(format!(
            "no instance of service `{service}` is running and `{name}` has no successful \
             deployment (hint: `gantry deploy {name}` first)"
        )),
        (several, _) => Err(format!(
            "the instances of service `{service}` run different images ({}), none of them the \
             last successful deployment's (hint: `gantry deploy {name}` first)",
            several
                .iter()
                .map(|(digest, _)| short_digest(digest))
                .collect::<Vec<_>>()
                .join(", ")
        )),
    }
}

/// Whether the engine holds the image already (a pull would ask the registry again).
async fn image_is_present(docker: &Docker, reference: &str) -> Result<bool, String> {
    match docker.inspect_image(reference).await {
        Ok(_) => Ok(true),
        Err(bollard::errors::Error::DockerResponseServerError {
            status_code: 404, ..
        }) => Ok(false),
        Err(error) => Err(format!(
            "inspecting image {reference}: {}",
            describe_error(&error)
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_task_by_hand_uses_what_runs_and_the_record_only_to_settle_or_fill_in() {
        let repository = ImageRepository::parse("127.0.0.1:5000/team/shop").unwrap();
        let recorded = |digest: &str| DeployImage {
            repository: repository.clone(),
            digest: digest.to_string(),
            commit: Some("c0ffee".to_string()),
        };
        let running = |digests: &[&str]| -> Vec<(String, Option<String>)> {
            digests
                .iter()
                .map(|digest| (digest.to_string(), None))
                .collect()
        };
        let check = |running: &[(String, Option<String>)],
                     recorded: Option<DeployImage>,
                     expected: Result<(&str, &str), &str>| {
            let chosen = choose_image("shop", &repository, "web", running, recorded);
            match (chosen, expected) {
                (Ok(chosen), Ok((digest, source))) => {
                    assert_eq!(
                        (chosen.image.digest.as_str(), chosen.source),
                        (digest, source)
                    );
                }
                (Err(message), Err(part)) => assert!(message.contains(part), "{message}"),
                (chosen, expected) => panic!("{chosen:?}, expected {expected:?}"),
            }
        };
        // What runs wins over the record (an after-task failed: the new image stayed).
        check(
            &running(&["sha256:b"]),
            Some(recorded("sha256:a")),
            Ok(("sha256:b", "running")),
        );
        check(&running(&["sha256:b"]), None, Ok(("sha256:b", "running")));
        check(
            &running(&[]),
            Some(recorded("sha256:a")),
            Ok(("sha256:a", "recorded")),
        );
        check(
            &running(&["sha256:a", "sha256:b"]),
            Some(recorded("sha256:a")),
            Ok(("sha256:a", "recorded")),
        );
        check(&running(&[]), None, Err("has no successful deployment"));
        check(
            &running(&["sha256:a", "sha256:b"]),
            Some(recorded("sha256:c")),
            Err("run different images (sha256:a, sha256:b)"),
        );
    }
}
