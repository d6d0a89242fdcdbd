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
#[derive(Debug, Clone)]
pub struct BuildRequest {
    /// The context as an uncompressed tar.
    pub context: Vec<u8>,
    /// The Dockerfile's path inside the context.
    pub dockerfile: String,
    /// Full references (`repository:tag`); the first is given to the build, the rest are added after.
    pub tags: Vec<String>,
    pub args: HashMap<String, String>,
    pub target: Option<String>,
    pub labels: HashMap<String, String>,
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
    let body = bollard::body_full(bytes::Bytes::from(request.context));
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
    use super::split_reference;

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
