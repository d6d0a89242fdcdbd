//! Registries as teams reach them: credentials from a Docker credential helper
//! (`credHelpers`, `credsStore`) that the test writes and puts on `PATH`, for the
//! htpasswd registry; and the `local` engine found through `DOCKER_HOST`,
//! `DOCKER_TLS_VERIFY` and `DOCKER_CERT_PATH`.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::common::*;

/// A directory of `docker-credential-*` programs, put first on gantry's `PATH`; each
/// program appends the server it was asked for to `asked`.
struct Helpers {
    bin: tempfile::TempDir,
    asked: PathBuf,
}

impl Helpers {
    fn new() -> Helpers {
        let bin = tempfile::tempdir().unwrap();
        let asked = bin.path().join("asked.log");
        Helpers { bin, asked }
    }

    /// `docker-credential-NAME`, speaking the helper protocol for `get`: the server on
    /// stdin; for the htpasswd registry, `{"ServerURL","Username","Secret"}` on stdout;
    /// for any other, Docker's own "not found" answer.
    fn answering(&self, name: &str) {
        self.write(
            name,
            &format!(
                "server=$(cat)\n\
                 echo \"$server\" >>'{asked}'\n\
                 if [ \"$server\" = '{registry}' ]; then\n\
                 \x20 printf '{{\"ServerURL\":\"%s\",\"Username\":\"%s\",\"Secret\":\"%s\"}}\\n' \"$server\" '{user}' '{password}'\n\
                 else\n\
                 \x20 echo 'credentials not found in native keychain'\n\
                 \x20 exit 1\n\
                 fi\n",
                registry = auth_registry(),
                user = auth_user(),
                password = auth_password(),
                asked = self.asked.display(),
            ),
        );
    }

    /// `docker-credential-NAME` that fails as a locked store does: a message, exit 1.
    fn failing(&self, name: &str, message: &str) {
        self.write(name, &format!("cat >/dev/null\necho '{message}'\nexit 1\n"));
    }

    fn write(&self, name: &str, body: &str) {
        let path = self.bin.path().join(format!("docker-credential-{name}"));
        let script = format!(
            "#!/bin/sh\n[ \"$1\" = get ] || {{ echo \"unsupported: $1\"; exit 1; }}\n{body}"
        );
        std::fs::write(&path, script).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    }

    /// gantry's `PATH`: these helpers first, then the test's own.
    fn path(&self) -> String {
        format!(
            "{}:{}",
            self.bin.path().display(),
            std::env::var("PATH").unwrap_or_default()
        )
    }

    /// The servers the helpers were asked for, in order.
    fn asked(&self) -> Vec<String> {
        std::fs::read_to_string(&self.asked)
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    }
}

/// Writes the Docker client config gantry reads (its `DOCKER_CONFIG` directory).
fn docker_config(config: &ConfigDir, json: &str) {
    std::fs::write(config.docker_config.path().join("config.json"), json).unwrap();
}

/// A deployment whose image goes to the htpasswd registry, with one instance on extra
/// engine `host`, which must pull it from there.
fn deployment_on_auth_registry(prefix: &str, host: usize) -> (Deployment, String) {
    let mut deployment = Deployment::new(prefix, &[host]);
    deployment.repository = format!("{}/gantry-it/{}", auth_registry(), deployment.name);
    deployment
        .config
        .repositories
        .push(deployment.repository.clone());
    let instance = deployment.instance("web-1");
    deployment.pipeline(&format!(
        "  services:\n    web:\n      ports: [\"8080\"]\n      stop_timeout: 1s\n      \
         health:\n        http: {{ port: 8080, path: /healthz }}\n        interval: 100ms\n      \
         instances:\n        {instance}: {{ host: h{host} }}\n"
    ));
    (deployment, instance)
}

/// Runs gantry with the helpers on `PATH` and its own log at debug level.
fn gantry_with_helpers(deployment: &Deployment, helpers: &Helpers, arguments: &[&str]) -> Output {
    deployment.config.gantry_with(
        arguments,
        &[("PATH", &helpers.path()), ("GANTRY_LOG", "debug")],
    )
}

/// Fails the test if the registry password shows in `text`.
fn assert_no_secret(what: &str, text: &str) {
    assert!(
        !text.contains(&auth_password()),
        "the secret a helper printed appears in {what}:\n{text}"
    );
}

/// Fails the test if the registry password is in any file of the state directory (the
/// database, its write-ahead log, run logs).
fn assert_no_secret_in_state(config: &ConfigDir) {
    fn visit(directory: &Path, secret: &[u8]) {
        for entry in std::fs::read_dir(directory).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                visit(&path, secret);
            } else if let Ok(bytes) = std::fs::read(&path) {
                assert!(
                    !bytes.windows(secret.len()).any(|window| window == secret),
                    "the secret a helper printed is stored in {}",
                    path.display()
                );
            }
        }
    }
    visit(&config.path().join(".gantry"), auth_password().as_bytes());
}

/// Runs the pipeline (build, push, deploy to the extra engine) with the helpers on
/// `PATH`, and checks what a credential helper must give: the pushed digest is the one
/// the registry serves, the extra engine pulled and runs it, and the secret shows nowhere.
fn run_and_check(deployment: &Deployment, helpers: &Helpers, instance: &str, host: usize) {
    let output = gantry_with_helpers(deployment, helpers, &["--json", "run", &deployment.name]);
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap_or_else(|_| {
        panic!("not JSON: {}\n{}", stdout(&output), stderr(&output));
    });
    assert!(output.status.success(), "{report}\n{}", stderr(&output));
    let path = deployment
        .repository
        .strip_prefix(&format!("{}/", auth_registry()))
        .unwrap();
    let tag = &deployment.head()[..7];
    let served = registry_digest(
        &auth_registry(),
        path,
        tag,
        Some((&auth_user(), &auth_password())),
    );
    assert_eq!(report["build"]["digest"], served.as_str(), "{report}");
    // The extra engine had never seen this repository: it pulled it with the helper's
    // credentials, and serves the commit.
    let engine = host_docker(host);
    let image = inspect(&engine, instance)["Config"]["Image"].clone();
    assert_eq!(
        image,
        format!("{}@{served}", deployment.repository).as_str(),
        "{report}"
    );
    let port = published_port(&engine, instance);
    assert_eq!(fetch(&host_address(host), port).as_deref(), Some("v1\n"));
    assert!(
        helpers
            .asked()
            .iter()
            .all(|server| *server == auth_registry()),
        "{:?}",
        helpers.asked()
    );
    assert_no_secret("stdout", &stdout(&output));
    assert_no_secret("gantry's log (stderr, at debug)", &stderr(&output));
    let logs = deployment
        .config
        .gantry(&["logs", &format!("{}#1", deployment.name)]);
    assert!(logs.status.success(), "{}", stderr(&logs));
    assert_no_secret("the run's log", &stdout(&logs));
    assert_no_secret_in_state(&deployment.config);
}

#[test]
fn registries_a_cred_helper_pushes_and_an_extra_engine_pulls() {
    let (deployment, instance) = deployment_on_auth_registry("credhelper", 1);
    let helpers = Helpers::new();
    helpers.answering("gantry-it");
    // No `auths`, no gantry.yaml credentials: only the helper knows the password.
    docker_config(
        &deployment.config,
        &format!(
            "{{\"credHelpers\": {{\"{}\": \"gantry-it\"}}}}",
            auth_registry()
        ),
    );
    run_and_check(&deployment, &helpers, &instance, 1);
    assert!(!helpers.asked().is_empty(), "the helper was never asked");
}

#[test]
fn registries_a_creds_store_serves_every_registry_and_may_know_none() {
    let (deployment, instance) = deployment_on_auth_registry("credstore", 2);
    let helpers = Helpers::new();
    helpers.answering("gantry-store");
    docker_config(&deployment.config, "{\"credsStore\": \"gantry-store\"}");
    run_and_check(&deployment, &helpers, &instance, 2);

    // The store is asked for the plain registry too; its "not found" means no
    // credentials, and the anonymous push goes ahead.
    let mut config = ConfigDir::new();
    docker_config(&config, "{\"credsStore\": \"gantry-store\"}");
    let repository = format!("{}/gantry-it/{}", registry(), unique("credstore-plain"));
    config.pipeline("hello", &deployment.repo.url(), &repository, &["latest"]);
    let output = config.gantry_with(&["build", "hello"], &[("PATH", &helpers.path())]);
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(
        helpers.asked().contains(&registry()),
        "{:?}",
        helpers.asked()
    );
}

/// The HTTP status the htpasswd registry gives for `repository:tag` to its own user.
fn manifest_status(repository: &str, tag: &str) -> String {
    let path = repository
        .strip_prefix(&format!("{}/", auth_registry()))
        .unwrap();
    run(Command::new("curl").args([
        "-s",
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        "-u",
        &format!("{}:{}", auth_user(), auth_password()),
        &format!("http://{}/v2/{path}/manifests/{tag}", auth_registry()),
    ]))
}

#[test]
fn registries_a_failing_or_missing_helper_is_named_and_nothing_is_pushed() {
    require_docker();
    let repo = Repo::from_fixture();
    let mut config = ConfigDir::new();
    let repository = format!("{}/gantry-it/{}", auth_registry(), unique("helper-fails"));
    config.pipeline("hello", &repo.url(), &repository, &["latest"]);
    let helpers = Helpers::new();
    helpers.failing("locked", "error getting credentials: the vault is sealed");
    let gantry = |arguments: &[&str]| config.gantry_with(arguments, &[("PATH", &helpers.path())]);

    for (helper, said) in [
        (
            "locked",
            "failed: error getting credentials: the vault is sealed",
        ),
        (
            "absent",
            "could not be run: is `docker-credential-absent` on PATH and executable?",
        ),
    ] {
        docker_config(
            &config,
            &format!(
                "{{\"credHelpers\": {{\"{}\": \"{helper}\"}}}}",
                auth_registry()
            ),
        );
        let output = gantry(&["--json", "build", "hello"]);
        assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
        let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
        assert_eq!(report["failure"]["stage"], "push", "{report}");
        let message = report["failure"]["message"].as_str().unwrap();
        let expected = format!(
            "registry {}: credential helper `docker-credential-{helper}` (from {}) {said}",
            auth_registry(),
            config.docker_config.path().join("config.json").display()
        );
        assert_eq!(message, expected, "{report}");
        // People get the same one line.
        let output = gantry(&["build", "hello"]);
        assert_eq!(output.status.code(), Some(1));
        assert!(stderr(&output).contains(&expected), "{}", stderr(&output));
    }
    assert_eq!(
        manifest_status(&repository, "latest"),
        "404",
        "something was pushed"
    );
}

#[test]
fn registries_docker_host_with_tls_variables_is_the_local_engine() {
    let deployment = Deployment::new("tls-local", &[]);
    // No `hosts:` in gantry.yaml: `local` comes from the environment alone.
    std::fs::remove_file(deployment.config.path().join("gantry.yaml")).unwrap();
    let instance = deployment.instance("web-1");
    deployment.pipeline(&one_instance(&instance));
    let certs = certs();
    let tls = [
        ("DOCKER_HOST", docker_tls()),
        ("DOCKER_TLS_VERIFY", "1".to_string()),
        ("DOCKER_CERT_PATH", certs.display().to_string()),
    ];
    let environment: Vec<(&str, &str)> = tls.iter().map(|(k, v)| (*k, v.as_str())).collect();

    let output = deployment
        .config
        .gantry_with(&["--json", "hosts"], &environment);
    assert!(output.status.success(), "{}", stderr(&output));
    let hosts: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(hosts[0]["name"], "local", "{hosts}");
    assert_eq!(hosts[0]["endpoint"], docker_tls(), "{hosts}");
    assert_eq!(hosts[0]["reachable"], true, "{hosts}");

    // Build and deploy through it.
    let output = deployment
        .config
        .gantry_with(&["--json", "run", &deployment.name], &environment);
    assert!(output.status.success(), "{}", stderr(&output));
    let port = published_port(LOCAL_DOCKER, &instance);
    assert_eq!(fetch("127.0.0.1", port).as_deref(), Some("v1\n"));

    // Without the certificates: the missing file is named, and nothing is reached.
    let empty = tempfile::tempdir().unwrap();
    let empty_path = empty.path().display().to_string();
    let output = deployment.config.gantry_with(
        &["--json", "hosts"],
        &[
            environment[0],
            environment[1],
            ("DOCKER_CERT_PATH", &empty_path),
        ],
    );
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    let hosts: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(
        hosts[0]["error"],
        format!(
            "host `local` ({}): TLS file {empty_path}/ca.pem does not exist",
            docker_tls()
        )
        .as_str(),
        "{hosts}"
    );
    // Without DOCKER_TLS_VERIFY, plain HTTP to the TLS port is refused, not mistaken for an engine.
    let output = deployment
        .config
        .gantry_with(&["--json", "hosts"], &environment[..1]);
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    let hosts: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(hosts[0]["reachable"], false, "{hosts}");
    let error = hosts[0]["error"].as_str().unwrap();
    assert!(
        error.contains("hint: if the engine listens with TLS")
            && error.contains("DOCKER_TLS_VERIFY"),
        "{hosts}"
    );
}
