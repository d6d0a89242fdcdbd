//! A pipeline with a deploy section, and the Docker engines it deploys to: the main
//! engine and the extra ones `scripts/test-env.sh` runs in their own network namespaces.

use std::process::{Command, Output};

use super::*;

/// The Docker URL of extra engine `index` (1-based).
pub fn host_docker(index: usize) -> String {
    std::env::var(format!("GANTRY_TEST_HOST_{index}_DOCKER"))
        .unwrap_or_else(|_| format!("unix:///var/lib/gantry-test-env/hosts/h{index}/docker.sock"))
}

/// Where extra engine `index` publishes container ports.
pub fn host_address(index: usize) -> String {
    std::env::var(format!("GANTRY_TEST_HOST_{index}_ADDRESS"))
        .unwrap_or_else(|_| format!("10.77.{index}.2"))
}

pub const LOCAL_DOCKER: &str = "unix:///var/run/docker.sock";

pub fn docker(engine: &str) -> Command {
    let mut command = Command::new("docker");
    command.args(["-H", engine]);
    command
}

/// A pipeline with a deploy section, its repository, and everything it leaves on the engines.
pub struct Deployment {
    pub config: ConfigDir,
    pub repo: Repo,
    pub name: String,
    pub repository: String,
    /// Engines this test deploys to; its containers, networks and images are removed there.
    engines: Vec<String>,
}

impl Deployment {
    /// `hosts` are the extra engines (1-based) to define as `h1`, `h2`, ... besides `local`.
    pub fn new(prefix: &str, hosts: &[usize]) -> Deployment {
        require_docker();
        let name = unique(prefix);
        let repository = format!("{}/gantry-it/{name}", registry());
        let repo = Repo::from_fixture();
        repo.write("www/index.html", "v1\n");
        repo.commit("v1");
        let mut config = ConfigDir::new();
        config.repositories.push(repository.clone());
        let mut gantry_yaml = format!("hosts:\n  local: {{ docker: \"{LOCAL_DOCKER}\" }}\n");
        let mut engines = vec![LOCAL_DOCKER.to_string()];
        for index in hosts {
            gantry_yaml.push_str(&format!(
                "  h{index}: {{ docker: \"{}\", address: \"{}\" }}\n",
                host_docker(*index),
                host_address(*index)
            ));
            engines.push(host_docker(*index));
        }
        config.write("gantry.yaml", &gantry_yaml);
        Deployment {
            config,
            repo,
            name,
            repository,
            engines,
        }
    }

    /// Writes the pipeline with this `deploy:` section (indented by two spaces already).
    pub fn pipeline(&self, deploy: &str) {
        self.pipeline_with("", "", deploy);
    }

    /// Writes the pipeline with `extra_source` lines under `source:` (indented by two
    /// spaces already), `extra_image` after the commit tag in `image.tags` (`, "x"`),
    /// and this `deploy:` section.
    pub fn pipeline_with(&self, extra_source: &str, extra_image: &str, deploy: &str) {
        self.config.write(
            &format!("pipelines/{}.yaml", self.name),
            &format!(
                "source:\n  repo: {}\n  branch: main\n{extra_source}\
                 image:\n  repository: {}\n  tags: [\"{{{{ commit.short }}}}\"{extra_image}]\n\
                 deploy:\n{deploy}",
                self.repo.url(),
                self.repository
            ),
        );
    }

    /// An instance name unique to this test.
    pub fn instance(&self, suffix: &str) -> String {
        format!("{}-{suffix}", self.name)
    }

    pub fn gantry(&self, arguments: &[&str]) -> Output {
        self.config.gantry(arguments)
    }

    pub fn gantry_json(&self, arguments: &[&str]) -> (Output, serde_json::Value) {
        self.config.gantry_json(arguments)
    }

    /// Runs `gantry ARGS` and fails the test unless it succeeds.
    pub fn succeed(&self, arguments: &[&str]) -> serde_json::Value {
        let (output, report) = self.gantry_json(arguments);
        assert!(
            output.status.success(),
            "gantry {arguments:?} failed: {report}\n{}",
            stderr(&output)
        );
        report
    }

    pub fn head(&self) -> String {
        self.repo.git(&["rev-parse", "HEAD"]).trim().to_string()
    }
}

impl Drop for Deployment {
    fn drop(&mut self) {
        let label = format!("label=gantry.pipeline={}", self.name);
        for engine in &self.engines {
            for (list, remove) in [
                (vec!["ps", "-aq", "--filter", &label], vec!["rm", "-f"]),
                (
                    vec!["network", "ls", "-q", "--filter", &label],
                    vec!["network", "rm"],
                ),
                // Parent layers stay: parallel tests build from the same steps and
                // may be using them as their cache.
                (
                    vec!["images", "-q", &self.repository],
                    vec!["rmi", "-f", "--no-prune"],
                ),
            ] {
                let Ok(listed) = docker(engine).args(&list).output() else {
                    continue;
                };
                let ids: Vec<String> = String::from_utf8_lossy(&listed.stdout)
                    .split_whitespace()
                    .map(str::to_string)
                    .collect();
                if !ids.is_empty() {
                    let _ = docker(engine).args(&remove).args(&ids).output();
                }
            }
        }
    }
}

/// A deploy section with one instance named `instance` on `local`, serving port 8080
/// and checked over HTTP.
pub fn one_instance(instance: &str) -> String {
    format!(
        "  services:\n    web:\n      ports: [\"8080\"]\n      stop_timeout: 1s\n      \
         health:\n        http: {{ port: 8080, path: /healthz }}\n        interval: 100ms\n      \
         instances:\n        {instance}: {{}}\n"
    )
}

/// `docker inspect` of one container, parsed.
pub fn inspect(engine: &str, container: &str) -> serde_json::Value {
    let output = run(docker(engine).args(["inspect", container]));
    let parsed: serde_json::Value = serde_json::from_str(&output).unwrap();
    parsed[0].clone()
}

/// The id of the container of that name on `engine`.
pub fn container_id(engine: &str, container: &str) -> String {
    inspect(engine, container)["Id"]
        .as_str()
        .unwrap_or_else(|| panic!("{container} on {engine} has no id"))
        .to_string()
}

/// The host port Docker published for the container's port 8080.
pub fn published_port(engine: &str, container: &str) -> u16 {
    let output = run(docker(engine).args(["port", container, "8080/tcp"]));
    output
        .lines()
        .next()
        .and_then(|line| line.rsplit(':').next())
        .and_then(|port| port.trim().parse().ok())
        .unwrap_or_else(|| panic!("no published port for {container}: {output}"))
}

/// GET http://ADDRESS:PORT/ through curl; the body, or None when the request failed.
pub fn fetch(address: &str, port: u16) -> Option<String> {
    let output = Command::new("curl")
        .args(["-fsS", "-m", "5", &format!("http://{address}:{port}/")])
        .output()
        .ok()?;
    output
        .status
        .success()
        .then(|| String::from_utf8_lossy(&output.stdout).into_owned())
}

/// Removes the images of `repositories` from the main engine, however the test ends.
pub struct RemoveImages(pub Vec<String>);

impl Drop for RemoveImages {
    fn drop(&mut self) {
        for repository in &self.0 {
            let listed = docker(LOCAL_DOCKER)
                .args(["images", "-q", repository])
                .output();
            let Ok(listed) = listed else { continue };
            let ids: Vec<String> = String::from_utf8_lossy(&listed.stdout)
                .split_whitespace()
                .map(str::to_string)
                .collect();
            if !ids.is_empty() {
                let _ = docker(LOCAL_DOCKER)
                    .args(["rmi", "-f", "--no-prune"])
                    .args(&ids)
                    .output();
            }
        }
    }
}
