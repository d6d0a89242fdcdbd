//! Property tests of the config loader: config directories made of random files.
//!
//! Whatever `gantry.yaml` and the pipeline files hold (gantry's own keys with random
//! values, random YAML, random text, bytes that are not UTF-8), `Config::load_with`
//! gives a config or diagnostics, never a panic and never an IO error; each diagnostic
//! names one of the files, a line and column inside it, and a message, and no file gets
//! more than `MAX_DIAGNOSTICS_PER_FILE` of them plus the count of the rest.

use proptest::prelude::*;
use proptest::sample::select;

use super::*;
use crate::fuzz;

/// Every key the config reads, and names it uses as values.
const WORDS: &[&str] = &[
    "abs",
    "accessory",
    "acme",
    "address",
    "after",
    "aliases",
    "always",
    "args",
    "auto",
    "batch",
    "before",
    "body",
    "branch",
    "build",
    "builder",
    "buildkit",
    "ca",
    "cache_from",
    "cap_add",
    "cap_drop",
    "cert",
    "classic",
    "command",
    "container_port",
    "context",
    "cpus",
    "deploy",
    "docker",
    "dockerfile",
    "drain",
    "driver",
    "email",
    "entrypoint",
    "env",
    "env_file",
    "exec",
    "extra_hosts",
    "failure",
    "file",
    "format",
    "halt",
    "hard",
    "health",
    "hello",
    "host",
    "hosts",
    "http",
    "image",
    "images",
    "init",
    "insecure",
    "instances",
    "internal",
    "interval",
    "json",
    "keep_images",
    "keep_runs",
    "key",
    "labels",
    "listen",
    "logging",
    "main",
    "max_body",
    "max_builds",
    "max_pulls",
    "memory",
    "migrate",
    "mirror",
    "network",
    "networks",
    "no",
    "notifications",
    "notify",
    "npm",
    "npm_token",
    "on",
    "on_failure",
    "options",
    "password",
    "path",
    "pipelines",
    "poll",
    "port",
    "ports",
    "proxy",
    "public_read",
    "public_url",
    "read_only",
    "read_token",
    "registries",
    "repo",
    "repository",
    "requires",
    "restart",
    "rollback",
    "sctp",
    "secret",
    "secrets",
    "seed",
    "server",
    "service",
    "services",
    "slack",
    "soft",
    "source",
    "ssh_key",
    "state",
    "status",
    "stop_timeout",
    "success",
    "tags",
    "target",
    "tasks",
    "tcp",
    "timeout",
    "tls",
    "tmpfs",
    "token",
    "udp",
    "ulimits",
    "unsigned",
    "up",
    "url",
    "user",
    "username",
    "volumes",
    "web",
    "webhook",
    "when",
];

/// Values shaped like the ones config keys take, and some that are almost right.
const VALUES: &[&str] = &[
    "main",
    "0",
    "1",
    "-1",
    "65536",
    "99999999999999999999999",
    "1.5",
    "true",
    "false",
    "yes",
    "10s",
    "1h",
    "0s",
    "5 minutes",
    "127.0.0.1:8700",
    "[::1]:0",
    "127.0.0.1:5000/team/app",
    "Team/App",
    "app:latest",
    "app@sha256:0123",
    "{{ commit.short }}",
    "{{ branch }}-{{ run.number }}",
    "{{ nothing }}",
    "{% for i in range(100000) %}x{% endfor %}",
    "${SECRET}",
    "${MISSING}",
    "${",
    "${SECRET:-x}",
    "unix:///var/run/docker.sock",
    "tcp://127.0.0.1:2375",
    "ssh://user@127.0.0.1",
    "https://user:t0ken@git.example.com/team/app.git",
    "8080:80",
    "80/udp",
    "127.0.0.1:8080:80",
    ".",
    "..",
    "../outside",
    "/abs",
    "sub/dir",
    "",
    "~",
    "web.previous",
    "a b",
    "é",
];

/// A value: one of `VALUES`, a word, a list or a mapping of words to values.
fn value() -> impl Strategy<Value = serde_json::Value> {
    let leaf = prop_oneof![
        4 => select(VALUES).prop_map(serde_json::Value::from),
        2 => select(WORDS).prop_map(serde_json::Value::from),
        1 => any::<i64>().prop_map(serde_json::Value::from),
        1 => any::<bool>().prop_map(serde_json::Value::from),
        1 => Just(serde_json::Value::Null),
        1 => "[ -~]{0,30}".prop_map(serde_json::Value::from),
    ];
    leaf.prop_recursive(6, 96, 6, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(serde_json::Value::Array),
            proptest::collection::vec((select(WORDS), inner), 0..6).prop_map(|entries| {
                serde_json::Value::Object(
                    entries
                        .into_iter()
                        .map(|(key, value)| (key.to_string(), value))
                        .collect(),
                )
            }),
        ]
    })
}

/// A config file's content: gantry's keys with random values (in block or flow style),
/// random text, or random bytes.
fn file() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        6 => value().prop_map(|value| block(&value).into_bytes()),
        2 => value().prop_map(|value| value.to_string().into_bytes()),
        1 => ".{0,300}".prop_map(String::into_bytes),
        1 => proptest::collection::vec(any::<u8>(), 0..300),
    ]
}

/// A JSON value as block YAML (JSON is flow YAML already; this is the other style).
fn block(value: &serde_json::Value) -> String {
    fn write(value: &serde_json::Value, indent: usize, text: &mut String) {
        let pad = " ".repeat(indent);
        match value {
            serde_json::Value::Object(map) if !map.is_empty() => {
                for (key, item) in map {
                    text.push_str(&format!("{pad}{key}:"));
                    write_item(item, indent, text);
                }
            }
            serde_json::Value::Array(items) if !items.is_empty() => {
                for item in items {
                    text.push_str(&format!("{pad}-"));
                    write_item(item, indent, text);
                }
            }
            other => text.push_str(&format!("{pad}{}\n", scalar(other))),
        }
    }
    fn write_item(item: &serde_json::Value, indent: usize, text: &mut String) {
        match item {
            serde_json::Value::Object(map) if !map.is_empty() => {
                text.push('\n');
                write(item, indent + 2, text);
            }
            serde_json::Value::Array(items) if !items.is_empty() => {
                text.push('\n');
                write(item, indent + 2, text);
            }
            other => text.push_str(&format!(" {}\n", scalar(other))),
        }
    }
    /// Strings plain when YAML reads them back as written, else JSON-quoted.
    fn scalar(value: &serde_json::Value) -> String {
        match value {
            serde_json::Value::String(text)
                if !text.is_empty()
                    && text
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || "._/-".contains(c)) =>
            {
                text.clone()
            }
            other => other.to_string(),
        }
    }
    let mut text = String::new();
    write(value, 0, &mut text);
    text
}

#[test]
fn any_config_directory_loads_or_fails_with_positions() {
    let pipelines = proptest::collection::btree_map("[a-z][a-z0-9.-]{0,6}", file(), 0..3);
    // One directory for every input, emptied before each: making and removing a
    // directory per input cost more than loading what is in it.
    let dir = tempfile::tempdir().unwrap();
    let pipelines_dir = dir.path().join(PIPELINES_DIR);
    std::fs::create_dir_all(&pipelines_dir).unwrap();
    fuzz::check(
        "config::load",
        (proptest::option::of(file()), pipelines),
        |(global, pipelines)| {
            empty(dir.path(), &pipelines_dir);
            let mut written: Vec<(PathBuf, Vec<u8>)> = Vec::new();
            if let Some(global) = global {
                written.push((dir.path().join(GLOBAL_FILE), global));
            }
            for (name, content) in pipelines {
                written.push((pipelines_dir.join(format!("{name}.yaml")), content));
            }
            for (path, content) in &written {
                std::fs::write(path, content).unwrap();
            }
            let environment = |name: &str| (name == "SECRET").then(|| "s3cret".to_string());
            let diagnostics = match Config::load_with(dir.path(), &environment) {
                Ok(_) => return Ok(()),
                Err(ConfigError::Invalid(diagnostics)) => diagnostics,
                Err(other) => return Err(TestCaseError::fail(format!("not diagnostics: {other}"))),
            };
            prop_assert!(!diagnostics.is_empty());
            for diagnostic in &diagnostics {
                let Some((_, content)) = written.iter().find(|(path, _)| *path == diagnostic.file)
                else {
                    return Err(TestCaseError::fail(format!(
                        "a file not written: {diagnostic}"
                    )));
                };
                let lines = String::from_utf8_lossy(content)
                    .replace("\r\n", "\n")
                    .matches(['\n', '\r'])
                    .count()
                    + 1;
                prop_assert!(
                    diagnostic.line >= 1 && diagnostic.line <= lines && diagnostic.column >= 1,
                    "{diagnostic} is outside its file of {lines} lines"
                );
                prop_assert!(!diagnostic.message.is_empty());
                let shown = diagnostic.to_string();
                let place = format!(
                    "{}:{}:{}: ",
                    diagnostic.file.display(),
                    diagnostic.line,
                    diagnostic.column
                );
                prop_assert!(shown.starts_with(&place), "{shown}");
            }
            for (path, _) in &written {
                let of_file = diagnostics
                    .iter()
                    .filter(|diagnostic| diagnostic.file == *path)
                    .count();
                prop_assert!(
                    of_file <= MAX_DIAGNOSTICS_PER_FILE + 1,
                    "{of_file} for {}",
                    path.display()
                );
            }
            Ok(())
        },
    );
}

/// Removes what the last input wrote: `gantry.yaml` and the pipeline files.
fn empty(dir: &Path, pipelines_dir: &Path) {
    match std::fs::remove_file(dir.join(GLOBAL_FILE)) {
        Ok(()) => {}
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
        Err(error) => panic!("removing {GLOBAL_FILE}: {error}"),
    }
    for entry in std::fs::read_dir(pipelines_dir).unwrap() {
        std::fs::remove_file(entry.unwrap().path()).unwrap();
    }
}
