//! How a pipeline's image is built: which of the engine's builders (`build.builder`),
//! the registry images whose layers may serve as cache (`build.cache_from`), and the
//! build secrets a Dockerfile mounts (`build.secrets`).
//!
//! This module reads and checks those keys. It never reads a secret's value: a file is
//! only resolved against the config directory, an environment variable only checked to
//! be set; `build` reads the values when it builds.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::ImageRepository;
use super::decode::{self, Decoder, Fields, closest, is_variable_name};

/// Which builder of the engine runs the Dockerfile.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Builder {
    /// BuildKit when the engine offers it, the classic builder otherwise.
    #[default]
    Auto,
    /// BuildKit, or a failed build if the engine does not offer it.
    BuildKit,
    /// The classic builder (Docker's legacy one), even where BuildKit is offered.
    Classic,
}

impl Builder {
    const ALL: [Builder; 3] = [Builder::Auto, Builder::BuildKit, Builder::Classic];

    pub fn as_str(self) -> &'static str {
        match self {
            Builder::Auto => "auto",
            Builder::BuildKit => "buildkit",
            Builder::Classic => "classic",
        }
    }
}

/// A secret the build mounts with `RUN --mount=type=secret,id=ID`: it is read by gantry
/// when the build asks for it, and never enters the image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuildSecret {
    /// The id a Dockerfile names it by.
    pub id: String,
    pub source: BuildSecretSource,
}

/// Where a build secret's value comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BuildSecretSource {
    /// A file's content; a relative path in the config is relative to the config directory.
    File(PathBuf),
    /// An environment variable of gantry's process.
    Env(String),
}

/// The builder keys of one `build` section.
pub(super) struct BuilderKeys {
    pub builder: Builder,
    pub cache_from: Vec<String>,
    pub secrets: Vec<BuildSecret>,
}

/// The `build` keys this module reads, for the section's known-key list.
pub(super) const KEYS: [&str; 3] = ["builder", "cache_from", "secrets"];

/// Reads `builder`, `cache_from` and `secrets` from a `build` section; `dir` is the
/// config directory that relative secret files are resolved against.
pub(super) fn read_builder_keys(
    decoder: &mut Decoder,
    fields: &Fields,
    dir: &Path,
) -> Option<BuilderKeys> {
    let builder = match fields.get("builder") {
        None => Some(Builder::Auto),
        Some(node) => {
            let text = decoder.string(node, "build.builder")?;
            let found = Builder::ALL
                .into_iter()
                .find(|builder| builder.as_str() == text);
            if found.is_none() {
                let names = Builder::ALL.map(Builder::as_str);
                let suggestion = match closest(&text, names.into_iter()) {
                    Some(near) => format!(" (did you mean `{near}`?)"),
                    None => format!(" (expected one of: {})", names.join(", ")),
                };
                decoder.error(
                    node.position,
                    format!("`build.builder`: `{text}` is not a builder{suggestion}"),
                );
            }
            found
        }
    };

    let mut cache_from = Vec::new();
    for (reference, position) in decoder.positioned_list(fields, "cache_from") {
        match ImageRepository::of_reference(&reference) {
            Ok(_) => cache_from.push(reference),
            Err(message) => decoder.error(position, format!("`build.cache_from`: {message}")),
        }
    }

    let secrets = read_secrets(decoder, fields, dir);
    if builder == Some(Builder::Classic) && !secrets.is_empty() {
        decoder.error(
            fields.key_position("secrets"),
            "`build.secrets` needs BuildKit, and `build.builder` is `classic`: \
             the classic builder cannot mount secrets",
        );
        return None;
    }
    Some(BuilderKeys {
        builder: builder?,
        cache_from,
        secrets,
    })
}

/// `secrets: { ID: { file: PATH } | { env: VAR } }`, in the order of their ids.
fn read_secrets(decoder: &mut Decoder, fields: &Fields, dir: &Path) -> Vec<BuildSecret> {
    let Some(node) = fields.get("secrets") else {
        return Vec::new();
    };
    let entries = decoder.entries(node, "build.secrets").unwrap_or_default();
    let mut secrets = BTreeMap::new();
    for (id, key, value) in entries {
        let path = decode::join_path("build.secrets", id);
        if !is_secret_id(id) {
            decoder.error(
                key.position,
                format!("`{path}`: a secret id may hold only letters, digits, `-`, `_` and `.`"),
            );
            continue;
        }
        let Some(source_fields) = decoder.mapping(value, &path, &["file", "env"]) else {
            continue;
        };
        let file = decoder.optional_string(&source_fields, "file");
        let env = decoder.optional_string(&source_fields, "env");
        let source = match (file, env) {
            (Some(file), None) if !file.is_empty() => BuildSecretSource::File(dir.join(file)),
            (None, Some(variable)) if is_variable_name(&variable) => {
                if (decoder.environment)(&variable).is_none() {
                    decoder.error(
                        source_fields.key_position("env"),
                        format!("`{path}.env`: the environment variable `{variable}` is not set"),
                    );
                    continue;
                }
                BuildSecretSource::Env(variable)
            }
            (None, Some(variable)) => {
                decoder.error(
                    source_fields.key_position("env"),
                    format!("`{path}.env`: `{variable}` is not an environment variable's name"),
                );
                continue;
            }
            (Some(_), None) => {
                decoder.error(
                    source_fields.key_position("file"),
                    format!("`{path}.file` is empty"),
                );
                continue;
            }
            (Some(_), Some(_)) => {
                decoder.error(
                    value.position,
                    format!("`{path}`: give either `file` or `env`, not both"),
                );
                continue;
            }
            (None, None) => {
                decoder.error(
                    value.position,
                    format!("`{path}`: give `file: PATH` or `env: VARIABLE`"),
                );
                continue;
            }
        };
        secrets.insert(
            id.to_string(),
            BuildSecret {
                id: id.to_string(),
                source,
            },
        );
    }
    secrets.into_values().collect()
}

/// BuildKit takes any id, but one that is also a file name (its default mount point is
/// `/run/secrets/ID`) and fits in a log line without quoting.
fn is_secret_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 128
        && !id.starts_with('.')
        && id
            .chars()
            .all(|character| character.is_ascii_alphanumeric() || "-_.".contains(character))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Build, Config, ConfigError};

    /// Loads a pipeline whose `build` section is `build` (indented under it), with
    /// `NPM_TOKEN` as the only environment variable: its build, or every message.
    fn load(build: &str) -> (Result<Build, Vec<String>>, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("pipelines")).unwrap();
        std::fs::write(
            dir.path().join("pipelines/hello.yaml"),
            format!(
                "source: {{ repo: https://git.example.com/team/hello.git }}\n\
                 image: {{ repository: 127.0.0.1:5000/team/hello }}\nbuild:\n{build}"
            ),
        )
        .unwrap();
        let environment = |name: &str| (name == "NPM_TOKEN").then(|| "token-value".to_string());
        let result = match Config::load_with(dir.path(), &environment) {
            Ok(config) => Ok(config.pipelines["hello"].images["hello"].build.clone()),
            Err(ConfigError::Invalid(diagnostics)) => Err(diagnostics
                .iter()
                .map(|diagnostic| {
                    format!(
                        "{}:{}: {}",
                        diagnostic.line, diagnostic.column, diagnostic.message
                    )
                })
                .collect()),
            Err(other) => panic!("{other}"),
        };
        (result, dir.path().to_path_buf())
    }

    fn check_errors(build: &str, expected: &[&str]) {
        assert_eq!(
            load(build).0.map(|_| ()),
            Err(expected.iter().map(|line| line.to_string()).collect()),
            "{build}"
        );
    }

    #[test]
    fn the_builder_is_auto_unless_named() {
        for (build, expected) in [
            ("  context: .\n", Builder::Auto),
            ("  builder: auto\n", Builder::Auto),
            ("  builder: buildkit\n", Builder::BuildKit),
            ("  builder: classic\n", Builder::Classic),
        ] {
            assert_eq!(load(build).0.unwrap().builder, expected, "{build}");
        }
        check_errors(
            "  builder: buildkitt\n",
            &["4:12: `build.builder`: `buildkitt` is not a builder (did you mean `buildkit`?)"],
        );
        check_errors(
            "  bulder: classic\n",
            &["4:3: unknown key `bulder` in `build` (did you mean `builder`?)"],
        );
    }

    #[test]
    fn cache_from_takes_image_references() {
        let build = load(
            "  cache_from: [\"127.0.0.1:5000/team/hello:latest\", 127.0.0.1:5000/team/base]\n",
        )
        .0
        .unwrap();
        assert_eq!(
            build.cache_from,
            [
                "127.0.0.1:5000/team/hello:latest",
                "127.0.0.1:5000/team/base"
            ]
        );
        // One reference alone is a list of one.
        let build = load("  cache_from: registry.example.com/app:main\n")
            .0
            .unwrap();
        assert_eq!(build.cache_from, ["registry.example.com/app:main"]);
        check_errors(
            "  cache_from: [\"ok/image:1\", \"Bad/Image\", \"x:bad tag\"]\n",
            &[
                "4:30: `build.cache_from`: `Bad/Image` is not a valid repository: `Bad` must be lowercase letters and digits, separated by `.`, `_`, `__` or `-`",
                "4:43: `build.cache_from`: `x:bad tag`: `bad tag` is not a valid tag",
            ],
        );
    }

    #[test]
    fn secrets_come_from_a_file_or_the_environment() {
        let (build, dir) = load(
            "  secrets:\n    npm: { env: NPM_TOKEN }\n    cert: { file: secrets/ca.pem }\n    abs: { file: /run/secrets/x }\n",
        );
        let build = build.unwrap();
        assert_eq!(
            build.secrets,
            [
                BuildSecret {
                    id: "abs".to_string(),
                    source: BuildSecretSource::File(PathBuf::from("/run/secrets/x")),
                },
                BuildSecret {
                    id: "cert".to_string(),
                    source: BuildSecretSource::File(dir.join("secrets/ca.pem")),
                },
                BuildSecret {
                    id: "npm".to_string(),
                    source: BuildSecretSource::Env("NPM_TOKEN".to_string()),
                },
            ]
        );
        assert_eq!(build.builder, Builder::Auto);
    }

    #[test]
    fn a_secret_names_one_source_that_exists() {
        check_errors(
            "  secrets:\n    a: { env: MISSING }\n    b: { env: \"not a name\" }\n    c: { file: x, env: NPM_TOKEN }\n    d: {}\n    e: { fil: x }\n    \"bad id\": { env: NPM_TOKEN }\n    f: { file: \"\" }\n",
            &[
                "5:10: `build.secrets.a.env`: the environment variable `MISSING` is not set",
                "6:10: `build.secrets.b.env`: `not a name` is not an environment variable's name",
                "7:8: `build.secrets.c`: give either `file` or `env`, not both",
                "8:8: `build.secrets.d`: give `file: PATH` or `env: VARIABLE`",
                "9:8: `build.secrets.e`: give `file: PATH` or `env: VARIABLE`",
                "9:10: unknown key `fil` in `build.secrets.e` (did you mean `file`?)",
                "10:5: `build.secrets.bad id`: a secret id may hold only letters, digits, `-`, `_` and `.`",
                "11:10: `build.secrets.f.file` is empty",
            ],
        );
    }

    #[test]
    fn the_classic_builder_cannot_mount_secrets() {
        check_errors(
            "  builder: classic\n  secrets: { npm: { env: NPM_TOKEN } }\n",
            &[
                "5:3: `build.secrets` needs BuildKit, and `build.builder` is `classic`: the classic builder cannot mount secrets",
            ],
        );
    }

    #[test]
    fn secret_ids_and_variable_names() {
        for (id, valid) in [
            ("npm_token", true),
            ("a.b-c", true),
            (".hidden", false),
            ("a/b", false),
            ("", false),
        ] {
            assert_eq!(is_secret_id(id), valid, "{id:?}");
        }
        for (name, valid) in [
            ("NPM_TOKEN", true),
            ("_x1", true),
            ("1X", false),
            ("A-B", false),
        ] {
            assert_eq!(is_variable_name(name), valid, "{name:?}");
        }
    }
}
