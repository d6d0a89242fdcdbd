//! A BuildKit build through the engine's `/build` endpoint: the same uploaded tar
//! context as the classic builder, plus a session (bollard's, over `/session`) on which
//! the engine asks gantry for build secrets and registry credentials while it builds.
//!
//! Secrets are read here once before the build, to fail early with a clear message and
//! to mask their values in the output; the session reads them again when a `RUN
//! --mount=type=secret` step asks. They reach no build argument, label or layer.

use bollard::Docker;
use bollard::grpc::build::{ImageBuildSessionProviders, SecretSource};
use bollard::models::BuildInfoAux;
use bollard::query_parameters::{BuildImageOptions, BuilderVersion};
use futures_util::StreamExt;
use secrecy::SecretString;

use super::progress::{Progress, Redactor};
use super::{BuildError, BuildRequest, engine_credentials};
use crate::config::{BuildSecret, BuildSecretSource};
use crate::host::describe_error;

/// The build argument that makes BuildKit write its cache metadata into the image, so a
/// pushed image can serve as another build's `cache_from`. It is set only for pipelines
/// that use `cache_from`: BuildKit (in Docker 20.10) writes that metadata in no fixed
/// order, so a rebuild of the same commit would get a new digest and be deployed again.
const INLINE_CACHE_ARG: &str = "BUILDKIT_INLINE_CACHE";

/// The largest secret gantry reads: BuildKit itself refuses secrets over 500 KiB.
const MAX_SECRET_BYTES: u64 = 500 * 1024;

/// Why a BuildKit build did not produce an image.
pub(super) enum Failure {
    /// The engine turned BuildKit down before building anything: another builder may try.
    Unavailable(String),
    Build(BuildError),
}

/// Builds the request's context with BuildKit; the image id.
pub(super) async fn build(
    docker: &Docker,
    request: &BuildRequest,
    on_line: &mut (dyn FnMut(&str) + Send),
) -> Result<String, Failure> {
    let values = read_secrets(&request.secrets).map_err(Failure::Build)?;
    let mut progress = Progress::new(Redactor::new(values));

    let mut args = request.args.clone();
    if !request.cache_from.is_empty() {
        args.entry(INLINE_CACHE_ARG.to_string())
            .or_insert_with(|| "1".to_string());
    }
    let options = BuildImageOptions {
        dockerfile: request.dockerfile.clone(),
        t: request.tags.first().cloned(),
        buildargs: Some(args),
        labels: Some(request.labels.clone()),
        target: request.target.clone().unwrap_or_default(),
        cachefrom: (!request.cache_from.is_empty()).then(|| request.cache_from.clone()),
        version: BuilderVersion::BuilderBuildKit,
        session: Some(session_id()),
        ..BuildImageOptions::default()
    };
    let mut providers = ImageBuildSessionProviders::default();
    for secret in &request.secrets {
        let source = match &secret.source {
            BuildSecretSource::File(path) => SecretSource::File(path.clone()),
            BuildSecretSource::Env(variable) => SecretSource::Env(variable.clone()),
        };
        providers = providers.set_secret(&secret.id, &source);
    }
    let context = request.context.try_clone().map_err(|error| {
        Failure::Build(BuildError::Failed {
            step: None,
            message: format!("cannot read the context: {error}"),
            last_lines: Vec::new(),
        })
    })?;
    let context = tokio::fs::File::from_std(context);
    let body = bollard::body_try_stream(tokio_util::io::ReaderStream::new(context));
    // The session lives as long as this stream: it ends when the stream is dropped.
    let mut stream = docker.build_image_with_session_providers(
        options,
        engine_credentials(&request.logins),
        Some(body),
        providers,
    );

    let mut image_id: Option<String> = None;
    while let Some(item) = stream.next().await {
        let info = match item {
            Ok(info) => info,
            Err(error) => {
                let message = describe_error(&error);
                if !progress.has_started() && turned_down(&error, &message) {
                    return Err(Failure::Unavailable(message));
                }
                return Err(Failure::Build(BuildError::Failed {
                    step: progress.failing_step(),
                    message: progress.clean(&message).into_owned(),
                    last_lines: progress.failing_tail(),
                }));
            }
        };
        match info.aux {
            Some(BuildInfoAux::BuildKit(status)) => progress.update(&status, on_line),
            Some(BuildInfoAux::Default(image)) => image_id = image.id.or(image_id),
            None => {}
        }
        // Plain text from the engine itself (rare with BuildKit).
        if let Some(text) = info.stream.as_deref() {
            for line in text.lines().filter(|line| !line.trim().is_empty()) {
                on_line(&progress.clean(line));
            }
        }
    }
    match image_id {
        Some(id) => Ok(id),
        None => super::id_of_first_tag(
            docker,
            &request.tags,
            progress.failing_step(),
            progress.failing_tail(),
        )
        .await
        .map_err(Failure::Build),
    }
}

/// Whether an error that came before any progress means the engine does not do
/// BuildKit builds (no session endpoint, or a daemon built without BuildKit) rather
/// than that this build failed.
fn turned_down(error: &bollard::errors::Error, message: &str) -> bool {
    let lower = message.to_ascii_lowercase();
    matches!(error, bollard::errors::Error::SessionBuildkitError { .. })
        || lower.contains("buildkit not supported")
        || lower.contains("session not supported")
        || (lower.contains("page not found") && lower.contains("session"))
}

/// Reads every secret's value, checking that each is there: a missing file or variable
/// fails the build before anything is sent, naming the secret but never a value.
fn read_secrets(secrets: &[BuildSecret]) -> Result<Vec<SecretString>, BuildError> {
    let mut values = Vec::with_capacity(secrets.len());
    for secret in secrets {
        let fail = |reason: String| BuildError::Secret {
            id: secret.id.clone(),
            reason,
        };
        let value = match &secret.source {
            BuildSecretSource::File(path) => {
                let size = std::fs::metadata(path)
                    .map_err(|error| fail(format!("cannot read {}: {error}", path.display())))?
                    .len();
                if size > MAX_SECRET_BYTES {
                    return Err(fail(format!(
                        "{} holds {size} bytes; BuildKit takes at most {MAX_SECRET_BYTES}",
                        path.display()
                    )));
                }
                let bytes = std::fs::read(path)
                    .map_err(|error| fail(format!("cannot read {}: {error}", path.display())))?;
                String::from_utf8_lossy(&bytes).into_owned()
            }
            BuildSecretSource::Env(variable) => std::env::var(variable)
                .map_err(|_| fail(format!("the environment variable `{variable}` is not set")))?,
        };
        values.push(SecretString::from(value));
    }
    Ok(values)
}

/// A fresh session id: the engine keys the session's providers by it.
fn session_id() -> String {
    let mut bytes = [0u8; 16];
    // Without randomness the id is still unique enough in time; sessions last one build.
    if getrandom::fill(&mut bytes).is_err() {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|elapsed| elapsed.as_nanos())
            .unwrap_or_default();
        bytes = nanos.to_le_bytes();
    }
    format!("gantry-{}", hex::encode(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::ExposeSecret;

    #[test]
    fn secrets_are_read_or_named_when_they_cannot_be() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("token");
        std::fs::write(&file, "from-a-file\n").unwrap();
        let secret = |id: &str, source: BuildSecretSource| BuildSecret {
            id: id.to_string(),
            source,
        };
        let values = read_secrets(&[secret("a", BuildSecretSource::File(file.clone()))]).unwrap();
        assert_eq!(values[0].expose_secret(), "from-a-file\n");

        let missing = dir.path().join("missing");
        let error = read_secrets(&[secret("b", BuildSecretSource::File(missing.clone()))])
            .err()
            .unwrap()
            .to_string();
        assert!(
            error.starts_with(&format!(
                "build secret `b`: cannot read {}",
                missing.display()
            )),
            "{error}"
        );
        let error = read_secrets(&[secret(
            "c",
            BuildSecretSource::Env("GANTRY_TEST_SURELY_UNSET_VARIABLE".to_string()),
        )])
        .err()
        .unwrap()
        .to_string();
        assert_eq!(
            error,
            "build secret `c`: the environment variable `GANTRY_TEST_SURELY_UNSET_VARIABLE` is not set"
        );
        std::fs::write(&file, vec![b'x'; MAX_SECRET_BYTES as usize + 1]).unwrap();
        let error = read_secrets(&[secret("d", BuildSecretSource::File(file))])
            .err()
            .unwrap()
            .to_string();
        assert!(error.contains("BuildKit takes at most"), "{error}");
    }

    #[test]
    fn session_ids_differ() {
        assert_ne!(session_id(), session_id());
        assert!(session_id().starts_with("gantry-"));
    }
}
