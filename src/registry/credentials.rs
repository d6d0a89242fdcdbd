//! Where a registry's credentials come from: gantry.yaml's `registries.NAME`
//! (`username` and `password`) first, then the Docker client's config as `docker login`
//! leaves it (`$DOCKER_CONFIG/config.json`, default `~/.docker/config.json`): the
//! registry's `credHelpers` entry, its `auths` entry (`auth`, `username`/`password` or
//! `identitytoken`), then `credsStore`.
//!
//! Reading that file and running the helper programs (`docker-credential-NAME get`, the
//! server address on stdin, `{"Username": …, "Secret": …}` on stdout) is the
//! `docker_credential` crate's work. This module picks the file, runs the lookup off the
//! async workers with a time limit, and turns the crate's answers into `Credentials`, or
//! errors that name the registry, the helper and the file. A secret is held only in a
//! `SecretString`; what a helper prints when it succeeds is never shown.

use std::collections::HashMap;
use std::io::BufReader;
use std::path::{Path, PathBuf};
use std::time::Duration;

use docker_credential::{CredentialRetrievalError, DockerCredential};
use secrecy::SecretString;

use super::RegistryError;
use crate::config::{Config, DEFAULT_REGISTRY};

/// How long one credential lookup may take. The helpers of cloud registries (ECR, GCR,
/// ACR) fetch a token over the network, which takes a second or two; one still silent
/// after this long is stuck, and the push or pull should fail saying so.
pub const HELPER_TIMEOUT: Duration = Duration::from_secs(30);

/// How much of a failed helper's message an error quotes: its first line, at most this
/// many characters (a helper may print a long trace; the first line says what went wrong).
const HELPER_MESSAGE_MAX: usize = 200;

/// What Docker's own helpers print (and exit 1) when they hold nothing for a server. The
/// Docker CLI takes it for "no credentials", and so does gantry: with a `credsStore`,
/// every registry goes through the store, anonymous ones included.
const NOT_FOUND_MESSAGE: &str = "credentials not found in native keychain";

/// Docker Hub's key in the Docker config and in helpers, as `docker login` writes it.
const DOCKER_HUB_SERVER: &str = "https://index.docker.io/v1/";

/// What a registry is sent to let gantry in.
#[derive(Debug, Clone)]
pub enum Credentials {
    /// A user and password (or an access token used as one), sent as HTTP Basic.
    Password {
        username: String,
        password: SecretString,
    },
    /// Docker's `identitytoken` (or a helper's answer with the user `<token>`): an OAuth2
    /// refresh token that a registry's token service exchanges for an access token.
    IdentityToken { token: SecretString },
}

/// The credentials for a registry host: gantry.yaml first, then the Docker client's config.
pub async fn credentials(
    config: &Config,
    registry: &str,
) -> Result<Option<Credentials>, RegistryError> {
    let entry = config.registry(registry);
    if let (Some(username), Some(password)) = (entry.username, entry.password) {
        return Ok(Some(Credentials::Password { username, password }));
    }
    let Some(path) = docker_config_path() else {
        return Ok(None);
    };
    // A helper is a program that may wait on the network: not on an async worker.
    let lookup = tokio::task::spawn_blocking({
        let (path, registry) = (path.clone(), registry.to_string());
        move || from_docker_config(&path, &registry)
    });
    match tokio::time::timeout(HELPER_TIMEOUT, lookup).await {
        Ok(Ok(answer)) => answer,
        Ok(Err(failed)) => Err(RegistryError::DockerConfig {
            path,
            reason: format!("the credential lookup failed: {failed}"),
        }),
        // The helper is left to finish on its own; its answer is not waited for.
        Err(_) => Err(RegistryError::CredentialHelper {
            registry: registry.to_string(),
            helper: helper_name(&path, &server_address(registry)),
            path,
            reason: format!(
                "did not answer within {}",
                humantime::format_duration(HELPER_TIMEOUT)
            ),
        }),
    }
}

/// `$DOCKER_CONFIG/config.json`, else `~/.docker/config.json`, as the Docker CLI reads it.
fn docker_config_path() -> Option<PathBuf> {
    let directory = std::env::var_os("DOCKER_CONFIG")
        .filter(|directory| !directory.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".docker")))?;
    Some(directory.join("config.json"))
}

/// The key the Docker CLI looks a registry up by, in the config and in helpers.
fn server_address(registry: &str) -> String {
    if registry == DEFAULT_REGISTRY {
        DOCKER_HUB_SERVER.to_string()
    } else {
        registry.to_string()
    }
}

/// Reads `path` (a Docker client config) for `registry`, running its helper if it names one.
/// Blocking.
fn from_docker_config(path: &Path, registry: &str) -> Result<Option<Credentials>, RegistryError> {
    let file = match std::fs::File::open(path) {
        Ok(file) => file,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(error) => {
            return Err(RegistryError::DockerConfig {
                path: path.to_path_buf(),
                reason: error.to_string(),
            });
        }
    };
    let server = server_address(registry);
    let answer = docker_credential::get_credential_from_reader(BufReader::new(file), &server);
    interpret(answer, registry, path, || helper_name(path, &server))
}

/// Turns the crate's answer into credentials, none, or an error naming what failed.
/// `helper` names the helper the config sends `registry` to, for the errors in which the
/// crate does not.
fn interpret(
    answer: Result<DockerCredential, CredentialRetrievalError>,
    registry: &str,
    path: &Path,
    helper: impl FnOnce() -> String,
) -> Result<Option<Credentials>, RegistryError> {
    let config_error = |reason: String| RegistryError::DockerConfig {
        path: path.to_path_buf(),
        reason,
    };
    let helper_error = |helper: String, reason: String| RegistryError::CredentialHelper {
        registry: registry.to_string(),
        helper,
        path: path.to_path_buf(),
        reason,
    };
    match answer {
        Ok(DockerCredential::UsernamePassword(username, password)) => {
            if username.is_empty() && password.is_empty() {
                return Ok(None);
            }
            Ok(Some(Credentials::Password {
                username,
                password: SecretString::from(password),
            }))
        }
        Ok(DockerCredential::IdentityToken(token)) if token.is_empty() => Ok(None),
        Ok(DockerCredential::IdentityToken(token)) => Ok(Some(Credentials::IdentityToken {
            token: SecretString::from(token),
        })),
        Err(CredentialRetrievalError::NoCredentialConfigured)
        | Err(CredentialRetrievalError::ConfigNotFound) => Ok(None),
        Err(CredentialRetrievalError::HelperFailure {
            helper,
            stdout,
            stderr,
        }) => {
            let message = first_line(&stdout).or_else(|| first_line(&stderr));
            match message {
                Some(message) if message == NOT_FOUND_MESSAGE => Ok(None),
                Some(message) => Err(helper_error(helper, format!("failed: {message}"))),
                None => Err(helper_error(helper, "failed and said nothing".to_string())),
            }
        }
        Err(CredentialRetrievalError::HelperCommunicationError) => {
            let helper = helper();
            let reason = format!("could not be run: is `{helper}` on PATH and executable?");
            Err(helper_error(helper, reason))
        }
        // The answer is not quoted: it may hold the secret.
        Err(CredentialRetrievalError::MalformedHelperResponse) => Err(helper_error(
            helper(),
            "answered with something other than {\"Username\": …, \"Secret\": …} JSON".to_string(),
        )),
        Err(CredentialRetrievalError::ConfigReadError) => Err(config_error(
            "it is not the JSON of a Docker client config".to_string(),
        )),
        Err(CredentialRetrievalError::CredentialDecodingError) => Err(config_error(format!(
            "the `auth` entry for {registry} is not base64 of user:password"
        ))),
        Err(CredentialRetrievalError::CredentialMismatchError) => Err(config_error(format!(
            "the entry for {registry} has an `auth` that disagrees with its `username` and `password`"
        ))),
    }
}

/// The first non-empty line of a helper's output, bounded.
fn first_line(output: &str) -> Option<String> {
    let line = output
        .lines()
        .map(str::trim)
        .find(|line| !line.is_empty())?;
    let mut bounded: String = line.chars().take(HELPER_MESSAGE_MAX).collect();
    if bounded.len() < line.len() {
        bounded.push('…');
    }
    Some(bounded)
}

/// The helper program the config at `path` sends `server` to, for error messages: its
/// `credHelpers` entry, else its `credsStore`. The lookup itself is the crate's.
fn helper_name(path: &Path, server: &str) -> String {
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Helpers {
        #[serde(default)]
        cred_helpers: HashMap<String, String>,
        creds_store: Option<String>,
    }
    let helpers: Option<Helpers> = std::fs::read(path)
        .ok()
        .and_then(|bytes| serde_json::from_slice(&bytes).ok());
    let name = helpers.and_then(|helpers| {
        helpers
            .cred_helpers
            .get(server)
            .filter(|name| !name.is_empty())
            .cloned()
            .or(helpers.creds_store)
    });
    match name {
        Some(name) => format!("docker-credential-{name}"),
        None => "docker-credential-*".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use secrecy::ExposeSecret;

    use super::*;

    /// What a lookup gave, as text without secrets hidden, for comparing.
    fn shown(result: Result<Option<Credentials>, RegistryError>) -> String {
        match result {
            Ok(None) => "none".to_string(),
            Ok(Some(Credentials::Password { username, password })) => {
                format!("password {username}:{}", password.expose_secret())
            }
            Ok(Some(Credentials::IdentityToken { token })) => {
                format!("token {}", token.expose_secret())
            }
            Err(error) => format!("error: {error}"),
        }
    }

    fn check(answer: Result<DockerCredential, CredentialRetrievalError>, expected: &str) {
        let result = interpret(
            answer,
            "reg.example.com",
            Path::new("/c/config.json"),
            || "docker-credential-pass".to_string(),
        );
        assert_eq!(shown(result), expected);
    }

    #[test]
    fn answers_of_the_crate_become_credentials_or_errors_naming_what_failed() {
        use CredentialRetrievalError as E;
        use DockerCredential as D;
        check(
            Ok(D::UsernamePassword("ci".into(), "pw".into())),
            "password ci:pw",
        );
        check(
            Ok(D::UsernamePassword(String::new(), String::new())),
            "none",
        );
        check(Ok(D::IdentityToken("refresh".into())), "token refresh");
        check(Ok(D::IdentityToken(String::new())), "none");
        check(Err(E::NoCredentialConfigured), "none");
        check(
            Err(E::HelperFailure {
                helper: "docker-credential-desktop".into(),
                stdout: "credentials not found in native keychain\n".into(),
                stderr: String::new(),
            }),
            "none",
        );
        check(
            Err(E::HelperFailure {
                helper: "docker-credential-ecr-login".into(),
                stdout: "\n".into(),
                stderr: "\nno token: expired\nat line 3\n".into(),
            }),
            "error: registry reg.example.com: credential helper `docker-credential-ecr-login` \
             (from /c/config.json) failed: no token: expired",
        );
        check(
            Err(E::HelperFailure {
                helper: "docker-credential-x".into(),
                stdout: String::new(),
                stderr: String::new(),
            }),
            "error: registry reg.example.com: credential helper `docker-credential-x` \
             (from /c/config.json) failed and said nothing",
        );
        check(
            Err(E::HelperCommunicationError),
            "error: registry reg.example.com: credential helper `docker-credential-pass` \
             (from /c/config.json) could not be run: is `docker-credential-pass` on PATH and executable?",
        );
        check(
            Err(E::MalformedHelperResponse),
            "error: registry reg.example.com: credential helper `docker-credential-pass` \
             (from /c/config.json) answered with something other than \
             {\"Username\": …, \"Secret\": …} JSON",
        );
        check(
            Err(E::ConfigReadError),
            "error: cannot read Docker credentials from /c/config.json: \
             it is not the JSON of a Docker client config",
        );
        check(
            Err(E::CredentialDecodingError),
            "error: cannot read Docker credentials from /c/config.json: \
             the `auth` entry for reg.example.com is not base64 of user:password",
        );
    }

    #[test]
    fn a_long_helper_message_is_cut() {
        let long = "x".repeat(HELPER_MESSAGE_MAX + 50);
        let line = first_line(&format!("{long}\nmore")).unwrap();
        assert_eq!(line.chars().count(), HELPER_MESSAGE_MAX + 1);
        assert!(line.ends_with('…'));
        assert_eq!(first_line(" \n\n"), None);
    }

    /// Looks `registry` up in a config.json holding `json`, with no helper to run.
    fn lookup(json: &str, registry: &str) -> String {
        let directory = tempfile::tempdir().unwrap();
        let path = directory.path().join("config.json");
        std::fs::write(&path, json).unwrap();
        shown(from_docker_config(&path, registry))
            .replace(&directory.path().display().to_string(), "DIR")
    }

    #[test]
    fn the_docker_config_is_read_by_registry_host() {
        // `ci:pw` and `ci:other`, in base64.
        let auths = r#"{"auths": {
            "https://reg.example.com": {"auth": "Y2k6cHc="},
            "https://index.docker.io/v1/": {"auth": "Y2k6b3RoZXI="},
            "tokens.example.com": {"identitytoken": "refresh-1"},
            "plain.example.com": {"username": "u", "password": "p"},
            "broken.example.com": {"auth": "%%%"}
        }}"#;
        for (registry, expected) in [
            ("reg.example.com", "password ci:pw"),
            ("docker.io", "password ci:other"),
            ("tokens.example.com", "token refresh-1"),
            ("plain.example.com", "password u:p"),
            ("elsewhere.example.com", "none"),
            (
                "broken.example.com",
                "error: cannot read Docker credentials from DIR/config.json: \
                 the `auth` entry for broken.example.com is not base64 of user:password",
            ),
        ] {
            assert_eq!(lookup(auths, registry), expected, "{registry}");
        }
        assert_eq!(
            lookup("{ not json", "reg.example.com"),
            "error: cannot read Docker credentials from DIR/config.json: \
             it is not the JSON of a Docker client config"
        );
        let missing = Path::new("/nonexistent/gantry/config.json");
        assert_eq!(
            shown(from_docker_config(missing, "reg.example.com")),
            "none"
        );
    }

    #[test]
    fn the_helper_named_is_the_registrys_own_else_the_store() {
        let directory = tempfile::tempdir().unwrap();
        let path = directory.path().join("config.json");
        std::fs::write(
            &path,
            r#"{"credsStore": "desktop", "credHelpers": {"reg.example.com": "ecr-login"}}"#,
        )
        .unwrap();
        assert_eq!(
            helper_name(&path, "reg.example.com"),
            "docker-credential-ecr-login"
        );
        assert_eq!(
            helper_name(&path, DOCKER_HUB_SERVER),
            "docker-credential-desktop"
        );
        assert_eq!(server_address("docker.io"), DOCKER_HUB_SERVER);
        assert_eq!(server_address("127.0.0.1:5116"), "127.0.0.1:5116");
    }
}
