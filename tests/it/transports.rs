//! Authenticated git transports: https with a token (git http-backend behind a TLS
//! server that wants HTTP Basic auth) and ssh with a key (a private sshd), each against
//! a server the test starts on a free port of 127.0.0.1 and stops when it ends.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::*;

/// A server the test started; killed when the test ends, however it ends.
struct Server {
    child: Child,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn support(file: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/support")
        .join(file)
}

/// Appends `text` under `source:` of `pipelines/hello.yaml`.
fn add_to_source(config: &ConfigDir, text: &str) {
    let path = config.path().join("pipelines/hello.yaml");
    let yaml = std::fs::read_to_string(&path).unwrap();
    let (source, rest) = yaml.split_once("build:\n").unwrap();
    config.write(
        "pipelines/hello.yaml",
        &format!("{source}{text}build:\n{rest}"),
    );
}

/// Runs `gantry --json build hello` with extra environment, and how long it took.
fn build(
    config: &ConfigDir,
    environment: &[(&str, &str)],
) -> (std::process::Output, serde_json::Value, Duration) {
    let started = Instant::now();
    let output = config.gantry_with(&["--json", "build", "hello"], environment);
    let elapsed = started.elapsed();
    let report = serde_json::from_slice(&output.stdout).unwrap_or_else(|error| {
        panic!(
            "stdout is not JSON ({error}): {}\nstderr: {}",
            stdout(&output),
            stderr(&output)
        )
    });
    (output, report, elapsed)
}

fn assert_authentication_failure(
    output: &std::process::Output,
    report: &serde_json::Value,
    elapsed: Duration,
) {
    assert_eq!(
        output.status.code(),
        Some(1),
        "{report}\n{}",
        stderr(output)
    );
    assert_eq!(report["failure"]["stage"], "checkout", "{report}");
    let message = report["failure"]["message"]
        .as_str()
        .unwrap()
        .to_lowercase();
    // Gantry's own message once its 3 tries are used up: no prompt, no endless retry.
    assert!(message.contains("authentication failed"), "{message}");
    assert!(
        elapsed < Duration::from_secs(60),
        "the refused build took {elapsed:?}"
    );
}

/// `git http-backend` over TLS with the test environment's certificate for 127.0.0.1,
/// serving `repo` to `user` with `token` only.
fn https_server(repo: &Repo, user: &str, token: &str) -> (Server, String) {
    let port = free_port();
    let certs = certs();
    let child = Command::new("python3")
        .arg(support("git_https_server.py"))
        .arg("--port")
        .arg(port.to_string())
        .arg("--root")
        .arg(repo.path().parent().unwrap())
        .arg("--cert")
        .arg(certs.join("server-cert.pem"))
        .arg("--key")
        .arg(certs.join("server-key.pem"))
        .args(["--user", user, "--token", token])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("python3 starts");
    let mut server = Server { child };
    wait_for_port(port, &mut server.child);
    let name = repo
        .path()
        .file_name()
        .unwrap()
        .to_string_lossy()
        .into_owned();
    (server, format!("https://127.0.0.1:{port}/{name}"))
}

#[test]
fn transports_https_with_a_token_fetches_the_head_commit() {
    require_docker();
    let repo = Repo::from_fixture();
    let (_server, url) = https_server(&repo, "deployer", "s3cret-token");
    let mut config = ConfigDir::new();
    let repository = format!("{}/gantry-it/{}", registry(), unique("https"));
    config.pipeline("hello", &url, &repository, &["latest"]);
    add_to_source(&config, "  username: deployer\n  token: s3cret-token\n");
    // The server's CA is the test environment's own: without it, TLS verification fails.
    let (output, report, _) = build(&config, &[]);
    assert_eq!(output.status.code(), Some(1), "{report}");
    assert_eq!(report["failure"]["stage"], "checkout", "{report}");
    assert!(
        report["failure"]["message"]
            .as_str()
            .unwrap()
            .contains("certificate"),
        "{report}"
    );
    // libgit2 loads OpenSSL's default verify paths, which honour SSL_CERT_FILE.
    let ca = certs().join("ca.pem");
    let (output, report, _) = build(&config, &[("SSL_CERT_FILE", ca.to_str().unwrap())]);
    assert_built_head(&output, &report, &repo);
}

#[test]
fn transports_https_with_a_wrong_token_fails_the_checkout() {
    require_docker();
    let repo = Repo::from_fixture();
    let (_server, url) = https_server(&repo, "deployer", "s3cret-token");
    let mut config = ConfigDir::new();
    let repository = format!("{}/gantry-it/{}", registry(), unique("https-refused"));
    config.pipeline("hello", &url, &repository, &["latest"]);
    add_to_source(&config, "  username: deployer\n  token: wrong-token\n");
    let ca = certs().join("ca.pem");
    let (output, report, elapsed) = build(&config, &[("SSL_CERT_FILE", ca.to_str().unwrap())]);
    assert_authentication_failure(&output, &report, elapsed);
}

/// A private sshd on a free port that lets `root` in with `client_key` only, and a HOME
/// whose `.ssh/known_hosts` trusts its host key (libgit2 refuses an unknown host key when
/// no certificate check callback is set, and gantry sets none).
pub struct Ssh {
    _server: Server,
    dir: tempfile::TempDir,
    pub port: u16,
}

impl Ssh {
    pub fn start() -> Ssh {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path();
        for key in ["host_key", "client_key", "wrong_key"] {
            run(Command::new("ssh-keygen")
                .args(["-q", "-t", "ed25519", "-N", "", "-C", key, "-f"])
                .arg(path.join(key)));
        }
        std::fs::copy(path.join("client_key.pub"), path.join("authorized_keys")).unwrap();
        let port = free_port();
        // MaxAuthTries is high so that gantry's own limit of tries is what ends a refusal.
        let sshd_config = format!(
            "Port {port}\nListenAddress 127.0.0.1\nHostKey {dir}/host_key\nAuthorizedKeysFile {dir}/authorized_keys\n\
             PasswordAuthentication no\nKbdInteractiveAuthentication no\nUsePAM no\nStrictModes no\n\
             PidFile {dir}/sshd.pid\nPermitRootLogin prohibit-password\nMaxAuthTries 50\n",
            dir = path.display()
        );
        std::fs::write(path.join("sshd_config"), sshd_config).unwrap();
        let host_key = std::fs::read_to_string(path.join("host_key.pub")).unwrap();
        let host_key: Vec<&str> = host_key.split_whitespace().take(2).collect();
        std::fs::create_dir_all(path.join("home/.ssh")).unwrap();
        std::fs::write(
            path.join("home/.ssh/known_hosts"),
            format!("[127.0.0.1]:{port} {}\n", host_key.join(" ")),
        )
        .unwrap();
        // sshd's privilege separation directory.
        std::fs::create_dir_all("/run/sshd").unwrap();
        let child = Command::new("/usr/sbin/sshd")
            .args(["-D", "-e", "-f"])
            .arg(path.join("sshd_config"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("/usr/sbin/sshd starts (scripts/test-env.sh installs openssh-server)");
        let mut server = Server { child };
        wait_for_port(port, &mut server.child);
        Ssh {
            _server: server,
            dir,
            port,
        }
    }

    fn url(&self, repo: &Repo) -> String {
        format!(
            "ssh://root@127.0.0.1:{}{}",
            self.port,
            repo.path().display()
        )
    }

    pub fn key(&self, name: &str) -> String {
        self.dir.path().join(name).display().to_string()
    }

    pub fn home(&self) -> String {
        self.dir.path().join("home").display().to_string()
    }
}

#[test]
fn transports_ssh_with_a_key_fetches_the_head_commit() {
    require_docker();
    let repo = Repo::from_fixture();
    let ssh = Ssh::start();
    let mut config = ConfigDir::new();
    let repository = format!("{}/gantry-it/{}", registry(), unique("ssh"));
    config.pipeline("hello", &ssh.url(&repo), &repository, &["latest"]);
    add_to_source(&config, &format!("  ssh_key: {}\n", ssh.key("client_key")));
    let (output, report, _) = build(&config, &[("HOME", &ssh.home())]);
    assert_built_head(&output, &report, &repo);
}

#[test]
fn transports_ssh_with_a_wrong_key_fails_the_checkout() {
    require_docker();
    let repo = Repo::from_fixture();
    let ssh = Ssh::start();
    let mut config = ConfigDir::new();
    let repository = format!("{}/gantry-it/{}", registry(), unique("ssh-refused"));
    config.pipeline("hello", &ssh.url(&repo), &repository, &["latest"]);
    add_to_source(&config, &format!("  ssh_key: {}\n", ssh.key("wrong_key")));
    let (output, report, elapsed) = build(&config, &[("HOME", &ssh.home())]);
    assert_authentication_failure(&output, &report, elapsed);
}

#[test]
fn transports_ssh_refuses_an_unknown_host_key() {
    require_docker();
    let repo = Repo::from_fixture();
    let ssh = Ssh::start();
    let empty_home = tempfile::tempdir().unwrap();
    let mut config = ConfigDir::new();
    let repository = format!("{}/gantry-it/{}", registry(), unique("ssh-unknown"));
    config.pipeline("hello", &ssh.url(&repo), &repository, &["latest"]);
    add_to_source(&config, &format!("  ssh_key: {}\n", ssh.key("client_key")));
    let (output, report, _) = build(&config, &[("HOME", empty_home.path().to_str().unwrap())]);
    assert_eq!(output.status.code(), Some(1), "{report}");
    assert_eq!(report["failure"]["stage"], "checkout", "{report}");
    let message = report["failure"]["message"].as_str().unwrap();
    assert!(
        message.ends_with("invalid or unknown remote ssh hostkey"),
        "{message}"
    );
}
