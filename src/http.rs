//! The one HTTP client setup: rustls with ring as the process's crypto provider,
//! installed once at start (bollard's TLS uses ring too), and two shared clients with
//! their connection pools: `client()` for registries, notifications and a remote
//! daemon (proxies from the environment apply), and `direct()` for health probes, which
//! go straight to a container's published port. Each request sets its own timeout.

use std::sync::OnceLock;

static CLIENT: OnceLock<Result<reqwest::Client, String>> = OnceLock::new();
static DIRECT: OnceLock<Result<reqwest::Client, String>> = OnceLock::new();

/// Installs ring as rustls's crypto provider. reqwest is built without one; a second
/// call (or a provider already there) changes nothing.
pub fn install_crypto() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// The client for registries, notifications and a remote daemon.
pub fn client() -> Result<&'static reqwest::Client, String> {
    shared(&CLIENT, reqwest::Client::builder())
}

/// The client for health probes: never through a proxy.
pub fn direct() -> Result<&'static reqwest::Client, String> {
    shared(&DIRECT, reqwest::Client::builder().no_proxy())
}

fn shared(
    cell: &'static OnceLock<Result<reqwest::Client, String>>,
    builder: reqwest::ClientBuilder,
) -> Result<&'static reqwest::Client, String> {
    cell.get_or_init(|| {
        install_crypto();
        builder
            .build()
            .map_err(|error| format!("cannot make an HTTP client: {error}"))
    })
    .as_ref()
    .map_err(Clone::clone)
}

/// What a request error comes down to: the innermost cause says what happened
/// (refused, timed out, a TLS failure), without the URL an outer layer may quote.
/// Connection errors of reqwest and of the Docker API (bollard) nest it alike.
pub fn innermost_cause(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text = cause.to_string();
        source = cause.source();
    }
    text
}
