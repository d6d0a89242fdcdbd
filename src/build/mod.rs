//! Building images: the build context and the build itself, through the Docker Engine API.
//!
//! The context is a tar made from a commit's files (`context`), filtered by Docker's
//! own `.dockerignore` rules (`dockerignore`), because the engine does not apply them
//! to an uploaded tar. The same tar goes to either of the engine's builders: BuildKit
//! (`buildkit`, with a session that serves build secrets and registry credentials,
//! its progress rendered by `progress`) or the classic one (`classic`). `auto`
//! picks BuildKit where the engine offers it and falls back to the classic builder
//! when the engine turns BuildKit down. Either way the output streams line by line to
//! the caller and, on failure, names the failing Dockerfile step with its last lines.
//! This module never pushes and never touches a container.

mod buildkit;
mod classic;
pub mod context;
pub mod dockerignore;
mod progress;

use std::collections::HashMap;

use bollard::Docker;
use bollard::auth::DockerCredentials;
use bollard::query_parameters::TagImageOptions;
use secrecy::{ExposeSecret, SecretString};

use crate::config::{BuildSecret, Builder};
use crate::host::{Connection, describe_error};

/// How many lines of build output a failure shows.
pub const FAILURE_TAIL_LINES: usize = 12;

/// The oldest API version whose `/build` takes BuildKit builds (Docker 18.09).
const BUILDKIT_MIN_API: (u32, u32) = (1, 39);

#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// The Dockerfile failed: `step` is the step that was running (`Step N/M : ...` from
    /// the classic builder, `[stage N/M] ...` from BuildKit).
    #[error("{}{message}", .step.as_ref().map(|step| format!("{step}: ")).unwrap_or_default())]
    Failed {
        step: Option<String>,
        message: String,
        last_lines: Vec<String>,
    },
    #[error("tagging {image} as {tag}: {message}")]
    Tag {
        image: String,
        tag: String,
        message: String,
    },
    /// BuildKit was asked for (by `builder: buildkit`, or by build secrets) and the
    /// engine does not offer it.
    #[error("the engine does not offer BuildKit{}: {reason}", if *.for_secrets { ", which build secrets need" } else { "" })]
    NoBuildKit { reason: String, for_secrets: bool },
    /// A build secret's value cannot be read; the message never holds the value.
    #[error("build secret `{id}`: {reason}")]
    Secret { id: String, reason: String },
}

/// What to build.
#[derive(Debug)]
pub struct BuildRequest {
    /// The context as an uncompressed tar, read from its start and streamed to the engine.
    pub context: std::fs::File,
    /// The Dockerfile's path inside the context.
    pub dockerfile: String,
    /// Full references (`repository:tag`); the first is given to the build, the rest are added after.
    pub tags: Vec<String>,
    pub args: HashMap<String, String>,
    pub target: Option<String>,
    pub labels: HashMap<String, String>,
    pub builder: Builder,
    /// Image references whose layers the build may reuse (pulled first for the classic builder).
    pub cache_from: Vec<String>,
    pub secrets: Vec<BuildSecret>,
    /// Credentials for the registries the build reads from (`cache_from`, base images).
    pub logins: Vec<RegistryLogin>,
}

/// A username and password for one registry host, for the engine to pull with.
#[derive(Debug, Clone)]
pub struct RegistryLogin {
    pub registry: String,
    pub username: String,
    pub password: SecretString,
}

/// The builder that ran a build.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum BuilderKind {
    BuildKit,
    Classic,
}

impl BuilderKind {
    pub fn as_str(self) -> &'static str {
        match self {
            BuilderKind::BuildKit => "buildkit",
            BuilderKind::Classic => "classic",
        }
    }
}

/// The image a build made.
#[derive(Debug, Clone)]
pub struct BuiltImage {
    /// The local image id (`sha256:...`).
    pub id: String,
    pub builder: BuilderKind,
}

/// Whether an engine offers BuildKit through `/build`: a Linux engine (Windows engines
/// have no BuildKit) that speaks API 1.39 or later. `Err` says why not.
pub fn offers_buildkit(os: &str, api_version: &str) -> Result<(), String> {
    if !os.is_empty() && !os.eq_ignore_ascii_case("linux") {
        return Err(format!("the engine runs on {os}"));
    }
    let parsed = api_version
        .split_once('.')
        .and_then(|(major, minor)| Some((major.parse::<u32>().ok()?, minor.parse::<u32>().ok()?)));
    match parsed {
        Some(version) if version >= BUILDKIT_MIN_API => Ok(()),
        _ => Err(format!(
            "its API version is {api_version}; BuildKit builds need {}.{} or later",
            BUILDKIT_MIN_API.0, BUILDKIT_MIN_API.1
        )),
    }
}

/// The builder to start with: `Err` when BuildKit is required and not offered.
fn choose(
    wanted: Builder,
    needs_buildkit: bool,
    offered: Result<(), String>,
) -> Result<BuilderKind, BuildError> {
    match (wanted, offered) {
        (Builder::Classic, _) => Ok(BuilderKind::Classic),
        (_, Ok(())) => Ok(BuilderKind::BuildKit),
        (Builder::Auto, Err(_)) if !needs_buildkit => Ok(BuilderKind::Classic),
        (_, Err(reason)) => Err(BuildError::NoBuildKit {
            reason,
            for_secrets: needs_buildkit,
        }),
    }
}

/// Builds the image on `connection`'s engine and tags it, calling `on_line` with each
/// line of output.
pub async fn build_image(
    connection: &Connection,
    request: BuildRequest,
    on_line: &mut (dyn FnMut(&str) + Send),
) -> Result<BuiltImage, BuildError> {
    let docker = &connection.docker;
    let needs_buildkit = !request.secrets.is_empty();
    let offered = offers_buildkit(&connection.os, &connection.api_version);
    let mut builder = choose(request.builder, needs_buildkit, offered)?;
    on_line(&format!("builder: {}", builder.as_str()));
    let id = match builder {
        BuilderKind::Classic => classic::build(docker, &request, on_line).await?,
        BuilderKind::BuildKit => match buildkit::build(docker, &request, on_line).await {
            Ok(id) => id,
            Err(buildkit::Failure::Build(error)) => return Err(error),
            Err(buildkit::Failure::Unavailable(reason)) => {
                if request.builder != Builder::Auto || needs_buildkit {
                    return Err(BuildError::NoBuildKit {
                        reason,
                        for_secrets: needs_buildkit,
                    });
                }
                on_line(&format!(
                    "the engine turned BuildKit down ({reason}); building with the classic builder"
                ));
                // Both builders read the tar through handles that share this offset.
                std::io::Seek::rewind(&mut &request.context).map_err(|error| {
                    BuildError::Failed {
                        step: None,
                        message: format!("cannot read the context again: {error}"),
                        last_lines: Vec::new(),
                    }
                })?;
                builder = BuilderKind::Classic;
                on_line("builder: classic");
                classic::build(docker, &request, on_line).await?
            }
        },
    };
    tag_the_rest(docker, &id, &request.tags).await?;
    Ok(BuiltImage { id, builder })
}

/// The image id of a build whose output did not carry it: the engine's answer for the
/// first tag.
async fn id_of_first_tag(
    docker: &Docker,
    tags: &[String],
    step: Option<String>,
    last_lines: Vec<String>,
) -> Result<String, BuildError> {
    let failed = |message: String| BuildError::Failed {
        step,
        message,
        last_lines,
    };
    let Some(tag) = tags.first() else {
        return Err(failed(
            "the engine finished without producing an image".to_string(),
        ));
    };
    match docker.inspect_image(tag).await {
        Ok(image) => image.id.ok_or_else(|| {
            failed(format!(
                "the engine finished, but its answer for {tag} has no image id"
            ))
        }),
        Err(error) => Err(failed(format!(
            "the engine finished without producing an image: {tag} cannot be inspected: {}",
            describe_error(&error)
        ))),
    }
}

/// The logins as the engine takes them, keyed by registry host (`None` when there are none).
fn engine_credentials(logins: &[RegistryLogin]) -> Option<HashMap<String, DockerCredentials>> {
    (!logins.is_empty()).then(|| {
        logins
            .iter()
            .map(|login| (login.registry.clone(), docker_credentials(login)))
            .collect()
    })
}

/// The login for one registry host, as the engine takes it.
fn login_for(logins: &[RegistryLogin], registry: &str) -> Option<DockerCredentials> {
    logins
        .iter()
        .find(|login| login.registry == registry)
        .map(docker_credentials)
}

fn docker_credentials(login: &RegistryLogin) -> DockerCredentials {
    DockerCredentials {
        username: Some(login.username.clone()),
        password: Some(login.password.expose_secret().to_string()),
        serveraddress: Some(login.registry.clone()),
        ..DockerCredentials::default()
    }
}

/// Adds every tag after the first (which the build itself gave) to the image.
async fn tag_the_rest(docker: &Docker, id: &str, tags: &[String]) -> Result<(), BuildError> {
    for reference in tags.iter().skip(1) {
        let (repository, tag) = split_reference(reference);
        let options = TagImageOptions {
            repo: Some(repository.to_string()),
            tag: Some(tag.to_string()),
        };
        docker
            .tag_image(id, Some(options))
            .await
            .map_err(|error| BuildError::Tag {
                image: id.to_string(),
                tag: reference.clone(),
                message: describe_error(&error),
            })?;
    }
    Ok(())
}

/// The Dockerfile with `labels` appended as one `LABEL` instruction.
///
/// The classic builder turns the `labels` of a build request into one `LABEL` step per
/// label, each a container and a commit; one instruction is one step. The labels land
/// on the last stage, so this is only for builds without a `target`. `None` when
/// appending could change the Dockerfile's meaning: a parser directive (it may change
/// the escape character), a last line continued with `\`, or a value with a newline.
pub fn with_label_instruction(
    dockerfile: &[u8],
    labels: &std::collections::BTreeMap<String, String>,
) -> Option<Vec<u8>> {
    let text = std::str::from_utf8(dockerfile).ok()?;
    let has_directive = text
        .lines()
        .take_while(|line| line.trim_start().starts_with('#'))
        .any(|line| {
            let comment = line.trim_start().trim_start_matches('#').trim_start();
            comment
                .split_once('=')
                .is_some_and(|(name, _)| !name.trim().contains(' ') && !name.trim().is_empty())
        });
    let continued = text
        .lines()
        .rev()
        .find(|line| !line.trim().is_empty())
        .is_some_and(|line| line.trim_end().ends_with('\\'));
    if has_directive || continued || labels.is_empty() {
        return None;
    }
    let quote = |text: &str| -> Option<String> {
        if text.contains(['\n', '\r']) {
            return None;
        }
        let escaped = text
            .replace('\\', "\\\\")
            .replace('"', "\\\"")
            .replace('$', "\\$");
        Some(format!("\"{escaped}\""))
    };
    let mut instruction = String::from("LABEL");
    for (key, value) in labels {
        instruction.push_str(&format!(" {}={}", quote(key)?, quote(value)?));
    }
    let mut patched = dockerfile.to_vec();
    if !patched.ends_with(b"\n") {
        patched.push(b'\n');
    }
    patched.extend_from_slice(instruction.as_bytes());
    patched.push(b'\n');
    Some(patched)
}

/// Splits `repository:tag` at the last colon that is not part of a registry port.
pub fn split_reference(reference: &str) -> (&str, &str) {
    match reference.rsplit_once(':') {
        Some((repository, tag)) if !tag.contains('/') => (repository, tag),
        _ => (reference, "latest"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auto_takes_buildkit_where_the_engine_offers_it() {
        assert_eq!(offers_buildkit("linux", "1.41"), Ok(()));
        assert_eq!(offers_buildkit("linux", "1.39"), Ok(()));
        assert_eq!(offers_buildkit("", "1.45"), Ok(()));
        assert_eq!(
            offers_buildkit("linux", "1.38"),
            Err("its API version is 1.38; BuildKit builds need 1.39 or later".to_string())
        );
        assert_eq!(
            offers_buildkit("windows", "1.41"),
            Err("the engine runs on windows".to_string())
        );
        let no = || Err("the engine runs on windows".to_string());
        let chosen = |wanted, secrets, offered| {
            choose(wanted, secrets, offered).map_err(|error| error.to_string())
        };
        assert_eq!(
            chosen(Builder::Auto, false, Ok(())),
            Ok(BuilderKind::BuildKit)
        );
        assert_eq!(chosen(Builder::Auto, false, no()), Ok(BuilderKind::Classic));
        assert_eq!(
            chosen(Builder::BuildKit, false, Ok(())),
            Ok(BuilderKind::BuildKit)
        );
        assert_eq!(
            chosen(Builder::Classic, false, Ok(())),
            Ok(BuilderKind::Classic)
        );
        assert_eq!(
            chosen(Builder::BuildKit, false, no()),
            Err("the engine does not offer BuildKit: the engine runs on windows".to_string())
        );
        assert_eq!(
            chosen(Builder::Auto, true, no()),
            Err(
                "the engine does not offer BuildKit, which build secrets need: the engine runs on windows"
                    .to_string()
            )
        );
    }

    fn check_labels(dockerfile: &str, labels: &[(&str, &str)], expected: Option<&str>) {
        let labels = labels
            .iter()
            .map(|(key, value)| (key.to_string(), value.to_string()))
            .collect();
        let patched = with_label_instruction(dockerfile.as_bytes(), &labels)
            .map(|bytes| String::from_utf8(bytes).unwrap());
        assert_eq!(patched.as_deref(), expected, "{dockerfile:?}");
    }

    #[test]
    fn labels_become_one_instruction_unless_that_could_change_the_dockerfile() {
        check_labels(
            "FROM a\nCMD x",
            &[("b.key", "v 1"), ("a.key", "say \"hi\" $HOME \\o/")],
            Some(
                "FROM a\nCMD x\nLABEL \"a.key\"=\"say \\\"hi\\\" \\$HOME \\\\o/\" \"b.key\"=\"v 1\"\n",
            ),
        );
        check_labels(
            "FROM a\n",
            &[("k", "v")],
            Some("FROM a\nLABEL \"k\"=\"v\"\n"),
        );
        // A comment is not a directive; `# escape=` and `# syntax=` are.
        check_labels(
            "# build me\nFROM a\n",
            &[("k", "v")],
            Some("# build me\nFROM a\nLABEL \"k\"=\"v\"\n"),
        );
        check_labels("# escape=`\nFROM a\n", &[("k", "v")], None);
        check_labels(
            "# syntax=docker/dockerfile:1\nFROM a\n",
            &[("k", "v")],
            None,
        );
        check_labels("FROM a\nRUN true \\\n\n", &[("k", "v")], None);
        check_labels("FROM a\n", &[("k", "two\nlines")], None);
        check_labels("FROM a\n", &[], None);
    }

    #[test]
    fn references_split_at_the_tag() {
        assert_eq!(
            split_reference("127.0.0.1:5000/a/b:1.0"),
            ("127.0.0.1:5000/a/b", "1.0")
        );
        assert_eq!(
            split_reference("127.0.0.1:5000/a/b"),
            ("127.0.0.1:5000/a/b", "latest")
        );
        assert_eq!(split_reference("a/b:latest"), ("a/b", "latest"));
    }
}
