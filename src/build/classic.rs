//! The engine's classic builder: one container and one commit per Dockerfile step,
//! its output as `Step N/M : ...` lines.
//!
//! It takes `cache_from` images only from the engine's own store, so they are pulled
//! first (a ref that cannot be pulled only costs the cache, never the build). It cannot
//! mount build secrets; `build` never sends it a request that has them.

use std::collections::VecDeque;

use bollard::Docker;
use bollard::query_parameters::{BuildImageOptions, CreateImageOptions};
use futures_util::StreamExt;

use super::{BuildError, BuildRequest, FAILURE_TAIL_LINES, engine_credentials, login_for};
use crate::config::ImageRepository;
use crate::host::describe_error;

/// Builds the request's context with the classic builder; the image id.
pub(super) async fn build(
    docker: &Docker,
    request: &BuildRequest,
    on_line: &mut (dyn FnMut(&str) + Send),
) -> Result<String, BuildError> {
    pull_cache_sources(docker, request, on_line).await;
    let options = BuildImageOptions {
        dockerfile: request.dockerfile.clone(),
        t: request.tags.first().cloned(),
        buildargs: Some(request.args.clone()),
        labels: Some(request.labels.clone()),
        target: request.target.clone().unwrap_or_default(),
        cachefrom: (!request.cache_from.is_empty()).then(|| request.cache_from.clone()),
        rm: true,
        forcerm: true,
        ..BuildImageOptions::default()
    };
    let context = request
        .context
        .try_clone()
        .map_err(|error| BuildError::Failed {
            step: None,
            message: format!("cannot read the context: {error}"),
            last_lines: Vec::new(),
        })?;
    let context = tokio::fs::File::from_std(context);
    let body = bollard::body_try_stream(tokio_util::io::ReaderStream::new(context));
    let mut stream = docker.build_image(options, engine_credentials(&request.logins), Some(body));

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
        if let Some(bollard::models::BuildInfoAux::Default(image)) = info.aux
            && let Some(id) = image.id
        {
            image_id = Some(id);
        }
    }
    match image_id {
        Some(id) => Ok(id),
        // Older engines do not always send the id as `aux`; ask for the first tag instead.
        None => super::id_of_first_tag(docker, &request.tags, current_step, recent.into()).await,
    }
}

/// Pulls each `cache_from` image into the engine, where the classic builder looks for
/// it; one that cannot be pulled is reported and skipped.
async fn pull_cache_sources(
    docker: &Docker,
    request: &BuildRequest,
    on_line: &mut (dyn FnMut(&str) + Send),
) {
    for reference in &request.cache_from {
        let registry = ImageRepository::of_reference(reference)
            .map(|repository| repository.registry().to_string())
            .unwrap_or_default();
        let options = CreateImageOptions {
            from_image: Some(reference.clone()),
            ..CreateImageOptions::default()
        };
        let credentials = login_for(&request.logins, &registry);
        let mut stream = docker.create_image(Some(options), None, credentials);
        let mut failure = None;
        while let Some(item) = stream.next().await {
            failure = match item {
                Ok(info) => info.error_detail.and_then(|detail| detail.message),
                Err(error) => Some(describe_error(&error)),
            };
            if failure.is_some() {
                break;
            }
        }
        match failure {
            None => on_line(&format!("cache_from {reference}: pulled")),
            Some(reason) => on_line(&format!(
                "cache_from {reference}: not pulled ({reason}); building without it"
            )),
        }
    }
}
