//! Registries: credentials, pushing tags through the engine, confirming with the
//! registry itself which digest it now serves for each tag, and pulls (through a
//! registry's mirror, `registry::mirror`, when the caller asks).
//!
//! Credentials come from gantry.yaml first, then from the Docker client's config
//! (`registry::credentials`). The engine does the push; the registry's HTTP API is
//! asked afterwards, so the digest gantry reports is the one a host will pull. Secrets
//! are kept in `SecretString` and never printed.

mod challenge;
mod credentials;
mod mirror;

use std::path::PathBuf;
use std::time::Duration;

use bollard::Docker;
use bollard::auth::DockerCredentials;
use bollard::query_parameters::{CreateImageOptions, PushImageOptions};
use futures_util::StreamExt;
use secrecy::ExposeSecret;
use serde::Serialize;

use crate::config::{Config, ImageRepository};
use crate::host::describe_error;

pub use credentials::{Credentials, credentials};
pub use mirror::{Mirrored, Mirrors};

/// How long a manifest request to a registry may take.
pub const REGISTRY_TIMEOUT: Duration = Duration::from_secs(15);

/// The manifest types a registry may answer with, newest first.
const MANIFEST_TYPES: &str = "application/vnd.oci.image.index.v1+json, \
     application/vnd.docker.distribution.manifest.list.v2+json, \
     application/vnd.oci.image.manifest.v1+json, \
     application/vnd.docker.distribution.manifest.v2+json";

/// Why a registry said no, for the user's next step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RefusalKind {
    /// Missing or wrong credentials.
    Auth,
    /// Nothing answered.
    Unreachable,
    Other,
}

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("push of {reference} failed: {reason}{}", hint(*.kind))]
    Push {
        reference: String,
        kind: RefusalKind,
        reason: String,
    },
    #[error("registry {registry}: {reason}{}", hint(*.kind))]
    Manifest {
        registry: String,
        kind: RefusalKind,
        reason: String,
    },
    #[error("{reference}: the registry serves {served}, but the push reported {pushed}")]
    DigestMismatch {
        reference: String,
        pushed: String,
        served: String,
    },
    #[error("pull of {reference} failed: {reason}{}", hint(*.kind))]
    Pull {
        reference: String,
        kind: RefusalKind,
        reason: String,
    },
    #[error("cannot read Docker credentials from {path}: {reason}")]
    DockerConfig { path: PathBuf, reason: String },
    #[error("registry {registry}: credential helper `{helper}` (from {path}) {reason}")]
    CredentialHelper {
        registry: String,
        /// The program, `docker-credential-NAME`.
        helper: String,
        /// The Docker client config that names it.
        path: PathBuf,
        reason: String,
    },
}

fn hint(kind: RefusalKind) -> &'static str {
    match kind {
        RefusalKind::Auth => {
            " (hint: set `username` and `password` for this registry in gantry.yaml, `docker login` to it, or name a credential helper for it in the Docker config: `credHelpers` or `credsStore`)"
        }
        RefusalKind::Unreachable => {
            " (hint: is the registry running and reachable from that Docker host?)"
        }
        RefusalKind::Other => "",
    }
}

/// Pushes one tag through the engine; returns the digest the engine reported.
pub async fn push(
    docker: &Docker,
    repository: &ImageRepository,
    tag: &str,
    credentials: Option<&Credentials>,
    on_line: &mut (dyn FnMut(&str) + Send),
) -> Result<Option<String>, RegistryError> {
    let reference = repository.with_tag(tag);
    let docker_credentials = credentials.map(|credentials| for_engine(credentials, repository));
    let options = PushImageOptions {
        tag: Some(tag.to_string()),
        platform: None,
    };
    let mut stream = docker.push_image(&repository.to_string(), Some(options), docker_credentials);
    let mut digest = None;
    while let Some(item) = stream.next().await {
        let info = item.map_err(|error| {
            let reason = describe_error(&error);
            RegistryError::Push {
                reference: reference.clone(),
                kind: classify(&reason),
                reason,
            }
        })?;
        if let Some(detail) = info.error_detail {
            let reason = detail
                .message
                .unwrap_or_else(|| "the push failed".to_string());
            return Err(RegistryError::Push {
                reference,
                kind: classify(&reason),
                reason,
            });
        }
        if let Some(status) = info.status {
            // The last status line is `TAG: digest: sha256:... size: N`.
            if let Some(rest) = status.split("digest: ").nth(1) {
                digest = rest.split_whitespace().next().map(str::to_string);
            }
            // Byte-progress updates repeat for every chunk; the layer's other states say enough.
            if status != "Pushing" {
                on_line(&status);
            }
        }
    }
    Ok(digest)
}

/// The credentials as the engine takes them (its `X-Registry-Auth` header) for
/// `repository`'s registry. The engine trades an identity token at the registry's token
/// service itself.
pub(crate) fn for_engine(
    credentials: &Credentials,
    repository: &ImageRepository,
) -> DockerCredentials {
    let serveraddress = Some(repository.registry().to_string());
    match credentials {
        Credentials::Password { username, password } => DockerCredentials {
            username: Some(username.clone()),
            password: Some(password.expose_secret().to_string()),
            serveraddress,
            ..DockerCredentials::default()
        },
        Credentials::IdentityToken { token } => DockerCredentials {
            identitytoken: Some(token.expose_secret().to_string()),
            serveraddress,
            ..DockerCredentials::default()
        },
    }
}

/// Pulls an image by its full reference (tag or digest) through the engine.
pub async fn pull_reference(
    docker: &Docker,
    reference: &str,
    repository: &ImageRepository,
    credentials: Option<&Credentials>,
) -> Result<(), RegistryError> {
    let reference = reference.to_string();
    let docker_credentials = credentials.map(|credentials| for_engine(credentials, repository));
    let options = CreateImageOptions {
        from_image: Some(reference.clone()),
        ..CreateImageOptions::default()
    };
    let mut stream = docker.create_image(Some(options), None, docker_credentials);
    while let Some(item) = stream.next().await {
        let failure = match item {
            Ok(info) => info.error_detail.map(|detail| {
                detail
                    .message
                    .unwrap_or_else(|| "the pull failed".to_string())
            }),
            Err(error) => Some(describe_error(&error)),
        };
        if let Some(reason) = failure {
            return Err(RegistryError::Pull {
                reference,
                kind: classify(&reason),
                reason,
            });
        }
    }
    Ok(())
}

/// Sorts an engine or registry message into the refusals a user acts on differently.
fn classify(reason: &str) -> RefusalKind {
    let lower = reason.to_ascii_lowercase();
    if lower.contains("unauthorized")
        || lower.contains("authentication required")
        || lower.contains("no basic auth credentials")
        || lower.contains("denied")
    {
        RefusalKind::Auth
    } else if lower.contains("connection refused")
        || lower.contains("no such host")
        || lower.contains("i/o timeout")
        || lower.contains("dial tcp")
        || lower.contains("timed out")
    {
        RefusalKind::Unreachable
    } else {
        RefusalKind::Other
    }
}

/// Asks the registry which digest it serves for `repository:tag`.
pub async fn manifest_digest(
    config: &Config,
    repository: &ImageRepository,
    tag: &str,
    credentials: Option<&Credentials>,
) -> Result<String, RegistryError> {
    let registry = repository.registry();
    let scheme = if config.registry(registry).insecure {
        "http"
    } else {
        "https"
    };
    // Docker Hub's API lives on another host than its name.
    let api_host = if registry == crate::config::DEFAULT_REGISTRY {
        "registry-1.docker.io"
    } else {
        registry
    };
    let url = format!(
        "{scheme}://{api_host}/v2/{}/manifests/{tag}",
        repository.path()
    );
    let failure = |kind: RefusalKind, reason: String| RegistryError::Manifest {
        registry: registry.to_string(),
        kind,
        reason,
    };
    let client = crate::http::client().map_err(|reason| failure(RefusalKind::Other, reason))?;
    let request = |authorization: Option<String>| {
        let mut builder = client
            .head(&url)
            .timeout(REGISTRY_TIMEOUT)
            .header("Accept", MANIFEST_TYPES);
        if let Some(value) = authorization {
            builder = builder.header("Authorization", value);
        }
        builder.send()
    };
    let unreachable =
        |error: reqwest::Error| failure(RefusalKind::Unreachable, error_chain(&error));

    let mut response = request(None).await.map_err(unreachable)?;
    if response.status() == reqwest::StatusCode::UNAUTHORIZED {
        let challenge = response
            .headers()
            .get("WWW-Authenticate")
            .and_then(|value| value.to_str().ok())
            .unwrap_or_default()
            .to_string();
        let Some(credentials) = credentials else {
            return Err(failure(
                RefusalKind::Auth,
                "the registry wants credentials and none are configured".to_string(),
            ));
        };
        let authorization = challenge::authorization(client, &challenge, credentials)
            .await
            .map_err(|reason| failure(RefusalKind::Auth, reason))?;
        response = request(Some(authorization)).await.map_err(unreachable)?;
    }
    let status = response.status();
    if !status.is_success() {
        let kind = if status == reqwest::StatusCode::UNAUTHORIZED
            || status == reqwest::StatusCode::FORBIDDEN
        {
            RefusalKind::Auth
        } else {
            RefusalKind::Other
        };
        return Err(failure(
            kind,
            format!("manifest {}:{tag} answered {status}", repository.path()),
        ));
    }
    response
        .headers()
        .get("Docker-Content-Digest")
        .and_then(|value| value.to_str().ok())
        .map(str::to_string)
        .ok_or_else(|| {
            failure(
                RefusalKind::Other,
                "the registry sent no Docker-Content-Digest".to_string(),
            )
        })
}

/// An HTTP error with its causes, since reqwest's own text hides the interesting part.
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_are_classified() {
        for (reason, kind) in [
            ("unauthorized: authentication required", RefusalKind::Auth),
            ("no basic auth credentials", RefusalKind::Auth),
            (
                "Get \"http://127.0.0.1:9/v2/\": dial tcp 127.0.0.1:9: connect: connection refused",
                RefusalKind::Unreachable,
            ),
            ("manifest invalid", RefusalKind::Other),
        ] {
            assert_eq!(classify(reason), kind, "{reason}");
        }
    }
}
