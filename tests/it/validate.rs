//! `gantry validate` through the binary: exit codes, every error with its place, and
//! the example pipelines of this repository. The message of each error kind is
//! checked exactly in the config module's unit tests.

use crate::common::*;

#[test]
fn a_clean_config_prints_a_summary_and_exits_zero() {
    let mut config = ConfigDir::new();
    config.pipeline(
        "hello",
        "/srv/hello",
        "127.0.0.1:5115/team/hello",
        &["latest"],
    );
    let output = config.gantry(&["validate"]);
    assert_eq!(output.status.code(), Some(0));
    assert_eq!(
        stdout(&output).trim(),
        format!(
            "config OK: 1 pipeline(s), 1 host(s), 0 registries in {}",
            config.path().display()
        )
    );
}

#[test]
fn every_error_is_listed_with_its_place_and_exit_is_two() {
    let config = ConfigDir::new();
    config.write(
        "gantry.yaml",
        "hosts:\n  web1: { docker: tcp://10.0.0.11:2376 }\n",
    );
    config.write(
        "pipelines/a.yaml",
        "source:\n  repo: /srv/a\n  poll: 30x\nbuild:\n  dockerfil: Dockerfile\n  host: web2\nimage:\n  repository: 127.0.0.1:5115/a\n  tags: [\"{{ branch }}\", \"{{ nope }}\"]\n",
    );
    config.write(
        "pipelines/b.yaml",
        "source:\n  repo: /srv/b\n  webhook: { secret: \"${GANTRY_TEST_UNSET_SECRET}\" }\nbuild:\n  context: ../up\nimage:\n  repository: 127.0.0.1:5115/B\ndeploy:\n  services:\n    web: { requires: [api], instances: { web-1: {} } }\n    api: { requires: [web], instances: { api-1: {} } }\n",
    );
    config.write("pipelines/c.yaml", "source: [unclosed\n");
    let output = config.gantry(&["validate"]);
    assert_eq!(output.status.code(), Some(2));
    let dir = config.path().display().to_string();
    let expected = [
        format!(
            "{dir}/pipelines/a.yaml:3:9: `source.poll`: `30x` is not a duration (write it like 30s, 5m or 1h30m)"
        ),
        format!(
            "{dir}/pipelines/a.yaml:5:3: unknown key `dockerfil` in `build` (did you mean `dockerfile`?)"
        ),
        format!(
            "{dir}/pipelines/a.yaml:6:3: `build.host`: host `web2` is not defined in gantry.yaml (did you mean `web1`?)"
        ),
        format!(
            "{dir}/pipelines/a.yaml:9:26: `image.tags`: template `{{{{ nope }}}}` cannot be rendered: `nope` is undefined (known: commit.sha, commit.short, branch, run.number)"
        ),
        format!(
            "{dir}/pipelines/b.yaml:3:22: environment variable `GANTRY_TEST_UNSET_SECRET` is not set (used in `source.webhook.secret`)"
        ),
        format!("{dir}/pipelines/b.yaml:5:12: `build.context`: `../up` is outside the repository"),
        format!(
            "{dir}/pipelines/b.yaml:7:15: `image.repository`: `127.0.0.1:5115/B` is not a valid repository: `B` must be lowercase letters and digits, separated by `.`, `_`, `__` or `-`"
        ),
        format!("{dir}/pipelines/b.yaml:11:23: `requires` forms a cycle: api -> web -> api"),
        format!(
            "{dir}/pipelines/c.yaml:2:1: YAML syntax error: while parsing a flow sequence, expected ',' or ']'"
        ),
        "9 error(s); nothing was changed".to_string(),
    ];
    let text = stderr(&output);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines,
        expected.iter().map(String::as_str).collect::<Vec<_>>(),
        "{text}"
    );

    // The same errors as JSON.
    let (output, report) = config.gantry_json(&["validate"]);
    assert_eq!(output.status.code(), Some(2));
    assert_eq!(report["valid"], false);
    assert_eq!(report["errors"].as_array().unwrap().len(), 9);
    assert_eq!(report["errors"][1]["line"], 5);
    assert_eq!(report["errors"][1]["column"], 3);
}

#[test]
fn the_example_pipelines_validate() {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_gantry"))
        .args(["--config", env!("CARGO_MANIFEST_DIR"), "validate"])
        .env("HELLO_WEBHOOK_SECRET", "example")
        .env("REGISTRY_PASSWORD", "example")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    assert!(
        stdout(&output).starts_with("config OK: "),
        "{}",
        stdout(&output)
    );
}

#[test]
fn a_missing_config_directory_is_bad_usage() {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_gantry"))
        .args(["--config", "/nonexistent/gantry-config", "validate"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert_eq!(
        stderr(&output).trim(),
        "error: cannot read /nonexistent/gantry-config: the config directory does not exist (set --config or GANTRY_CONFIG)"
    );
}
