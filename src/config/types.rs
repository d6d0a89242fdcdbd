//! The validated configuration's types: what the rest of gantry reads.
//!
//! Values here are consistent by construction (`config::Config::load` checked
//! them); they hold no positions and do no IO.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use secrecy::SecretString;
use serde::{Deserialize, Serialize};

use super::{ImageRepository, Template};

/// The whole validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// The config directory as given; relative paths in the files are relative to it.
    pub dir: PathBuf,
    /// Where state.db, git caches and logs live.
    pub state_dir: PathBuf,
    /// `state: postgres://...`: the state database is PostgreSQL (shared by several
    /// `gantry serve` replicas); `state_dir` then keeps only caches.
    pub state_database: Option<SecretString>,
    pub server: Server,
    pub hosts: BTreeMap<String, Host>,
    pub registries: BTreeMap<String, Registry>,
    pub notifications: BTreeMap<String, Notification>,
    /// The proxy gantry runs on every host with a proxied service.
    pub proxy: ProxySettings,
    pub pipelines: BTreeMap<String, Pipeline>,
    /// Problems that do not stop it from loading (a short token), for `validate` and `serve` to show.
    pub warnings: Vec<super::Diagnostic>,
}

#[derive(Debug, Clone)]
pub struct Server {
    pub listen: SocketAddr,
    /// The operator's bearer token: reads and actions through the HTTP API.
    pub token: Option<SecretString>,
    /// A bearer token that may only read.
    pub read_token: Option<SecretString>,
    /// Read-only endpoints answer without a token.
    pub public_read: bool,
    /// The daemon's address as users reach it, for links in notifications.
    pub public_url: Option<String>,
    /// The largest webhook body accepted, in bytes.
    pub max_body: u64,
    /// Runs kept per pipeline; older ones (with their stages and logs) are deleted.
    pub keep_runs: u32,
    /// Builds that may run at once across pipelines.
    pub max_builds: u32,
    /// How long a client may take to send a request's header fields, and then its body;
    /// a connection that sends them slower is closed.
    pub read_timeout: std::time::Duration,
}

/// Webhook bodies up to this size are read (forges send up to 25 MB).
pub const DEFAULT_MAX_BODY: u64 = 25 * 1024 * 1024;
/// Runs kept per pipeline by default.
pub const DEFAULT_KEEP_RUNS: u32 = 100;
/// Concurrent builds by default: enough for a small machine.
pub const DEFAULT_MAX_BUILDS: u32 = 2;
/// How long a request's header fields, then its body, may take to arrive by default.
pub const DEFAULT_READ_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// A Docker engine that gantry talks to directly.
#[derive(Debug, Clone)]
pub struct Host {
    pub name: String,
    pub docker: DockerEndpoint,
    pub tls: Option<TlsFiles>,
    /// Where the host's published ports are reached, for health checks.
    pub address: String,
    pub timeout: Duration,
    /// Private key for an `ssh://` host; ssh's own config and agent are used when absent.
    pub ssh_key: Option<PathBuf>,
    /// A Swarm manager: services deployed here become Swarm services (`deploy::swarm`).
    pub swarm: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DockerEndpoint {
    Unix(PathBuf),
    /// `host:port` of a `tcp://` URL.
    Tcp(String),
    /// `[user@]host` of an `ssh://` URL; the engine is reached through `docker system dial-stdio` there.
    Ssh(String),
}

impl fmt::Display for DockerEndpoint {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DockerEndpoint::Unix(path) => write!(formatter, "unix://{}", path.display()),
            DockerEndpoint::Tcp(authority) => write!(formatter, "tcp://{authority}"),
            DockerEndpoint::Ssh(destination) => write!(formatter, "ssh://{destination}"),
        }
    }
}

/// `proxy:` in gantry.yaml.
#[derive(Debug, Clone, Default)]
pub struct ProxySettings {
    /// The proxy image (Caddy 2), pinned by the user; required once a service is proxied.
    pub image: Option<String>,
    /// The ACME account's email, for services with `tls: acme`.
    pub email: Option<String>,
}

/// A service's `proxy:`: users reach it on a fixed host port through gantry's proxy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ServiceProxy {
    /// The host port the proxy listens on.
    pub port: u16,
    /// The container port the proxy sends requests to.
    pub container_port: u16,
    /// Host names routed to this service; empty: every request on the port.
    pub hosts: Vec<String>,
    /// How long a replaced container keeps serving the requests it has before it stops.
    #[serde(with = "as_millis")]
    pub drain: Duration,
    pub tls: Option<ProxyTls>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProxyTls {
    /// Certificates from the proxy's own certificate authority.
    Internal,
    /// Certificates from Let's Encrypt (ACME), for hosts the internet reaches.
    Acme,
}

/// How long a replaced proxied container drains by default.
pub const DEFAULT_DRAIN: Duration = Duration::from_secs(10);

/// Durations serialised as whole milliseconds (for spec hashes).
mod as_millis {
    pub fn serialize<S: serde::Serializer>(
        duration: &std::time::Duration,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        serializer.serialize_u64(duration.as_millis() as u64)
    }
}

/// Where run outcomes are announced.
#[derive(Debug, Clone)]
pub struct Notification {
    pub name: String,
    /// Incoming-webhook URLs carry their credentials in the path: kept secret.
    pub url: SecretString,
    pub format: NotificationFormat,
    /// `success`, `failure`, `rollback`.
    pub on: Vec<String>,
    /// Only these pipelines; all when `None`.
    pub pipelines: Option<Vec<String>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotificationFormat {
    /// `{pipeline, run, kind, commit, author, outcome, message, url}`.
    Json,
    /// Slack's incoming webhook: `{text}`.
    Slack,
}

/// Client certificate files for a `tcp://` host, resolved against the config directory.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// Credentials and transport for one registry, keyed by its host (`registry.example.com`, `10.0.0.5:5000`).
#[derive(Debug, Clone, Default)]
pub struct Registry {
    pub username: Option<String>,
    pub password: Option<SecretString>,
    /// Plain HTTP instead of HTTPS.
    pub insecure: bool,
    /// Pulls from this registry at once, across all hosts of a deploy; unbounded (but
    /// for the hosts pulled on at once) when `None`.
    pub max_pulls: Option<u32>,
    /// `HOST:PORT` of a registry that mirrors this one: pulls go through it first and
    /// come from this registry when it fails.
    pub mirror: Option<String>,
}

#[derive(Debug, Clone)]
pub struct Pipeline {
    /// The file's stem.
    pub name: String,
    pub file: PathBuf,
    pub source: Source,
    /// The images each commit is built into, by name; the one-image form (`image:`) is
    /// one named after the pipeline.
    pub images: BTreeMap<String, Image>,
    pub deploy: Deploy,
}

impl Pipeline {
    /// The host the pipeline's images are built on.
    pub fn build_host(&self) -> &str {
        self.images
            .values()
            .next()
            .map_or(super::LOCAL_HOST, |image| image.build.host.as_str())
    }

    /// The pipeline image a service runs; `None` for an accessory.
    pub fn image_of(&self, service: &Service) -> Option<&Image> {
        match &service.image {
            ServiceImage::Built(name) => self.images.get(name),
            ServiceImage::Accessory(_) => None,
        }
    }
}

#[derive(Debug, Clone)]
pub struct Source {
    /// A URL (`file://`, `git://`, `https://`, `ssh://`, `user@host:path`) or a local path made absolute.
    pub repo: String,
    pub branch: String,
    pub poll: Option<Duration>,
    pub webhook: Option<Webhook>,
    /// HTTPS token (sent as the password, with `username` or `git`).
    pub token: Option<SecretString>,
    pub username: Option<String>,
    /// SSH private key file for `ssh://` URLs; the SSH agent is tried when absent.
    pub ssh_key: Option<PathBuf>,
}

#[derive(Debug, Clone)]
pub struct Webhook {
    pub secret: Option<SecretString>,
    /// Accept deliveries without a signature: only when set explicitly and no secret is given.
    pub unsigned: bool,
}

#[derive(Debug, Clone)]
pub struct Build {
    /// The context directory inside the repository, `/`-separated, empty for the root.
    pub context: String,
    /// The Dockerfile inside the context, `/`-separated.
    pub dockerfile: String,
    pub args: BTreeMap<String, Template>,
    pub target: Option<String>,
    pub labels: BTreeMap<String, String>,
    pub host: String,
    /// `build.builder`, `build.cache_from`, `build.secrets`: see `config::builder`.
    pub builder: super::Builder,
    /// Image references whose layers the build may reuse.
    pub cache_from: Vec<String>,
    pub secrets: Vec<super::BuildSecret>,
}

/// One image the pipeline builds from each commit and pushes.
#[derive(Debug, Clone)]
pub struct Image {
    /// Its key in `images:` (the pipeline's name for `image:`).
    pub name: String,
    pub repository: ImageRepository,
    pub tags: Vec<Template>,
    /// The pipeline's `build` with the image's own keys over it.
    pub build: Build,
}

#[derive(Debug, Clone)]
pub struct Deploy {
    pub batch: u32,
    pub on_failure: OnFailure,
    pub services: BTreeMap<String, Service>,
    /// Release tasks, in the order written (`config::task`).
    pub tasks: Vec<super::Task>,
    /// The pipeline's images kept on each host after a deploy (the running ones and the
    /// rollback target stay besides).
    pub keep_images: u32,
}

/// Images of a pipeline kept per host by default: the running one and two to go back to.
pub const DEFAULT_KEEP_IMAGES: u32 = 3;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnFailure {
    Rollback,
    Halt,
}

#[derive(Debug, Clone)]
pub struct Service {
    pub name: String,
    pub image: ServiceImage,
    pub requires: Vec<String>,
    pub command: Option<Vec<String>>,
    pub env: BTreeMap<String, String>,
    pub ports: Vec<PortMapping>,
    pub volumes: Vec<String>,
    pub restart: String,
    pub network: Option<String>,
    pub labels: BTreeMap<String, String>,
    /// Memory limit in bytes.
    pub memory: Option<u64>,
    pub cpus: Option<f64>,
    pub stop_timeout: Option<Duration>,
    /// The rest of what a container can be given (`config::container`).
    pub options: ContainerOptions,
    pub health: Health,
    /// Reached through gantry's proxy on a fixed port, switched without a gap.
    pub proxy: Option<ServiceProxy>,
    /// Its instances are on Swarm managers: each is a Swarm service (`config::swarm`).
    pub swarm: Option<super::SwarmSettings>,
    pub instances: BTreeMap<String, Instance>,
}

/// What a service runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServiceImage {
    /// One of the pipeline's images, by name.
    Built(String),
    /// An accessory's image reference (`postgres:16`): not built by the pipeline, started
    /// once and replaced only when this or its spec changes, never rolled back.
    Accessory(String),
}

impl Service {
    /// An accessory's image reference; `None` for a service that runs a pipeline image.
    pub fn accessory(&self) -> Option<&str> {
        match &self.image {
            ServiceImage::Accessory(reference) => Some(reference),
            ServiceImage::Built(_) => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PortMapping {
    pub host_ip: Option<String>,
    /// `None` lets Docker choose a free host port.
    pub host_port: Option<u16>,
    pub container_port: u16,
    pub protocol: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Health {
    pub check: HealthCheck,
    pub timeout: Duration,
    pub interval: Duration,
}

#[derive(Debug, Clone, PartialEq)]
pub enum HealthCheck {
    None,
    Http {
        port: u16,
        path: String,
        status: u16,
        body: Option<String>,
    },
    Tcp {
        port: u16,
    },
    Exec {
        command: Vec<String>,
    },
    Docker,
}

/// Container settings beyond the common ones, each as Docker names it. Empty ones
/// are left out of the spec hash, so adding a setting does not replace every container.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ContainerOptions {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub entrypoint: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub logging: Option<Logging>,
    /// Networks besides the first (`network`), each with its aliases.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub networks: Vec<NetworkAttachment>,
    /// Aliases on the first network, besides the service's and the instance's names.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub aliases: Vec<String>,
    /// `host:ip` entries for /etc/hosts.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub extra_hosts: Vec<String>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub ulimits: BTreeMap<String, Ulimit>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub read_only: bool,
    /// `/path[:options]`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tmpfs: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub cap_add: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub cap_drop: Vec<String>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub init: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Logging {
    pub driver: String,
    pub options: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NetworkAttachment {
    pub name: String,
    pub aliases: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Ulimit {
    pub soft: i64,
    pub hard: i64,
}

#[derive(Debug, Clone)]
pub struct Instance {
    pub name: String,
    pub host: String,
    pub env: BTreeMap<String, String>,
    /// Published besides the service's `ports`.
    pub ports: Vec<PortMapping>,
    /// Mounted besides the service's `volumes`.
    pub volumes: Vec<String>,
    /// Where its name is written in the pipeline file, for messages that point at it.
    pub position: super::yaml::Position,
}

/// Health check defaults: how long a new container has to become healthy, and how often it is asked.
pub const DEFAULT_HEALTH_TIMEOUT: Duration = Duration::from_secs(30);
pub const DEFAULT_HEALTH_INTERVAL: Duration = Duration::from_secs(1);
