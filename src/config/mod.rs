//! The config directory: `gantry.yaml` plus `pipelines/*.yaml`, read into a validated `Config`.
//!
//! Loading collects every error in every file, each as `file:line:column: message`,
//! before it fails; a `Config` that exists is known to be consistent (every host,
//! registry and service it names is defined, every path stays inside its repository,
//! every tag template renders to a tag Docker accepts). This module reads files and
//! the environment only: it does no network IO and never talks to Docker.

mod decode;
mod reference;
mod template;
pub mod yaml;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::SocketAddr;
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use secrecy::SecretString;

use decode::{Decoder, Environment, Fields, closest};
pub use reference::{DEFAULT_REGISTRY, ImageRepository, is_valid_tag};
pub use template::{Template, TemplateValues};
use yaml::Position;

/// The name of the optional global file in the config directory.
pub const GLOBAL_FILE: &str = "gantry.yaml";
/// The folder of pipeline files in the config directory.
pub const PIPELINES_DIR: &str = "pipelines";
/// The host that always exists unless `gantry.yaml` redefines it.
pub const LOCAL_HOST: &str = "local";
/// How long `gantry hosts` and every Docker call wait for a host to answer by default.
pub const DEFAULT_HOST_TIMEOUT: Duration = Duration::from_secs(5);
/// The API listen address when `server.listen` is not set.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8700";

/// One error in one file, with the place it points at.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Diagnostic {
    pub file: PathBuf,
    pub line: usize,
    pub column: usize,
    pub message: String,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            formatter,
            "{}:{}:{}: {}",
            self.file.display(),
            self.line,
            self.column,
            self.message
        )
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{} error(s) in the config", .0.len())]
    Invalid(Vec<Diagnostic>),
}

/// The whole validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// The config directory as given; relative paths in the files are relative to it.
    pub dir: PathBuf,
    /// Where state.db, git caches and logs live.
    pub state_dir: PathBuf,
    pub server: Server,
    pub hosts: BTreeMap<String, Host>,
    pub registries: BTreeMap<String, Registry>,
    pub notifications: BTreeMap<String, Notification>,
    pub pipelines: BTreeMap<String, Pipeline>,
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
}

/// Webhook bodies up to this size are read (forges send up to 25 MB).
pub const DEFAULT_MAX_BODY: u64 = 25 * 1024 * 1024;
/// Runs kept per pipeline by default.
pub const DEFAULT_KEEP_RUNS: u32 = 100;
/// Concurrent builds by default: enough for a small machine.
pub const DEFAULT_MAX_BUILDS: u32 = 2;

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
}

#[derive(Debug, Clone)]
pub struct Pipeline {
    /// The file's stem.
    pub name: String,
    pub file: PathBuf,
    pub source: Source,
    pub build: Build,
    pub image: Image,
    pub deploy: Deploy,
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
}

#[derive(Debug, Clone)]
pub struct Image {
    pub repository: ImageRepository,
    pub tags: Vec<Template>,
}

#[derive(Debug, Clone)]
pub struct Deploy {
    pub batch: u32,
    pub on_failure: OnFailure,
    pub services: BTreeMap<String, Service>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnFailure {
    Rollback,
    Halt,
}

#[derive(Debug, Clone)]
pub struct Service {
    pub name: String,
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
    pub health: Health,
    pub instances: BTreeMap<String, Instance>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
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

#[derive(Debug, Clone)]
pub struct Instance {
    pub name: String,
    pub host: String,
    pub env: BTreeMap<String, String>,
}

/// Health check defaults: how long a new container has to become healthy, and how often it is asked.
pub const DEFAULT_HEALTH_TIMEOUT: Duration = Duration::from_secs(30);
pub const DEFAULT_HEALTH_INTERVAL: Duration = Duration::from_secs(1);

impl Config {
    /// Loads and validates the config directory, reading variables from the process environment.
    pub fn load(dir: &Path) -> Result<Config, ConfigError> {
        Config::load_with(dir, &|name: &str| std::env::var(name).ok())
    }

    /// Loads and validates with variables from `environment`.
    pub fn load_with(dir: &Path, environment: Environment) -> Result<Config, ConfigError> {
        if !dir.is_dir() {
            return Err(ConfigError::Read {
                path: dir.to_path_buf(),
                source: std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    "the config directory does not exist (set --config or GANTRY_CONFIG)",
                ),
            });
        }
        let mut diagnostics = Vec::new();
        let global_path = dir.join(GLOBAL_FILE);
        let global_text = match std::fs::read_to_string(&global_path) {
            Ok(text) => Some(text),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => None,
            Err(source) => {
                return Err(ConfigError::Read {
                    path: global_path,
                    source,
                });
            }
        };
        let global = read_global(
            dir,
            &display_file(dir, GLOBAL_FILE),
            global_text.as_deref().unwrap_or(""),
            environment,
            &mut diagnostics,
        );

        let mut pipelines = BTreeMap::new();
        for path in pipeline_files(dir)? {
            let text = std::fs::read_to_string(&path).map_err(|source| ConfigError::Read {
                path: path.clone(),
                source,
            })?;
            let relative = Path::new(PIPELINES_DIR).join(path.file_name().unwrap_or_default());
            let file = display_file(dir, &relative.to_string_lossy());
            let name = path
                .file_stem()
                .unwrap_or_default()
                .to_string_lossy()
                .into_owned();
            if let Some(pipeline) = read_pipeline(
                dir,
                &name,
                file,
                &text,
                &global,
                environment,
                &mut diagnostics,
            ) {
                pipelines.insert(name, pipeline);
            }
        }

        if !diagnostics.is_empty() {
            diagnostics.sort();
            return Err(ConfigError::Invalid(diagnostics));
        }
        Ok(Config {
            dir: dir.to_path_buf(),
            state_dir: global.state_dir,
            server: global.server,
            hosts: global.hosts,
            registries: global.registries,
            notifications: global.notifications,
            pipelines,
        })
    }

    pub fn pipeline(&self, name: &str) -> Option<&Pipeline> {
        self.pipelines.get(name)
    }

    /// A "did you mean" for a pipeline name that does not exist.
    pub fn suggest_pipeline(&self, name: &str) -> Option<&str> {
        closest(name, self.pipelines.keys().map(String::as_str))
    }

    /// The registry entry for a registry host; loopback registries get a plain-HTTP default.
    pub fn registry(&self, host: &str) -> Registry {
        self.registries
            .get(host)
            .cloned()
            .unwrap_or_else(|| Registry {
                insecure: is_loopback_registry(host),
                ..Registry::default()
            })
    }
}

/// Whether a registry host is on loopback, where Docker itself uses plain HTTP.
pub fn is_loopback_registry(registry_host: &str) -> bool {
    let host = match registry_host.rsplit_once(':') {
        Some((host, port)) if port.chars().all(|c| c.is_ascii_digit()) => host,
        _ => registry_host,
    };
    host == "localhost" || host.starts_with("127.") || host == "[::1]"
}

/// The pipeline files of a config directory, sorted by name.
fn pipeline_files(dir: &Path) -> Result<Vec<PathBuf>, ConfigError> {
    let pipelines_dir = dir.join(PIPELINES_DIR);
    let entries = match std::fs::read_dir(&pipelines_dir) {
        Ok(entries) => entries,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => {
            return Err(ConfigError::Read {
                path: pipelines_dir,
                source,
            });
        }
    };
    let mut files = Vec::new();
    for entry in entries {
        let path = entry
            .map_err(|source| ConfigError::Read {
                path: pipelines_dir.clone(),
                source,
            })?
            .path();
        let is_yaml = matches!(
            path.extension().and_then(|extension| extension.to_str()),
            Some("yaml" | "yml")
        );
        // Editors leave dotfiles (swap files, `.#name.yaml`) beside the real ones.
        let hidden = path
            .file_name()
            .is_some_and(|name| name.to_string_lossy().starts_with('.'));
        if is_yaml && !hidden && path.is_file() {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}

/// How a file is named in messages: relative to the working directory as the user typed the config dir.
fn display_file(dir: &Path, relative: &str) -> PathBuf {
    if dir == Path::new(".") || dir.as_os_str().is_empty() {
        PathBuf::from(relative)
    } else {
        dir.join(relative)
    }
}

/// Parses a file into a tree, reporting a syntax error as a diagnostic.
fn parse_file(file: &Path, text: &str, diagnostics: &mut Vec<Diagnostic>) -> Option<yaml::Node> {
    match yaml::parse(text) {
        Ok(node) => Some(node),
        Err(error) => {
            diagnostics.push(Diagnostic {
                file: file.to_path_buf(),
                line: error.position.line,
                column: error.position.column,
                message: format!("YAML syntax error: {}", error.message),
            });
            None
        }
    }
}

/// What `gantry.yaml` holds, with defaults filled in.
struct Global {
    state_dir: PathBuf,
    server: Server,
    hosts: BTreeMap<String, Host>,
    registries: BTreeMap<String, Registry>,
    notifications: BTreeMap<String, Notification>,
}

fn read_global(
    dir: &Path,
    file: &Path,
    text: &str,
    environment: Environment,
    diagnostics: &mut Vec<Diagnostic>,
) -> Global {
    let mut global = Global {
        state_dir: dir.join(".gantry"),
        server: Server {
            listen: DEFAULT_LISTEN
                .parse()
                .unwrap_or_else(|_| SocketAddr::from(([127, 0, 0, 1], 8700))),
            token: None,
            read_token: None,
            public_read: false,
            public_url: None,
            max_body: DEFAULT_MAX_BODY,
            keep_runs: DEFAULT_KEEP_RUNS,
            max_builds: DEFAULT_MAX_BUILDS,
        },
        hosts: BTreeMap::from([(LOCAL_HOST.to_string(), local_host(environment))]),
        registries: BTreeMap::new(),
        notifications: BTreeMap::new(),
    };
    let Some(root) = parse_file(file, text, diagnostics) else {
        return global;
    };
    let mut decoder = Decoder {
        file: file.to_path_buf(),
        diagnostics,
        environment,
    };
    let Some(fields) = decoder.mapping(
        &root,
        "",
        &["state", "server", "hosts", "registries", "notifications"],
    ) else {
        return global;
    };
    if let Some(state) = decoder.optional_string(&fields, "state") {
        global.state_dir = dir.join(state);
    }
    if let Some(server_node) = fields.get("server")
        && let Some(server) = decoder.mapping(
            server_node,
            "server",
            &[
                "listen",
                "token",
                "read_token",
                "public_read",
                "public_url",
                "max_body",
                "keep_runs",
                "max_builds",
            ],
        )
    {
        if let Some(max_body_node) = server.get("max_body")
            && let Some(text) = decoder.string(max_body_node, "server.max_body")
        {
            match parse_bytes(&text) {
                Some(bytes) if bytes > 0 => global.server.max_body = bytes,
                _ => decoder.error(
                    max_body_node.position,
                    format!("`server.max_body`: `{text}` is not a size (like 25m)"),
                ),
            }
        }
        if let Some(keep) = decoder.optional_number::<u32>(&server, "keep_runs", "a number of runs")
        {
            global.server.keep_runs = keep.max(1);
        }
        if let Some(builds) =
            decoder.optional_number::<u32>(&server, "max_builds", "a number of builds")
        {
            global.server.max_builds = builds.max(1);
        }
        if let Some(listen_node) = server.get("listen")
            && let Some(listen) = decoder.string(listen_node, "server.listen")
        {
            match listen.parse() {
                Ok(address) => global.server.listen = address,
                Err(_) => decoder.error(
                    listen_node.position,
                    format!("`server.listen`: `{listen}` is not an address like 127.0.0.1:8700"),
                ),
            }
        }
        global.server.token = decoder.optional_secret(&server, "token");
        global.server.read_token = decoder.optional_secret(&server, "read_token");
        global.server.public_url = decoder.optional_string(&server, "public_url");
        global.server.public_read = decoder
            .optional_bool(&server, "public_read")
            .unwrap_or(false);
    }
    if let Some(hosts_node) = fields.get("hosts") {
        for (name, key, node) in decoder.entries(hosts_node, "hosts").unwrap_or_default() {
            if let Some(host) = read_host(&mut decoder, dir, name, key.position, node) {
                global.hosts.insert(name.to_string(), host);
            }
        }
    }
    if let Some(notifications_node) = fields.get("notifications") {
        for (name, _, node) in decoder
            .entries(notifications_node, "notifications")
            .unwrap_or_default()
        {
            if let Some(notification) = read_notification(&mut decoder, name, node) {
                global.notifications.insert(name.to_string(), notification);
            }
        }
    }
    if let Some(registries_node) = fields.get("registries") {
        for (name, _, node) in decoder
            .entries(registries_node, "registries")
            .unwrap_or_default()
        {
            let path = decode::join_path("registries", name);
            let Some(entry) = decoder.mapping(node, &path, &["username", "password", "insecure"])
            else {
                continue;
            };
            let registry = Registry {
                username: decoder.optional_string(&entry, "username"),
                password: decoder.optional_secret(&entry, "password"),
                insecure: decoder
                    .optional_bool(&entry, "insecure")
                    .unwrap_or_else(|| is_loopback_registry(name)),
            };
            if registry.password.is_some() && registry.username.is_none() {
                decoder.error(
                    entry.key_position("password"),
                    format!("`{path}` has a password but no username"),
                );
            }
            global.registries.insert(name.to_string(), registry);
        }
    }
    global
}

/// The state directory a config directory names, read leniently: for commands that
/// only read history and must work while a pipeline file is broken. A plain `state:`
/// in gantry.yaml is honoured; anything else gives the default.
pub fn state_dir_of(dir: &Path) -> PathBuf {
    let default = dir.join(".gantry");
    let Ok(text) = std::fs::read_to_string(dir.join(GLOBAL_FILE)) else {
        return default;
    };
    let Ok(root) = yaml::parse(&text) else {
        return default;
    };
    let yaml::NodeKind::Mapping(entries) = &root.kind else {
        return default;
    };
    for (key, value) in entries {
        if let (
            yaml::NodeKind::Scalar { value: key, .. },
            yaml::NodeKind::Scalar { value: state, .. },
        ) = (&key.kind, &value.kind)
            && key == "state"
            && !state.contains('$')
        {
            return dir.join(state);
        }
    }
    default
}

/// The `local` host: `DOCKER_HOST` when set, else the default socket.
fn local_host(environment: Environment) -> Host {
    let docker = environment("DOCKER_HOST")
        .and_then(|url| parse_docker_url(&url).ok())
        .unwrap_or_else(|| DockerEndpoint::Unix(PathBuf::from("/var/run/docker.sock")));
    Host {
        name: LOCAL_HOST.to_string(),
        address: default_address(&docker),
        docker,
        tls: None,
        timeout: DEFAULT_HOST_TIMEOUT,
        ssh_key: None,
    }
}

fn default_address(docker: &DockerEndpoint) -> String {
    match docker {
        DockerEndpoint::Unix(_) => "127.0.0.1".to_string(),
        DockerEndpoint::Tcp(authority) => match authority.rsplit_once(':') {
            Some((host, _port)) => host.to_string(),
            None => authority.clone(),
        },
        DockerEndpoint::Ssh(destination) => destination
            .rsplit_once('@')
            .map_or(destination.as_str(), |(_user, host)| host)
            .to_string(),
    }
}

fn parse_docker_url(url: &str) -> Result<DockerEndpoint, String> {
    if let Some(path) = url.strip_prefix("unix://") {
        if path.is_empty() {
            return Err("a unix:// URL needs a socket path".to_string());
        }
        return Ok(DockerEndpoint::Unix(PathBuf::from(path)));
    }
    if let Some(authority) = url.strip_prefix("tcp://") {
        let authority = authority.trim_end_matches('/');
        let valid = authority
            .rsplit_once(':')
            .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
        if !valid {
            return Err(format!(
                "`{url}` needs a host and a port, like tcp://10.0.0.11:2376"
            ));
        }
        return Ok(DockerEndpoint::Tcp(authority.to_string()));
    }
    if let Some(destination) = url.strip_prefix("ssh://") {
        let destination = destination.trim_end_matches('/');
        let host = destination
            .rsplit_once('@')
            .map_or(destination, |(_user, host)| host);
        if host.is_empty() || host.contains('/') {
            return Err(format!("`{url}` needs a host, like ssh://deploy@10.0.0.11"));
        }
        if host.contains(':') {
            return Err(format!(
                "`{url}`: ssh:// hosts take no port in the URL; set `Port` for that host in ~/.ssh/config"
            ));
        }
        return Ok(DockerEndpoint::Ssh(destination.to_string()));
    }
    Err(format!(
        "`{url}` is not a Docker URL (unix:///path, tcp://host:port or ssh://user@host)"
    ))
}

fn read_host(
    decoder: &mut Decoder,
    dir: &Path,
    name: &str,
    name_position: Position,
    node: &yaml::Node,
) -> Option<Host> {
    let path = decode::join_path("hosts", name);
    if !is_simple_name(name) {
        decoder.error(
            name_position,
            format!("host name `{name}` may hold only letters, digits, `-`, `_` and `.`"),
        );
    }
    let fields = decoder.mapping(
        node,
        &path,
        &["docker", "tls", "address", "timeout", "ssh_key"],
    )?;
    let docker_node = fields.get("docker");
    let url = decoder.required_string(&fields, "docker")?;
    let docker = match parse_docker_url(&url) {
        Ok(docker) => docker,
        Err(message) => {
            let position = docker_node.map_or(fields.position(), |node| node.position);
            decoder.error(position, format!("`{path}.docker`: {message}"));
            return None;
        }
    };
    let tls = match fields.get("tls") {
        Some(tls_node) => {
            let tls_path = format!("{path}.tls");
            let tls_fields = decoder.mapping(tls_node, &tls_path, &["ca", "cert", "key"])?;
            let ca = decoder.required_string(&tls_fields, "ca");
            let cert = decoder.required_string(&tls_fields, "cert");
            let key = decoder.required_string(&tls_fields, "key");
            if !matches!(docker, DockerEndpoint::Tcp(_)) {
                decoder.error(
                    tls_node.position,
                    format!("`{tls_path}` applies to tcp:// hosts only"),
                );
            }
            Some(TlsFiles {
                ca: dir.join(ca?),
                cert: dir.join(cert?),
                key: dir.join(key?),
            })
        }
        None => None,
    };
    let ssh_key = decoder
        .optional_string(&fields, "ssh_key")
        .map(|key| dir.join(key));
    if ssh_key.is_some() && !matches!(docker, DockerEndpoint::Ssh(_)) {
        decoder.error(
            fields.key_position("ssh_key"),
            format!("`{path}.ssh_key` applies to ssh:// hosts only"),
        );
    }
    Some(Host {
        name: name.to_string(),
        ssh_key,
        address: decoder
            .optional_string(&fields, "address")
            .unwrap_or_else(|| default_address(&docker)),
        timeout: decoder
            .optional_duration(&fields, "timeout")
            .unwrap_or(DEFAULT_HOST_TIMEOUT),
        docker,
        tls,
    })
}

fn read_notification(decoder: &mut Decoder, name: &str, node: &yaml::Node) -> Option<Notification> {
    let path = decode::join_path("notifications", name);
    let fields = decoder.mapping(node, &path, &["url", "format", "on", "pipelines"])?;
    let url = decoder.required_string(&fields, "url")?;
    if !(url.starts_with("http://") || url.starts_with("https://")) {
        decoder.error(
            fields.key_position("url"),
            format!("`{path}.url` must be an http:// or https:// URL"),
        );
    }
    let format = match decoder.optional_string(&fields, "format").as_deref() {
        None | Some("json") => NotificationFormat::Json,
        Some("slack") => NotificationFormat::Slack,
        Some(other) => {
            decoder.error(
                fields.key_position("format"),
                format!("`{path}.format` is json or slack, not `{other}`"),
            );
            NotificationFormat::Json
        }
    };
    let mut on = Vec::new();
    for (event, position) in decoder.positioned_list(&fields, "on") {
        match event.as_str() {
            "success" | "failure" | "rollback" => on.push(event),
            other => decoder.error(
                position,
                format!("`{path}.on`: `{other}` is not success, failure or rollback"),
            ),
        }
    }
    if fields.get("on").is_none() {
        on = vec!["success".into(), "failure".into(), "rollback".into()];
    }
    let pipelines = fields
        .get("pipelines")
        .map(|node| decoder.string_list(node, &fields.path("pipelines")));
    Some(Notification {
        name: name.to_string(),
        url: SecretString::from(url),
        format,
        on,
        pipelines,
    })
}

fn is_simple_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .chars()
            .all(|character| character.is_ascii_alphanumeric() || "-_.".contains(character))
        && !name.starts_with(['.', '-'])
}

/// The name of a pipeline, service or instance: it becomes part of container names and labels.
fn is_container_name(name: &str) -> bool {
    is_simple_name(name) && name.len() <= 128
}

fn read_pipeline(
    dir: &Path,
    name: &str,
    file: PathBuf,
    text: &str,
    global: &Global,
    environment: Environment,
    diagnostics: &mut Vec<Diagnostic>,
) -> Option<Pipeline> {
    let root = parse_file(&file, text, diagnostics)?;
    let mut decoder = Decoder {
        file: file.clone(),
        diagnostics,
        environment,
    };
    if !is_container_name(name) {
        decoder.error(
            Position { line: 1, column: 1 },
            format!(
                "pipeline name `{name}` (from the file name) may hold only letters, digits, `-`, `_` and `.`"
            ),
        );
    }
    let fields = decoder.mapping(&root, "", &["source", "build", "image", "deploy"])?;
    let source = match fields.get("source") {
        Some(node) => read_source(&mut decoder, dir, node),
        None => {
            decoder.missing(&fields, "source");
            None
        }
    };
    let branch = source.as_ref().map(|source| source.branch.clone());
    let build = match fields.get("build") {
        Some(node) => read_build(&mut decoder, node, global, branch.as_deref()),
        None => read_build(
            &mut decoder,
            &empty_mapping(root.position),
            global,
            branch.as_deref(),
        ),
    };
    let image = match fields.get("image") {
        Some(node) => read_image(&mut decoder, node, global, branch.as_deref()),
        None => {
            decoder.missing(&fields, "image");
            None
        }
    };
    let deploy = match fields.get("deploy") {
        Some(node) => read_deploy(&mut decoder, node, global),
        None => Some(Deploy {
            batch: 1,
            on_failure: OnFailure::Rollback,
            services: BTreeMap::new(),
        }),
    };
    Some(Pipeline {
        name: name.to_string(),
        file,
        source: source?,
        build: build?,
        image: image?,
        deploy: deploy?,
    })
}

fn empty_mapping(position: Position) -> yaml::Node {
    yaml::Node {
        kind: yaml::NodeKind::Mapping(Vec::new()),
        position,
    }
}

fn read_source(decoder: &mut Decoder, dir: &Path, node: &yaml::Node) -> Option<Source> {
    let fields = decoder.mapping(
        node,
        "source",
        &[
            "repo", "branch", "poll", "webhook", "token", "username", "ssh_key",
        ],
    )?;
    let repo_node = fields.get("repo");
    let repo = decoder.required_string(&fields, "repo").and_then(|repo| {
        let position = repo_node.map_or(fields.position(), |node| node.position);
        match normalize_repo(dir, &repo) {
            Ok(repo) => Some(repo),
            Err(message) => {
                decoder.error(position, format!("`source.repo`: {message}"));
                None
            }
        }
    });
    let branch = decoder
        .optional_string(&fields, "branch")
        .unwrap_or_else(|| "main".to_string());
    if let Some(branch_node) = fields.get("branch")
        && !is_valid_branch(&branch)
    {
        decoder.error(
            branch_node.position,
            format!("`source.branch`: `{branch}` is not a valid branch name"),
        );
    }
    let poll = decoder.optional_duration(&fields, "poll");
    if let (Some(poll), Some(poll_node)) = (poll, fields.get("poll"))
        && poll < Duration::from_secs(1)
    {
        decoder.error(
            poll_node.position,
            "`source.poll` must be at least 1s".to_string(),
        );
    }
    let webhook = match fields.get("webhook") {
        Some(webhook_node) => {
            let webhook_fields =
                decoder.mapping(webhook_node, "source.webhook", &["secret", "unsigned"])?;
            let secret = decoder.optional_secret(&webhook_fields, "secret");
            let unsigned = decoder
                .optional_bool(&webhook_fields, "unsigned")
                .unwrap_or(false);
            if unsigned && secret.is_some() {
                decoder.error(
                    webhook_fields.key_position("unsigned"),
                    "`source.webhook`: `unsigned: true` and a `secret` contradict each other"
                        .to_string(),
                );
            }
            Some(Webhook { secret, unsigned })
        }
        None => None,
    };
    let token = decoder.optional_secret(&fields, "token");
    let username = decoder.optional_string(&fields, "username");
    let ssh_key = decoder
        .optional_string(&fields, "ssh_key")
        .map(|key| dir.join(key));
    Some(Source {
        repo: repo?,
        branch,
        poll,
        webhook,
        token,
        username,
        ssh_key,
    })
}

/// Checks a repository location and makes a local path absolute.
fn normalize_repo(dir: &Path, repo: &str) -> Result<String, String> {
    const SCHEMES: [&str; 6] = [
        "file://",
        "git://",
        "http://",
        "https://",
        "ssh://",
        "git+ssh://",
    ];
    if SCHEMES.iter().any(|scheme| repo.starts_with(scheme)) {
        return Ok(repo.to_string());
    }
    if repo.contains("://") {
        return Err(format!(
            "`{repo}` uses a scheme gantry does not fetch from (use file://, git://, https:// or ssh://)"
        ));
    }
    // scp-like `user@host:path`, as git itself accepts.
    if let Some((before, _)) = repo.split_once(':')
        && before.contains('@')
        && !before.contains('/')
    {
        return Ok(repo.to_string());
    }
    let path = Path::new(repo);
    let absolute = if path.is_absolute() {
        path.to_path_buf()
    } else {
        std::path::absolute(dir.join(path)).map_err(|error| error.to_string())?
    };
    Ok(absolute.to_string_lossy().into_owned())
}

/// git's own rules for a ref name component, enough to catch typos.
fn is_valid_branch(branch: &str) -> bool {
    !branch.is_empty()
        && !branch.starts_with(['-', '/'])
        && !branch.ends_with(['/', '.'])
        && !branch.ends_with(".lock")
        && !branch.contains("..")
        && !branch.contains("//")
        && !branch.contains("@{")
        && !branch
            .chars()
            .any(|character| character.is_ascii_control() || " ~^:?*[\\".contains(character))
}

fn read_build(
    decoder: &mut Decoder,
    node: &yaml::Node,
    global: &Global,
    branch: Option<&str>,
) -> Option<Build> {
    let fields = decoder.mapping(
        node,
        "build",
        &["context", "dockerfile", "args", "target", "labels", "host"],
    )?;
    let context_text = decoder
        .optional_string(&fields, "context")
        .unwrap_or_else(|| ".".to_string());
    let context = match normalize_inside(&context_text) {
        Some(context) => Some(context),
        None => {
            decoder.error(
                fields
                    .get("context")
                    .map_or(fields.position(), |node| node.position),
                format!("`build.context`: `{context_text}` is outside the repository"),
            );
            None
        }
    };
    let dockerfile_text = decoder
        .optional_string(&fields, "dockerfile")
        .unwrap_or_else(|| "Dockerfile".to_string());
    let dockerfile = match normalize_inside(&dockerfile_text) {
        Some(dockerfile) if !dockerfile.is_empty() => Some(dockerfile),
        _ => {
            decoder.error(
                fields
                    .get("dockerfile")
                    .map_or(fields.position(), |node| node.position),
                format!("`build.dockerfile`: `{dockerfile_text}` is outside the build context"),
            );
            None
        }
    };
    let mut args = BTreeMap::new();
    if let Some(args_node) = fields.get("args") {
        for (name, _, value) in decoder.entries(args_node, "build.args").unwrap_or_default() {
            let path = decode::join_path("build.args", name);
            let Some(text) = decoder.string(value, &path) else {
                continue;
            };
            match Template::parse(&text) {
                Ok(template) => {
                    if let Err(message) = template.render(&TemplateValues::sample(branch)) {
                        decoder.error(value.position, format!("`{path}`: {message}"));
                    }
                    args.insert(name.to_string(), template);
                }
                Err(message) => decoder.error(value.position, format!("`{path}`: {message}")),
            }
        }
    }
    let target = decoder.optional_string(&fields, "target");
    let labels = decoder.string_map(&fields, "labels");
    let host = decoder
        .optional_string(&fields, "host")
        .unwrap_or_else(|| LOCAL_HOST.to_string());
    check_host(
        decoder,
        global,
        &host,
        fields.key_position("host"),
        "build.host",
    );
    Some(Build {
        context: context?,
        dockerfile: dockerfile?,
        args,
        target,
        labels,
        host,
    })
}

/// Cleans a relative path (`./a/../b` → `b`); `None` when it leaves its root or is absolute.
fn normalize_inside(path: &str) -> Option<String> {
    let mut parts: Vec<&str> = Vec::new();
    for component in Path::new(path).components() {
        match component {
            Component::CurDir => {}
            Component::Normal(part) => parts.push(part.to_str()?),
            Component::ParentDir => {
                parts.pop()?;
            }
            Component::RootDir | Component::Prefix(_) => return None,
        }
    }
    Some(parts.join("/"))
}

fn check_host(decoder: &mut Decoder, global: &Global, host: &str, position: Position, path: &str) {
    if global.hosts.contains_key(host) {
        return;
    }
    let suggestion = match closest(host, global.hosts.keys().map(String::as_str)) {
        Some(near) => format!(" (did you mean `{near}`?)"),
        None => format!(
            " (defined: {})",
            global
                .hosts
                .keys()
                .map(String::as_str)
                .collect::<Vec<_>>()
                .join(", ")
        ),
    };
    decoder.error(
        position,
        format!("`{path}`: host `{host}` is not defined in gantry.yaml{suggestion}"),
    );
}

fn read_image(
    decoder: &mut Decoder,
    node: &yaml::Node,
    global: &Global,
    branch: Option<&str>,
) -> Option<Image> {
    let fields = decoder.mapping(node, "image", &["repository", "tags"])?;
    let repository_node = fields.get("repository");
    let repository_text = decoder.required_string(&fields, "repository")?;
    let position = repository_node.map_or(fields.position(), |node| node.position);
    let repository = match ImageRepository::parse(&repository_text) {
        Ok(repository) => repository,
        Err(message) => {
            decoder.error(position, format!("`image.repository`: {message}"));
            return None;
        }
    };
    let registry = repository.registry();
    if !global.registries.contains_key(registry) && !is_loopback_registry(registry) {
        decoder.error(
            position,
            format!(
                "`image.repository`: registry `{registry}` is not defined in gantry.yaml `registries` \
                 (add `{registry}: {{}}` to use the credentials in ~/.docker/config.json)"
            ),
        );
    }
    let mut tags = Vec::new();
    let tag_items = if fields.get("tags").is_some() {
        decoder.positioned_list(&fields, "tags")
    } else {
        vec![("{{ commit.short }}".to_string(), fields.position())]
    };
    let tags_is_list = fields
        .get("tags")
        .is_none_or(|node| !matches!(node.kind, yaml::NodeKind::Mapping(_)));
    if tag_items.is_empty() && tags_is_list {
        decoder.error(
            fields.key_position("tags"),
            "`image.tags` must name at least one tag",
        );
    }
    for (text, tag_position) in tag_items {
        match Template::parse(&text) {
            Ok(template) => {
                match template.render(&TemplateValues::sample(branch)) {
                    Ok(tag) if !is_valid_tag(&tag) => decoder.error(
                        tag_position,
                        format!(
                            "`image.tags`: `{text}` gives `{tag}`, which Docker refuses as a tag \
                             (letters, digits, `_`, `.` and `-`, at most 128, not starting with `.` or `-`)"
                        ),
                    ),
                    Ok(_) => {}
                    Err(message) => decoder.error(tag_position, format!("`image.tags`: {message}")),
                }
                tags.push(template);
            }
            Err(message) => decoder.error(tag_position, format!("`image.tags`: {message}")),
        }
    }
    Some(Image { repository, tags })
}

fn read_deploy(decoder: &mut Decoder, node: &yaml::Node, global: &Global) -> Option<Deploy> {
    let fields = decoder.mapping(node, "deploy", &["batch", "on_failure", "services"])?;
    let batch = decoder
        .optional_number::<u32>(&fields, "batch", "a whole number of instances")
        .unwrap_or(1);
    if batch == 0 {
        decoder.error(
            fields.key_position("batch"),
            "`deploy.batch` must be at least 1",
        );
    }
    let on_failure = match decoder.optional_string(&fields, "on_failure").as_deref() {
        None | Some("rollback") => OnFailure::Rollback,
        Some("halt") => OnFailure::Halt,
        Some(other) => {
            decoder.error(
                fields
                    .get("on_failure")
                    .map_or(fields.position(), |node| node.position),
                format!("`deploy.on_failure` must be `rollback` or `halt`, not `{other}`"),
            );
            OnFailure::Rollback
        }
    };
    let mut services = BTreeMap::new();
    let mut requires_positions = Vec::new();
    let mut instance_names: BTreeMap<String, String> = BTreeMap::new();
    if let Some(services_node) = fields.get("services") {
        for (name, key, node) in decoder
            .entries(services_node, "deploy.services")
            .unwrap_or_default()
        {
            if !is_container_name(name) {
                decoder.error(
                    key.position,
                    format!(
                        "service name `{name}` may hold only letters, digits, `-`, `_` and `.`"
                    ),
                );
            }
            if let Some((service, positions)) = read_service(decoder, name, node, global) {
                for instance in service.instances.keys() {
                    if let Some(other) = instance_names.insert(instance.clone(), name.to_string()) {
                        decoder.error(
                            key.position,
                            format!(
                                "instance `{instance}` is defined in services `{other}` and `{name}`; \
                                 instance names are container names and must be unique"
                            ),
                        );
                    }
                }
                requires_positions.extend(positions);
                services.insert(name.to_string(), service);
            }
        }
    }
    for (service, required, position) in &requires_positions {
        if !services.contains_key(required) {
            let suggestion = closest(required, services.keys().map(String::as_str))
                .map(|near| format!(" (did you mean `{near}`?)"))
                .unwrap_or_default();
            decoder.error(
                *position,
                format!(
                    "`deploy.services.{service}.requires`: service `{required}` is not defined{suggestion}"
                ),
            );
        }
    }
    if let Some(cycle) = find_cycle(&services) {
        let position = requires_positions
            .iter()
            .find(|(service, _, _)| *service == cycle[0])
            .map_or(fields.position(), |(_, _, position)| *position);
        decoder.error(
            position,
            format!("`requires` forms a cycle: {}", cycle.join(" -> ")),
        );
    }
    Some(Deploy {
        batch: batch.max(1),
        on_failure,
        services,
    })
}

/// A service and the positions of its `requires` entries (service, required, where).
type ServiceWithRequires = (Service, Vec<(String, String, Position)>);

fn read_service(
    decoder: &mut Decoder,
    name: &str,
    node: &yaml::Node,
    global: &Global,
) -> Option<ServiceWithRequires> {
    let path = decode::join_path("deploy.services", name);
    let fields = decoder.mapping(
        node,
        &path,
        &[
            "requires",
            "command",
            "env",
            "ports",
            "volumes",
            "restart",
            "network",
            "labels",
            "memory",
            "cpus",
            "stop_timeout",
            "health",
            "instances",
        ],
    )?;
    let requires_items = decoder.positioned_list(&fields, "requires");
    let requires_positions = requires_items
        .iter()
        .map(|(required, position)| (name.to_string(), required.clone(), *position))
        .collect();
    let command = fields
        .get("command")
        .map(|node| decoder.string_list(node, &fields.path("command")));
    let mut ports = Vec::new();
    for (text, position) in decoder.positioned_list(&fields, "ports") {
        match parse_port(&text) {
            Ok(port) => ports.push(port),
            Err(message) => decoder.error(position, format!("`{path}.ports`: {message}")),
        }
    }
    let volumes = fields
        .get("volumes")
        .map(|node| decoder.string_list(node, &fields.path("volumes")))
        .unwrap_or_default();
    let restart = decoder
        .optional_string(&fields, "restart")
        .unwrap_or_else(|| "unless-stopped".to_string());
    let restart_valid = matches!(
        restart.as_str(),
        "no" | "always" | "unless-stopped" | "on-failure"
    ) || restart
        .strip_prefix("on-failure:")
        .is_some_and(|count| count.parse::<u32>().is_ok());
    if !restart_valid {
        decoder.error(
            fields.get("restart").map_or(fields.position(), |node| node.position),
            format!("`{path}.restart` must be no, always, unless-stopped or on-failure[:N], not `{restart}`"),
        );
    }
    let memory = fields.get("memory").and_then(|memory_node| {
        let text = decoder.string(memory_node, &fields.path("memory"))?;
        let bytes = parse_bytes(&text);
        if bytes.is_none() {
            decoder.error(
                memory_node.position,
                format!("`{path}.memory`: `{text}` is not a size (like 256m or 1g)"),
            );
        }
        bytes
    });
    let health = match fields.get("health") {
        Some(health_node) => read_health(decoder, &format!("{path}.health"), health_node, &ports),
        None => Some(Health {
            check: HealthCheck::None,
            timeout: DEFAULT_HEALTH_TIMEOUT,
            interval: DEFAULT_HEALTH_INTERVAL,
        }),
    };
    let mut instances = BTreeMap::new();
    match fields.get("instances") {
        Some(instances_node) => {
            let instances_path = format!("{path}.instances");
            for (instance_name, key, instance_node) in decoder
                .entries(instances_node, &instances_path)
                .unwrap_or_default()
            {
                if !is_container_name(instance_name) {
                    decoder.error(
                        key.position,
                        format!(
                            "instance name `{instance_name}` may hold only letters, digits, `-`, `_` and `.`"
                        ),
                    );
                }
                let instance_path = decode::join_path(&instances_path, instance_name);
                let instance_node = if instance_node.is_null() {
                    empty_mapping(instance_node.position)
                } else {
                    instance_node.clone()
                };
                let Some(instance_fields) =
                    decoder.mapping(&instance_node, &instance_path, &["host", "env"])
                else {
                    continue;
                };
                let host = decoder
                    .optional_string(&instance_fields, "host")
                    .unwrap_or_else(|| LOCAL_HOST.to_string());
                check_host(
                    decoder,
                    global,
                    &host,
                    instance_fields.key_position("host"),
                    &format!("{instance_path}.host"),
                );
                let env = decoder.string_map(&instance_fields, "env");
                instances.insert(
                    instance_name.to_string(),
                    Instance {
                        name: instance_name.to_string(),
                        host,
                        env,
                    },
                );
            }
        }
        None => decoder.missing(&fields, "instances"),
    }
    let service = Service {
        name: name.to_string(),
        requires: requires_items
            .into_iter()
            .map(|(required, _)| required)
            .collect(),
        command,
        env: decoder.string_map(&fields, "env"),
        ports,
        volumes,
        restart,
        network: decoder.optional_string(&fields, "network"),
        labels: decoder.string_map(&fields, "labels"),
        memory,
        cpus: decoder.optional_number(&fields, "cpus", "a number of CPUs like 0.5"),
        stop_timeout: decoder.optional_duration(&fields, "stop_timeout"),
        health: health?,
        instances,
    };
    Some((service, requires_positions))
}

fn read_health(
    decoder: &mut Decoder,
    path: &str,
    node: &yaml::Node,
    ports: &[PortMapping],
) -> Option<Health> {
    let fields = decoder.mapping(
        node,
        path,
        &["http", "tcp", "exec", "docker", "timeout", "interval"],
    )?;
    let kinds: Vec<&str> = ["http", "tcp", "exec", "docker"]
        .into_iter()
        .filter(|kind| fields.get(kind).is_some())
        .collect();
    if kinds.len() > 1 {
        decoder.error(
            fields.position(),
            format!(
                "`{path}` names several checks ({}); choose one",
                kinds.join(", ")
            ),
        );
    }
    let check_port = |decoder: &mut Decoder, check_fields: &Fields, check_path: &str| {
        let port: Option<u16> = decoder.optional_number(check_fields, "port", "a port number");
        if port.is_none() && check_fields.get("port").is_none() {
            decoder.missing(check_fields, "port");
        }
        if let Some(port) = port
            && !ports.iter().any(|mapping| mapping.container_port == port)
        {
            decoder.error(
                check_fields.key_position("port"),
                format!(
                    "`{check_path}.port`: container port {port} is not published in `ports`; \
                     use an `exec` or `docker` check for an unpublished port"
                ),
            );
        }
        port
    };
    let check = match kinds.first().copied() {
        None => HealthCheck::None,
        Some("http") => {
            let http_path = format!("{path}.http");
            let http = decoder.mapping(
                fields.get("http")?,
                &http_path,
                &["port", "path", "status", "body"],
            )?;
            let port = check_port(decoder, &http, &http_path);
            let request_path = decoder
                .optional_string(&http, "path")
                .unwrap_or_else(|| "/".to_string());
            if !request_path.starts_with('/') {
                decoder.error(
                    http.key_position("path"),
                    format!("`{http_path}.path` must start with `/`"),
                );
            }
            let status = decoder
                .optional_number(&http, "status", "an HTTP status like 200")
                .unwrap_or(200);
            let body = decoder.optional_string(&http, "body");
            if let Some(pattern) = &body
                && let Err(error) = regex::Regex::new(pattern)
            {
                decoder.error(
                    http.key_position("body"),
                    format!("`{http_path}.body` is not a valid regex: {error}"),
                );
            }
            HealthCheck::Http {
                port: port?,
                path: request_path,
                status,
                body,
            }
        }
        Some("tcp") => {
            let tcp_path = format!("{path}.tcp");
            let tcp = decoder.mapping(fields.get("tcp")?, &tcp_path, &["port"])?;
            HealthCheck::Tcp {
                port: check_port(decoder, &tcp, &tcp_path)?,
            }
        }
        Some("exec") => {
            let command = decoder.string_list(fields.get("exec")?, &format!("{path}.exec"));
            if command.is_empty() {
                decoder.error(
                    fields.key_position("exec"),
                    format!("`{path}.exec` needs a command"),
                );
            }
            HealthCheck::Exec { command }
        }
        Some(_) => match decoder.optional_bool(&fields, "docker") {
            Some(true) => HealthCheck::Docker,
            _ => HealthCheck::None,
        },
    };
    Some(Health {
        check,
        timeout: decoder
            .optional_duration(&fields, "timeout")
            .unwrap_or(DEFAULT_HEALTH_TIMEOUT),
        interval: decoder
            .optional_duration(&fields, "interval")
            .unwrap_or(DEFAULT_HEALTH_INTERVAL),
    })
}

/// Parses Docker's short port syntax: `8080`, `80:8080`, `127.0.0.1:80:8080`, `53:53/udp`.
fn parse_port(text: &str) -> Result<PortMapping, String> {
    let (mapping, protocol) = match text.split_once('/') {
        Some((mapping, protocol)) => (mapping, protocol),
        None => (text, "tcp"),
    };
    if !matches!(protocol, "tcp" | "udp" | "sctp") {
        return Err(format!("`{text}`: protocol must be tcp, udp or sctp"));
    }
    let parts: Vec<&str> = mapping.rsplitn(3, ':').collect();
    let parse = |part: &str| {
        part.parse::<u16>()
            .ok()
            .filter(|port| *port != 0)
            .ok_or_else(|| {
                format!("`{text}` is not a port mapping like 8080:80 (`{part}` is not a port)")
            })
    };
    let container_port = parse(parts[0])?;
    let host_port = match parts.get(1) {
        Some(part) if !part.is_empty() => Some(parse(part)?),
        _ => None,
    };
    let host_ip = parts.get(2).map(|ip| ip.to_string());
    Ok(PortMapping {
        host_ip,
        host_port,
        container_port,
        protocol: protocol.to_string(),
    })
}

/// Parses a size like `512m`, `1g`, `1048576`.
fn parse_bytes(text: &str) -> Option<u64> {
    let lower = text.trim().to_ascii_lowercase();
    let lower = lower.trim_end_matches('b');
    let (number, multiplier) = match lower.chars().last()? {
        'k' => (&lower[..lower.len() - 1], 1024),
        'm' => (&lower[..lower.len() - 1], 1024 * 1024),
        'g' => (&lower[..lower.len() - 1], 1024 * 1024 * 1024),
        _ => (lower, 1),
    };
    number.parse::<u64>().ok()?.checked_mul(multiplier)
}

/// Finds one `requires` cycle, returned as the path that closes it (`a, b, a`).
fn find_cycle(services: &BTreeMap<String, Service>) -> Option<Vec<String>> {
    fn visit(
        name: &str,
        services: &BTreeMap<String, Service>,
        finished: &mut BTreeSet<String>,
        stack: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        if let Some(start) = stack.iter().position(|entry| entry == name) {
            let mut cycle = stack[start..].to_vec();
            cycle.push(name.to_string());
            return Some(cycle);
        }
        if finished.contains(name) {
            return None;
        }
        stack.push(name.to_string());
        if let Some(service) = services.get(name) {
            for required in &service.requires {
                if let Some(cycle) = visit(required, services, finished, stack) {
                    return Some(cycle);
                }
            }
        }
        stack.pop();
        finished.insert(name.to_string());
        None
    }
    let mut finished = BTreeSet::new();
    services
        .keys()
        .find_map(|name| visit(name, services, &mut finished, &mut Vec::new()))
}

#[cfg(test)]
mod tests;
