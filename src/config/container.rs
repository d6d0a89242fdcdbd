//! A service's container settings beyond the common ones (`ContainerOptions`), its
//! `networks`, and `env_file`: each checked where it is written.

use std::collections::BTreeMap;

use super::decode::{Decoder, Fields};
use super::yaml::{self, NodeKind, Position};
use super::*;

/// The service keys this module reads.
pub(super) const KEYS: [&str; 13] = [
    "entrypoint",
    "user",
    "logging",
    "networks",
    "extra_hosts",
    "ulimits",
    "read_only",
    "tmpfs",
    "cap_add",
    "cap_drop",
    "init",
    "env_file",
    "aliases",
];

/// The largest env file read.
const MAX_ENV_FILE: u64 = 1024 * 1024;

/// A service's options, and the first of its `networks` (the one it is created on).
pub(super) fn read_options(
    decoder: &mut Decoder,
    fields: &Fields,
    path: &str,
    network: &mut Option<String>,
) -> ContainerOptions {
    let mut options = ContainerOptions {
        entrypoint: fields
            .get("entrypoint")
            .map(|node| decoder.string_list(node, &fields.path("entrypoint"))),
        user: decoder.optional_string(fields, "user"),
        read_only: decoder.optional_bool(fields, "read_only").unwrap_or(false),
        init: decoder.optional_bool(fields, "init").unwrap_or(false),
        ..ContainerOptions::default()
    };
    if options.entrypoint.as_ref().is_some_and(Vec::is_empty) {
        decoder.error(
            fields.key_position("entrypoint"),
            format!("`{path}.entrypoint` needs at least the program"),
        );
    }
    if let Some(node) = fields.get("logging") {
        options.logging = read_logging(decoder, &fields.path("logging"), node);
    }
    if let Some(node) = fields.get("networks") {
        let attachments = read_networks(decoder, &fields.path("networks"), node);
        if network.is_some() && !attachments.is_empty() {
            decoder.error(
                fields.key_position("networks"),
                format!("`{path}` names both `network` and `networks`; list every network under `networks`"),
            );
        } else if let Some((first, rest)) = attachments.split_first() {
            *network = Some(first.name.clone());
            options.aliases = first.aliases.clone();
            options.networks = rest.to_vec();
        }
    }
    for (host, position) in decoder.positioned_list(fields, "extra_hosts") {
        match host.split_once(':') {
            Some((name, address))
                if !name.is_empty() && address.parse::<std::net::IpAddr>().is_ok() =>
            {
                options.extra_hosts.push(host.clone());
            }
            _ => decoder.error(
                position,
                format!("`{path}.extra_hosts`: `{host}` is not `name:address` (like db.internal:10.0.0.5)"),
            ),
        }
    }
    if let Some(node) = fields.get("ulimits") {
        options.ulimits = read_ulimits(decoder, &fields.path("ulimits"), node);
    }
    for (mount, position) in decoder.positioned_list(fields, "tmpfs") {
        if mount.starts_with('/') {
            options.tmpfs.push(mount);
        } else {
            decoder.error(
                position,
                format!(
                    "`{path}.tmpfs`: `{mount}` is not an absolute path (like /tmp or /run:size=64m)"
                ),
            );
        }
    }
    for key in ["cap_add", "cap_drop"] {
        for (capability, position) in decoder.positioned_list(fields, key) {
            let name = capability.trim_start_matches("CAP_").to_ascii_uppercase();
            if !name.is_empty() && name.chars().all(|c| c.is_ascii_uppercase() || c == '_') {
                let list = if key == "cap_add" {
                    &mut options.cap_add
                } else {
                    &mut options.cap_drop
                };
                list.push(if name == "ALL" {
                    name
                } else {
                    format!("CAP_{name}")
                });
            } else {
                decoder.error(
                    position,
                    format!(
                        "`{path}.{key}`: `{capability}` is not a capability (like NET_ADMIN or ALL)"
                    ),
                );
            }
        }
    }
    options
}

fn read_logging(decoder: &mut Decoder, path: &str, node: &yaml::Node) -> Option<Logging> {
    let fields = decoder.mapping(node, path, &["driver", "options"])?;
    let driver = decoder.required_string(&fields, "driver")?;
    Some(Logging {
        driver,
        options: decoder.string_map(&fields, "options"),
    })
}

/// `networks: [a, b]` or `networks: { a: { aliases: [x] }, b: {} }`, in the order written.
fn read_networks(decoder: &mut Decoder, path: &str, node: &yaml::Node) -> Vec<NetworkAttachment> {
    let named = |decoder: &mut Decoder, name: &str, position: Position| {
        if is_container_name(name) {
            true
        } else {
            decoder.error(
                position,
                format!("`{path}`: network name `{name}` may hold only letters, digits, `-`, `_` and `.`"),
            );
            false
        }
    };
    match &node.kind {
        NodeKind::Mapping(_) => decoder
            .entries(node, path)
            .unwrap_or_default()
            .into_iter()
            .filter_map(|(name, key, value)| {
                if !named(decoder, name, key.position) {
                    return None;
                }
                let entry_path = decode::join_path(path, name);
                let aliases = if value.is_null() {
                    Vec::new()
                } else {
                    let fields = decoder.mapping(value, &entry_path, &["aliases"])?;
                    fields
                        .get("aliases")
                        .map(|node| decoder.string_list(node, &fields.path("aliases")))
                        .unwrap_or_default()
                };
                Some(NetworkAttachment {
                    name: name.to_string(),
                    aliases,
                })
            })
            .collect(),
        _ => {
            let names = decoder.string_list(node, path);
            names
                .into_iter()
                .filter(|name| named(decoder, name, node.position))
                .map(|name| NetworkAttachment {
                    name,
                    aliases: Vec::new(),
                })
                .collect()
        }
    }
}

/// `ulimits: { nofile: 65536, nproc: { soft: 1024, hard: 2048 } }`.
fn read_ulimits(decoder: &mut Decoder, path: &str, node: &yaml::Node) -> BTreeMap<String, Ulimit> {
    let mut ulimits = BTreeMap::new();
    for (name, key, value) in decoder.entries(node, path).unwrap_or_default() {
        let entry_path = decode::join_path(path, name);
        if !name.chars().all(|c| c.is_ascii_lowercase()) || name.is_empty() {
            decoder.error(
                key.position,
                format!("`{path}`: `{name}` is not a limit name (like nofile or nproc)"),
            );
            continue;
        }
        let limit = match &value.kind {
            NodeKind::Mapping(_) => {
                let Some(fields) = decoder.mapping(value, &entry_path, &["soft", "hard"]) else {
                    continue;
                };
                let soft = decoder.optional_number::<i64>(&fields, "soft", "a whole number");
                let hard = decoder.optional_number::<i64>(&fields, "hard", "a whole number");
                match (soft, hard) {
                    (Some(soft), Some(hard)) if soft <= hard => Ulimit { soft, hard },
                    (Some(_), Some(_)) => {
                        decoder.error(
                            value.position,
                            format!("`{entry_path}`: `soft` must not be above `hard`"),
                        );
                        continue;
                    }
                    _ => {
                        decoder.error(
                            value.position,
                            format!("`{entry_path}` needs `soft` and `hard`"),
                        );
                        continue;
                    }
                }
            }
            _ => {
                let Some(text) = decoder.string(value, &entry_path) else {
                    continue;
                };
                match text.parse::<i64>() {
                    Ok(both) => Ulimit {
                        soft: both,
                        hard: both,
                    },
                    Err(_) => {
                        decoder.error(
                            value.position,
                            format!("`{entry_path}` must be a whole number or {{ soft, hard }}, not `{text}`"),
                        );
                        continue;
                    }
                }
            }
        };
        ulimits.insert(name.to_string(), limit);
    }
    ulimits
}

/// The variables of a service's `env_file` (a path, or a list of them, relative to the
/// config directory), in Docker's format: `NAME=value` lines taken literally, `NAME`
/// alone for the variable of gantry's own environment, `#` comments and blank lines.
pub(super) fn read_env_files(
    decoder: &mut Decoder,
    fields: &Fields,
    path: &str,
) -> BTreeMap<String, String> {
    let mut env = BTreeMap::new();
    for (file, position) in decoder.positioned_list(fields, "env_file") {
        let full = decoder.dir.join(&file);
        let text = match read_env_file(&full) {
            Ok(text) => text,
            Err(reason) => {
                decoder.error(position, format!("`{path}.env_file`: `{file}`: {reason}"));
                continue;
            }
        };
        let display = full.clone();
        for (index, line) in text.lines().enumerate() {
            let line = line.trim_start();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (name, value) = match line.split_once('=') {
                Some((name, value)) => (name.trim_end(), Some(value.to_string())),
                None => (line.trim_end(), None),
            };
            let here = |decoder: &mut Decoder, message: String| {
                decoder.diagnostics.push(Diagnostic {
                    file: display.clone(),
                    line: index + 1,
                    column: 1,
                    message,
                });
            };
            if name.is_empty() || name.chars().any(char::is_whitespace) {
                // The line is not quoted back: it may hold a secret.
                here(
                    decoder,
                    "not a `NAME=value` line (named in `env_file`)".to_string(),
                );
                continue;
            }
            match value.or_else(|| (decoder.environment)(name)) {
                Some(value) => {
                    env.insert(name.to_string(), value);
                }
                None => here(
                    decoder,
                    format!("environment variable `{name}` is not set (named in `env_file`)"),
                ),
            }
        }
    }
    env
}

fn read_env_file(path: &std::path::Path) -> Result<String, String> {
    let metadata = std::fs::metadata(path).map_err(|error| error.to_string())?;
    if !metadata.is_file() {
        return Err("is not a regular file".to_string());
    }
    if metadata.len() > MAX_ENV_FILE {
        return Err(format!("is larger than {} KiB", MAX_ENV_FILE / 1024));
    }
    std::fs::read_to_string(path).map_err(|error| error.to_string())
}
