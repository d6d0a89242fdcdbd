//! Container settings, `networks`, `env_file` and `${file:PATH}`, as loaded and as refused.

use super::tests::{GOOD_PIPELINE, check, diagnostics, load_files};
use super::*;

/// Loads a config of `files` that must be valid; its one pipeline's `web` service.
fn web(files: &[(&str, &str)]) -> Service {
    let environment = |name: &str| (name == "FROM_GANTRY").then(|| "inherited".to_string());
    let config = load_files(files, &environment).unwrap_or_else(|errors| panic!("{errors:#?}"));
    config.pipelines["hello"].deploy.services["web"].clone()
}

fn pipeline(service: &str) -> String {
    format!(
        "{GOOD_PIPELINE}deploy:\n  services:\n    web:\n{service}      instances: {{ web-1: {{ ports: [\"9090\"], volumes: [\"extra:/extra\"] }} }}\n"
    )
}

#[test]
fn every_container_setting_loads() {
    let service = web(&[(
        "pipelines/hello.yaml",
        &pipeline(
            "      entrypoint: [/bin/sh, -c]\n      user: \"65534\"\n      \
             logging: { driver: json-file, options: { max-size: 1m } }\n      \
             networks: { front: { aliases: [www] }, back: {} }\n      \
             extra_hosts: [\"db.internal:10.0.0.5\"]\n      \
             ulimits: { nofile: 1024, nproc: { soft: 10, hard: 20 } }\n      \
             read_only: true\n      tmpfs: [/tmp, \"/run:size=1m\"]\n      \
             cap_add: [net_admin]\n      cap_drop: [ALL]\n      init: true\n",
        ),
    )]);
    let options = &service.options;
    assert_eq!(
        options.entrypoint,
        Some(vec!["/bin/sh".into(), "-c".into()])
    );
    assert_eq!(options.user.as_deref(), Some("65534"));
    assert_eq!(options.logging.as_ref().unwrap().driver, "json-file");
    assert_eq!(service.network.as_deref(), Some("front"));
    assert_eq!(options.aliases, ["www"]);
    assert_eq!(options.networks.len(), 1);
    assert_eq!(options.networks[0].name, "back");
    assert_eq!(
        options.ulimits["nofile"],
        Ulimit {
            soft: 1024,
            hard: 1024
        }
    );
    assert_eq!(options.ulimits["nproc"], Ulimit { soft: 10, hard: 20 });
    assert!(options.read_only && options.init);
    assert_eq!(options.tmpfs, ["/tmp", "/run:size=1m"]);
    assert_eq!(options.cap_add, ["CAP_NET_ADMIN"]);
    assert_eq!(options.cap_drop, ["ALL"]);
    let instance = &service.instances["web-1"];
    assert_eq!(instance.ports[0].container_port, 9090);
    assert_eq!(instance.volumes, ["extra:/extra"]);
}

#[test]
fn bad_container_settings_are_refused_where_they_are_written() {
    check(
        &[(
            "pipelines/hello.yaml",
            &pipeline(
                "      entrypoint: []\n      cap_ad: [NET_ADMIN]\n      \
                 extra_hosts: [nohost]\n      ulimits: { nofile: { soft: 9, hard: 1 }, Bad: 1 }\n      \
                 tmpfs: [tmp]\n      cap_drop: [\"net admin\"]\n      \
                 network: front\n      networks: [back]\n      logging: { options: {} }\n",
            ),
        )],
        &[
            "pipelines/hello.yaml:13:7: `deploy.services.web.entrypoint` needs at least the program",
            "pipelines/hello.yaml:14:7: unknown key `cap_ad` in `deploy.services.web` (did you mean `cap_add`?)",
            "pipelines/hello.yaml:15:21: `deploy.services.web.extra_hosts`: `nohost` is not `name:address` (like db.internal:10.0.0.5)",
            "pipelines/hello.yaml:16:26: `deploy.services.web.ulimits.nofile`: `soft` must not be above `hard`",
            "pipelines/hello.yaml:16:48: `deploy.services.web.ulimits`: `Bad` is not a limit name (like nofile or nproc)",
            "pipelines/hello.yaml:17:15: `deploy.services.web.tmpfs`: `tmp` is not an absolute path (like /tmp or /run:size=64m)",
            "pipelines/hello.yaml:18:18: `deploy.services.web.cap_drop`: `net admin` is not a capability (like NET_ADMIN or ALL)",
            "pipelines/hello.yaml:20:7: `deploy.services.web` names both `network` and `networks`; list every network under `networks`",
            "pipelines/hello.yaml:21:16: missing key `driver` in `deploy.services.web.logging`",
        ],
    );
}

#[test]
fn env_files_and_secret_files_fill_the_environment() {
    let service = web(&[
        (
            "web.env",
            "# comment\n\nA=from file\nB=from file\nFROM_GANTRY\n",
        ),
        ("secrets/db_password", "s3cret-from-file\n"),
        (
            "pipelines/hello.yaml",
            &pipeline(
                "      env_file: web.env\n      \
                 env: { B: from env, PASSWORD: \"${file:secrets/db_password}\" }\n",
            ),
        ),
    ]);
    assert_eq!(service.env["A"], "from file");
    assert_eq!(service.env["B"], "from env");
    assert_eq!(service.env["FROM_GANTRY"], "inherited");
    assert_eq!(service.env["PASSWORD"], "s3cret-from-file");
}

#[test]
fn unreadable_env_and_secret_files_are_errors_that_never_quote_their_lines() {
    let messages = diagnostics(&[
        ("web.env", "GOOD=1\nnot a line with s3cret\nUNSET_ONE\n"),
        (
            "pipelines/hello.yaml",
            &pipeline(
                "      env_file: [web.env, missing.env]\n      \
                 env: { P: \"${file:secrets/none}\" }\n",
            ),
        ),
    ]);
    assert_eq!(messages.len(), 4, "{messages:#?}");
    assert!(messages.iter().all(|message| !message.contains("s3cret")));
    assert!(messages[0].starts_with(
        "pipelines/hello.yaml:13:27: `deploy.services.web.env_file`: `missing.env`: "
    ));
    assert!(messages[1].starts_with(
        "pipelines/hello.yaml:14:17: `deploy.services.web.env.P`: `${file:secrets/none}`: "
    ));
    assert!(messages[2].ends_with("web.env:2:1: not a `NAME=value` line (named in `env_file`)"));
    assert!(messages[3].ends_with(
        "web.env:3:1: environment variable `UNSET_ONE` is not set (named in `env_file`)"
    ));
}
