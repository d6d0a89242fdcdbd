//! Which images a deploy rolls out: the latest built, one the user names (a tag asked
//! of the registry), or, for a rollback, an earlier successful deployment's.

use std::collections::BTreeMap;

use super::Failure;
use crate::config::{Config, Pipeline};
use crate::deploy::{self, DeployImage, Release};
use crate::registry;
use crate::run::{RunState, Stage};
use crate::store::{BuiltImage, DeploymentRecord, Store};

/// The shortest digest or commit prefix `rollback --to` takes as naming one.
const MIN_PREFIX: usize = 4;

/// `image REF (commit C)`, or for several `images web=REF, worker=REF (commit C)`.
pub(super) fn describe_release(release: &Release) -> String {
    let images = release.images();
    let listed = if images.len() == 1 {
        format!("image {}", release.first().reference())
    } else {
        let each: Vec<String> = images
            .iter()
            .map(|(name, image)| format!("{name}={}", image.reference()))
            .collect();
        format!("images {}", each.join(", "))
    };
    match release.commit() {
        Some(commit) => format!("{listed} (commit {})", crate::source::prefix(commit, 12)),
        None => listed,
    }
}

/// The release stored as `images` (name → `repository@digest`), each image in its
/// repository as the pipeline names it now. A record from before several images were
/// kept has only `digest`: it is the release of a one-image pipeline.
pub(super) fn stored_release(
    pipeline: &Pipeline,
    images: &BTreeMap<String, String>,
    digest: &str,
    commit: Option<&str>,
    what: &str,
) -> Result<Release, String> {
    let mut chosen = BTreeMap::new();
    for (name, image) in &pipeline.images {
        let digest = match images.get(name) {
            Some(reference) => reference
                .rsplit_once('@')
                .map_or(reference.as_str(), |(_, digest)| digest),
            None if images.is_empty() && pipeline.images.len() == 1 => digest,
            None => {
                return Err(format!(
                    "{what} has no image `{name}` (the pipeline's images changed since; hint: `gantry run {}`)",
                    pipeline.name
                ));
            }
        };
        chosen.insert(
            name.clone(),
            DeployImage {
                repository: image.repository.clone(),
                digest: digest.to_string(),
                commit: commit.map(str::to_string),
            },
        );
    }
    Release::new(pipeline, chosen)
}

/// The release a build run pushed.
fn built_release(pipeline: &Pipeline, built: &BuiltImage) -> Result<Release, String> {
    let what = format!("the latest build (run {})", built.run);
    stored_release(
        pipeline,
        &built.images,
        &built.digest,
        built.commit.as_deref(),
        &what,
    )
}

/// The release a deployment rolled out.
pub(super) fn deployed_release(
    pipeline: &Pipeline,
    deployment: &DeploymentRecord,
) -> Result<Release, String> {
    let what = format!("deployment #{}", deployment.number);
    stored_release(
        pipeline,
        &deployment.images,
        &deployment.digest,
        deployment.commit.as_deref(),
        &what,
    )
}

/// The images to deploy: the latest built, with the one `requested` names (its digest
/// asked of the registry for a tag) in place of its image's. With several images a
/// request names its image: `web=REF`.
pub(super) async fn resolve_release(
    config: &Config,
    pipeline: &Pipeline,
    store: &Store,
    requested: Option<&str>,
) -> Result<Release, Failure> {
    let fail = |message: String| Failure::new(Stage::Resolve, message);
    let built = store
        .latest_built(&pipeline.name)
        .await
        .map_err(|error| fail(error.to_string()))?;
    let Some(requested) = requested else {
        let built = built.ok_or_else(|| {
            fail(format!(
                "gantry has not built `{}` yet (hint: `gantry run {}`, or pass --image REF)",
                pipeline.name, pipeline.name
            ))
        })?;
        return built_release(pipeline, &built).map_err(fail);
    };
    let (name, reference) = match requested.split_once('=') {
        Some((name, reference)) => (name, reference),
        None if pipeline.images.len() == 1 => (
            pipeline.images.keys().next().map_or("", String::as_str),
            requested,
        ),
        None => {
            return Err(fail(format!(
                "`{}` builds several images ({}); name the one --image gives: --image NAME=REF",
                pipeline.name,
                pipeline
                    .images
                    .keys()
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
    };
    let image = pipeline.images.get(name).ok_or_else(|| {
        fail(format!(
            "--image {requested}: `{}` builds no image named `{name}` (its images: {})",
            pipeline.name,
            pipeline
                .images
                .keys()
                .cloned()
                .collect::<Vec<_>>()
                .join(", ")
        ))
    })?;
    let given = resolve_reference(config, pipeline, store, image, reference)
        .await
        .map_err(fail)?;
    let mut images = BTreeMap::from([(name.to_string(), given)]);
    if pipeline.images.len() > 1 {
        // The other images stay as the latest build made them.
        let built = built.ok_or_else(|| {
            fail(format!(
                "gantry has not built `{}`'s other images yet (hint: `gantry run {}`)",
                pipeline.name, pipeline.name
            ))
        })?;
        let latest = built_release(pipeline, &built).map_err(fail)?;
        for (other, image) in latest.images() {
            images.entry(other.clone()).or_insert_with(|| image.clone());
        }
    }
    Release::new(pipeline, images).map_err(fail)
}

/// One image's digest for `text`: `repo@digest`, `repo:tag`, `@digest`/`sha256:...`, or
/// a bare tag, all of the image's repository.
async fn resolve_reference(
    config: &Config,
    pipeline: &Pipeline,
    store: &Store,
    image: &crate::config::Image,
    text: &str,
) -> Result<DeployImage, String> {
    let repository = image.repository.clone();
    let (name, digest, tag) = split_image_reference(text);
    if !name.is_empty() && name != repository.to_string() {
        return Err(match pipeline.images.len() {
            1 => format!("--image {text} is not from the pipeline's repository {repository}"),
            _ => format!(
                "--image {text} is not from image `{}`'s repository {repository}",
                image.name
            ),
        });
    }
    let digest = match (digest, tag) {
        (Some(digest), _) => digest.to_string(),
        (None, Some(tag)) => {
            let credentials = registry::credentials(config, repository.registry())
                .await
                .map_err(|error| error.to_string())?;
            registry::manifest_digest(config, &repository, tag, credentials.as_ref())
                .await
                .map_err(|error| error.to_string())?
        }
        (None, None) => return Err(format!("--image {text} names neither a tag nor a digest")),
    };
    let commit = store
        .commit_of_digest(&pipeline.name, &digest)
        .await
        .map_err(|error| error.to_string())?;
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

/// Finds the deployment `gantry rollback` returns to, its release and its number.
pub(super) async fn rollback_release(
    pipeline: &Pipeline,
    store: &Store,
    wanted: Option<&str>,
) -> Result<(Release, i64), Failure> {
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
            previous_release(&succeeded).ok_or_else(|| {
                fail(format!(
                    "`{}` has no earlier image than {} to roll back to",
                    pipeline.name,
                    deploy::short_digest(&current.digest)
                ))
            })?
        }
    };
    let release = deployed_release(pipeline, chosen).map_err(fail)?;
    Ok((release, chosen.number))
}

/// What a deployment rolled out: every image's digest, by image name.
pub(super) fn rolled_out(deployment: &DeploymentRecord) -> BTreeMap<&str, &str> {
    if deployment.images.is_empty() {
        return BTreeMap::from([("", deployment.digest.as_str())]);
    }
    deployment
        .images
        .iter()
        .map(|(name, reference)| {
            let digest = reference
                .rsplit_once('@')
                .map_or(reference.as_str(), |(_, digest)| digest);
            (name.as_str(), digest)
        })
        .collect()
}

/// Where `gantry rollback` without `--to` returns: the newest successful deployment
/// that rolled out other images than the newest successful deployment. `succeeded`
/// is newest first.
pub(super) fn previous_release<'a>(
    succeeded: &[&'a DeploymentRecord],
) -> Option<&'a DeploymentRecord> {
    let current = rolled_out(succeeded.first()?);
    succeeded
        .iter()
        .find(|deployment| rolled_out(deployment) != current)
        .copied()
}

/// The deployment `wanted` names: its number first; a digest (of any of its images) or
/// commit prefix only when it is long enough to mean one (`1` is deployment #1, not a
/// digest that starts with 1).
fn named_deployment<'a>(
    succeeded: &[&'a DeploymentRecord],
    wanted: &str,
) -> Option<&'a DeploymentRecord> {
    let prefix = |text: &str| wanted.len() >= MIN_PREFIX && text.starts_with(wanted);
    succeeded
        .iter()
        .find(|deployment| deployment.number.to_string() == wanted)
        .or_else(|| {
            succeeded.iter().find(|deployment| {
                rolled_out(deployment)
                    .values()
                    .any(|digest| prefix(digest) || prefix(digest.trim_start_matches("sha256:")))
                    || deployment.commit.as_deref().is_some_and(prefix)
            })
        })
        .copied()
}

fn known_deployments(deployments: &[&DeploymentRecord]) -> String {
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
            images: Default::default(),
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
