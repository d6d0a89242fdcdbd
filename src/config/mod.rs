//! The config directory: `gantry.yaml` plus `pipelines/*.yaml`, read into a validated `Config`.
//!
//! Loading collects every error in every file, each as `file:line:column: message`,
//! before it fails; a `Config` that exists is known to be consistent (every host,
//! registry and service it names is defined, every path stays inside its repository,
//! every tag template renders to a tag Docker accepts). This module reads files and
//! the environment only: it does no network IO and never talks to Docker.

mod builder;
mod container;
mod decode;
mod global;
mod images;
mod pipeline;
mod reference;
mod registries;
mod service;
mod swarm;
mod task;
mod template;
mod types;
pub mod yaml;

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use builder::{BuildSecret, BuildSecretSource, Builder};
use decode::{Environment, closest};
use global::read_global;
pub use global::{StateLocation, is_database_url, state_of};
pub use pipeline::is_valid_branch;
use pipeline::read_pipeline;
pub use reference::{
    DEFAULT_REGISTRY, ImageRepository, is_sha256_digest, is_valid_tag, shown_reference,
};
pub use swarm::{
    DEFAULT_MONITOR as DEFAULT_SWARM_MONITOR, FailureAction, PublishMode, SwarmSettings,
    SwarmUpdate, UpdateOrder,
};
pub use task::{DEFAULT_TASK_TIMEOUT, Task, TaskWhen};
pub use template::{Template, TemplateValues};
pub use types::*;

/// The name of the optional global file in the config directory.
pub const GLOBAL_FILE: &str = "gantry.yaml";
/// The folder of pipeline files in the config directory.
pub const PIPELINES_DIR: &str = "pipelines";
/// The host that always exists unless `gantry.yaml` redefines it.
pub const LOCAL_HOST: &str = "local";
/// Appended to an instance's name while its old container waits for the new one to
/// prove itself; no instance may be named so.
pub const PREVIOUS_SUFFIX: &str = ".previous";
/// How long `gantry hosts` and every Docker call wait for a host to answer by default.
pub const DEFAULT_HOST_TIMEOUT: Duration = Duration::from_secs(5);
/// The largest config file read: the biggest real pipeline is a few KiB; the loader
/// holds a file and its tree in memory on every reload.
pub const MAX_FILE_BYTES: u64 = 1024 * 1024;
/// Diagnostics listed per file; a file with thousands of errors is shown the first ones
/// and a count of the rest.
pub const MAX_DIAGNOSTICS_PER_FILE: usize = 100;
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
        let global_file = display_file(dir, GLOBAL_FILE);
        let global_text = read_file(&dir.join(GLOBAL_FILE), &global_file, &mut diagnostics)?;
        let global = read_global(
            dir,
            &global_file,
            global_text.as_deref().unwrap_or(""),
            environment,
            &mut diagnostics,
        );

        let mut pipelines = BTreeMap::new();
        let mut warnings = Vec::new();
        for path in pipeline_files(dir)? {
            let relative = Path::new(PIPELINES_DIR).join(path.file_name().unwrap_or_default());
            let file = display_file(dir, &relative.to_string_lossy());
            let Some(text) = read_file(&path, &file, &mut diagnostics)? else {
                continue;
            };
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
                pipeline::Reports {
                    errors: &mut diagnostics,
                    warnings: &mut warnings,
                },
            ) {
                pipelines.insert(name, pipeline);
            }
        }

        check_container_names(&pipelines, &global.hosts, &mut diagnostics);
        check_proxy_ports(&pipelines, &global.hosts, &mut diagnostics);
        if !diagnostics.is_empty() {
            return Err(ConfigError::Invalid(bounded(diagnostics)));
        }
        Ok(Config {
            dir: dir.to_path_buf(),
            state_dir: global.state_dir,
            state_database: global.state_database,
            server: global.server,
            hosts: global.hosts,
            registries: global.registries,
            notifications: global.notifications,
            proxy: global.proxy,
            warnings: global.warnings.into_iter().chain(warnings).collect(),
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

/// `text` with the user info of every URL in it removed (`https://u:TOKEN@host/x`
/// becomes `https://host/x`), for messages that quote a URL they were given.
pub fn redact_urls(text: &str) -> String {
    let mut output = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(index) = rest.find("://") {
        let (before, after) = rest.split_at(index + 3);
        output.push_str(before);
        rest = match user_info_end(after) {
            Some(at) => &after[at + 1..],
            None => after,
        };
    }
    output.push_str(rest);
    output
}

/// The user info of a URL (`u:TOKEN` in `https://u:TOKEN@host/x`), if it has any.
pub fn user_info(url: &str) -> Option<&str> {
    let (_, after) = url.split_once("://")?;
    user_info_end(after).map(|at| &after[..at])
}

/// Where the user info ends (its `@`) in what follows a URL's `://`: the authority runs
/// to the first `/`, space or quote, and user info ends at its last `@` (a password
/// may hold one).
fn user_info_end(after_scheme: &str) -> Option<usize> {
    let authority_end = after_scheme
        .find(|character: char| {
            character == '/' || character.is_whitespace() || "'\"`<>".contains(character)
        })
        .unwrap_or(after_scheme.len());
    after_scheme[..authority_end].rfind('@')
}

/// Two pipelines' instances that would own one container: the same name on the same
/// Docker engine (two host names may reach one engine). Both places are reported.
fn check_container_names(
    pipelines: &BTreeMap<String, Pipeline>,
    hosts: &BTreeMap<String, Host>,
    diagnostics: &mut Vec<Diagnostic>,
) {
    let mut owners: BTreeMap<(String, &str), (&Pipeline, &Instance)> = BTreeMap::new();
    for pipeline in pipelines.values() {
        for instance in pipeline
            .deploy
            .services
            .values()
            .flat_map(|service| service.instances.values())
        {
            let Some(host) = hosts.get(&instance.host) else {
                continue;
            };
            let engine = host.docker.to_string();
            let Some((other, other_instance)) = owners.get(&(engine.clone(), &instance.name))
            else {
                owners.insert((engine, &instance.name), (pipeline, instance));
                continue;
            };
            if other.name == pipeline.name {
                // Within one pipeline the service reader reports it already.
                continue;
            }
            diagnostics.push(clash(pipeline, instance, other, other_instance));
            diagnostics.push(clash(other, other_instance, pipeline, instance));
        }
    }
}

/// Services that share a proxy port on one engine must each name `hosts`, none twice,
/// and agree on TLS: the proxy tells them apart by the Host header.
fn check_proxy_ports(
    pipelines: &BTreeMap<String, Pipeline>,
    hosts: &BTreeMap<String, Host>,
    diagnostics: &mut Vec<Diagnostic>,
) {
    type Sharer<'a> = (&'a Pipeline, &'a Service, &'a Instance);
    let mut by_port: BTreeMap<(String, u16), Vec<Sharer<'_>>> = BTreeMap::new();
    for pipeline in pipelines.values() {
        for service in pipeline.deploy.services.values() {
            let Some(proxy) = &service.proxy else {
                continue;
            };
            for instance in service.instances.values() {
                let Some(host) = hosts.get(&instance.host) else {
                    continue;
                };
                let sharers = by_port
                    .entry((host.docker.to_string(), proxy.port))
                    .or_default();
                // One service's instances on one engine share its route.
                if !sharers.iter().any(|(other_pipeline, other, _)| {
                    other_pipeline.name == pipeline.name && other.name == service.name
                }) {
                    sharers.push((pipeline, service, instance));
                }
            }
        }
    }
    for ((_, port), sharers) in &by_port {
        for (index, (pipeline, service, instance)) in sharers.iter().enumerate() {
            let Some(proxy) = &service.proxy else {
                continue;
            };
            let conflict = sharers.iter().enumerate().find_map(|(other_index, other)| {
                let other_proxy = other.1.proxy.as_ref()?;
                if other_index == index {
                    return None;
                }
                if proxy.hosts.is_empty() || other_proxy.hosts.is_empty() {
                    Some(("both need `hosts` to share it", other))
                } else if proxy
                    .hosts
                    .iter()
                    .any(|host| other_proxy.hosts.contains(host))
                {
                    Some(("they name the same host", other))
                } else if proxy.tls.is_some() != other_proxy.tls.is_some() {
                    Some(("one uses TLS and the other does not", other))
                } else {
                    None
                }
            });
            if let Some((why, (other_pipeline, other_service, other_instance))) = conflict {
                diagnostics.push(Diagnostic {
                    file: pipeline.file.clone(),
                    line: instance.position.line,
                    column: instance.position.column,
                    message: format!(
                        "service `{}` shares proxy port {port} on host `{}` with pipeline `{}`'s service `{}` ({}:{}:{}), but {why}",
                        service.name,
                        instance.host,
                        other_pipeline.name,
                        other_service.name,
                        other_pipeline.file.display(),
                        other_instance.position.line,
                        other_instance.position.column,
                    ),
                });
            }
        }
    }
}

/// The error at one of two instances that would own one container.
fn clash(here: &Pipeline, instance: &Instance, there: &Pipeline, other: &Instance) -> Diagnostic {
    Diagnostic {
        file: here.file.clone(),
        line: instance.position.line,
        column: instance.position.column,
        message: format!(
            "instance `{}` on host `{}` is also pipeline `{}`'s ({}:{}:{}); one container name on one engine belongs to one instance",
            instance.name,
            instance.host,
            there.name,
            there.file.display(),
            other.position.line,
            other.position.column
        ),
    }
}

/// Reads a config file's text: `None` when it does not exist, or when it is too large
/// or not UTF-8 (reported as a diagnostic, so the other files are still checked).
fn read_file(
    path: &Path,
    file: &Path,
    diagnostics: &mut Vec<Diagnostic>,
) -> Result<Option<String>, ConfigError> {
    let read_error = |source: std::io::Error| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    };
    let problem = |message: String| Diagnostic {
        file: file.to_path_buf(),
        line: 1,
        column: 1,
        message,
    };
    // Asked before opening: opening a FIFO waits for a writer, maybe forever.
    match std::fs::metadata(path) {
        Ok(metadata) if metadata.is_file() => {}
        Ok(_) => {
            diagnostics.push(problem("not a regular file".to_string()));
            return Ok(None);
        }
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(read_error(source)),
    }
    let opened = std::fs::File::open(path).map_err(read_error)?;
    // Read at most one byte past the limit, so a file that grows while it is read
    // is caught too.
    let mut bytes = Vec::new();
    std::io::Read::read_to_end(
        &mut std::io::Read::take(opened, MAX_FILE_BYTES + 1),
        &mut bytes,
    )
    .map_err(read_error)?;
    if bytes.len() as u64 > MAX_FILE_BYTES {
        diagnostics.push(problem(format!(
            "the file is larger than {} KiB, the most a config file may be",
            MAX_FILE_BYTES / 1024
        )));
        return Ok(None);
    }
    match String::from_utf8(bytes) {
        Ok(text) => Ok(Some(text)),
        Err(error) => {
            diagnostics.push(problem(format!(
                "not UTF-8 text (invalid byte at offset {})",
                error.utf8_error().valid_up_to()
            )));
            Ok(None)
        }
    }
}

/// The diagnostics sorted, with at most `MAX_DIAGNOSTICS_PER_FILE` of each file and a
/// count of the rest.
fn bounded(mut diagnostics: Vec<Diagnostic>) -> Vec<Diagnostic> {
    diagnostics.sort();
    let mut kept = Vec::new();
    for of_one_file in diagnostics.chunk_by(|one, other| one.file == other.file) {
        let (shown, rest) = of_one_file.split_at(of_one_file.len().min(MAX_DIAGNOSTICS_PER_FILE));
        kept.extend_from_slice(shown);
        if let Some(last) = shown.last()
            && !rest.is_empty()
        {
            kept.push(Diagnostic {
                file: last.file.clone(),
                line: last.line,
                column: 1,
                message: format!("... and {} more errors in this file", rest.len()),
            });
        }
    }
    kept
}

/// Parses a file into a tree, reporting a syntax error as a diagnostic.
pub(super) fn parse_file(
    file: &Path,
    text: &str,
    diagnostics: &mut Vec<Diagnostic>,
) -> Option<yaml::Node> {
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

pub(super) fn is_simple_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .chars()
            .all(|character| character.is_ascii_alphanumeric() || "-_.".contains(character))
        && !name.starts_with(['.', '-'])
}

/// The name of a pipeline, service or instance: it becomes part of container names and labels.
pub(crate) fn is_container_name(name: &str) -> bool {
    is_simple_name(name) && name.len() <= 128
}

#[cfg(test)]
mod container_tests;
#[cfg(test)]
mod fuzz_tests;
#[cfg(test)]
mod images_tests;
#[cfg(test)]
mod proxy_tests;
#[cfg(test)]
mod swarm_tests;
#[cfg(test)]
mod tests;

#[cfg(test)]
mod redaction_tests {
    use super::redact_urls as redact;

    #[test]
    fn urls_lose_their_credentials_wherever_they_appear() {
        let check = |text: &str, expected: &str| assert_eq!(redact(text), expected, "{text}");
        check(
            "https://u:t0ken@git.example.com/a.git",
            "https://git.example.com/a.git",
        );
        check(
            "https://git.example.com/a@b.git",
            "https://git.example.com/a@b.git",
        );
        check("/srv/repo", "/srv/repo");
        check(
            "cannot fetch 'file://me:s3cret@/srv/repo': failed; see https://x:y@h:1/p and ssh://git@h/r",
            "cannot fetch 'file:///srv/repo': failed; see https://h:1/p and ssh://h/r",
        );
        check("git@github.com:team/app.git", "git@github.com:team/app.git");
    }
}
