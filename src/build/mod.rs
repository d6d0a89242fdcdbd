//! Building images: the build context and the build itself, through the Docker Engine API.
//!
//! The context is a tar made from a commit's files (`context`), filtered by Docker's
//! own `.dockerignore` rules (`dockerignore`), because the engine does not apply them
//! to an uploaded tar. The build streams the engine's output line by line to the
//! caller and, on failure, names the failing Dockerfile step with its last lines.
//! This module never pushes and never touches a container.

pub mod context;
pub mod dockerignore;

use std::collections::{HashMap, VecDeque};

use bollard::Docker;
use bollard::query_parameters::{BuildImageOptions, TagImageOptions};
use futures_util::StreamExt;

use crate::host::describe_error;

/// How many lines of build output a failure shows.
pub const FAILURE_TAIL_LINES: usize = 12;

#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// The Dockerfile failed: `step` is the `Step N/M : INSTRUCTION` line that was running.
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

/// The image a build made.
#[derive(Debug, Clone)]
pub struct BuiltImage {
    /// The local image id (`sha256:...`).
    pub id: String,
}

/// Builds the image and tags it, calling `on_line` with each line of output.
pub async fn build_image(
    docker: &Docker,
    request: BuildRequest,
    on_line: &mut (dyn FnMut(&str) + Send),
) -> Result<BuiltImage, BuildError> {
    let options = BuildImageOptions {
        dockerfile: request.dockerfile.clone(),
        t: request.tags.first().cloned(),
        buildargs: Some(request.args.clone()),
        labels: Some(request.labels.clone()),
        target: request.target.clone().unwrap_or_default(),
        rm: true,
        forcerm: true,
        ..BuildImageOptions::default()
    };
    let context = tokio::fs::File::from_std(request.context);
    let body = bollard::body_try_stream(tokio_util::io::ReaderStream::new(context));
    let mut stream = docker.build_image(options, None, Some(body));

    let mut current_step: Option<String> = None;
    let mut recent: VecDeque<String> = VecDeque::with_capacity(FAILURE_TAIL_LINES);
    let mut image_id: Option<String> = None;
    let remember = |line: &str, recent: &mut VecDeque<String>| {
        if recent.len() == FAILURE_TAIL_LINES {
            recent.pop_front();
        }
        recent.push_back(line.to_string());
    };

    while let Some(item) = stream.next().await {
        let info = match item {
            Ok(info) => info,
            Err(error) => {
                return Err(BuildError::Failed {
                    step: current_step,
                    message: describe_error(&error),
                    last_lines: recent.into(),
                });
            }
        };
        if let Some(text) = info.stream.as_deref() {
            for line in text.lines().filter(|line| !line.trim().is_empty()) {
                if line.starts_with("Step ") {
                    current_step = Some(line.trim().to_string());
                    // A new step starts a new tail: the failure shows this step's lines.
                    recent.clear();
                }
                remember(line, &mut recent);
                on_line(line);
            }
        }
        if let Some(status) = info.status.as_deref() {
            on_line(status);
        }
        if let Some(detail) = info.error_detail {
            return Err(BuildError::Failed {
                step: current_step,
                message: detail
                    .message
                    .unwrap_or_else(|| "the build failed".to_string()),
                last_lines: recent.into(),
            });
        }
        if let Some(aux) = info.aux
            && let Some(id) = aux.id
        {
            image_id = Some(id);
        }
    }

    let id = match image_id {
        Some(id) => id,
        // Older engines do not always send the id as `aux`; ask for the first tag instead.
        None => match request.tags.first() {
            Some(tag) => docker
                .inspect_image(tag)
                .await
                .ok()
                .and_then(|image| image.id)
                .ok_or_else(|| BuildError::Failed {
                    step: current_step.clone(),
                    message: "the engine finished without producing an image".to_string(),
                    last_lines: recent.iter().cloned().collect(),
                })?,
            None => {
                return Err(BuildError::Failed {
                    step: current_step,
                    message: "the engine finished without producing an image".to_string(),
                    last_lines: recent.into(),
                });
            }
        },
    };

    for reference in request.tags.iter().skip(1) {
        let (repository, tag) = split_reference(reference);
        let options = TagImageOptions {
            repo: Some(repository.to_string()),
            tag: Some(tag.to_string()),
        };
        docker
            .tag_image(&id, Some(options))
            .await
            .map_err(|error| BuildError::Tag {
                image: id.clone(),
                tag: reference.clone(),
                message: describe_error(&error),
            })?;
    }
    Ok(BuiltImage { id })
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
    use super::{split_reference, with_label_instruction};

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
