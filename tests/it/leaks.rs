//! Credentials inside a repository URL never reach a message: run messages and logs,
//! the API, the dashboard, notifications, the daemon's own log, or `/healthz`.

use std::process::{Command, Stdio};
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

    let port = free_port();
    let log_path = config.path().join("leak-serve.log");
    let mut child = Command::new(env!("CARGO_BIN_EXE_gantry"))
        .arg("--config")
        .arg(config.path())
        .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
        .env("DOCKER_CONFIG", config.docker_config.path())
        .env_remove("DOCKER_HOST")
        .env("GANTRY_LOG", "debug")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log_path).unwrap())
        .spawn()
        .unwrap();
    let url = |path: &str| format!("http://127.0.0.1:{port}{path}");
    let auth = format!("Authorization: Bearer {READ_TOKEN}");
    eventually(
        "the daemon answers",
        Duration::from_secs(20),
        || match curl(&[&url("/healthz")]) {
            (200, _) => Ok(()),
            other => Err(format!("{other:?}")),
        },
    );

    // A push to each: both fail to fetch.
    let commit = deployment.repo.commit("pushed");
    for name in [&https, &file] {
        let (headers, body) = forge_push("generic", &commit, &unique("d"), SECRET);
        let body_file = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(body_file.path(), &body).unwrap();
        let mut arguments = vec![
            "-X".to_string(),
            "POST".to_string(),
            "--data-binary".to_string(),
            format!("@{}", body_file.path().display()),
        ];
        for (name, value) in &headers {
            arguments.push("-H".to_string());
            arguments.push(format!("{name}: {value}"));
        }
        arguments.push(url(&format!("/hooks/{name}")));
        let arguments: Vec<&str> = arguments.iter().map(String::as_str).collect();
        assert_eq!(curl(&arguments).0, 202);
    }
    let runs = eventually("both runs fail", Duration::from_secs(60), || {
        let (_, runs) = curl(&["-H", &auth, &url("/api/v1/runs")]);
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
    // The poller has warned about both.
    eventually("the poller warns", Duration::from_secs(30), || {
        let log = std::fs::read_to_string(&log_path).unwrap_or_default();
        let warned = log.matches("polling failed").count();
        if warned >= 2 { Ok(()) } else { Err(log) }
    });
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
        let (_, health) = curl(&[&url("/healthz")]);
        if health.contains("ftp://127.0.0.1/x.git") {
            Ok(health)
        } else {
            Err(health)
        }
    });

    let mut gathered = Gathered { seen: Vec::new() };
    gathered.add("healthz", health);
    gathered.add("runs", curl(&["-H", &auth, &url("/api/v1/runs")]).1);
    gathered.add(
        "pipelines",
        curl(&["-H", &auth, &url("/api/v1/pipelines")]).1,
    );
    for body in receiver.bodies() {
        gathered.add("notification", body);
    }
    // The dashboard, logged in with the read token.
    let jar = tempfile::NamedTempFile::new().unwrap();
    let jar = jar.path().to_str().unwrap();
    let (status, _) = curl(&[
        "-c",
        jar,
        "--data",
        &format!("token={READ_TOKEN}&next=/"),
        &url("/login"),
    ]);
    assert_eq!(status, 303);
    let mut pages = vec![
        "/".to_string(),
        format!("/pipelines/{https}"),
        format!("/pipelines/{file}"),
    ];
    for run in runs["runs"].as_array().unwrap() {
        let id = run["id"].as_i64().unwrap();
        gathered.add(
            "run log",
            curl(&["-H", &auth, &url(&format!("/api/v1/runs/{id}/log"))]).1,
        );
        pages.push(format!("/runs/{id}"));
        pages.push(format!("/runs/{id}/log.txt"));
    }
    for page in pages {
        let (status, text) = curl(&["-b", jar, &url(&page)]);
        assert_eq!(status, 200, "{page}: {text}");
        gathered.add(&page, text);
    }
    run(Command::new("kill").args(["-TERM", &child.id().to_string()]));
    child.wait().unwrap();
    gathered.add("daemon log", std::fs::read_to_string(&log_path).unwrap());
    let mut forbidden: Vec<&str> = secrets.to_vec();
    forbidden.push("deploy:");
    gathered.assert_clean(&forbidden);
}
