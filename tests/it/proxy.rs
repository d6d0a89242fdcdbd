//! Services behind gantry's proxy (a real Caddy, built by `scripts/test-env.sh` from
//! Debian's package): zero failed requests on the fixed port while instances are
//! replaced, a failed gate that changes nothing, drain, host routing, TLS, and a
//! proxy restored after it was removed by hand.
//!
//! These tests share each engine's one `gantry-proxy` container, so they run one at a
//! time (the `proxy` test group in `.config/nextest.toml`) and remove it when done.

use std::io::Read;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::*;

/// The proxy image the test environment built.
fn proxy_image() -> String {
    std::env::var("GANTRY_TEST_PROXY_IMAGE")
        .unwrap_or_else(|_| format!("{}/gantry-test/caddy:2.6.2", registry()))
}

/// Removes the proxy (and its volumes) from the engines when the test ends, so the
/// next test starts from none.
struct ProxyCleanup(Vec<String>);

impl ProxyCleanup {
    fn new(engines: &[&str]) -> ProxyCleanup {
        let cleanup = ProxyCleanup(engines.iter().map(|engine| engine.to_string()).collect());
        cleanup.clean();
        cleanup
    }

    fn clean(&self) {
        for engine in &self.0 {
            let _ = docker(engine).args(["rm", "-f", "gantry-proxy"]).output();
            let _ = docker(engine)
                .args(["volume", "rm", "gantry-proxy-config", "gantry-proxy-data"])
                .output();
        }
    }
}

impl Drop for ProxyCleanup {
    fn drop(&mut self) {
        self.clean();
    }
}

/// A deployment whose gantry.yaml names the proxy image.
fn proxied(prefix: &str, hosts: &[usize]) -> Deployment {
    let deployment = Deployment::new(prefix, hosts);
    deployment.config.append(
        "gantry.yaml",
        &format!("proxy:\n  image: \"{}\"\n", proxy_image()),
    );
    deployment
}

/// A request loop against one URL with curl: `keep_alive` reuses one connection (and,
/// as browsers and curl do, retries once on a fresh one when the server closed it
/// while idle); otherwise every request opens a new connection.
struct Load {
    child: Child,
    what: String,
}

/// What a load loop saw.
#[derive(Debug, Default)]
struct Seen {
    answers: Vec<(u16, String)>,
}

impl Seen {
    fn failed(&self) -> Vec<&(u16, String)> {
        self.answers
            .iter()
            .filter(|(status, _)| *status != 200)
            .collect()
    }

    fn bodies(&self) -> Vec<&str> {
        self.answers.iter().map(|(_, body)| body.as_str()).collect()
    }
}

impl Load {
    /// At most `per_second` requests a second, for at most `limit` requests.
    fn start(url: &str, keep_alive: bool, per_second: u32, limit: usize) -> Load {
        let mut command = Command::new("curl");
        command.args([
            "-sS",
            "-m",
            "10",
            "--rate",
            &format!("{per_second}/s"),
            "-w",
            "|%{http_code}\n",
        ]);
        if !keep_alive {
            command.args(["-H", "Connection: close"]);
        }
        for _ in 0..limit {
            command.arg(url);
        }
        let child = command
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("curl runs");
        Load {
            child,
            what: format!(
                "{url} ({})",
                if keep_alive {
                    "keep-alive"
                } else {
                    "new connections"
                }
            ),
        }
    }

    /// Stops the loop; every complete answer it got.
    fn finish(mut self) -> Seen {
        let _ = self.child.kill();
        let mut output = String::new();
        if let Some(mut stdout) = self.child.stdout.take() {
            let _ = stdout.read_to_string(&mut output);
        }
        let _ = self.child.wait();
        let mut seen = Seen::default();
        let mut body = String::new();
        for line in output.split_inclusive('\n') {
            match line.trim_end().strip_prefix('|') {
                Some(code) if line.ends_with('\n') => {
                    let status = code.parse().unwrap_or(0);
                    seen.answers.push((status, body.trim().to_string()));
                    body.clear();
                }
                _ => body.push_str(line),
            }
        }
        eprintln!("{}: {} answers", self.what, seen.answers.len());
        seen
    }
}

/// The deploy section of a proxied `web` service on the given (instance, host) pairs.
fn proxied_web(proxy: &str, instances: &[(String, &str)]) -> String {
    let mut text = format!(
        "  services:\n    web:\n      proxy: {proxy}\n      stop_timeout: 1s\n      \
         health:\n        http: {{ port: 8080, path: /healthz }}\n        interval: 100ms\n        timeout: 10s\n      \
         instances:\n"
    );
    for (instance, host) in instances {
        text.push_str(&format!("        {instance}: {{ host: {host} }}\n"));
    }
    text
}

/// Waits until `url` answers `want`.
fn wait_for_body(url: &str, want: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let output = Command::new("curl")
            .args(["-s", "-m", "2", url])
            .output()
            .unwrap();
        let body = String::from_utf8_lossy(&output.stdout).trim().to_string();
        if body == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{url} answers {body:?}, not {want:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn redeploys_behind_the_proxy_fail_no_request_and_switch_to_the_new_version() {
    let engines = [host_docker(1), host_docker(2)];
    let _cleanup = ProxyCleanup::new(&[&engines[0], &engines[1]]);
    let deployment = proxied("proxy-roll", &[1, 2]);
    let instances = [
        (deployment.instance("1"), "h1"),
        (deployment.instance("2"), "h2"),
    ];
    deployment.pipeline(&proxied_web("{ port: 80, drain: 1s }", &instances));
    deployment.repo.write("www/index.html", "v1\n");
    deployment.repo.commit("v1");
    deployment.succeed(&["run", &deployment.name, "--json"]);
    let urls: Vec<String> = [1, 2]
        .iter()
        .map(|index| format!("http://{}:80/", host_address(*index)))
        .collect();
    for url in &urls {
        wait_for_body(url, "v1");
    }
    // Four loops of 15 requests a second: 60 a second in all, for at most 3 minutes.
    let loads: Vec<Load> = urls
        .iter()
        .flat_map(|url| {
            [
                Load::start(url, true, 15, 2700),
                Load::start(url, false, 15, 2700),
            ]
        })
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    for version in 2..=6 {
        deployment
            .repo
            .write("www/index.html", &format!("v{version}\n"));
        deployment.repo.commit(&format!("v{version}"));
        deployment.succeed(&["run", &deployment.name, "--json"]);
    }
    std::thread::sleep(Duration::from_millis(500));
    let seen: Vec<Seen> = loads.into_iter().map(Load::finish).collect();
    for (index, seen) in seen.iter().enumerate() {
        assert!(
            seen.answers.len() > 100,
            "load {index} got only {} answers",
            seen.answers.len()
        );
        assert_eq!(seen.failed(), Vec::<&(u16, String)>::new(), "load {index}");
        let bodies = seen.bodies();
        assert_eq!(bodies.first(), Some(&"v1"), "load {index}");
        assert_eq!(bodies.last(), Some(&"v6"), "load {index}");
        // Versions only move forward: each instance switched once per deploy.
        let versions: Vec<u32> = bodies
            .iter()
            .map(|body| body.trim_start_matches('v').parse().unwrap())
            .collect();
        assert!(
            versions.windows(2).all(|pair| pair[0] <= pair[1]),
            "load {index} went back: {versions:?}"
        );
        for version in 1..=6 {
            assert!(
                versions.contains(&version),
                "load {index} never saw v{version}"
            );
        }
    }
    let total: usize = seen.iter().map(|seen| seen.answers.len()).sum();
    eprintln!("{total} requests, 0 failed");
}
