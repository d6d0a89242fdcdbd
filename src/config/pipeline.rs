//! A pipeline file: its source, build and image; `deploy` is read by `service`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::decode::{Decoder, Environment, closest};
use super::global::Global;
use super::images::{read_images, read_location};
use super::service::read_deploy;
use super::yaml::{self, Position};
use super::*;

/// Where reading a file reports what it found: errors, which stop the config from
/// loading, and warnings, which do not.
pub(super) struct Reports<'a> {
    pub errors: &'a mut Vec<Diagnostic>,
    pub warnings: &'a mut Vec<Diagnostic>,
}

pub(super) fn read_pipeline(
    dir: &Path,
    name: &str,
    file: PathBuf,
    text: &str,
    global: &Global,
    environment: Environment,
    reports: Reports,
) -> Option<Pipeline> {
    let Reports {
        errors: diagnostics,
        warnings,
    } = reports;
    let root = parse_file(&file, text, diagnostics)?;
    let mut decoder = Decoder {
        file: file.clone(),
        dir: dir.to_path_buf(),
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
    let fields = decoder.mapping(&root, "", &["source", "build", "image", "images", "deploy"])?;
    let source = match fields.get("source") {
        Some(node) => read_source(&mut decoder, dir, node, warnings),
        None => {
            decoder.missing(&fields, "source");
            None
        }
    };
    let branch = source.as_ref().map(|source| source.branch.clone());
    let build = match fields.get("build") {
        Some(node) => read_build(&mut decoder, dir, node, global, branch.as_deref()),
        None => read_build(
            &mut decoder,
            dir,
            &empty_mapping(root.position),
            global,
            branch.as_deref(),
        ),
    };
    let images = read_images(
        &mut decoder,
        &fields,
        name,
        build.as_ref(),
        global,
        branch.as_deref(),
    );
    let image_names: Vec<String> = images
        .as_ref()
        .map(|images| images.keys().cloned().collect())
        .unwrap_or_default();
    let deploy = match fields.get("deploy") {
        Some(node) => read_deploy(&mut decoder, node, global, &image_names),
        None => Some(Deploy {
            batch: 1,
            on_failure: OnFailure::Rollback,
            services: BTreeMap::new(),
            tasks: Vec::new(),
            keep_images: DEFAULT_KEEP_IMAGES,
        }),
    };
    Some(Pipeline {
        name: name.to_string(),
        file,
        source: source?,
        images: images?,
        deploy: deploy?,
    })
}

pub(super) fn empty_mapping(position: Position) -> yaml::Node {
    yaml::Node {
        kind: yaml::NodeKind::Mapping(Vec::new()),
        position,
    }
}

fn read_source(
    decoder: &mut Decoder,
    dir: &Path,
    node: &yaml::Node,
    warnings: &mut Vec<Diagnostic>,
) -> Option<Source> {
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
            let short = secret.as_ref().is_some_and(|secret| {
                secrecy::ExposeSecret::expose_secret(secret).chars().count()
                    < super::global::MIN_TOKEN_LEN
            });
            if short {
                let position = webhook_fields.key_position("secret");
                warnings.push(Diagnostic {
                    file: decoder.file.clone(),
                    line: position.line,
                    column: position.column,
                    message: format!(
                        "`source.webhook.secret` is shorter than {} characters; a long random secret (`openssl rand -hex 32`) is much harder to guess",
                        super::global::MIN_TOKEN_LEN
                    ),
                });
            }
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
            "`{}` uses a scheme gantry does not fetch from (use file://, git://, https:// or ssh://)",
            redact_urls(repo)
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

/// git's own rules for a ref name, enough to catch typos and refuse anything that
/// is not one.
pub fn is_valid_branch(branch: &str) -> bool {
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
    dir: &Path,
    node: &yaml::Node,
    global: &Global,
    branch: Option<&str>,
) -> Option<Build> {
    let known = [
        ["context", "dockerfile", "args", "target", "labels", "host"].as_slice(),
        &super::builder::KEYS,
    ]
    .concat();
    let fields = decoder.mapping(node, "build", &known)?;
    let location = read_location(decoder, &fields, "build", branch);
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
    let builder = super::builder::read_builder_keys(decoder, &fields, dir)?;
    Some(Build {
        context: location.context.unwrap_or_default(),
        dockerfile: location
            .dockerfile
            .unwrap_or_else(|| "Dockerfile".to_string()),
        args: location.args,
        target: location.target,
        labels,
        host,
        builder: builder.builder,
        cache_from: builder.cache_from,
        secrets: builder.secrets,
    })
}

pub(super) fn check_host(
    decoder: &mut Decoder,
    global: &Global,
    host: &str,
    position: Position,
    path: &str,
) {
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
