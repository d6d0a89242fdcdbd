//! Validation, file by file: each case writes a config directory and compares every message.

use super::service::parse_port;
use super::*;

/// A pipeline that passes validation, for cases that change one thing.
pub(super) const GOOD_PIPELINE: &str = "\
source:
  repo: https://git.example.com/team/hello.git
  branch: main
build:
  context: .
  dockerfile: Dockerfile
image:
  repository: 127.0.0.1:5000/team/hello
  tags: [\"{{ commit.short }}\", latest]
";

/// Loads a config made of `files` (paths inside a new config directory) with this
/// environment: the config, or its diagnostics as printed, relative to the directory.
pub(super) fn load_files(
    files: &[(&str, &str)],
    environment: Environment,
) -> Result<Config, Vec<String>> {
    let dir = tempfile::tempdir().unwrap();
    for (name, text) in files {
        let path = dir.path().join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }
    match Config::load_with(dir.path(), environment) {
        Ok(config) => Ok(config),
        Err(ConfigError::Invalid(diagnostics)) => Err(diagnostics
            .iter()
            .map(|diagnostic| {
                let relative = diagnostic.file.strip_prefix(dir.path()).unwrap();
                format!(
                    "{}:{}:{}: {}",
                    relative.display(),
                    diagnostic.line,
                    diagnostic.column,
                    // Messages that name another file name it as the user typed the dir.
                    diagnostic
                        .message
                        .replace(&format!("{}/", dir.path().display()), "")
                )
            })
            .collect()),
        Err(other) => panic!("{other}"),
    }
}

/// Loads a config made of `files` and returns its diagnostics as printed.
pub(super) fn diagnostics(files: &[(&str, &str)]) -> Vec<String> {
    let environment = |name: &str| match name {
        "SECRET" => Some("s3cret".to_string()),
        _ => None,
    };
    load_files(files, &environment).err().unwrap_or_default()
}

pub(super) fn check(files: &[(&str, &str)], expected: &[&str]) {
    assert_eq!(diagnostics(files), expected);
}

fn check_pipeline(text: &str, expected: &[&str]) {
    check(&[("pipelines/hello.yaml", text)], expected);
}

#[test]
fn a_good_config_loads() {
    check(&[("pipelines/hello.yaml", GOOD_PIPELINE)], &[]);
    check(&[], &[]);
}

#[test]
fn syntax_errors() {
    check_pipeline(
        "source:\n  repo: x\n   branch: main\n",
        &[
            "pipelines/hello.yaml:3:10: YAML syntax error: mapping values are not allowed in this context",
        ],
    );
}

#[test]
fn unknown_keys_suggest_the_closest() {
    let text = GOOD_PIPELINE.replace("  dockerfile: Dockerfile", "  dockerfil: Dockerfile");
    check_pipeline(
        &text,
        &[
            "pipelines/hello.yaml:6:3: unknown key `dockerfil` in `build` (did you mean `dockerfile`?)",
        ],
    );
    let text = format!("{GOOD_PIPELINE}zzz: 1\n");
    check_pipeline(
        &text,
        &[
            "pipelines/hello.yaml:10:1: unknown key `zzz` (expected one of: source, build, image, images, deploy)",
        ],
    );
    check(
        &[("gantry.yaml", "hostz: {}\n")],
        &["gantry.yaml:1:1: unknown key `hostz` (did you mean `hosts`?)"],
    );
}

#[test]
fn every_error_in_every_file_is_listed() {
    let first = GOOD_PIPELINE
        .replace("  dockerfile: Dockerfile", "  dockerfil: Dockerfile")
        .replace("branch: main", "brnch: main");
    let second = GOOD_PIPELINE
        .replace("poll", "x")
        .replace("  branch: main\n", "  branch: main\n  poll: 30x\n");
    check(
        &[("pipelines/a.yaml", &first), ("pipelines/b.yaml", &second)],
        &[
            "pipelines/a.yaml:3:3: unknown key `brnch` in `source` (did you mean `branch`?)",
            "pipelines/a.yaml:6:3: unknown key `dockerfil` in `build` (did you mean `dockerfile`?)",
            "pipelines/b.yaml:4:9: `source.poll`: `30x` is not a duration (write it like 30s, 5m or 1h30m)",
        ],
    );
}

#[test]
fn environment_variables() {
    let text = GOOD_PIPELINE.replace(
        "  branch: main\n",
        "  branch: main\n  webhook: { secret: \"${SECRET}\" }\n  token: ${MISSING_TOKEN}\n  username: ${USER_NAME:-ci}\n",
    );
    check_pipeline(
        &text,
        &[
            "pipelines/hello.yaml:5:10: environment variable `MISSING_TOKEN` is not set (used in `source.token`)",
        ],
    );
}

#[test]
fn missing_keys() {
    check_pipeline(
        "source:\n  branch: main\n",
        &[
            "pipelines/hello.yaml:1:1: missing key `image`",
            "pipelines/hello.yaml:2:3: missing key `repo` in `source`",
        ],
    );
}

#[test]
fn undefined_hosts_and_registries() {
    let text = GOOD_PIPELINE
        .replace(
            "  dockerfile: Dockerfile\n",
            "  dockerfile: Dockerfile\n  host: builder\n",
        )
        .replace(
            "127.0.0.1:5000/team/hello",
            "registry.example.com/team/hello",
        );
    check(
        &[
            (
                "gantry.yaml",
                "hosts:\n  web1: { docker: tcp://10.0.0.11:2376 }\n",
            ),
            ("pipelines/hello.yaml", &text),
        ],
        &[
            "pipelines/hello.yaml:7:3: `build.host`: host `builder` is not defined in gantry.yaml (defined: local, web1)",
            "pipelines/hello.yaml:9:15: `image.repository`: registry `registry.example.com` is not defined in gantry.yaml `registries` (add `registry.example.com: {}` to use the credentials in ~/.docker/config.json)",
        ],
    );
    let defined = GOOD_PIPELINE.replace(
        "127.0.0.1:5000/team/hello",
        "registry.example.com/team/hello",
    );
    check(
        &[
            (
                "gantry.yaml",
                "registries:\n  registry.example.com: { username: ci, password: \"${SECRET}\" }\n",
            ),
            ("pipelines/hello.yaml", &defined),
        ],
        &[],
    );
}

#[test]
fn tags_and_repositories_docker_would_refuse() {
    let text = GOOD_PIPELINE
        .replace("127.0.0.1:5000/team/hello", "127.0.0.1:5000/Team/hello")
        .replace("branch: main", "branch: feature/x");
    check_pipeline(
        &text,
        &[
            "pipelines/hello.yaml:8:15: `image.repository`: `127.0.0.1:5000/Team/hello` is not a valid repository: `Team` must be lowercase letters and digits, separated by `.`, `_`, `__` or `-`",
        ],
    );
    let text = GOOD_PIPELINE
        .replace("branch: main", "branch: feature/x")
        .replace(
            "tags: [\"{{ commit.short }}\", latest]",
            "tags:\n    - \"{{ branch }}\"\n    - -bad\n    - \"{{ commit.shorty }}\"",
        );
    check_pipeline(
        &text,
        &[
            "pipelines/hello.yaml:10:7: `image.tags`: `{{ branch }}` gives `feature/x`, which Docker refuses as a tag (letters, digits, `_`, `.` and `-`, at most 128, not starting with `.` or `-`)",
            "pipelines/hello.yaml:11:7: `image.tags`: `-bad` gives `-bad`, which Docker refuses as a tag (letters, digits, `_`, `.` and `-`, at most 128, not starting with `.` or `-`)",
            "pipelines/hello.yaml:12:7: `image.tags`: template `{{ commit.shorty }}` cannot be rendered: `commit.shorty` is undefined (known: commit.sha, commit.short, branch, run.number)",
        ],
    );
}

#[test]
fn durations() {
    let text = GOOD_PIPELINE.replace("  branch: main\n", "  branch: main\n  poll: soon\n");
    check_pipeline(
        &text,
        &[
            "pipelines/hello.yaml:4:9: `source.poll`: `soon` is not a duration (write it like 30s, 5m or 1h30m)",
        ],
    );
}

#[test]
fn the_read_timeout_is_bounded() {
    for timeout in ["0s", "2h", "300000000000years"] {
        let errors = diagnostics(&[(
            "gantry.yaml",
            &format!("server:\n  read_timeout: {timeout}\n"),
        )]);
        assert_eq!(
            errors,
            ["gantry.yaml:2:3: `server.read_timeout` must be longer than 0s and at most 1h"],
            "{timeout}"
        );
    }
    assert_eq!(
        diagnostics(&[("gantry.yaml", "server:\n  read_timeout: 1h\n")]),
        Vec::<String>::new()
    );
}

#[test]
fn paths_outside_the_repository() {
    let text = GOOD_PIPELINE
        .replace("context: .", "context: ../elsewhere")
        .replace("dockerfile: Dockerfile", "dockerfile: ../Dockerfile");
    check_pipeline(
        &text,
        &[
            "pipelines/hello.yaml:5:12: `build.context`: `../elsewhere` is outside the repository",
            "pipelines/hello.yaml:6:15: `build.dockerfile`: `../Dockerfile` is outside the build context",
        ],
    );
    let text = GOOD_PIPELINE.replace("context: .", "context: /abs");
    check_pipeline(
        &text,
        &["pipelines/hello.yaml:5:12: `build.context`: `/abs` is outside the repository"],
    );
}

const DEPLOY: &str = "\
deploy:
  services:
    web:
      requires: [api]
      ports: [\"8080:8080\"]
      health:
        http: { port: 8080, path: /healthz }
      instances:
        web-1: {}
    api:
      requires: [db]
      instances:
        api-1: { host: local }
    db:
      requires: [web]
      instances:
        db-1:
";

#[test]
fn requires_cycles_are_named() {
    let text = format!("{GOOD_PIPELINE}{DEPLOY}");
    check_pipeline(
        &text,
        &["pipelines/hello.yaml:20:18: `requires` forms a cycle: api -> db -> web -> api"],
    );
    let text = format!("{GOOD_PIPELINE}{DEPLOY}").replace("requires: [web]", "requires: []");
    check_pipeline(&text, &[]);
}

#[test]
fn deploy_references() {
    let text = format!("{GOOD_PIPELINE}{DEPLOY}")
        .replace("requires: [web]", "requires: [wbe]")
        .replace("api-1: { host: local }", "api-1: { host: web9 }")
        .replace(
            "http: { port: 8080, path: /healthz }",
            "http: { port: 9090, path: /healthz }",
        );
    check_pipeline(
        &text,
        &[
            "pipelines/hello.yaml:16:17: `deploy.services.web.health.http.port`: container port 9090 is not published in `ports`; use an `exec` or `docker` check for an unpublished port",
            "pipelines/hello.yaml:22:18: `deploy.services.api.instances.api-1.host`: host `web9` is not defined in gantry.yaml (defined: local)",
            "pipelines/hello.yaml:24:18: `deploy.services.db.requires`: service `wbe` is not defined (did you mean `web`?)",
        ],
    );
}

#[test]
fn wrong_types() {
    check_pipeline(
        "source: [a, b]\nimage:\n  repository: 127.0.0.1:5000/x\n  tags: {a: b}\n",
        &[
            "pipelines/hello.yaml:1:9: `source` must be a mapping, not a list",
            "pipelines/hello.yaml:4:9: `image.tags` must be a list, not a mapping",
        ],
    );
}

#[test]
fn ports() {
    for (text, expected) in [
        ("8080", Ok((None, None, 8080, "tcp"))),
        ("80:8080", Ok((None, Some(80), 8080, "tcp"))),
        (
            "127.0.0.1:80:8080/udp",
            Ok((Some("127.0.0.1"), Some(80), 8080, "udp")),
        ),
        (
            "127.0.0.1::8080",
            Ok((Some("127.0.0.1"), None, 8080, "tcp")),
        ),
        ("x:80", Err(())),
        ("80/icmp", Err(())),
        ("0", Err(())),
    ] {
        let parsed = parse_port(text).map(|port| {
            (
                port.host_ip,
                port.host_port,
                port.container_port,
                port.protocol,
            )
        });
        match expected {
            Ok((ip, host, container, protocol)) => assert_eq!(
                parsed.unwrap(),
                (
                    ip.map(str::to_string),
                    host,
                    container,
                    protocol.to_string()
                ),
                "{text}"
            ),
            Err(()) => assert!(parsed.is_err(), "{text}"),
        }
    }
}

#[test]
fn hosts() {
    check(
        &[(
            "gantry.yaml",
            "hosts:\n  a: { docker: unix:///run/d.sock }\n  b: { docker: tcp://h:2376, tls: { ca: c, cert: d, key: e } }\n  c: { docker: http://x }\n  d: { docker: tcp://nohost }\n",
        )],
        &[
            "gantry.yaml:4:16: `hosts.c.docker`: `http://x` is not a Docker URL (unix:///path, tcp://host:port or ssh://user@host)",
            "gantry.yaml:5:16: `hosts.d.docker`: `tcp://nohost` needs a host and a port, like tcp://10.0.0.11:2376",
        ],
    );
}

#[test]
fn ssh_hosts() {
    check(
        &[(
            "gantry.yaml",
            "hosts:\n  a: { docker: ssh://deploy@10.0.0.11, ssh_key: keys/deploy }\n  b: { docker: ssh://web2 }\n",
        )],
        &[],
    );
    check(
        &[(
            "gantry.yaml",
            "hosts:\n  a: { docker: ssh://deploy@10.0.0.11:2222 }\n  b: { docker: ssh:// }\n  \
             c: { docker: tcp://h:2376, ssh_key: k }\n  d: { docker: ssh://h, tls: { ca: a, cert: b, key: c } }\n",
        )],
        &[
            "gantry.yaml:2:16: `hosts.a.docker`: `ssh://deploy@10.0.0.11:2222`: ssh:// hosts take no port in the URL; set `Port` for that host in ~/.ssh/config",
            "gantry.yaml:3:16: `hosts.b.docker`: `ssh://` needs a host, like ssh://deploy@10.0.0.11",
            "gantry.yaml:4:30: `hosts.c.ssh_key` applies to ssh:// hosts only",
            "gantry.yaml:5:30: `hosts.d.tls` applies to tcp:// hosts only",
        ],
    );
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("gantry.yaml"),
        "hosts:\n  a: { docker: ssh://deploy@10.0.0.11, ssh_key: keys/deploy }\n",
    )
    .unwrap();
    let config = Config::load_with(dir.path(), &|_: &str| None).unwrap();
    let host = &config.hosts["a"];
    assert_eq!(host.docker.to_string(), "ssh://deploy@10.0.0.11");
    assert_eq!(host.address, "10.0.0.11");
    assert_eq!(
        host.ssh_key.as_deref(),
        Some(dir.path().join("keys/deploy").as_path())
    );
}

#[test]
fn notifications() {
    check(
        &[(
            "gantry.yaml",
            "notifications:\n  chat: { url: \"https://hooks.slack.example/T1/B2/x\", format: slack, on: [failure, rollback] }\n  audit: { url: \"http://127.0.0.1:9000/in\" }\n",
        )],
        &[],
    );
    check(
        &[(
            "gantry.yaml",
            "notifications:\n  a: { url: \"ftp://x\", format: xml, on: [sucess] }\n  b: { format: json }\n",
        )],
        &[
            "gantry.yaml:2:8: `notifications.a.url` must be an http:// or https:// URL",
            "gantry.yaml:2:24: `notifications.a.format` is json or slack, not `xml`",
            "gantry.yaml:2:42: `notifications.a.on`: `sucess` is not success, failure or rollback",
            "gantry.yaml:3:6: missing key `url` in `notifications.b`",
        ],
    );
}

#[test]
fn empty_secrets_are_errors_not_absent() {
    check(
        &[(
            "gantry.yaml",
            "server:\n  token: \"${GANTRY_TOKEN:-}\"\n  read_token: \"  \"\nregistries:\n  registry.example.com: { username: ci, password: \"${REGISTRY_PASSWORD:-}\" }\n",
        )],
        &[
            "gantry.yaml:2:10: `server.token` is empty; give it a value (an unset variable with a `:-` default?) or remove the key",
            "gantry.yaml:3:15: `server.read_token` is empty; give it a value (an unset variable with a `:-` default?) or remove the key",
            "gantry.yaml:5:51: `registries.registry.example.com.password` is empty; give it a value (an unset variable with a `:-` default?) or remove the key",
        ],
    );
    let text = GOOD_PIPELINE.replace(
        "  branch: main\n",
        "  branch: main\n  webhook: { secret: \"${HOOK_SECRET:-}\" }\n  token: ''\n",
    );
    check_pipeline(
        &text,
        &[
            "pipelines/hello.yaml:4:22: `source.webhook.secret` is empty; give it a value (an unset variable with a `:-` default?) or remove the key",
            "pipelines/hello.yaml:5:10: `source.token` is empty; give it a value (an unset variable with a `:-` default?) or remove the key",
        ],
    );
}

#[test]
fn short_tokens_load_with_a_warning() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("gantry.yaml"),
        "server:\n  token: short\n  read_token: a-long-enough-read-token\n",
    )
    .unwrap();
    std::fs::create_dir(dir.path().join("pipelines")).unwrap();
    std::fs::write(
        dir.path().join("pipelines/hello.yaml"),
        "source: { repo: \"https://git.example.com/hello.git\", branch: main, webhook: { secret: hook } }\nimage: { repository: 127.0.0.1:5000/hello }\n",
    )
    .unwrap();
    let config = Config::load_with(dir.path(), &|_: &str| None).unwrap();
    let root = format!("{}/", dir.path().display());
    let warnings: Vec<String> = config
        .warnings
        .iter()
        .map(|warning| warning.to_string().replace(&root, ""))
        .collect();
    assert_eq!(
        warnings,
        [
            "gantry.yaml:2:3: `server.token` is shorter than 16 characters; a long random token (`openssl rand -hex 32`) is much harder to guess",
            "pipelines/hello.yaml:1:79: `source.webhook.secret` is shorter than 16 characters; a long random secret (`openssl rand -hex 32`) is much harder to guess",
        ]
    );
}

/// A pipeline whose `build.labels` holds `count` keys, the last one twice.
fn pipeline_with_labels(count: usize) -> String {
    let mut text = GOOD_PIPELINE.replace("build:\n", "build:\n  labels:\n");
    let mut labels = String::new();
    for index in 0..count {
        labels.push_str(&format!("    l{index}: v\n"));
    }
    labels.push_str(&format!("    l{}: again\n", count - 1));
    text = text.replace("  labels:\n", &format!("  labels:\n{labels}"));
    text
}

#[test]
fn hostile_files_are_refused_with_a_clear_error() {
    // An alias bomb of a few hundred bytes.
    let mut bomb = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
    for level in 1..9 {
        let items = vec![format!("*a{}", level - 1); 10].join(", ");
        bomb.push_str(&format!("a{level}: &a{level} [{items}]\n"));
    }
    let errors = diagnostics(&[("pipelines/bomb.yaml", &bomb)]);
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(
        errors[0].starts_with("pipelines/bomb.yaml:")
            && errors[0].contains("YAML syntax error: the document holds more than"),
        "{errors:?}"
    );
    // Sixty thousand nested lists.
    let deep = format!("{}x\n", "- ".repeat(60_000));
    assert_eq!(
        diagnostics(&[("pipelines/deep.yaml", &deep)]),
        ["pipelines/deep.yaml:1:129: YAML syntax error: nested deeper than 64 levels"]
    );
    // A tag template that would loop ten billion times: loops are refused before a render.
    let looping = GOOD_PIPELINE.replace(
        "latest]",
        "\"{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}x\"]",
    );
    let errors = diagnostics(&[("pipelines/hello.yaml", &looping)]);
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(errors[0].contains("is not allowed"), "{errors:?}");
    // Too large, and not text.
    let large = format!("{GOOD_PIPELINE}# {}\n", "x".repeat(MAX_FILE_BYTES as usize));
    assert_eq!(
        diagnostics(&[("pipelines/large.yaml", &large)]),
        [
            "pipelines/large.yaml:1:1: the file is larger than 1024 KiB, the most a config file may be"
        ]
    );
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("pipelines")).unwrap();
    std::fs::write(
        dir.path().join("pipelines/binary.yaml"),
        b"source: \xff\xfe\n",
    )
    .unwrap();
    match Config::load_with(dir.path(), &|_: &str| None) {
        Err(ConfigError::Invalid(errors)) => {
            assert_eq!(errors.len(), 1);
            assert_eq!(
                errors[0].message,
                "not UTF-8 text (invalid byte at offset 8)"
            );
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_fifo_is_refused_without_blocking_the_loader() {
    let make_fifo = |path: &Path| {
        let path = std::ffi::CString::new(path.to_str().unwrap()).unwrap();
        // SAFETY: a valid, NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(path.as_ptr(), 0o600) }, 0);
    };
    // Opening a FIFO for reading waits for a writer; nothing ever writes to these.
    let within_seconds = |work: Box<dyn FnOnce() -> Vec<String> + Send>| {
        let (sender, receiver) = std::sync::mpsc::channel();
        std::thread::spawn(move || sender.send(work()));
        receiver
            .recv_timeout(std::time::Duration::from_secs(10))
            .expect("the loader returns")
    };
    let load = |root: PathBuf| -> Box<dyn FnOnce() -> Vec<String> + Send> {
        Box::new(move || match Config::load_with(&root, &|_: &str| None) {
            Err(ConfigError::Invalid(errors)) => errors.iter().map(ToString::to_string).collect(),
            Ok(config) => config.pipelines.into_keys().collect(),
            Err(other) => panic!("{other:?}"),
        })
    };
    // gantry.yaml is refused; a FIFO among the pipelines is not a pipeline file.
    for (fifo, said) in [
        ("gantry.yaml", Some("gantry.yaml:1:1: not a regular file")),
        ("pipelines/fifo.yaml", None),
    ] {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("pipelines")).unwrap();
        make_fifo(&dir.path().join(fifo));
        let errors = within_seconds(load(dir.path().to_path_buf()));
        match said {
            Some(said) => assert!(errors.len() == 1 && errors[0].ends_with(said), "{errors:?}"),
            None => assert!(errors.is_empty(), "{errors:?}"),
        }
        // Commands that read only history find the default state directory, unless
        // gantry.yaml, which may name another, cannot be read.
        let root = dir.path().to_path_buf();
        let state = within_seconds(Box::new(move || match super::state_of(&root) {
            Ok(StateLocation::Directory(path)) => vec![path.display().to_string()],
            Ok(StateLocation::Database(_)) => vec!["a database".to_string()],
            Err(message) => vec![message],
        }));
        let expected = match said {
            Some(_) => {
                "gantry.yaml: cannot tell where the state is: not a regular file".to_string()
            }
            None => dir.path().join(".gantry").display().to_string(),
        };
        assert_eq!(state, [expected]);
    }
}

#[test]
fn duplicate_keys_are_found_among_many() {
    // 60,000 keys: found in linear time (checking each key against all before it took
    // seconds at this size and grows with its square).
    let errors = diagnostics(&[("pipelines/hello.yaml", &pipeline_with_labels(60_000))]);
    assert_eq!(
        errors,
        ["pipelines/hello.yaml:60006:5: duplicate key `l59999` in `build.labels`"]
    );
}

#[test]
fn a_file_with_many_errors_lists_the_first_hundred_and_counts_the_rest() {
    let mut text = String::from(GOOD_PIPELINE);
    for index in 0..250 {
        text.push_str(&format!("unknown{index}: 1\n"));
    }
    let errors = diagnostics(&[("pipelines/hello.yaml", &text)]);
    assert_eq!(errors.len(), MAX_DIAGNOSTICS_PER_FILE + 1);
    assert_eq!(
        errors.last().unwrap(),
        &format!(
            "pipelines/hello.yaml:{}:1: ... and 150 more errors in this file",
            errors[MAX_DIAGNOSTICS_PER_FILE - 1]
                .split(':')
                .nth(1)
                .unwrap()
        )
    );
}

#[test]
fn two_pipelines_may_not_own_one_container() {
    let deploy = |instance: &str, host: &str| {
        format!(
            "{GOOD_PIPELINE}deploy:\n  services:\n    web:\n      instances:\n        {instance}: {{ host: {host} }}\n"
        )
    };
    // `local` and `again` reach the same engine.
    let gantry_yaml = "hosts:\n  again: { docker: \"unix:///var/run/docker.sock\" }\n  other: { docker: \"tcp://10.0.0.9:2376\" }\n";
    check(
        &[
            ("gantry.yaml", gantry_yaml),
            ("pipelines/alpha.yaml", &deploy("web-1", "local")),
            ("pipelines/beta.yaml", &deploy("web-1", "again")),
            ("pipelines/gamma.yaml", &deploy("web-1", "other")),
        ],
        &[
            "pipelines/alpha.yaml:14:9: instance `web-1` on host `local` is also pipeline `beta`'s (pipelines/beta.yaml:14:9); one container name on one engine belongs to one instance",
            "pipelines/beta.yaml:14:9: instance `web-1` on host `again` is also pipeline `alpha`'s (pipelines/alpha.yaml:14:9); one container name on one engine belongs to one instance",
        ],
    );
    check_pipeline(
        &deploy("web.previous", "local"),
        &[
            "pipelines/hello.yaml:14:9: instance name `web.previous`: names ending in `.previous` are the old containers gantry keeps during a swap",
        ],
    );
}

#[test]
fn keep_images_is_at_least_one_and_defaults_to_three() {
    let keep = |value: &str| format!("{GOOD_PIPELINE}deploy:\n  keep_images: {value}\n");
    check_pipeline(&keep("2"), &[]);
    check_pipeline(
        &keep("0"),
        &[
            "pipelines/hello.yaml:11:3: `deploy.keep_images` must be at least 1: the newest image always stays",
        ],
    );
    check_pipeline(
        &keep("some"),
        &[
            "pipelines/hello.yaml:11:16: `deploy.keep_images` must be a whole number of images, not `some`",
        ],
    );
    let kept = |text: &str| {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("pipelines")).unwrap();
        std::fs::write(dir.path().join("pipelines/hello.yaml"), text).unwrap();
        let config = Config::load_with(dir.path(), &|_: &str| None).unwrap();
        config.pipelines["hello"].deploy.keep_images
    };
    assert_eq!(kept(&keep("2")), 2);
    assert_eq!(kept(GOOD_PIPELINE), DEFAULT_KEEP_IMAGES);
    assert_eq!(kept(&format!("{GOOD_PIPELINE}deploy: {{}}\n")), 3);
}
