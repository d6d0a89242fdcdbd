//! Hostile and careless input against the real daemon: empty secrets, config files
//! made to exhaust the loader, and deliveries that lie.

use std::time::Duration;

use crate::common::*;
use crate::serve::{Daemon, SECRET, curl, forge_push, webhook_deployment};

/// The daemon's `/healthz` document.
fn health(daemon: &Daemon) -> serde_json::Value {
    serde_json::from_str(&daemon.get("/healthz").1).unwrap_or_default()
}

/// Waits until `/healthz` reports a config error containing `fragment`.
fn wait_config_error(daemon: &Daemon, fragment: &str) -> String {
    eventually(fragment, Duration::from_secs(20), || {
        let health = health(daemon);
        health["config_errors"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|error| error.as_str())
            .find(|error| error.contains(fragment))
            .map(str::to_string)
            .ok_or_else(|| format!("{health}\n{}", daemon.log()))
    })
}

#[test]
fn empty_secrets_are_config_errors_and_never_let_anyone_in() {
    let deployment = webhook_deployment("empty", "");
    let config = &deployment.config;
    config.append(
        "gantry.yaml",
        "server:\n  token: \"${GANTRY_TEST_UNSET_TOKEN:-}\"\n",
    );
    // The config is refused where it says so; the daemon does not start, not even on
    // an address beyond loopback that only a token would allow.
    let output = config.gantry(&["validate"]);
    assert_eq!(output.status.code(), Some(2));
    assert!(
        stderr(&output).contains("gantry.yaml:4:10: `server.token` is empty"),
        "{}",
        stderr(&output)
    );
    let output = config.gantry(&["serve", "--listen", &format!("0.0.0.0:{}", free_port())]);
    assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));

    // A daemon with real secrets, then an edit that empties them: the edit is refused
    // and nothing empty is ever accepted.
    let gantry_yaml = std::fs::read_to_string(config.path().join("gantry.yaml")).unwrap();
    config.write(
        "gantry.yaml",
        &gantry_yaml.replace(
            "\"${GANTRY_TEST_UNSET_TOKEN:-}\"",
            "an-operator-token-long-enough",
        ),
    );
    let daemon = Daemon::start(config);
    let file = format!("pipelines/{}.yaml", deployment.name);
    let pipeline = std::fs::read_to_string(config.path().join(&file)).unwrap();
    config.write(
        &file,
        &pipeline.replace(SECRET, "\"${GANTRY_TEST_UNSET_SECRET:-}\""),
    );
    config.write("gantry.yaml", &gantry_yaml);
    wait_config_error(&daemon, "`source.webhook.secret` is empty");
    wait_config_error(&daemon, "`server.token` is empty");

    let login = curl(&[
        "-X",
        "POST",
        "-D",
        "-",
        "--data",
        "token=&next=/",
        &format!("http://127.0.0.1:{}/login", daemon.port),
    ]);
    assert_eq!(login.0, 401, "{}", login.1);
    assert!(
        !login.1.to_ascii_lowercase().contains("set-cookie"),
        "{}",
        login.1
    );
    let action = curl(&[
        "-X",
        "POST",
        "-H",
        "Authorization: Bearer ",
        &format!(
            "http://127.0.0.1:{}/api/v1/pipelines/{}/trigger",
            daemon.port, deployment.name
        ),
    ]);
    assert_eq!(action.0, 401, "{}", action.1);

    // Deliveries signed with an empty key, or a GitLab token left empty, are refused.
    let commit = deployment.repo.commit("pushed by nobody");
    for forge in ["github", "generic", "gitlab"] {
        let (headers, body) = forge_push(forge, &commit, &unique("d"), "");
        let answer = daemon.post(&deployment.name, &headers, &body);
        assert_eq!(answer.0, 401, "{forge}: {}", answer.1);
    }
    let runs = config.gantry_json(&["runs", &deployment.name]).1;
    assert_eq!(runs, serde_json::json!([]), "nothing was queued");
}

/// Nine levels of ten aliases: about a billion values from a few hundred bytes.
fn alias_bomb() -> String {
    let mut bomb = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
    for level in 1..9 {
        let items = vec![format!("*a{}", level - 1); 10].join(", ");
        bomb.push_str(&format!("a{level}: &a{level} [{items}]\n"));
    }
    bomb
}

#[test]
fn hot_reload_survives_files_made_to_exhaust_it_and_loads_the_next_good_edit() {
    let deployment = webhook_deployment("bombs", "");
    let config = &deployment.config;
    let mut daemon = Daemon::start(config);
    let pipeline = std::fs::read_to_string(
        config
            .path()
            .join(format!("pipelines/{}.yaml", deployment.name)),
    )
    .unwrap();

    config.write("pipelines/bomb.yaml", &alias_bomb());
    wait_config_error(&daemon, "bomb.yaml:");
    let error = wait_config_error(&daemon, "aliases expanded");
    assert!(error.contains("YAML syntax error"), "{error}");

    config.write(
        "pipelines/bomb.yaml",
        &format!("{}x\n", "- ".repeat(60_000)),
    );
    wait_config_error(&daemon, "nested deeper than 64 levels");

    let looping = pipeline.replace(
        "tags: [",
        "tags: [\"{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}x\", ",
    );
    config.write("pipelines/bomb.yaml", &looping);
    wait_config_error(&daemon, "cannot be rendered");

    // The next good edit is loaded: the bad file goes, a new pipeline comes.
    std::fs::remove_file(config.path().join("pipelines/bomb.yaml")).unwrap();
    config.write("pipelines/second.yaml", &pipeline);
    eventually("the good edit is loaded", Duration::from_secs(20), || {
        let health = health(&daemon);
        let loaded = health["status"] == "ok"
            && health["pipelines"]
                .as_array()
                .is_some_and(|names| names.iter().any(|name| name == "second"));
        if loaded {
            Ok(())
        } else {
            Err(health.to_string())
        }
    });
    let status = daemon.terminate();
    assert!(status.success(), "{status:?}\n{}", daemon.log());
}
