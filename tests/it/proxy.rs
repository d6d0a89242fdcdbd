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
pub(crate) fn proxy_image() -> String {
    std::env::var("GANTRY_TEST_PROXY_IMAGE")
        .unwrap_or_else(|_| format!("{}/gantry-test/caddy:2.6.2", registry()))
}

/// Removes the proxy (and its volumes) from the engines when the test ends, so the
/// next test starts from none.
pub(crate) struct ProxyCleanup(Vec<String>);

impl ProxyCleanup {
    pub(crate) fn new(engines: &[&str]) -> ProxyCleanup {
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
pub(crate) struct Load {
    child: Child,
    what: String,
}

/// What a load loop saw.
#[derive(Debug, Default)]
pub(crate) struct Seen {
    answers: Vec<(u16, String)>,
}

impl Seen {
    pub(crate) fn failed(&self) -> Vec<&(u16, String)> {
        self.answers
            .iter()
            .filter(|(status, _)| *status != 200)
            .collect()
    }

    pub(crate) fn bodies(&self) -> Vec<&str> {
        self.answers.iter().map(|(_, body)| body.as_str()).collect()
    }
}

impl Load {
    /// At most `per_second` requests a second, for at most `limit` requests.
    pub(crate) fn start(url: &str, keep_alive: bool, per_second: u32, limit: usize) -> Load {
        let mut command = Command::new("curl");
        command.args([
            "-sS",
            "-m",
            "10",
            "--rate",
            &format!("{per_second}/s"),
            "-w",
            "|%{http_code} connects=%{num_connects} time=%{time_total} exit=%{exitcode} %{errormsg}\n",
        ]);
        if !keep_alive {
            command.args(["-H", "Connection: close"]);
        }
        for _ in 0..limit {
            command.arg(url);
        }
        let child = command
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
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
    pub(crate) fn finish(mut self) -> Seen {
        let _ = self.child.kill();
        let mut output = String::new();
        if let Some(mut stdout) = self.child.stdout.take() {
            let _ = stdout.read_to_string(&mut output);
        }
        let mut errors = String::new();
        if let Some(mut stderr) = self.child.stderr.take() {
            let _ = stderr.read_to_string(&mut errors);
        }
        let _ = self.child.wait();
        let mut seen = Seen::default();
        let mut body = String::new();
        for line in output.split_inclusive('\n') {
            match line.trim_end().strip_prefix('|') {
                Some(written) if line.ends_with('\n') => {
                    let code = written.split_whitespace().next().unwrap_or_default();
                    let status = code.parse().unwrap_or(0);
                    if status != 200 {
                        eprintln!("  answer {}: {written}", seen.answers.len());
                    }
                    seen.answers.push((status, body.trim().to_string()));
                    body.clear();
                }
                _ => body.push_str(line),
            }
        }
        eprintln!("{}: {} answers", self.what, seen.answers.len());
        // What curl said of requests that failed.
        for line in errors.lines().take(20) {
            eprintln!("  curl: {line}");
        }
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
pub(crate) fn wait_for_body(url: &str, want: &str) {
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

/// The last lines each engine's proxy logged (Caddy logs why it answered a request
/// with an error), to tell a failed request's cause.
fn proxy_logs(engines: &[String]) -> String {
    engines
        .iter()
        .map(|engine| {
            let output = docker(engine)
                .args(["logs", "--tail", "40", "gantry-proxy"])
                .output()
                .unwrap();
            format!(
                "{engine}:\n{}{}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            )
        })
        .collect()
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
    // The proxy's namespace hands connections waiting on a listener Caddy closes at a
    // reload to the new listener (the kernel here has the setting).
    let proxy = inspect(&engines[0], "gantry-proxy");
    assert_eq!(
        proxy["HostConfig"]["Sysctls"]["net.ipv4.tcp_migrate_req"], "1",
        "{}",
        proxy["HostConfig"]
    );
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
        assert_eq!(
            seen.failed(),
            Vec::<&(u16, String)>::new(),
            "load {index}; the proxies said:\n{}",
            proxy_logs(&engines)
        );
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

#[test]
fn a_new_container_that_fails_its_check_never_gets_a_request() {
    let engine = host_docker(1);
    let _cleanup = ProxyCleanup::new(&[&engine]);
    let deployment = proxied("proxy-fail", &[1]);
    let instance = deployment.instance("1");
    deployment.pipeline(&proxied_web(
        "{ port: 80, drain: 1s }",
        &[(instance.clone(), "h1")],
    ));
    deployment.repo.write("www/index.html", "good\n");
    deployment.repo.commit("good");
    deployment.succeed(&["run", &deployment.name, "--json"]);
    let url = format!("http://{}:80/", host_address(1));
    wait_for_body(&url, "good");
    let old = container_id(&engine, &instance);

    // The new version serves its page but fails its check.
    let loads = [
        Load::start(&url, true, 30, 1800),
        Load::start(&url, false, 30, 1800),
    ];
    deployment.repo.write("www/index.html", "broken\n");
    std::fs::remove_file(deployment.repo.path().join("www/healthz")).unwrap();
    deployment.repo.commit("broken");
    let (output, report) = deployment.gantry_json(&["run", &deployment.name, "--json"]);
    std::thread::sleep(Duration::from_millis(300));
    let seen: Vec<Seen> = loads.into_iter().map(Load::finish).collect();
    assert_eq!(
        output.status.code(),
        Some(1),
        "{report}\n{}",
        stderr(&output)
    );
    for seen in &seen {
        assert!(
            seen.answers.len() > 30,
            "only {} answers",
            seen.answers.len()
        );
        assert_eq!(seen.failed(), Vec::<&(u16, String)>::new());
        assert!(
            seen.bodies().iter().all(|body| *body == "good"),
            "{:?}",
            seen.bodies()
        );
    }
    // Nothing else changed: the old container runs on, the proxy still sends to it.
    assert_eq!(container_id(&engine, &instance), old);
    wait_for_body(&url, "good");
    let ps = run(docker(&engine).args(["ps", "-a", "--format", "{{.Names}}"]));
    assert!(!ps.contains(&format!("{instance}.previous")), "{ps}");
}

/// A new container that listens only a moment after it starts passes its first probe:
/// the proxy's probe route waits for it, so the gate does not fail that probe and wait a
/// whole `interval` (here 30 s) for the next.
#[test]
fn a_container_slow_to_listen_passes_its_first_probe_through_the_proxy() {
    let engine = host_docker(1);
    let _cleanup = ProxyCleanup::new(&[&engine]);
    let deployment = proxied("proxy-slow", &[1]);
    let instance = deployment.instance("1");
    deployment.pipeline(&format!(
        "  services:\n    web:\n      proxy: {{ port: 80 }}\n      stop_timeout: 1s\n      \
         command: [\"sh\", \"-c\", \"sleep 0.3; exec httpd -f -p 8080 -h /www\"]\n      \
         health:\n        http: {{ port: 8080, path: /healthz }}\n        interval: 30s\n        timeout: 60s\n      \
         instances:\n        {instance}: {{ host: h1 }}\n"
    ));
    deployment.repo.write("www/index.html", "slow\n");
    deployment.repo.commit("slow");
    let report = deployment.succeed(&["run", &deployment.name, "--json"]);
    let healthy_after = report["deploy"]["instances"][0]["healthy_after_ms"]
        .as_u64()
        .unwrap_or_else(|| panic!("{report}"));
    assert!(
        healthy_after < 10_000,
        "healthy only after {healthy_after} ms: the first probe failed\n{report}"
    );
    wait_for_body(&format!("http://{}:80/", host_address(1)), "slow");
}

/// The daemon holds its proxy's record between deploys. Another process (another
/// config sharing the host) changes the record meanwhile; the daemon's next deploy sees
/// that (a stat of the record) and keeps the other config's site and port.
#[test]
fn a_record_changed_by_another_process_is_read_again_by_the_daemon() {
    let engine = host_docker(1);
    let _cleanup = ProxyCleanup::new(&[&engine]);
    let served = proxied("proxy-held", &[1]);
    let other = proxied("proxy-other", &[1]);
    let web = |port: u16| {
        format!(
            "  services:\n    web:\n      proxy: {{ port: {port} }}\n      stop_timeout: 1s\n      \
             health:\n        http: {{ port: 8080, path: /healthz }}\n        interval: 100ms\n        timeout: 10s\n      \
             instances:\n        WEB: {{ host: h1 }}\n"
        )
    };
    served.pipeline(&web(18621).replace("WEB", &served.instance("1")));
    other.pipeline(&web(18622).replace("WEB", &other.instance("1")));
    let address = host_address(1);
    let daemon = Daemon::start(&served.config);
    let deploy = |version: &str, at_least: usize| {
        served.repo.write("www/index.html", &format!("{version}\n"));
        served.repo.commit(version);
        served.succeed(&["trigger", &served.name]);
        let runs = wait_idle(&served, &daemon, at_least);
        assert_eq!(runs[0]["state"], "succeeded", "{runs:?}\n{}", daemon.log());
        wait_for_body(&format!("http://{address}:18621/"), version);
    };
    deploy("held-1", 1);

    // The other config's deploy, from another process, adds its site to the record.
    other.repo.write("www/index.html", "other\n");
    other.repo.commit("other");
    other.succeed(&["run", &other.name, "--json"]);
    wait_for_body(&format!("http://{address}:18622/"), "other");

    // The daemon's next deploy keeps it: its port, and its route.
    deploy("held-2", 2);
    wait_for_body(&format!("http://{address}:18622/"), "other");
}

/// A CGI script in the fixture's web root: `before` runs first, `answer` prints the body.
fn write_cgi(repo: &Repo, name: &str, before: &str, answer: &str) {
    use std::os::unix::fs::PermissionsExt;
    let path = format!("www/cgi-bin/{name}");
    repo.write(
        &path,
        &format!("#!/bin/sh\n{before}\necho 'Content-Type: text/plain'\necho\n{answer}\n"),
    );
    let mode = std::fs::Permissions::from_mode(0o755);
    std::fs::set_permissions(repo.path().join(&path), mode).unwrap();
}

#[test]
fn a_long_request_started_before_the_switch_completes_on_the_old_container() {
    let engine = host_docker(1);
    let _cleanup = ProxyCleanup::new(&[&engine]);
    let deployment = proxied("proxy-drain", &[1]);
    let instance = deployment.instance("1");
    deployment.pipeline(&proxied_web(
        "{ port: 80, drain: 6s }",
        &[(instance.clone(), "h1")],
    ));
    // `slow` answers after 3 s with the container's hostname (its short id); `host` at once.
    write_cgi(&deployment.repo, "slow", "sleep 3", "hostname");
    write_cgi(&deployment.repo, "host", "", "hostname");
    deployment.repo.commit("cgi");
    deployment.succeed(&["run", &deployment.name, "--json"]);
    let base = format!("http://{}:80/cgi-bin", host_address(1));
    let old: String = container_id(&engine, &instance).chars().take(12).collect();
    wait_for_body(&format!("{base}/host"), &old);

    let started = Instant::now();
    let slow = Command::new("curl")
        .args([
            "-sS",
            "-m",
            "20",
            "-w",
            "|%{http_code}",
            &format!("{base}/slow"),
        ])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let mut deploy = Command::new(env!("CARGO_BIN_EXE_gantry"));
    deploy.args(["--config"]).arg(deployment.config.path());
    let deploy = deploy
        .args(["deploy", &deployment.name, "--force", "--json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The switch: the proxy answers from the new container.
    let switched = loop {
        let output = Command::new("curl")
            .args(["-s", "-m", "2", &format!("{base}/host")])
            .output()
            .unwrap();
        let body = String::from_utf8_lossy(&output.stdout).trim().to_string();
        if !body.is_empty() && body != old {
            break started.elapsed();
        }
        assert!(started.elapsed() < Duration::from_secs(20), "no switch");
        std::thread::sleep(Duration::from_millis(50));
    };
    let slow = slow.wait_with_output().unwrap();
    let finished = started.elapsed();
    let answer = String::from_utf8_lossy(&slow.stdout).trim().to_string();
    assert_eq!(answer, format!("{old}\n|200"), "the slow request");
    assert!(
        switched < finished,
        "the switch ({switched:?}) came after the slow request ended ({finished:?})"
    );
    let deploy = deploy.wait_with_output().unwrap();
    assert!(
        deploy.status.success(),
        "{}",
        String::from_utf8_lossy(&deploy.stderr)
    );
}

#[test]
fn services_share_a_port_by_host_name_and_tls_uses_the_proxy_certificate_authority() {
    let engine = host_docker(3);
    let _cleanup = ProxyCleanup::new(&[&engine]);
    let deployment = proxied("proxy-hosts", &[3]);
    let serve = |text: &str| {
        format!(
            "[\"sh\", \"-c\", \"mkdir -p /tmp/w && echo {text} >/tmp/w/index.html && exec httpd -f -p 8080 -h /tmp/w\"]"
        )
    };
    let service = |name: &str, proxy: &str| {
        format!(
            "    {name}:\n      command: {}\n      proxy: {proxy}\n      stop_timeout: 1s\n      \
             health:\n        http: {{ port: 8080, path: / }}\n        interval: 100ms\n      \
             instances:\n        {}: {{ host: h3 }}\n",
            serve(name),
            deployment.instance(name)
        )
    };
    deployment.pipeline(&format!(
        "  services:\n{}{}{}",
        service("alpha", "{ port: 80, hosts: [alpha.test], drain: 0s }"),
        service(
            "beta",
            "{ port: 80, hosts: [beta.test, www.beta.test], drain: 0s }"
        ),
        service(
            "gamma",
            "{ port: 443, hosts: [gamma.test], tls: internal, drain: 0s }"
        ),
    ));
    deployment.succeed(&["run", &deployment.name, "--json"]);
    let address = host_address(3);
    let get = |host: &str, extra: &[&str], url: &str| {
        let output = Command::new("curl")
            .args([
                "-sS",
                "-m",
                "5",
                "-H",
                &format!("Host: {host}"),
                "-w",
                "|%{http_code}",
            ])
            .args(extra)
            .arg(url)
            .output()
            .unwrap();
        String::from_utf8_lossy(&output.stdout).trim().to_string()
    };
    let plain = format!("http://{address}:80/");
    assert_eq!(get("alpha.test", &[], &plain), "alpha\n|200");
    assert_eq!(get("beta.test", &[], &plain), "beta\n|200");
    assert_eq!(get("www.beta.test", &[], &plain), "beta\n|200");
    assert!(get("other.test", &[], &plain).ends_with("|404"));
    // The probe route takes nobody without its secret, whatever container a request names.
    let beta: String = container_id(&engine, &deployment.instance("beta"))
        .chars()
        .take(12)
        .collect();
    let upstream = format!("X-Gantry-Upstream: {beta}:8080");
    for secret in ["X-Gantry-Probe: guessed", "X-Gantry-Probe;"] {
        assert_eq!(
            get("alpha.test", &["-H", secret, "-H", &upstream], &plain),
            "alpha\n|200"
        );
    }

    // TLS with a certificate the proxy's own authority issued, verified against its root.
    let root = tempfile::NamedTempFile::new().unwrap();
    run(docker(&engine).args([
        "cp",
        "gantry-proxy:/data/caddy/pki/authorities/local/root.crt",
        root.path().to_str().unwrap(),
    ]));
    let resolve = format!("gamma.test:443:{address}");
    let ca = root.path().to_str().unwrap();
    assert_eq!(
        get(
            "gamma.test",
            &["--resolve", &resolve, "--cacert", ca],
            "https://gamma.test/"
        ),
        "gamma\n|200"
    );
}

#[test]
fn a_proxy_removed_by_hand_is_reported_missing_and_restored_by_the_next_deploy() {
    let engine = host_docker(2);
    let _cleanup = ProxyCleanup::new(&[&engine]);
    let deployment = proxied("proxy-gone", &[2]);
    let instance = deployment.instance("1");
    deployment.pipeline(&proxied_web(
        "{ port: 80, drain: 0s }",
        &[(instance.clone(), "h2")],
    ));
    deployment.succeed(&["run", &deployment.name, "--json"]);
    let url = format!("http://{}:80/", host_address(2));
    wait_for_body(&url, "v1");
    let container: String = container_id(&engine, &instance).chars().take(12).collect();
    let status = deployment.succeed(&["status", &deployment.name, "--json"]);
    let row = &status["pipelines"][0]["instances"][0];
    assert_eq!(row["proxy"]["state"], "running", "{status}");
    assert_eq!(row["proxy"]["upstream"], container.as_str(), "{status}");
    let text = deployment.gantry(&["status", &deployment.name]);
    assert!(
        stdout(&text).contains(&format!("proxy :80 -> {container}")),
        "{}",
        stdout(&text)
    );

    run(docker(&engine).args(["rm", "-f", "gantry-proxy"]));
    let status = deployment
        .gantry_json(&["status", &deployment.name, "--json"])
        .1;
    let row = &status["pipelines"][0]["instances"][0];
    assert_eq!(row["proxy"]["state"], "missing", "{status}");
    assert!(
        row["drift"]
            .to_string()
            .contains("the proxy on h2 is missing"),
        "{status}"
    );

    // Nothing to replace, but the proxy comes back, routing to the running container.
    let (output, report) = deployment.gantry_json(&["deploy", &deployment.name, "--json"]);
    assert!(output.status.success(), "{report}\n{}", stderr(&output));
    assert!(
        stderr(&output).contains("proxy on h2 is missing"),
        "{}",
        stderr(&output)
    );
    assert_eq!(
        container_id(&engine, &instance).get(..12),
        Some(container.as_str())
    );
    wait_for_body(&url, "v1");
    let status = deployment.succeed(&["status", &deployment.name, "--json"]);
    let row = &status["pipelines"][0]["instances"][0];
    assert_eq!(row["proxy"]["upstream"], container.as_str(), "{status}");
    assert_eq!(row["drift"], serde_json::json!([]), "{status}");
}
