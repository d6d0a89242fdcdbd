//! Hostile and careless input against the real daemon: empty secrets, config files
//! made to exhaust the loader, and deliveries that lie.

use std::time::Duration;

use gantry::server::api::MAX_BODY;
use gantry::server::guard::MAX_FAILURES;

use crate::common::*;

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
        &daemon.url("/login"),
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
        &daemon.url(&format!("/api/v1/pipelines/{}/trigger", deployment.name)),
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
    wait_config_error(&daemon, "`{% for %}` is not allowed in a template");
    // A string doubled forty times (8 TiB) is refused before any render.
    let doubling = pipeline.replace(
        "tags: [",
        &format!(
            "tags: [\"{{% set a = 'xxxxxxxx' %}}{}{{{{ a|length }}}}\", ",
            "{% set a = a ~ a %}".repeat(40)
        ),
    );
    config.write("pipelines/bomb.yaml", &doubling);
    wait_config_error(&daemon, "`{% set %}` is not allowed in a template");

    // The next good edit is loaded: the bad file goes, a new pipeline comes.
    std::fs::remove_file(config.path().join("pipelines/bomb.yaml")).unwrap();
    let second = pipeline.replace(
        &deployment.instance("web-1"),
        &deployment.instance("second"),
    );
    config.write("pipelines/second.yaml", &second);
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

#[test]
fn commits_from_outside_are_checked_at_intake_and_shown_whole_characters() {
    let deployment = webhook_deployment("commits", "");
    let config = &deployment.config;
    let token = "commits-operator-token-0123456789";
    config.append("gantry.yaml", &format!("server:\n  token: {token}\n"));
    let daemon = Daemon::start(config);
    let api = |path: &str, body: &str| {
        curl(&[
            "-X",
            "POST",
            "-H",
            &format!("Authorization: Bearer {token}"),
            "-H",
            "Content-Type: application/json",
            "--data",
            body,
            &daemon.url(&format!("/api/v1/pipelines/{}/{path}", deployment.name)),
        ])
    };
    // Not a ref, not an image, not a deployment: 400, nothing queued.
    for (path, body) in [
        ("trigger", r#"{"commit": "main~1 --upload-pack=x"}"#),
        ("trigger", r#"{"commit": ""}"#),
        ("deploy", r#"{"image": "app:v1; rm -rf /"}"#),
        ("rollback", r#"{"to": "../../etc"}"#),
    ] {
        let (status, answer) = api(path, body);
        assert_eq!(status, 400, "{path} {body}: {answer}");
        assert!(answer.contains("\"error\""), "{answer}");
    }
    let long = format!(r#"{{"commit": "{}"}}"#, "a".repeat(300));
    assert_eq!(api("trigger", &long).0, 400);
    // A delivery whose commit is not a commit id.
    let (headers, body) = forge_push("generic", "ünïcødé-not-a-commit", &unique("d"), SECRET);
    let answer = daemon.post(&deployment.name, &headers, &body);
    assert_eq!(answer.0, 400, "{}", answer.1);
    assert!(answer.1.contains("not a commit id"), "{}", answer.1);
    let runs = config.gantry_json(&["runs", &deployment.name]).1;
    assert_eq!(runs, serde_json::json!([]), "nothing was queued");

    // A branch name may hold any letter; it is queued, fails to resolve, and every
    // listing shows it cut between characters, never inside one.
    let (status, answer) = api("trigger", r#"{"commit": "ünïcødé-branch"}"#);
    assert_eq!(status, 202, "{answer}");
    let runs = eventually("the run ends", Duration::from_secs(60), || {
        let runs = config.gantry_json(&["runs", &deployment.name]).1;
        match runs[0]["state"].as_str() {
            Some("failed") => Ok(runs),
            _ => Err(runs.to_string()),
        }
    });
    assert!(
        runs[0]["message"]
            .as_str()
            .unwrap()
            .contains("ünïcødé-branch"),
        "{runs}"
    );
    let local = config.gantry(&["runs", &deployment.name]);
    assert!(local.status.success(), "{}", stderr(&local));
    assert!(stdout(&local).contains("ünïcødé"), "{}", stdout(&local));
    let remote = std::process::Command::new(env!("CARGO_BIN_EXE_gantry"))
        .args(["--server", &daemon.url("")])
        .args(["runs", &deployment.name])
        .env("GANTRY_TOKEN", token)
        .output()
        .unwrap();
    assert!(remote.status.success(), "{}", stderr(&remote));
    assert_eq!(stdout(&remote), stdout(&local));

    // What a run says that came from outside (a commit message, a git error) reaches a
    // terminal as text: escapes and reordering characters are shown, not acted on.
    with_database(&config.state_database(), async |pool| {
        sqlx::query("UPDATE runs SET message = ?1")
            .bind("fixed\u{1b}]0;owned\u{7}\u{1b}[2J admin\u{202e}gnp.exe")
            .execute(pool)
            .await
            .unwrap();
    });
    let local = config.gantry(&["runs", &deployment.name]);
    let shown = stdout(&local);
    assert!(
        !shown.contains(['\u{1b}', '\u{7}', '\u{202e}']),
        "{shown:?}"
    );
    assert!(
        shown.contains("fixed\\u{1b}]0;owned\\u{7}\\u{1b}[2J admin\\u{202e}gnp.exe"),
        "{shown}"
    );
    let (_, listed) = config.gantry_json(&["runs", &deployment.name]);
    assert!(
        listed[0]["message"].as_str().unwrap().contains('\u{202e}'),
        "JSON keeps the text as stored: {listed}"
    );
}

/// Rows of the state database's `deliveries` table for a pipeline: (id, run id).
fn stored_deliveries(config: &ConfigDir, pipeline: &str) -> Vec<(Option<String>, Option<i64>)> {
    with_database(&config.state_database(), async |pool| {
        sqlx::query_as("SELECT delivery_id, run_id FROM deliveries WHERE pipeline = ?1")
            .bind(pipeline)
            .fetch_all(pool)
            .await
            .unwrap()
    })
}

#[test]
fn deliveries_are_known_by_id_and_signed_body_and_pruned_with_the_runs() {
    let deployment = webhook_deployment("dedupe", "");
    let config = &deployment.config;
    config.append("gantry.yaml", "server:\n  keep_runs: 3\n");
    // Pinned: the runs end at once (held), which is all this test needs of them.
    let pinned = config.gantry(&["pin", &deployment.name, "--reason", "test"]);
    assert!(pinned.status.success(), "{}", stderr(&pinned));
    let daemon = Daemon::start(config);
    let name = &deployment.name;
    let runs = || {
        config
            .gantry_json(&["runs", name])
            .1
            .as_array()
            .unwrap()
            .len()
    };

    let first = deployment.repo.commit("first");
    let (headers, body) = forge_push("github", &first, "d-1", SECRET);
    let queued = daemon.post(name, &headers, &body);
    assert_eq!(queued.0, 202, "{}", queued.1);
    assert!(queued.1.contains("\"queued\":true"), "{}", queued.1);
    // The same delivery again (a forge's redelivery): its first answer, nothing queued.
    assert_eq!(daemon.post(name, &headers, &body), queued);
    assert_eq!(runs(), 1);
    // The captured body with a fresh id is a delivery of its own: queued, and held
    // back by the rules for old and repeated commits (here, the pin).
    let fresh_id: Vec<(String, String)> = headers
        .iter()
        .map(|(name, value)| match name.as_str() {
            "X-GitHub-Delivery" => (name.clone(), "d-replayed".to_string()),
            _ => (name.clone(), value.clone()),
        })
        .collect();
    let replayed = daemon.post(name, &fresh_id, &body);
    assert_eq!(replayed.0, 202, "{}", replayed.1);
    assert_eq!(runs(), 2);

    // Someone uses the id the next real delivery will carry, with a captured push to
    // another branch; the real delivery is still taken for what it is.
    let mut other_branch: serde_json::Value = serde_json::from_slice(&body).unwrap();
    other_branch["ref"] = "refs/heads/feature".into();
    let other_branch = serde_json::to_vec(&other_branch).unwrap();
    let signed = |body: &[u8], id: &str| github_headers("push", id, body);
    let ignored = daemon.post(name, &signed(&other_branch, "d-next"), &other_branch);
    assert!(ignored.1.contains("\"queued\":false"), "{}", ignored.1);
    let second = deployment.repo.commit("second");
    let (_, body) = forge_push("github", &second, "d-next", SECRET);
    let real = daemon.post(name, &signed(&body, "d-next"), &body);
    assert_eq!(real.0, 202, "{}", real.1);
    assert!(real.1.contains("\"queued\":true"), "{}", real.1);
    assert_eq!(runs(), 3);

    // An id longer than any forge's is refused.
    let (_, body) = forge_push("github", &second, "x", SECRET);
    let long = daemon.post(name, &signed(&body, &"x".repeat(200)), &body);
    assert_eq!(long.0, 400, "{}", long.1);

    // Deliveries that queue nothing are kept only as many as runs are.
    for index in 0..10 {
        let ping = format!("{{\"zen\": \"ping {index}\"}}").into_bytes();
        let headers = github_headers("ping", &format!("p-{index}"), &ping);
        assert_eq!(daemon.post(name, &headers, &ping).0, 200);
    }
    let stored = stored_deliveries(config, name);
    let unlinked = stored.iter().filter(|(_, run)| run.is_none()).count();
    assert!(unlinked <= 3, "{stored:?}");
    assert!(
        stored.iter().any(|(id, _)| id.as_deref() == Some("p-9")),
        "the newest stays: {stored:?}"
    );
    assert_eq!(stored.iter().filter(|(_, run)| run.is_some()).count(), 3);
}

#[test]
fn guessing_is_limited_errors_are_json_and_pages_refuse_framing() {
    let deployment = webhook_deployment("guard", "");
    let config = &deployment.config;
    let token = "guard-operator-token-0123456789";
    config.append("gantry.yaml", &format!("server:\n  token: {token}\n"));
    let daemon = Daemon::start(config);
    let trigger = daemon.url(&format!("/api/v1/pipelines/{}/trigger", deployment.name));
    let bearer = format!("Authorization: Bearer {token}");

    // axum's own rejections answer in the API's shape.
    for (content_type, body, expected) in [
        ("application/json", "{not json".to_string(), 400),
        ("text/plain", "{}".to_string(), 415),
        (
            "application/json",
            format!("{{\"commit\": \"{}\"}}", "a".repeat(MAX_BODY)),
            413,
        ),
    ] {
        let file = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(file.path(), &body).unwrap();
        let (status, answer) = curl(&[
            "-X",
            "POST",
            "-H",
            &bearer,
            "-H",
            &format!("Content-Type: {content_type}"),
            "--data-binary",
            &format!("@{}", file.path().display()),
            &trigger,
        ]);
        assert_eq!(status, expected, "{answer}");
        let answer: serde_json::Value =
            serde_json::from_str(&answer).unwrap_or_else(|_| panic!("not JSON: {answer}"));
        assert!(answer["error"].is_string(), "{answer}");
    }

    // Dashboard pages: a policy for scripts and styles, no framing, no sniffing.
    let (_, headers) = curl(&["-s", "-o", "/dev/null", "-D", "-", &daemon.url("/login")]);
    let headers = headers.to_ascii_lowercase();
    assert!(
        headers.contains("content-security-policy: default-src 'none'"),
        "{headers}"
    );
    assert!(headers.contains("frame-ancestors 'none'"), "{headers}");
    assert!(headers.contains("x-frame-options: deny"), "{headers}");
    assert!(
        headers.contains("x-content-type-options: nosniff"),
        "{headers}"
    );

    // As many wrong tokens as the guard allows, then this address waits, whatever it
    // sends.
    for attempt in 0..MAX_FAILURES {
        let (status, _) = curl(&[
            "-H",
            &format!("Authorization: Bearer wrong-{attempt}"),
            &daemon.url("/api/v1/pipelines"),
        ]);
        assert_eq!(status, 401);
    }
    let (status, headers) = curl(&["-D", "-", "-H", &bearer, &daemon.url("/api/v1/pipelines")]);
    assert_eq!(status, 429, "{headers}");
    assert!(
        headers.to_ascii_lowercase().contains("retry-after:"),
        "{headers}"
    );
    assert!(headers.contains("too many failed attempts"), "{headers}");
    let (status, _) = curl(&["--data", &format!("token={token}"), &daemon.url("/login")]);
    assert_eq!(status, 429);
    // Reading without credentials is not an attempt: `/healthz` still answers.
    assert_eq!(daemon.get("/healthz").0, 200);

    // Deliveries with wrong secrets are not held against an address: forges send from
    // a few shared addresses, and anyone can point a hook of theirs here, so blocking
    // them would let a stranger stop a pipeline's deploys. A secret is protected by its
    // length instead (a short one loads with a warning).
    let commit = "0123456789abcdef0123456789abcdef01234567";
    for attempt in 0..=MAX_FAILURES {
        let (headers, body) =
            forge_push("gitlab", commit, &unique("d"), &format!("guess-{attempt}"));
        let (status, answer) = daemon.post(&deployment.name, &headers, &body);
        assert_eq!(status, 401, "{answer}");
    }
    let (headers, body) = forge_push("gitlab", commit, &unique("d"), SECRET);
    let (status, answer) = daemon.post(&deployment.name, &headers, &body);
    assert_eq!(
        status, 202,
        "the forge's own delivery still comes in: {answer}"
    );
    assert!(
        daemon.log().contains("failed authentication"),
        "{}",
        daemon.log()
    );
}

/// Sends `request` on a new connection to the daemon and reads until the daemon closes
/// it (or 20 s pass); what came back and how long the daemon kept the connection.
fn trickle(daemon: &Daemon, request: &[u8]) -> (String, Duration) {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", daemon.port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let started = std::time::Instant::now();
    stream.write_all(request).unwrap();
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    (
        String::from_utf8_lossy(&answer).into_owned(),
        started.elapsed(),
    )
}

#[test]
fn slow_and_oversized_requests_are_cut_off_without_waiting_for_them() {
    let deployment = webhook_deployment("slowloris", "");
    let config = &deployment.config;
    config.append(
        "gantry.yaml",
        "server:\n  read_timeout: 1s\n  max_body: 1k\n",
    );
    let daemon = Daemon::start(config);
    let hook = format!("/hooks/{}", deployment.name);

    // Header fields that never end: the connection is closed after the read timeout.
    let (answer, held) = trickle(
        &daemon,
        format!("POST {hook} HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ").as_bytes(),
    );
    assert!(held < Duration::from_secs(10), "held {held:?}: {answer}");

    // A body that never arrives whole: 408, once the read timeout has passed.
    let (answer, held) = trickle(
        &daemon,
        format!("POST {hook} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 500\r\n\r\n{{\"ref\"")
            .as_bytes(),
    );
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("server.read_timeout (1s)"), "{answer}");
    assert!(held < Duration::from_secs(10), "held {held:?}");

    // A request to no route is answered without waiting for its body.
    let (answer, _) = trickle(
        &daemon,
        b"POST /nothing-here HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 500\r\n\r\n{",
    );
    assert!(answer.starts_with("HTTP/1.1 404"), "{answer}");

    // A body declared larger than the limit: 413 at once, before any of it is sent.
    let (answer, _) = trickle(
        &daemon,
        format!("POST {hook} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 100000000\r\nConnection: close\r\n\r\n")
            .as_bytes(),
    );
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(
        answer.contains("larger than server.max_body (1024 bytes)"),
        "{answer}"
    );

    // Meanwhile the daemon answers everybody else.
    assert_eq!(daemon.get("/healthz").0, 200);
    let (output, runs) = config.gantry_json(&["runs", &deployment.name]);
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(runs, serde_json::json!([]), "nothing was queued");
}
