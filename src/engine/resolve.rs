//! Which image a deploy rolls out: the latest built, one the user names (a tag asked
//! of the registry), or, for a rollback, an earlier successful deployment's.

use super::Failure;
use crate::config::{Config, Pipeline};
use crate::deploy::{self, DeployImage};
use crate::registry;
use crate::run::{RunState, Stage};
use crate::store::Store;

/// The shortest digest or commit prefix `rollback --to` takes as naming one.
const MIN_PREFIX: usize = 4;

pub(super) fn describe_image(image: &DeployImage) -> String {
    match &image.commit {
        Some(commit) => format!(
            "image {} (commit {})",
            image.reference(),
            crate::source::prefix(commit, 12)
        ),
        None => format!("image {}", image.reference()),
    }
}

/// The image to deploy: the one given (its digest asked of the registry for a tag) or the latest built.
pub(super) async fn resolve_image(
    config: &Config,
    pipeline: &Pipeline,
    store: &Store,
    requested: Option<&str>,
) -> Result<DeployImage, Failure> {
    let fail = |message: String| Failure::new(Stage::Resolve, message);
    let repository = pipeline.image.repository.clone();
    let Some(requested) = requested else {
        let built = store
            .latest_built(&pipeline.name)
            .await
            .map_err(|error| fail(error.to_string()))?;
        return match built {
            Some(built) => Ok(DeployImage {
                repository,
                digest: built.digest,
                commit: built.commit,
            }),
            None => Err(fail(format!(
                "gantry has not built `{}` yet (hint: `gantry run {}`, or pass --image REF)",
                pipeline.name, pipeline.name
            ))),
        };
    };
    // Accept `repo@digest`, `repo:tag`, `@digest`/`sha256:...`, or a bare tag, all of the pipeline's repository.
    let (name, digest, tag) = split_image_reference(requested);
    if !name.is_empty() && name != repository.to_string() {
        return Err(fail(format!(
            "--image {requested} is not from the pipeline's repository {repository}"
        )));
    }
    let digest = match (digest, tag) {
        (Some(digest), _) => digest.to_string(),
        (None, Some(tag)) => {
            let credentials = registry::credentials(config, repository.registry())
                .await
                .map_err(|error| fail(error.to_string()))?;
            registry::manifest_digest(config, &repository, tag, credentials.as_ref())
                .await
                .map_err(|error| fail(error.to_string()))?
        }
        (None, None) => {
            return Err(fail(format!(
                "--image {requested} names neither a tag nor a digest"
            )));
        }
    };
    let commit = store
        .commit_of_digest(&pipeline.name, &digest)
        .await
        .map_err(|error| fail(error.to_string()))?;
    Ok(DeployImage {
        repository,
        digest,
        commit,
    })
}

/// Splits `name[:tag][@digest]`, a bare `sha256:...` digest, or a bare tag.
fn split_image_reference(text: &str) -> (&str, Option<&str>, Option<&str>) {
    if text.starts_with("sha256:") {
        return ("", Some(text), None);
    }
    let (rest, digest) = match text.split_once('@') {
        Some((rest, digest)) => (rest, Some(digest)),
        None => (text, None),
    };
    // A colon after the last slash starts the tag (a colon before it is a registry port).
    let last_slash = rest.rfind('/').map_or(0, |index| index + 1);
    match rest[last_slash..].rfind(':') {
        Some(colon) => {
            let colon = last_slash + colon;
            (&rest[..colon], digest, Some(&rest[colon + 1..]))
        }
        None if last_slash == 0 && digest.is_none() => ("", None, Some(rest)),
        None => (rest, digest, None),
    }
}

/// Finds the deployment `gantry rollback` returns to, and its number.
pub(super) async fn rollback_image(
    pipeline: &Pipeline,
    store: &Store,
    wanted: Option<&str>,
) -> Result<(DeployImage, i64), Failure> {
    let fail = |message: String| Failure::new(Stage::Resolve, message);
    let history = store
        .deployments(&pipeline.name, 1000)
        .await
        .map_err(|error| fail(error.to_string()))?;
    let succeeded: Vec<_> = history
        .iter()
        .filter(|deployment| deployment.state == RunState::Succeeded)
        .collect();
    let chosen = match wanted {
        Some(wanted) => {
            let wanted = wanted.trim_start_matches('#');
            named_deployment(&succeeded, wanted).ok_or_else(|| {
                fail(format!(
                    "no successful deployment of `{}` matches `{wanted}` (known: {})",
                    pipeline.name,
                    known_deployments(&succeeded)
                ))
            })?
        }
        None => {
            let current = succeeded.first().ok_or_else(|| {
                fail(format!(
                    "`{}` has no successful deployment to roll back from",
                    pipeline.name
                ))
            })?;
            previous_image(&succeeded).ok_or_else(|| {
                fail(format!(
                    "`{}` has no earlier image than {} to roll back to",
                    pipeline.name,
                    deploy::short_digest(&current.digest)
                ))
            })?
        }
    };
    Ok((
        DeployImage {
            repository: pipeline.image.repository.clone(),
            digest: chosen.digest.clone(),
            commit: chosen.commit.clone(),
        },
        chosen.number,
    ))
}

/// Where `gantry rollback` without `--to` returns: the newest successful deployment of
/// another image than the newest successful deployment's. `succeeded` is newest first.
pub(super) fn previous_image<'a>(
    succeeded: &[&'a crate::store::DeploymentRecord],
) -> Option<&'a crate::store::DeploymentRecord> {
    let current = succeeded.first()?;
    succeeded
        .iter()
        .find(|deployment| deployment.digest != current.digest)
        .copied()
}

/// The deployment `wanted` names: its number first; a digest or commit prefix only
/// when it is long enough to mean one (`1` is deployment #1, not a digest that starts
/// with 1).
fn named_deployment<'a>(
    succeeded: &[&'a crate::store::DeploymentRecord],
    wanted: &str,
) -> Option<&'a crate::store::DeploymentRecord> {
    let prefix = |text: &str| wanted.len() >= MIN_PREFIX && text.starts_with(wanted);
    succeeded
        .iter()
        .find(|deployment| deployment.number.to_string() == wanted)
        .or_else(|| {
            succeeded.iter().find(|deployment| {
                prefix(&deployment.digest)
                    || prefix(deployment.digest.trim_start_matches("sha256:"))
                    || deployment.commit.as_deref().is_some_and(prefix)
            })
        })
        .copied()
}

fn known_deployments(deployments: &[&crate::store::DeploymentRecord]) -> String {
    if deployments.is_empty() {
        return "none".to_string();
    }
    deployments
        .iter()
        .take(5)
        .map(|deployment| {
            format!(
                "#{} {}",
                deployment.number,
                deploy::short_digest(&deployment.digest)
            )
        })
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::{named_deployment, split_image_reference};
    use crate::run::{RunKind, RunState};
    use crate::store::DeploymentRecord;

    #[test]
    fn a_rollback_target_is_a_number_before_it_is_a_prefix() {
        let deployment = |number: i64, digest: &str, commit: &str| DeploymentRecord {
            id: number,
            pipeline: "p".into(),
            number,
            run: None,
            kind: RunKind::Deploy,
            image: format!("r/x@{digest}"),
            digest: digest.into(),
            commit: Some(commit.into()),
            state: RunState::Succeeded,
            message: None,
            started_at: 0,
            finished_at: None,
            instances: Vec::new(),
        };
        let newest = deployment(2, "sha256:1964aa", "abcdef01");
        let oldest = deployment(1, "sha256:faee9b", "12345678");
        let succeeded = [&newest, &oldest];
        let named = |wanted: &str| named_deployment(&succeeded, wanted).map(|found| found.number);
        assert_eq!(named("1"), Some(1), "not the digest that starts with 1");
        assert_eq!(named("2"), Some(2));
        assert_eq!(named("faee"), Some(1));
        assert_eq!(named("sha256:1964"), Some(2));
        assert_eq!(named("1234"), Some(1), "a commit prefix");
        assert_eq!(named("19"), None, "too short to be a prefix");
    }

    #[test]
    fn image_references_split_into_name_digest_and_tag() {
        let check = |text: &str, expected: (&str, Option<&str>, Option<&str>)| {
            assert_eq!(split_image_reference(text), expected, "{text}");
        };
        check(
            "127.0.0.1:5115/team/app:v1",
            ("127.0.0.1:5115/team/app", None, Some("v1")),
        );
        check(
            "127.0.0.1:5115/team/app@sha256:ab",
            ("127.0.0.1:5115/team/app", Some("sha256:ab"), None),
        );
        check(
            "127.0.0.1:5115/team/app:v1@sha256:ab",
            ("127.0.0.1:5115/team/app", Some("sha256:ab"), Some("v1")),
        );
        check(
            "127.0.0.1:5115/team/app",
            ("127.0.0.1:5115/team/app", None, None),
        );
        check("sha256:ab", ("", Some("sha256:ab"), None));
        check("v2", ("", None, Some("v2")));
    }
}
