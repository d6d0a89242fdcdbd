//! Credentials inside a repository URL never reach a message: run messages and logs,
//! the API, the dashboard, notifications, the daemon's own log, or `/healthz`.

use std::time::Duration;

use crate::common::*;

const READ_TOKEN: &str = "leak-reader-token-0123456789";

/// Every message a user of any access could see, gathered from a running daemon.
struct Gathered {
    seen: Vec<String>,
}

impl Gathered {
    fn add(&mut self, what: &str, text: String) {
        self.seen.push(format!("== {what}\n{text}"));
    }

    fn assert_clean(&self, secrets: &[&str]) {
        let all = self.seen.join("\n");
        for secret in secrets {
            assert!(!all.contains(secret), "`{secret}` leaked:\n{all}");
        }
    }
}

#[test]
fn repository_credentials_never_appear_in_any_message() {
    let deployment = Deployment::new("leak", &[]);
    let config = &deployment.config;
    let receiver = Receiver::start();
    let closed = free_port();
    let secrets = [
        "https-leak-t0ken-1",
        "file-leak-t0ken-2",
        "ftp-leak-t0ken-3",
    ];
    config.append(
        "gantry.yaml",
        &format!(
            "server:\n  token: leak-operator-token-0123456789\n  read_token: {READ_TOKEN}\n\
             notifications:\n  chat: {{ url: \"http://127.0.0.1:{}/hook\" }}\n",
            receiver.port
        ),
    );
    let pipeline = |name: &str, repo: &str| {
        config.write(
            &format!("pipelines/{name}.yaml"),
            &format!(
                "source:\n  repo: \"{repo}\"\n  branch: main\n  poll: 1s\n  webhook: {{ secret: {SECRET} }}\n\
                 image:\n  repository: {}/gantry-it/{name}\n",
                registry()
            ),
        );
    };
    let https = format!("leak-https-{}", std::process::id());
    let file = format!("leak-file-{}", std::process::id());
    pipeline(
        &https,
        &format!(
            "https://deploy:{}@127.0.0.1:{closed}/team/app.git",
            secrets[0]
        ),
    );
    pipeline(
        &file,
        &format!("file://deploy:{}@/nonexistent/leak.git", secrets[1]),
    );

    let mut daemon = Daemon::start_with(config, &[("GANTRY_LOG", "debug")]);
    let auth = format!("Authorization: Bearer {READ_TOKEN}");
    let api = |path: &str| curl(&["-H", &auth, &daemon.url(path)]).1;

    // A push to each: both fail to fetch.
    let commit = deployment.repo.commit("pushed");
    for name in [&https, &file] {
        let (headers, body) = forge_push("generic", &commit, &unique("d"), SECRET);
        let (status, answer) = daemon.post(name, &headers, &body);
        assert_eq!(status, 202, "{name}: {answer}");
    }
    let runs = eventually("both runs fail", Duration::from_secs(60), || {
        let runs = api("/api/v1/runs");
        let page: serde_json::Value = serde_json::from_str(&runs).unwrap_or_default();
        let failed = page["runs"].as_array().map_or(0, |runs| {
            runs.iter().filter(|run| run["state"] == "failed").count()
        });
        if failed == 2 { Ok(page) } else { Err(runs) }
    });
    for run in runs["runs"].as_array().unwrap() {
        let message = run["message"].as_str().unwrap_or_default();
        assert!(message.contains("cannot fetch"), "{run}");
    }
    // The poller has warned about each, naming its repository without the credentials.
    let repositories = [
        format!("127.0.0.1:{closed}/team/app.git"),
        "/nonexistent/leak.git".to_string(),
    ];
    eventually(
        "the poller warns about each",
        Duration::from_secs(30),
        || {
            let log = daemon.log();
            let warned = |repository: &String| {
                log.lines().any(|line| {
                    line.contains("polling failed") && line.contains(repository.as_str())
                })
            };
            if repositories.iter().all(warned) {
                Ok(())
            } else {
                Err(log)
            }
        },
    );
    // The notifications of both failures went out.
    eventually("notifications", Duration::from_secs(30), || {
        let bodies = receiver.bodies();
        if bodies.len() >= 2 {
            Ok(())
        } else {
            Err(format!("{bodies:?}"))
        }
    });

    // A config edit with an unsupported scheme: `/healthz` answers anyone.
    pipeline(
        "leak-scheme",
        &format!("ftp://deploy:{}@127.0.0.1/x.git", secrets[2]),
    );
    let health = eventually("the config error shows", Duration::from_secs(20), || {
        let (_, health) = daemon.get("/healthz");
        if health.contains("ftp://127.0.0.1/x.git") {
            Ok(health)
        } else {
            Err(health)
        }
    });

    let mut gathered = Gathered { seen: Vec::new() };
    gathered.add("healthz", health);
    gathered.add("runs", api("/api/v1/runs"));
    gathered.add("pipelines", api("/api/v1/pipelines"));
    for body in receiver.bodies() {
        gathered.add("notification", body);
    }
    // The dashboard, logged in with the read token.
    let reader = Visitor::new(&daemon);
    let (status, answer) = reader.log_in(READ_TOKEN, "/");
    assert_eq!(status, 303, "{answer}");
    let mut pages = vec![
        "/".to_string(),
        format!("/pipelines/{https}"),
        format!("/pipelines/{file}"),
    ];
    for run in runs["runs"].as_array().unwrap() {
        let id = run["id"].as_i64().unwrap();
        gathered.add("run log", api(&format!("/api/v1/runs/{id}/log")));
        pages.push(format!("/runs/{id}"));
        pages.push(format!("/runs/{id}/log.txt"));
    }
    for page in pages {
        let (status, text) = reader.get(&page);
        assert_eq!(status, 200, "{page}: {text}");
        gathered.add(&page, text);
    }
    daemon.terminate();
    gathered.add("daemon log", daemon.log());
    let mut forbidden: Vec<&str> = secrets.to_vec();
    forbidden.push("deploy:");
    gathered.assert_clean(&forbidden);
}
