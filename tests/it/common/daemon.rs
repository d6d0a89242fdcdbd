//! The daemon: a running `gantry serve` on a loopback port, the pipelines it takes
//! signed webhooks for, pushes shaped like each forge's own examples, a receiver
//! for the notifications it sends, and a visitor of its dashboard.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use gantry::source::webhook::sign;

use super::*;

pub const SECRET: &str = "webhook-s3cret-long-enough";

/// How long a dropped daemon may take to stop on SIGTERM before it gets SIGKILL.
const DROP_GRACE: Duration = Duration::from_secs(10);

/// A running `gantry serve`; stopped with SIGTERM (then SIGKILL) when dropped.
pub struct Daemon {
    child: Option<Child>,
    pub port: u16,
    log: std::path::PathBuf,
}

impl Daemon {
    pub fn start(config: &ConfigDir) -> Daemon {
        Daemon::start_with(config, &[])
    }

    /// Starts the daemon with extra environment variables; `GANTRY_LOG` is `info`
    /// unless they set it.
    pub fn start_with(config: &ConfigDir, environment: &[(&str, &str)]) -> Daemon {
        let port = free_port();
        let log = config.path().join(format!("serve-{port}.log"));
        let child = config
            .command(&["serve", "--listen", &format!("127.0.0.1:{port}")])
            .env("GANTRY_LOG", "info")
            .envs(environment.iter().copied())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let daemon = Daemon {
            child: Some(child),
            port,
            log,
        };
        eventually(
            "the daemon answers",
            Duration::from_secs(20),
            || match daemon.get("/healthz") {
                (200, _) => Ok(()),
                (status, body) => Err(format!("HTTP {status} {body}\n{}", daemon.log())),
            },
        );
        daemon
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The daemon's address for `path`.
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    pub fn get(&self, path: &str) -> (u16, String) {
        curl(&[&self.url(path)])
    }

    /// POSTs `body` to /hooks/PIPELINE with the headers; returns status and body.
    pub fn post(&self, pipeline: &str, headers: &[(String, String)], body: &[u8]) -> (u16, String) {
        post(&self.url(&format!("/hooks/{pipeline}")), headers, body)
    }

    /// Sends SIGKILL: the daemon gets no chance to clean up.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().unwrap();
            child.wait().unwrap();
        }
    }

    /// Sends SIGTERM and returns the exit status.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let mut child = self.child.take().unwrap();
        run(Command::new("kill").args(["-TERM", &child.id().to_string()]));
        eventually(
            "the daemon stops on SIGTERM",
            Duration::from_secs(60),
            || {
                child
                    .try_wait()
                    .unwrap()
                    .ok_or_else(|| format!("still running; its log:\n{}", self.log()))
            },
        )
    }
}

/// How much of a daemon's log a failed test prints.
const FAILED_LOG_LINES: usize = 200;

impl Drop for Daemon {
    /// Stops a daemon the test left running, without panicking: a panic here, while a
    /// failed test unwinds, would abort the whole test binary.
    fn drop(&mut self) {
        if std::thread::panicking() {
            // The log goes with the test's directory: a failed test shows its end.
            let log = self.log();
            let lines: Vec<&str> = log.lines().collect();
            let tail = lines[lines.len().saturating_sub(FAILED_LOG_LINES)..].join("\n");
            eprintln!("the daemon's log (its last {FAILED_LOG_LINES} lines):\n{tail}");
        }
        let Some(mut child) = self.child.take() else {
            return;
        };
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        let deadline = Instant::now() + DROP_GRACE;
        while Instant::now() < deadline {
            match child.try_wait() {
                Ok(None) => std::thread::sleep(Duration::from_millis(50)),
                Ok(Some(_)) => return,
                Err(_) => break,
            }
        }
        let _ = child.kill();
        let _ = child.wait();
    }
}

/// `curl -s ARGS`: the status and the body.
pub fn curl(arguments: &[&str]) -> (u16, String) {
    let output = Command::new("curl")
        .args(["-s", "-m", "30", "-w", "\n%{http_code}"])
        .args(arguments)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    let (body, status) = text.rsplit_once('\n').unwrap_or(("", "0"));
    (status.trim().parse().unwrap_or(0), body.to_string())
}

/// A deployment whose pipeline takes signed webhooks (and `extra` source keys).
pub fn webhook_deployment(prefix: &str, extra_source: &str) -> Deployment {
    let deployment = Deployment::new(prefix, &[]);
    write_pipeline(&deployment, extra_source, "");
    deployment
}

/// Writes the deployment's pipeline: signed webhooks (and `extra_source` keys), the
/// commit tag (and `extra_image` ones, as `, "x"`), and the instance `web-1`.
pub fn write_pipeline(deployment: &Deployment, extra_source: &str, extra_image: &str) {
    deployment.pipeline_with(
        &format!("  webhook: {{ secret: {SECRET} }}\n{extra_source}"),
        extra_image,
        &one_instance(&deployment.instance("web-1")),
    );
}

pub fn runs(deployment: &Deployment) -> Vec<serde_json::Value> {
    let (output, runs) = deployment.gantry_json(&["runs", &deployment.name, "--limit", "1000"]);
    assert!(output.status.success(), "{}", stderr(&output));
    runs.as_array().unwrap().clone()
}

/// Waits until no run of the pipeline is queued or running; returns the runs.
pub fn wait_idle(
    deployment: &Deployment,
    daemon: &Daemon,
    at_least: usize,
) -> Vec<serde_json::Value> {
    eventually("runs finish", Duration::from_secs(120), || {
        let runs = runs(deployment);
        let busy = runs
            .iter()
            .any(|run| run["state"] == "queued" || run["state"] == "running");
        if !busy && runs.len() >= at_least {
            Ok(runs)
        } else {
            Err(format!("{runs:?}\n{}", daemon.log()))
        }
    })
}

/// The commit the instance's running container was deployed from.
pub fn deployed_commit(deployment: &Deployment) -> String {
    inspect(LOCAL_DOCKER, &deployment.instance("web-1"))["Config"]["Labels"]["gantry.commit"]
        .as_str()
        .unwrap_or("")
        .to_string()
}

fn sample(name: &str) -> serde_json::Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/webhooks")
        .join(name);
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// A push of `commit` to main as FORGE sends it, signed with `secret`: headers and body.
pub fn forge_push(
    forge: &str,
    commit: &str,
    delivery: &str,
    secret: &str,
) -> (Vec<(String, String)>, Vec<u8>) {
    let (body, signature_headers): (serde_json::Value, Vec<(&str, String)>) = match forge {
        "github" => {
            let mut body = sample("github-push-new-branch.json");
            body["ref"] = "refs/heads/main".into();
            body["after"] = commit.into();
            (
                body,
                vec![
                    ("X-GitHub-Event", "push".into()),
                    ("X-GitHub-Delivery", delivery.into()),
                ],
            )
        }
        "gitlab" => {
            let mut body = sample("gitlab-push.json");
            body["ref"] = "refs/heads/main".into();
            body["after"] = commit.into();
            body["checkout_sha"] = commit.into();
            (
                body,
                vec![
                    ("X-Gitlab-Event", "Push Hook".into()),
                    ("X-Gitlab-Token", secret.into()),
                    ("Idempotency-Key", delivery.into()),
                ],
            )
        }
        "gitea" | "forgejo" => {
            let mut body = sample("gitea-push.json");
            body["ref"] = "refs/heads/main".into();
            body["after"] = commit.into();
            // Both send GitHub's and Gitea's headers too; Forgejo adds its own.
            let mut sent = vec![
                ("X-GitHub-Event", "push".to_string()),
                ("X-Gitea-Event", "push".to_string()),
            ];
            if forge == "gitea" {
                sent.push(("X-Gitea-Delivery", delivery.into()));
            } else {
                sent.push(("X-Forgejo-Event", "push".into()));
                sent.push(("X-Forgejo-Delivery", delivery.into()));
            }
            (body, sent)
        }
        "bitbucket" => {
            let mut body = sample("bitbucket-cloud-push.json");
            body["push"]["changes"][0]["new"]["name"] = "main".into();
            body["push"]["changes"][0]["new"]["target"]["hash"] = commit.into();
            (
                body,
                vec![
                    ("X-Event-Key", "repo:push".into()),
                    ("X-Request-UUID", delivery.into()),
                ],
            )
        }
        _ => (
            serde_json::json!({ "ref": "refs/heads/main", "after": commit }),
            vec![("X-Gantry-Delivery", delivery.into())],
        ),
    };
    let body = serde_json::to_vec(&body).unwrap();
    let signature = sign(secret.as_bytes(), &body);
    let mut all: Vec<(String, String)> = signature_headers
        .into_iter()
        .map(|(name, value)| (name.to_string(), value))
        .collect();
    match forge {
        "github" => all.push(("X-Hub-Signature-256".into(), signature)),
        "gitea" => all.push((
            "X-Gitea-Signature".into(),
            signature.trim_start_matches("sha256=").into(),
        )),
        "forgejo" => all.push((
            "X-Forgejo-Signature".into(),
            signature.trim_start_matches("sha256=").into(),
        )),
        "bitbucket" => all.push(("X-Hub-Signature".into(), signature)),
        "gitlab" => {}
        _ => all.push(("X-Gantry-Signature-256".into(), signature)),
    }
    (all, body)
}

/// The headers GitHub sends with `body` for `event`: its name, the delivery id, and
/// the body's signature with `SECRET`.
pub fn github_headers(event: &str, delivery: &str, body: &[u8]) -> Vec<(String, String)> {
    vec![
        ("X-GitHub-Event".into(), event.into()),
        ("X-GitHub-Delivery".into(), delivery.into()),
        ("X-Hub-Signature-256".into(), sign(SECRET.as_bytes(), body)),
    ]
}

/// A tiny HTTP receiver on loopback: records each POST's path and body, answers 200.
pub struct Receiver {
    pub port: u16,
    received: std::sync::Arc<std::sync::Mutex<Vec<(String, String)>>>,
}

impl Receiver {
    pub fn start() -> Receiver {
        use std::io::{BufRead, BufReader, Read, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let received = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let sink = received.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let mut reader = BufReader::new(stream);
                let mut request_line = String::new();
                if reader.read_line(&mut request_line).is_err() {
                    continue;
                }
                let path = request_line
                    .split_whitespace()
                    .nth(1)
                    .unwrap_or("")
                    .to_string();
                let mut length = 0;
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                        break;
                    }
                    if let Some((name, value)) = line.split_once(':')
                        && name.eq_ignore_ascii_case("content-length")
                    {
                        length = value.trim().parse().unwrap_or(0);
                    }
                }
                let mut body = vec![0; length];
                let _ = reader.read_exact(&mut body);
                sink.lock()
                    .unwrap()
                    .push((path, String::from_utf8_lossy(&body).into_owned()));
                let _ = reader.into_inner().write_all(
                    b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                );
            }
        });
        Receiver { port, received }
    }

    /// Every body received, whatever its path.
    pub fn bodies(&self) -> Vec<String> {
        self.received
            .lock()
            .unwrap()
            .iter()
            .map(|(_, body)| body.clone())
            .collect()
    }

    pub fn messages(&self, path: &str) -> Vec<serde_json::Value> {
        self.received
            .lock()
            .unwrap()
            .iter()
            .filter(|(received, _)| received == path)
            .map(|(_, body)| serde_json::from_str(body).unwrap())
            .collect()
    }
}

/// POSTs `body` as JSON to `url` with the headers; returns status and body.
pub fn post(url: &str, headers: &[(String, String)], body: &[u8]) -> (u16, String) {
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), body).unwrap();
    let mut arguments = vec![
        "-X".to_string(),
        "POST".to_string(),
        "--data-binary".to_string(),
        format!("@{}", file.path().display()),
        "-H".to_string(),
        "Content-Type: application/json".to_string(),
    ];
    for (name, value) in headers {
        arguments.push("-H".to_string());
        arguments.push(format!("{name}: {value}"));
    }
    arguments.push(url.to_string());
    let arguments: Vec<&str> = arguments.iter().map(String::as_str).collect();
    curl(&arguments)
}

/// A browser without JavaScript on the daemon's dashboard: a cookie jar and curl.
/// Each answer is the status, and the headers followed by the body.
pub struct Visitor {
    base: String,
    jar: tempfile::NamedTempFile,
}

impl Visitor {
    pub fn new(daemon: &Daemon) -> Visitor {
        Visitor {
            base: daemon.url(""),
            jar: tempfile::NamedTempFile::new().unwrap(),
        }
    }

    pub fn get(&self, path: &str) -> (u16, String) {
        self.curl(&[], path)
    }

    /// POSTs `fields` as a form, as the page's own form would.
    pub fn post(&self, path: &str, fields: &[(&str, &str)]) -> (u16, String) {
        let body = form_urlencoded::Serializer::new(String::new())
            .extend_pairs(fields)
            .finish();
        self.curl(&["-X", "POST", "--data", &body], path)
    }

    pub fn log_in(&self, token: &str, next: &str) -> (u16, String) {
        self.post("/login", &[("token", token), ("next", next)])
    }

    /// Confirms an action the way the confirmation page's form does.
    pub fn act(&self, pipeline: &str, action: &str, fields: &[(&str, &str)]) -> (u16, String) {
        let path = format!("/pipelines/{pipeline}/{action}");
        let (status, page) = self.get(&path);
        assert_eq!(status, 200, "{page}");
        let key = form_key(&page);
        let mut fields = fields.to_vec();
        fields.push(("form_key", &key));
        self.post(&path, &fields)
    }

    /// `curl -i ARGS URL` with the cookie jar, for `path` on the daemon.
    fn curl(&self, arguments: &[&str], path: &str) -> (u16, String) {
        let jar = self.jar.path().to_str().unwrap();
        let url = format!("{}{path}", self.base);
        let mut all = vec!["-i", "-b", jar, "-c", jar];
        all.extend_from_slice(arguments);
        all.push(&url);
        curl(&all)
    }
}

/// The value of the form key a confirmation page carries.
fn form_key(page: &str) -> String {
    let start = page.find("name=\"form_key\" value=\"").expect("a form key") + 23;
    page[start..].split('"').next().unwrap().to_string()
}

/// Waits until run #1 of the deployment's pipeline is inside its Dockerfile's `RUN` step.
pub fn wait_building(deployment: &Deployment, daemon: &Daemon) {
    eventually("the build starts", Duration::from_secs(30), || {
        let log = stdout(&deployment.gantry(&["logs", &format!("{}#1", deployment.name)]));
        // The step's instruction, as either builder names it.
        if log.contains("[build] ") && log.contains("RUN sleep") {
            Ok(())
        } else {
            Err(format!("{log}\n{}", daemon.log()))
        }
    });
}

/// A Dockerfile for the test site whose build takes `seconds` in a `RUN` step.
pub fn slow_dockerfile(seconds: u32) -> String {
    format!(
        "FROM gantry-test/busybox:latest\nRUN sleep {seconds}\nCOPY www /www\nEXPOSE 8080\nCMD [\"httpd\", \"-f\", \"-p\", \"8080\", \"-h\", \"/www\"]\n"
    )
}

/// `count` build-only pipelines beside the deployment's own, each building its
/// repository with a step of `seconds`, at most `max_builds` at once, each with one run
/// triggered (queued before any daemon starts); their names.
pub fn slow_pipelines(
    deployment: &mut Deployment,
    count: usize,
    seconds: u32,
    max_builds: u32,
) -> Vec<String> {
    deployment.repo.write(
        "Dockerfile",
        &format!(
            "FROM gantry-test/busybox:latest\nARG PIPELINE\nRUN echo $PIPELINE && sleep {seconds}\nCOPY www /www\n"
        ),
    );
    deployment.repo.commit("slow builds");
    deployment.config.append(
        "gantry.yaml",
        &format!("server:\n  max_builds: {max_builds}\n"),
    );
    let names: Vec<String> = (1..=count)
        .map(|index| deployment.instance(&format!("p{index}")))
        .collect();
    for name in &names {
        let repository = format!("{}-{name}", deployment.repository);
        deployment.config.write(
            &format!("pipelines/{name}.yaml"),
            &format!(
                "source: {{ repo: {}, branch: main }}\nbuild: {{ args: {{ PIPELINE: {name} }} }}\n\
                 image: {{ repository: {repository} }}\n",
                deployment.repo.url()
            ),
        );
        deployment.config.repositories.push(repository);
        deployment.succeed(&["trigger", name]);
    }
    names
}
