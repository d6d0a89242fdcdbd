//! What the integration tests share: the test environment, fixture repositories,
//! config directories, running the binary and reading its state database. Every name
//! a test creates carries a unique suffix, and images are removed by label when the
//! test ends.
//!
//! `daemon` holds the running `gantry serve`, what feeds it webhooks and what visits
//! its dashboard;
//! `deployment` holds a pipeline with a deploy section and the engines it touches.
//! `use crate::common::*;` brings all of it.

mod daemon;
mod deployment;
mod postgres;

pub use daemon::*;
pub use deployment::*;
pub use postgres::Schema;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// A name no other test (or test run) uses.
pub fn unique(prefix: &str) -> String {
    format!(
        "{prefix}-{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

fn variable(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_string())
}

pub fn registry() -> String {
    variable("GANTRY_TEST_REGISTRY", "127.0.0.1:5115")
}

pub fn auth_registry() -> String {
    variable("GANTRY_TEST_AUTH_REGISTRY", "127.0.0.1:5116")
}

pub fn auth_user() -> String {
    variable("GANTRY_TEST_AUTH_USER", "gantry")
}

pub fn auth_password() -> String {
    variable("GANTRY_TEST_AUTH_PASSWORD", "gantry-secret")
}

pub fn docker_tcp() -> String {
    variable("GANTRY_TEST_DOCKER_TCP", "tcp://127.0.0.1:2385")
}

pub fn docker_tls() -> String {
    variable("GANTRY_TEST_DOCKER_TLS", "tcp://127.0.0.1:2386")
}

pub fn certs() -> PathBuf {
    PathBuf::from(variable(
        "GANTRY_TEST_CERTS",
        "/var/lib/gantry-test-env/certs",
    ))
}

/// A loopback port nothing listens on right now, for a server the test starts.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Waits until something listens on loopback `port`; fails at once if `server`, which
/// is to listen there, exits first.
pub fn wait_for_port(port: u16, server: &mut Child) {
    eventually(
        &format!("something listens on port {port}"),
        Duration::from_secs(10),
        || {
            let refused = match std::net::TcpStream::connect(("127.0.0.1", port)) {
                Ok(_) => return Ok(()),
                Err(error) => error,
            };
            if let Ok(Some(status)) = server.try_wait() {
                panic!("the server exited before listening on port {port}: {status}");
            }
            Err(refused.to_string())
        },
    );
}

/// Fails the test when no Docker engine answers: these tests never skip.
pub fn require_docker() {
    let output = Command::new("docker")
        .args(["version", "--format", "{{.Server.Version}}"])
        .output()
        .expect("the docker CLI must be installed (scripts/test-env.sh installs it)");
    assert!(
        output.status.success(),
        "no Docker engine answers; run scripts/test-env.sh first: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// The fixture app's directory in this repository.
pub fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/hello")
}

/// Runs a command and returns its stdout, failing the test if it fails.
pub fn run(command: &mut Command) -> String {
    let output = command.output().expect("command starts");
    assert!(
        output.status.success(),
        "{command:?} failed: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// A git repository made from the fixture app, committed to `main`.
pub struct Repo {
    pub dir: tempfile::TempDir,
}

impl Repo {
    pub fn from_fixture() -> Repo {
        let dir = tempfile::tempdir().unwrap();
        copy_dir(&fixture(), dir.path());
        let repo = Repo { dir };
        repo.git(&["init", "-q", "-b", "main"]);
        repo.commit("first");
        repo
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn url(&self) -> String {
        format!("file://{}", self.path().display())
    }

    pub fn git(&self, arguments: &[&str]) -> String {
        run(Command::new("git")
            .arg("-C")
            .arg(self.path())
            .args(["-c", "user.name=Test", "-c", "user.email=test@example.com"])
            .args(arguments))
    }

    pub fn write(&self, path: &str, text: &str) {
        let full = self.path().join(path);
        std::fs::create_dir_all(full.parent().unwrap()).unwrap();
        std::fs::write(full, text).unwrap();
    }

    /// Commits everything and returns the new commit's id.
    pub fn commit(&self, message: &str) -> String {
        self.git(&["add", "-A"]);
        self.git(&["commit", "-q", "--allow-empty", "-m", message]);
        self.git(&["rev-parse", "HEAD"]).trim().to_string()
    }
}

pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

/// A config directory with its own state directory, and the images its pipelines make.
pub struct ConfigDir {
    pub dir: tempfile::TempDir,
    /// An empty Docker client config, so that no credentials of the machine leak into a test.
    pub docker_config: tempfile::TempDir,
    /// Repositories whose local images are removed when the test ends.
    pub repositories: Vec<String>,
}

impl ConfigDir {
    pub fn new() -> ConfigDir {
        ConfigDir {
            dir: tempfile::tempdir().unwrap(),
            docker_config: tempfile::tempdir().unwrap(),
            repositories: Vec::new(),
        }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn write(&self, path: &str, text: &str) {
        let full = self.path().join(path);
        std::fs::create_dir_all(full.parent().unwrap()).unwrap();
        std::fs::write(full, text).unwrap();
    }

    /// Adds `text` at the end of a config file.
    pub fn append(&self, path: &str, text: &str) {
        let mut content = std::fs::read_to_string(self.path().join(path)).unwrap();
        content.push_str(text);
        self.write(path, &content);
    }

    /// Writes `pipelines/NAME.yaml` building `repo` into `repository` with the given tags.
    pub fn pipeline(&mut self, name: &str, repo_url: &str, repository: &str, tags: &[&str]) {
        let tags = tags
            .iter()
            .map(|tag| format!("\"{tag}\""))
            .collect::<Vec<_>>()
            .join(", ");
        self.write(
            &format!("pipelines/{name}.yaml"),
            &format!(
                "source:\n  repo: {repo_url}\n  branch: main\nbuild:\n  args: {{ VERSION: \"{{{{ commit.short }}}}\" }}\nimage:\n  repository: {repository}\n  tags: [{tags}]\n"
            ),
        );
        self.repositories.push(repository.to_string());
    }

    pub fn gantry(&self, arguments: &[&str]) -> Output {
        self.gantry_with(arguments, &[])
    }

    pub fn gantry_with(&self, arguments: &[&str], environment: &[(&str, &str)]) -> Output {
        self.command(arguments)
            .envs(environment.iter().copied())
            .output()
            .expect("gantry starts")
    }

    /// `gantry --config DIR ARGS`, not started yet, with this directory's Docker client
    /// config and no `DOCKER_HOST` of the machine.
    pub fn command(&self, arguments: &[&str]) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_gantry"));
        command
            .arg("--config")
            .arg(self.path())
            .args(arguments)
            .env("DOCKER_CONFIG", self.docker_config.path())
            .env_remove("DOCKER_HOST");
        command
    }

    /// The state database, where gantry keeps it when the config names no `state:`.
    pub fn state_database(&self) -> PathBuf {
        self.path().join(".gantry/state.db")
    }

    /// Runs `gantry --json ARGS` and parses stdout.
    pub fn gantry_json(&self, arguments: &[&str]) -> (Output, serde_json::Value) {
        let mut with_json = vec!["--json"];
        with_json.extend_from_slice(arguments);
        let output = self.gantry(&with_json);
        let value = serde_json::from_slice(&output.stdout).unwrap_or_else(|error| {
            panic!(
                "stdout is not JSON ({error}): {}\nstderr: {}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            )
        });
        (output, value)
    }
}

impl Drop for ConfigDir {
    fn drop(&mut self) {
        for repository in &self.repositories {
            let listed = Command::new("docker")
                .args(["images", "--format", "{{.Repository}}:{{.Tag}}", repository])
                .output();
            if let Ok(listed) = listed {
                for image in String::from_utf8_lossy(&listed.stdout).lines() {
                    // Parent layers stay: tests build from the same steps in parallel, and
                    // another build may be using them as its cache this very moment.
                    let _ = Command::new("docker")
                        .args(["rmi", "-f", "--no-prune", image])
                        .output();
                }
            }
        }
    }
}

/// How long a test's query waits for a lock the daemon holds: its writes are short, so
/// a lock held longer than this is one left behind.
const DATABASE_BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Opens the state database at `path` as another process would, and runs `work` on it.
pub fn with_database<T>(path: &Path, work: impl AsyncFnOnce(&sqlx::SqlitePool) -> T) -> T {
    tokio::runtime::Runtime::new().unwrap().block_on(async {
        let options = sqlx::sqlite::SqliteConnectOptions::new()
            .filename(path)
            .busy_timeout(DATABASE_BUSY_TIMEOUT);
        let pool = sqlx::SqlitePool::connect_with(options).await.unwrap();
        let value = work(&pool).await;
        pool.close().await;
        value
    })
}

/// Asks the registry for the digest it serves for `repository:tag`, as Docker would pull it.
pub fn registry_digest(
    registry: &str,
    path: &str,
    tag: &str,
    user: Option<(&str, &str)>,
) -> String {
    let mut command = Command::new("curl");
    command.args([
        "-sS",
        "-I",
        "-H",
        "Accept: application/vnd.docker.distribution.manifest.v2+json",
        "-H",
        "Accept: application/vnd.oci.image.manifest.v1+json",
    ]);
    if let Some((name, password)) = user {
        command.args(["-u", &format!("{name}:{password}")]);
    }
    command.arg(format!("http://{registry}/v2/{path}/manifests/{tag}"));
    let headers = run(&mut command);
    headers
        .lines()
        .find_map(|line| {
            let (name, value) = line.split_once(':')?;
            name.eq_ignore_ascii_case("docker-content-digest")
                .then(|| value.trim().to_string())
        })
        .unwrap_or_else(|| panic!("no digest for {path}:{tag}: {headers}"))
}

/// Asserts that a `--json` build succeeded and built exactly the head of `repo`.
pub fn assert_built_head(output: &Output, report: &serde_json::Value, repo: &Repo) {
    assert!(output.status.success(), "{report}\n{}", stderr(output));
    assert_eq!(report["outcome"], "succeeded");
    assert_eq!(
        report["commit"]["sha"],
        repo.git(&["rev-parse", "HEAD"]).trim()
    );
}

/// How the BuildKit step whose name contains `name_part` ended in a build's output
/// (`[build] #N NAME` ... `[build] #N CACHED`): `CACHED`, `DONE` or `ERROR`.
pub fn buildkit_step(log: &str, name_part: &str) -> Option<String> {
    let number = log.lines().find_map(|line| {
        let rest = line.strip_prefix("[build] #")?;
        let (number, name) = rest.split_once(' ')?;
        name.contains(name_part).then(|| number.to_string())
    })?;
    let prefix = format!("[build] #{number} ");
    log.lines().find_map(|line| {
        let word = line.strip_prefix(&prefix)?.split([' ', ':']).next()?;
        ["CACHED", "DONE", "ERROR"]
            .contains(&word)
            .then(|| word.to_string())
    })
}

pub fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

pub fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Waits until `check` gives a value, asking again every 50 ms; fails the test after
/// `timeout` with what `check` said last.
pub fn eventually<T>(
    what: &str,
    timeout: Duration,
    mut check: impl FnMut() -> Result<T, String>,
) -> T {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        match check() {
            Ok(value) => return value,
            Err(seen) => assert!(
                std::time::Instant::now() < deadline,
                "{what}: not within {timeout:?}; last seen: {seen}"
            ),
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}
