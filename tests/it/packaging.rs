//! What ships beside the binary: the container image (`dist/Dockerfile`, built by
//! `dist/build-image.sh`) and the systemd unit (`dist/gantry.service`).

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::common::*;

const TOKEN: &str = "packaging-operator-token-0123456789";

fn dist(file: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("dist")
        .join(file)
}

/// The image and the containers a test made from it, removed when it ends.
struct Image {
    tag: String,
    containers: Vec<String>,
}

impl Image {
    /// Builds the image from the binary under test, as the README says to.
    fn build() -> Image {
        let tag = format!("gantry-test/gantry:{}", unique("image"));
        let printed = run(Command::new("bash")
            .arg(dist("build-image.sh"))
            .arg(env!("CARGO_BIN_EXE_gantry"))
            .arg(&tag)
            .args(["--label", "gantry-test=packaging"]));
        assert_eq!(printed.trim(), tag);
        Image {
            tag,
            containers: Vec::new(),
        }
    }

    /// `docker run -d` of the image with `options` and, after the image, `arguments`.
    fn start(&mut self, options: &[&str], arguments: &[&str]) -> String {
        let name = unique("gantry-image");
        run(Command::new("docker")
            .args([
                "run",
                "-d",
                "--name",
                &name,
                "--label",
                "gantry-test=packaging",
            ])
            .args(options)
            .arg(&self.tag)
            .args(arguments));
        self.containers.push(name.clone());
        name
    }
}

impl Drop for Image {
    fn drop(&mut self) {
        for container in &self.containers {
            let _ = Command::new("docker")
                .args(["rm", "-f", "-v", container])
                .output();
        }
        let _ = Command::new("docker")
            .args(["rmi", "-f", &self.tag])
            .output();
    }
}

fn container_log(name: &str) -> String {
    let output = Command::new("docker")
        .args(["logs", name])
        .output()
        .unwrap();
    format!("{}{}", stdout(&output), stderr(&output))
}

/// Waits until the daemon in container `name` answers `/healthz` on loopback `port`.
fn wait_healthy(name: &str, port: u16) {
    eventually(
        "the daemon in the container answers",
        Duration::from_secs(20),
        || match curl(&[&format!("http://127.0.0.1:{port}/healthz")]) {
            (200, body) => Ok(body),
            (status, body) => Err(format!("HTTP {status} {body}\n{}", container_log(name))),
        },
    );
}

/// A request to the API with the operator's token: status and JSON body.
fn api(port: u16, method: &str, path: &str) -> (u16, serde_json::Value) {
    let authorization = format!("Authorization: Bearer {TOKEN}");
    let url = format!("http://127.0.0.1:{port}{path}");
    let mut arguments = vec!["-X", method, "-H", &authorization];
    if method == "POST" {
        arguments.extend([
            "-H",
            "Content-Type: application/json",
            "--data-binary",
            "{}",
        ]);
    }
    arguments.push(&url);
    let (status, body) = curl(&arguments);
    let value = serde_json::from_str(&body)
        .unwrap_or_else(|error| panic!("{method} {path}: HTTP {status} {body}: {error}"));
    (status, value)
}

#[test]
fn the_container_image_serves_the_api_and_builds_through_the_mounted_docker_socket() {
    require_docker();
    let repo = Repo::from_fixture();
    let mut config = ConfigDir::new();
    let name = unique("image");
    let repository = format!("{}/gantry-it/{name}", registry());
    config.write(
        "gantry.yaml",
        &format!("state: /var/lib/gantry\nserver:\n  token: {TOKEN}\n"),
    );
    config.pipeline(&name, &repo.url(), &repository, &["x"]);
    let state = tempfile::tempdir().unwrap();
    let repo_path = repo.path().to_str().unwrap();
    let mounts = [
        "-v".to_string(),
        "/var/run/docker.sock:/var/run/docker.sock".to_string(),
        "-v".to_string(),
        format!("{}:/etc/gantry:ro", config.path().display()),
        "-v".to_string(),
        format!("{}:/var/lib/gantry", state.path().display()),
        // The pipeline's file:// repository, at the same path inside.
        "-v".to_string(),
        format!("{repo_path}:{repo_path}:ro"),
    ];
    let mounts: Vec<&str> = mounts.iter().map(String::as_str).collect();
    let mut image = Image::build();

    // As the README runs it: the image's own command (serve on 0.0.0.0:8700, which
    // gantry allows because server.token is set), published on a loopback port.
    let port = free_port();
    let published = format!("127.0.0.1:{port}:8700");
    let mut options = mounts.clone();
    options.extend(["-p", &published]);
    let container = image.start(&options, &[]);
    wait_healthy(&container, port);
    let (status, _) = curl(&[&format!("http://127.0.0.1:{port}/api/v1/pipelines")]);
    assert_eq!(status, 401, "the API needs the token");
    let (status, pipelines) = api(port, "GET", "/api/v1/pipelines");
    assert_eq!(status, 200, "{pipelines}");
    assert!(pipelines.to_string().contains(&name), "{pipelines}");

    // `gantry hosts` inside reaches the engine this test's docker CLI talks to.
    let reports: serde_json::Value = serde_json::from_str(&run(
        Command::new("docker").args(["exec", &container, "gantry", "--json", "hosts"])
    ))
    .unwrap();
    let engine_version =
        run(Command::new("docker").args(["version", "--format", "{{.Server.Version}}"]));
    assert_eq!(reports[0]["name"], "local", "{reports}");
    assert_eq!(reports[0]["reachable"], true, "{reports}");
    assert_eq!(
        reports[0]["engine_version"],
        engine_version.trim(),
        "{reports}"
    );
    run(Command::new("docker").args(["stop", "-t", "10", &container]));

    // On the host's network, the same state and config: a run checks out with the
    // image's libgit2, builds through the socket, pushes, and confirms the digest
    // with the registry on loopback.
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let mut options = mounts.clone();
    options.extend(["--network", "host"]);
    let container = image.start(&options, &["serve", "--listen", &listen]);
    wait_healthy(&container, port);
    let (status, queued) = api(port, "POST", &format!("/api/v1/pipelines/{name}/trigger"));
    assert_eq!(status, 202, "{queued}");
    let run_path = format!("/api/v1/runs/{}", queued["run_id"]);
    let finished = eventually("the run ends", Duration::from_secs(90), || {
        let (_, run) = api(port, "GET", &run_path);
        match run["state"].as_str() {
            Some("queued" | "running") | None => {
                Err(format!("{run}\n{}", container_log(&container)))
            }
            Some(_) => Ok(run),
        }
    });
    assert_eq!(
        finished["state"],
        "succeeded",
        "{finished}\n{}",
        container_log(&container)
    );
    assert_eq!(finished["commit"], repo.git(&["rev-parse", "HEAD"]).trim());
    let path = repository.trim_start_matches(&format!("{}/", registry()));
    assert_eq!(
        finished["digest"],
        registry_digest(&registry(), path, "x", None)
    );
    // The state is the mounted directory's: the host reads the run there.
    assert!(state.path().join("state.db").is_file());
    drop(image);
    drop(config);
}

#[test]
fn the_systemd_unit_verifies_and_its_command_line_is_gantrys() {
    let unit = std::fs::read_to_string(dist("gantry.service")).unwrap();
    let exec_start = unit
        .lines()
        .find_map(|line| line.strip_prefix("ExecStart="))
        .expect("an ExecStart line");
    let mut words = exec_start.split_whitespace();
    assert_eq!(words.next(), Some("/usr/local/bin/gantry"));
    let arguments: Vec<&str> = words.collect();

    // The binary takes those arguments: `--help` after them parses them all first.
    let mut with_help = arguments.clone();
    with_help.push("--help");
    let output = Command::new(env!("CARGO_BIN_EXE_gantry"))
        .args(&with_help)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{with_help:?}: {}",
        stderr(&output)
    );
    assert!(
        stdout(&output).contains("Usage: gantry serve"),
        "{}",
        stdout(&output)
    );

    // systemd's own check, with the binary under test where the unit expects it (it
    // must exist), and no man page lookup (gantry's is not installed here). An unknown
    // or misspelt option is only a warning, so any output at all fails the test.
    let directory = tempfile::tempdir().unwrap();
    let checked = directory.path().join("gantry.service");
    std::fs::write(
        &checked,
        unit.replace("/usr/local/bin/gantry", env!("CARGO_BIN_EXE_gantry")),
    )
    .unwrap();
    let output = Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(&checked)
        .output()
        .expect("systemd-analyze is installed (the systemd package)");
    assert!(
        output.status.success() && output.stderr.is_empty() && output.stdout.is_empty(),
        "systemd-analyze verify: {}{}",
        stdout(&output),
        stderr(&output)
    );
}
