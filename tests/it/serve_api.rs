//! The daemon seen from outside: its API over TCP with a token, the CLI driving a remote
//! daemon, notifications, metrics scraped by a real Prometheus, and no secret in any of
//! what it shows.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::common::*;
use crate::serve::push;

#[test]
fn serve_api_answers_over_tcp_with_the_token() {
    let deployment = webhook_deployment("api", "");
    deployment
        .config
        .append("gantry.yaml", "server:\n  token: api-operator-token\n");
    let daemon = Daemon::start(&deployment.config);
    let (status, _) = curl(&[&daemon.url("/api/v1/runs")]);
    assert_eq!(status, 401);
    let auth = "Authorization: Bearer api-operator-token";
    let (status, answer) = curl(&[
        "-X",
        "POST",
        "-H",
        auth,
        &daemon.url(&format!("/api/v1/pipelines/{}/trigger", deployment.name)),
    ]);
    assert_eq!(status, 202, "{answer}");
    let all = wait_idle(&deployment, &daemon, 1);
    assert_eq!(all[0]["state"], "succeeded", "{all:?}\n{}", daemon.log());
    assert_eq!(all[0]["trigger"], "api");
    let (status, page) = curl(&["-H", auth, &daemon.url("/api/v1/runs?limit=1")]);
    assert_eq!(status, 200);
    let page: serde_json::Value = serde_json::from_str(&page).unwrap();
    assert_eq!(page["runs"][0]["state"], "succeeded");
    // A second version, then a rollback and deploys through the API: they go through
    // the queue and the lease like everything else.
    let first = deployment.head();
    deployment.repo.write("www/index.html", "v2\n");
    let second = deployment.repo.commit("v2");
    let post = |path: &str, body: &str| {
        curl(&[
            "-X",
            "POST",
            "-H",
            auth,
            "-H",
            "Content-Type: application/json",
            "--data",
            body,
            &daemon.url(&format!("/api/v1/pipelines/{}/{path}", deployment.name)),
        ])
    };
    assert_eq!(post("trigger", "{}").0, 202);
    wait_idle(&deployment, &daemon, 2);
    assert_eq!(deployed_commit(&deployment), second);
    let (status, answer) = post("rollback", "{}");
    assert_eq!(status, 202, "{answer}");
    assert!(answer.contains("\"kind\":\"rollback\""), "{answer}");
    let all = wait_idle(&deployment, &daemon, 3);
    assert_eq!(all[0]["kind"], "rollback");
    assert_eq!(all[0]["state"], "succeeded", "{all:?}\n{}", daemon.log());
    assert_eq!(deployed_commit(&deployment), first);
    let (_, summary) = curl(&[
        "-H",
        auth,
        &daemon.url(&format!("/api/v1/pipelines/{}", deployment.name)),
    ]);
    assert!(
        summary.contains("rolled back to deployment #1"),
        "{summary}"
    );
    // Pinned: a deploy through the API is refused like any other, until unpinned.
    let tag = format!("{}:{}", deployment.repository, &second[..7]);
    assert_eq!(post("deploy", &format!("{{\"image\": \"{tag}\"}}")).0, 202);
    let all = wait_idle(&deployment, &daemon, 4);
    assert_eq!(all[0]["state"], "failed", "{all:?}");
    assert_eq!(all[0]["failed_stage"], "resolve");
    assert_eq!(post("unpin", "").0, 200);
    assert_eq!(post("deploy", &format!("{{\"image\": \"{tag}\"}}")).0, 202);
    let all = wait_idle(&deployment, &daemon, 5);
    assert_eq!(all[0]["state"], "succeeded", "{all:?}\n{}", daemon.log());
    assert_eq!(deployed_commit(&deployment), second);

    let (status, document) = curl(&[&daemon.url("/api/v1/openapi.json")]);
    assert_eq!(status, 200);
    assert!(document.contains("\"openapi\":\"3.1.0\""), "{document}");
    assert!(!document.contains("api-operator-token"));
}

#[test]
fn serve_refuses_to_listen_beyond_loopback_without_a_token() {
    let deployment = webhook_deployment("exposed", "");
    let output = deployment.gantry(&["serve", "--listen", "0.0.0.0:0"]);
    assert_eq!(output.status.code(), Some(2));
    assert!(
        stderr(&output).contains("without server.token"),
        "{}",
        stderr(&output)
    );
}

#[test]
fn serve_notifies_each_outcome_once_and_a_dead_receiver_delays_nothing() {
    let deployment = webhook_deployment("notify", "");
    let receiver = Receiver::start();
    let dead = free_port();
    deployment.config.append(
        "gantry.yaml",
        &format!(
            "notifications:\n  \
         audit: {{ url: \"http://127.0.0.1:{port}/audit\" }}\n  \
         chat: {{ url: \"http://127.0.0.1:{port}/chat\", format: slack, on: [failure] }}\n  \
         gone: {{ url: \"http://127.0.0.1:{dead}/gone\" }}\n",
            port = receiver.port
        ),
    );
    let daemon = Daemon::start(&deployment.config);
    let good = deployment.head();
    push(&daemon, &deployment, &good);
    let all = wait_idle(&deployment, &daemon, 1);
    assert_eq!(all[0]["state"], "succeeded", "{all:?}");
    deployment
        .repo
        .write("Dockerfile", "FROM gantry-test/busybox:latest\nRUN false\n");
    let bad = deployment.repo.commit("a broken build");
    push(&daemon, &deployment, &bad);
    let all = wait_idle(&deployment, &daemon, 2);
    assert_eq!(all[0]["state"], "failed", "{all:?}");

    // The dead receiver is retried with backoff, after the runs ended, and its failure
    // lands in the run's log.
    let log = eventually(
        "the dead receiver's failure is logged",
        Duration::from_secs(30),
        || {
            let log = stdout(&deployment.gantry(&["logs", &format!("{}#2", deployment.name)]));
            if log.contains("[notify] gone: failure notification failed after 4 attempts") {
                Ok(log)
            } else {
                Err(log)
            }
        },
    );
    assert!(
        log.contains("[notify] audit: failure notification delivered"),
        "{log}"
    );
    assert!(
        !log.contains(&format!("{dead}/gone")),
        "the URL is kept out of the log: {log}"
    );

    let audit = receiver.messages("/audit");
    assert_eq!(audit.len(), 2, "{audit:?}");
    assert_eq!(audit[0]["outcome"], "success");
    assert_eq!(audit[0]["commit"], good.as_str());
    assert_eq!(audit[0]["author"], "Test");
    assert_eq!(audit[0]["pipeline"], deployment.name.as_str());
    assert!(
        audit[0]["url"]
            .as_str()
            .unwrap()
            .ends_with(&format!("/api/v1/runs/{}", all[1]["id"]))
    );
    assert_eq!(audit[1]["outcome"], "failure");
    assert!(
        audit[1]["message"]
            .as_str()
            .unwrap()
            .contains("failed at build"),
        "{audit:?}"
    );
    let chat = receiver.messages("/chat");
    assert_eq!(chat.len(), 1, "{chat:?}");
    assert!(
        chat[0]["text"].as_str().unwrap().contains("failure"),
        "{chat:?}"
    );
}

#[test]
fn the_cli_drives_a_remote_daemon_with_a_token() {
    let deployment = webhook_deployment("remote", "");
    deployment
        .config
        .append("gantry.yaml", "server:\n  token: remote-operator-token\n");
    let daemon = Daemon::start(&deployment.config);
    // Somewhere without any config: everything goes through the API.
    let elsewhere = tempfile::tempdir().unwrap();
    let server = daemon.url("");
    let remote = |arguments: &[&str], token: &str| {
        Command::new(env!("CARGO_BIN_EXE_gantry"))
            .current_dir(elsewhere.path())
            .args(["--server", &server])
            .args(arguments)
            .env("GANTRY_TOKEN", token)
            .env_remove("GANTRY_CONFIG")
            .output()
            .unwrap()
    };
    let token = "remote-operator-token";
    let output = remote(&["trigger", &deployment.name], "wrong");
    assert_eq!(output.status.code(), Some(1));
    assert!(
        stderr(&output).contains("answered 401"),
        "{}",
        stderr(&output)
    );

    let output = remote(&["trigger", &deployment.name], token);
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(stdout(&output).contains(&format!("queued {}#1", deployment.name)));
    let followed = remote(
        &["logs", &format!("{}#1", deployment.name), "--follow"],
        token,
    );
    assert!(followed.status.success(), "{}", stderr(&followed));
    assert!(
        stdout(&followed).contains("[deploy] done in"),
        "{}",
        stdout(&followed)
    );
    let listed = remote(&["--json", "runs", &deployment.name], token);
    let runs: serde_json::Value = serde_json::from_slice(&listed.stdout).unwrap();
    assert_eq!(runs[0]["state"], "succeeded", "{runs}");
    let first = deployment.head();

    deployment.repo.write("www/index.html", "v2\n");
    let second = deployment.repo.commit("v2");
    assert!(
        remote(&["trigger", &deployment.name], token)
            .status
            .success()
    );
    wait_idle(&deployment, &daemon, 2);
    assert_eq!(deployed_commit(&deployment), second);

    // rollback and deploy follow their run to the end and exit as the local ones do.
    let rolled = remote(&["rollback", &deployment.name], token);
    assert!(rolled.status.success(), "{}", stderr(&rolled));
    assert!(
        stdout(&rolled).contains("rollback succeeded"),
        "{}",
        stdout(&rolled)
    );
    assert_eq!(deployed_commit(&deployment), first);
    let refused = remote(&["deploy", &deployment.name], token);
    assert_eq!(
        refused.status.code(),
        Some(1),
        "pinned: {}",
        stdout(&refused)
    );
    assert!(
        stderr(&refused).contains("failed at resolve"),
        "{}",
        stderr(&refused)
    );
    assert!(remote(&["unpin", &deployment.name], token).status.success());
    let deployed = remote(&["deploy", &deployment.name], token);
    assert!(deployed.status.success(), "{}", stderr(&deployed));
    assert_eq!(deployed_commit(&deployment), second);
    // status from the daemon's reading matches the local one at once: a reading older
    // than the deploy that just ended is never served.
    let output = remote(&["--json", "status", &deployment.name], token);
    assert!(output.status.success(), "{}", stderr(&output));
    let answer: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let (_, local) = deployment.gantry_json(&["status", &deployment.name]);
    let instance = &answer["pipelines"][0]["instances"][0];
    assert_eq!(
        instance["digest"], local["pipelines"][0]["instances"][0]["digest"],
        "{answer}\nlocal: {local}"
    );
    assert_eq!(instance["commit"], second.as_str(), "{answer}");
    assert_eq!(instance["state"], "running", "{answer}");
    let text = stdout(&remote(&["status"], token));
    assert!(text.contains(&deployment.instance("web-1")), "{text}");
    assert!(
        remote(&["pin", &deployment.name, "--reason", "freeze"], token)
            .status
            .success()
    );
    let (_, all) = deployment.gantry_json(&["status", &deployment.name]);
    assert_eq!(all["pipelines"][0]["pinned"]["reason"], "freeze");

    let output = remote(&["validate"], token);
    assert_eq!(output.status.code(), Some(2));
    let output = remote(&["logs", "nope#1"], token);
    assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
}

#[test]
fn no_secret_appears_in_logs_api_answers_metrics_or_dashboard() {
    let mut deployment = Deployment::new("secrets", &[]);
    let instance = deployment.instance("web-1");
    let repository = format!("{}/gantry-it/{}", auth_registry(), deployment.name);
    deployment.config.repositories.push(repository.clone());
    let receiver = Receiver::start();
    let secrets = [
        SECRET.to_string(),
        auth_password(),
        "api-operator-s3cret".to_string(),
        "api-reader-s3cret".to_string(),
        "T000/B000/notify-s3cret".to_string(),
    ];
    deployment.config.append(
        "gantry.yaml",
        &format!(
            "server:\n  token: \"${{API_TOKEN}}\"\n  read_token: api-reader-s3cret\n\
         registries:\n  \"{}\": {{ username: {}, password: \"${{REGISTRY_PASSWORD}}\" }}\n\
         notifications:\n  chat: {{ url: \"http://127.0.0.1:{}/{}\", format: slack }}\n",
            auth_registry(),
            auth_user(),
            receiver.port,
            secrets[4]
        ),
    );
    deployment.config.write(
        &format!("pipelines/{}.yaml", deployment.name),
        &format!(
            "source:\n  repo: {}\n  branch: main\n  webhook: {{ secret: \"${{HOOK_SECRET}}\" }}\n\
             image:\n  repository: {repository}\n\
             deploy:\n  services:\n    web:\n      ports: [\"8080\"]\n      stop_timeout: 1s\n      \
             health:\n        http: {{ port: 8080, path: /healthz }}\n      instances:\n        {instance}: {{}}\n",
            deployment.repo.url()
        ),
    );
    // The secrets reach gantry through the environment, as in production.
    let mut daemon = Daemon::start_with(
        &deployment.config,
        &[
            ("GANTRY_LOG", "debug"),
            ("HOOK_SECRET", &secrets[0]),
            ("REGISTRY_PASSWORD", &secrets[1]),
            ("API_TOKEN", &secrets[2]),
        ],
    );
    let (headers, body) = forge_push("github", &deployment.head(), &unique("d"), &secrets[0]);
    assert_eq!(daemon.post(&deployment.name, &headers, &body).0, 202);
    // Wait for the run (built, pushed to the auth registry, deployed) to end.
    let auth = format!("Authorization: Bearer {}", secrets[2]);
    let runs = eventually("the run ends", Duration::from_secs(120), || {
        let (_, runs) = curl(&["-H", &auth, &daemon.url("/api/v1/runs")]);
        if runs.contains("\"state\":\"succeeded\"") || runs.contains("\"state\":\"failed\"") {
            Ok(runs)
        } else {
            Err(runs)
        }
    });
    assert!(runs.contains("\"state\":\"succeeded\""), "{runs}");
    // The notification goes out after the run ends; its line in the run's log is read too.
    eventually(
        "the notification is logged",
        Duration::from_secs(30),
        || {
            let (_, page) = curl(&["-H", &auth, &daemon.url("/api/v1/runs")]);
            let page: serde_json::Value = serde_json::from_str(&page).unwrap_or_default();
            let id = page["runs"][0]["id"]
                .as_i64()
                .ok_or_else(|| page.to_string())?;
            let (_, log) = curl(&["-H", &auth, &daemon.url(&format!("/api/v1/runs/{id}/log"))]);
            if log.contains("[notify] chat:") {
                Ok(())
            } else {
                Err(log)
            }
        },
    );
    let mut seen = vec![runs];
    for path in [
        "/api/v1/pipelines",
        "/api/v1/openapi.json",
        "/metrics",
        "/healthz",
    ] {
        seen.push(curl(&["-H", &auth, &daemon.url(path)]).1);
    }
    let (_, page) = curl(&["-H", &auth, &daemon.url("/api/v1/runs")]);
    let page: serde_json::Value = serde_json::from_str(&page).unwrap();
    let id = page["runs"][0]["id"].as_i64().unwrap();
    seen.push(curl(&["-H", &auth, &daemon.url(&format!("/api/v1/runs/{id}/log"))]).1);
    // The dashboard, logged in as the operator: every page, and the cookie itself.
    let operator = Visitor::new(&daemon);
    let (status, login) = operator.log_in(&secrets[2], "/");
    assert_eq!(status, 303, "{login}");
    seen.push(login);
    let name = &deployment.name;
    for path in [
        "/".to_string(),
        format!("/pipelines/{name}"),
        format!("/runs/{id}"),
        format!("/pipelines/{name}/rollback"),
        format!("/pipelines/{name}/trigger"),
        "/login".to_string(),
    ] {
        let (status, page) = operator.get(&path);
        assert_eq!(status, 200, "{path}: {page}");
        assert!(page.contains("</html>"), "{path}: {page}");
        seen.push(page);
    }
    daemon.terminate();
    seen.push(daemon.log());
    let all = seen.join("\n");
    assert!(all.contains("[push]"), "the run log was read: {all}");
    for secret in &secrets {
        assert!(!all.contains(secret.as_str()), "`{secret}` leaked:\n{all}");
    }
    // Nor the registry credentials as a client sends them.
    let basic = base64::Engine::encode(
        &base64::engine::general_purpose::STANDARD,
        format!("{}:{}", auth_user(), auth_password()),
    );
    assert!(!all.contains(&basic), "Basic credentials leaked:\n{all}");
    assert!(
        !all.to_ascii_lowercase().contains("x-registry-auth"),
        "{all}"
    );
    // The notification itself did go out.
    assert_eq!(receiver.messages(&format!("/{}", secrets[4])).len(), 1);
}

/// A real Prometheus (Debian's package) on loopback, scraping one target every second.
struct Prometheus {
    child: Child,
    port: u16,
    _data: tempfile::TempDir,
}

impl Prometheus {
    fn start(target: u16) -> Prometheus {
        let data = tempfile::tempdir().unwrap();
        let config = data.path().join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n\
                 scrape_configs:\n  - job_name: gantry\n    static_configs:\n      \
                 - targets: [\"127.0.0.1:{target}\"]\n"
            ),
        )
        .unwrap();
        let port = free_port();
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                data.path().join("tsdb").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(data.path().join("prometheus.log")).unwrap())
            .spawn()
            .expect("prometheus runs (scripts/test-env.sh installs it)");
        Prometheus {
            child,
            port,
            _data: data,
        }
    }

    fn api(&self, path: &str) -> serde_json::Value {
        let (status, body) = curl(&[&format!("http://127.0.0.1:{}{path}", self.port)]);
        if status != 200 {
            return serde_json::Value::Null;
        }
        serde_json::from_str(&body).unwrap_or(serde_json::Value::Null)
    }

    /// The value of an instant query's first sample, if it has one.
    fn value(&self, query: &str) -> Option<f64> {
        let query = form_urlencoded::Serializer::new(String::new())
            .append_pair("query", query)
            .finish();
        let answer = self.api(&format!("/api/v1/query?{query}"));
        answer["data"]["result"][0]["value"][1]
            .as_str()
            .and_then(|value| value.parse().ok())
    }

    /// Waits until `query`'s value satisfies `check`; returns it.
    fn wait_value(&self, query: &str, check: impl Fn(f64) -> bool) -> f64 {
        eventually(
            &format!("Prometheus sees `{query}` as expected"),
            Duration::from_secs(60),
            || {
                let value = self.value(query);
                value
                    .filter(|value| check(*value))
                    .ok_or_else(|| format!("{value:?}"))
            },
        )
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn a_real_prometheus_scrapes_metrics_and_sees_each_run_counted() {
    let deployment = webhook_deployment("prom", "");
    deployment
        .config
        .append("gantry.yaml", "server:\n  token: prom-operator-token\n");
    let daemon = Daemon::start(&deployment.config);
    let prometheus = Prometheus::start(daemon.port);

    // The target is up: Prometheus reads the daemon's OpenMetrics text.
    let active = eventually("the target is up", Duration::from_secs(60), || {
        let targets = prometheus.api("/api/v1/targets");
        let active = &targets["data"]["activeTargets"][0];
        if active["health"] == "up" {
            Ok(active.clone())
        } else {
            Err(targets.to_string())
        }
    });
    assert_eq!(active["scrapeUrl"], daemon.url("/metrics"));
    let started = prometheus.wait_value("gantry_process_start_time_seconds", |value| value > 0.0);
    assert!(started > 1.7e9, "{started}");

    let succeeded = format!(
        "gantry_runs_total{{pipeline=\"{}\",outcome=\"succeeded\"}}",
        deployment.name
    );
    assert_eq!(prometheus.value(&succeeded), None, "no run has ended yet");
    let trigger = || {
        let (status, answer) = curl(&[
            "-X",
            "POST",
            "-H",
            "Authorization: Bearer prom-operator-token",
            &daemon.url(&format!("/api/v1/pipelines/{}/trigger", deployment.name)),
        ]);
        assert_eq!(status, 202, "{answer}");
    };
    trigger();
    let all = wait_idle(&deployment, &daemon, 1);
    assert_eq!(all[0]["state"], "succeeded", "{all:?}\n{}", daemon.log());
    assert_eq!(prometheus.wait_value(&succeeded, |value| value >= 1.0), 1.0);

    // A second run moves the counter again; the other figures came along.
    deployment.repo.write("www/index.html", "v2\n");
    deployment.repo.commit("v2");
    trigger();
    let all = wait_idle(&deployment, &daemon, 2);
    assert_eq!(all[0]["state"], "succeeded", "{all:?}");
    assert_eq!(prometheus.wait_value(&succeeded, |value| value >= 2.0), 2.0);
    let name = &deployment.name;
    let last_deploy = prometheus.wait_value(
        &format!("gantry_last_successful_deploy_timestamp_seconds{{pipeline=\"{name}\"}}"),
        |value| value > 0.0,
    );
    assert!(last_deploy > 1.7e9, "{last_deploy}");
    prometheus.wait_value(
        &format!("sum(gantry_stage_duration_seconds_count{{pipeline=\"{name}\",stage=\"build\"}})"),
        |value| value >= 2.0,
    );
    prometheus.wait_value(
        &format!("sum(gantry_deployments{{pipeline=\"{name}\",outcome=\"succeeded\"}})"),
        |value| value >= 2.0,
    );
}
