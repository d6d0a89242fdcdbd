//! Swarm services: a pipeline service on a Swarm manager (`swarm: true`) becomes a
//! Swarm service of the test Swarm that `scripts/test-env.sh` forms (three engines in
//! network namespaces, `scripts/test-env-swarm.sh`). A redeploy of three replicas on
//! three nodes converges start-first on the new digest while a request loop inside the
//! service's overlay network never fails; a new image whose health check fails is
//! rolled back by Swarm, and gantry says so and exits 1.
//!
//! The kernel here has no IPVS, so neither the routing mesh nor a service's virtual IP
//! works: the request loop asks for the service's tasks by name (`tasks.NAME`, Docker's
//! DNS on the overlay) and sends each request to the first address it gets, with
//! busybox `nc` (the static busybox's `wget` crashes in its resolver).

use std::time::Duration;

use crate::common::*;

fn swarm_manager() -> String {
    std::env::var("GANTRY_TEST_SWARM_MANAGER")
        .unwrap_or_else(|_| "unix:///var/lib/gantry-test-env/swarm/s1/docker.sock".to_string())
}

/// Removes what a test made on the Swarm (services, then the overlay network, then the
/// request loop's container), however it ends.
struct SwarmCleanup {
    services: Vec<String>,
    containers: Vec<String>,
    network: String,
}

impl Drop for SwarmCleanup {
    fn drop(&mut self) {
        let manager = swarm_manager();
        for container in &self.containers {
            let _ = docker(&manager).args(["rm", "-f", container]).output();
        }
        for service in &self.services {
            let _ = docker(&manager).args(["service", "rm", service]).output();
        }
        // The network goes once the tasks have left it.
        let _ = eventually_quiet(Duration::from_secs(30), || {
            docker(&manager)
                .args(["network", "rm", &self.network])
                .output()
                .is_ok_and(|output| output.status.success())
        });
    }
}

fn eventually_quiet(timeout: Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = std::time::Instant::now() + timeout;
    while std::time::Instant::now() < deadline {
        if done() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    false
}

/// A deployment whose gantry.yaml has the test Swarm's manager as host `swarm`.
fn swarm_deployment(prefix: &str) -> Deployment {
    let deployment = Deployment::new(prefix, &[]);
    deployment.config.write(
        "gantry.yaml",
        &format!(
            "hosts:\n  local: {{ docker: \"{LOCAL_DOCKER}\" }}\n  \
             swarm: {{ docker: \"{}\", swarm: true }}\n",
            swarm_manager()
        ),
    );
    deployment
}

/// One service `web` as the Swarm service `instance` of three replicas on the overlay
/// network `network`, gated by a check that `/www/healthy` exists in the image, its
/// port 8080 published in `host` mode on a port each node chooses.
fn swarm_deploy(instance: &str, network: &str) -> String {
    format!(
        "  services:\n    web:\n      network: {network}\n      ports: [\"8080\"]\n      stop_timeout: 2s\n      \
         health:\n        exec: [\"test\", \"-f\", \"/www/healthy\"]\n        interval: 200ms\n        \
         timeout: 3s\n      swarm:\n        replicas: 3\n        publish: host\n        \
         update: {{ parallelism: 1, order: start-first, failure_action: rollback, monitor: 2s }}\n      \
         instances:\n        {instance}: {{ host: swarm }}\n"
    )
}

fn commit_version(deployment: &Deployment, version: &str, healthy: bool) {
    deployment
        .repo
        .write("www/index.html", &format!("{version}\n"));
    if healthy {
        deployment.repo.write("www/healthy", "yes\n");
    } else {
        let _ = std::fs::remove_file(deployment.repo.path().join("www/healthy"));
        deployment.repo.git(&["add", "-A"]);
    }
    deployment.repo.commit(version);
}

/// `gantry status --json` of the pipeline's one instance.
fn instance_status(deployment: &Deployment) -> serde_json::Value {
    let status = deployment.succeed(&["status", &deployment.name]);
    status["pipelines"][0]["instances"][0].clone()
}

/// The instance's status once every task runs, or after 20 s. Swarm replaces a task
/// that stops on its own (status shows it as drift meanwhile); on a loaded machine
/// that can happen just after a deploy, and is Swarm's business, not the deploy's.
fn settled_status(deployment: &Deployment) -> serde_json::Value {
    let mut instance = instance_status(deployment);
    let _ = eventually_quiet(Duration::from_secs(20), || {
        instance = instance_status(deployment);
        instance["state"] == "running"
    });
    instance
}

fn deployed_digest(report: &serde_json::Value) -> String {
    report["deploy"]["instances"][0]["digest"]
        .as_str()
        .unwrap_or_else(|| panic!("no digest in {report}"))
        .to_string()
}

/// The tasks `gantry status` lists: three, every one running `digest`, on three nodes
/// when `spread` (Swarm spreads a new service's tasks; during a start-first update it
/// counts the old tasks too, so the new ones may share a node).
fn assert_tasks_run(instance: &serde_json::Value, digest: &str, spread: bool) {
    let tasks = instance["tasks"]
        .as_array()
        .unwrap_or_else(|| panic!("{instance}"));
    assert_eq!(tasks.len(), 3, "{instance}");
    let mut nodes: Vec<&str> = tasks
        .iter()
        .map(|task| task["node"].as_str().unwrap())
        .collect();
    nodes.sort();
    nodes.dedup();
    if spread {
        assert_eq!(nodes.len(), 3, "three replicas on three nodes: {instance}");
    }
    for task in tasks {
        assert_eq!(task["state"], "running", "{instance}");
        assert_eq!(task["digest"], digest, "{instance}");
    }
    assert_eq!(instance["state"], "running", "{instance}");
    assert_eq!(instance["digest"], digest, "{instance}");
}

#[test]
fn a_swarm_redeploy_converges_start_first_on_the_new_digest_without_a_failed_request() {
    let deployment = swarm_deployment("swarm-roll");
    let instance = deployment.instance("web");
    let network = deployment.instance("net");
    let client = deployment.instance("client");
    let _cleanup = SwarmCleanup {
        services: vec![instance.clone()],
        containers: vec![client.clone()],
        network: network.clone(),
    };
    deployment.pipeline(&swarm_deploy(&instance, &network));
    commit_version(&deployment, "v1", true);

    let (output, first) = deployment.gantry_json(&["run", &deployment.name]);
    assert!(output.status.success(), "{first}\n{}", stderr(&output));
    let first_digest = deployed_digest(&first);
    assert_eq!(
        first["deploy"]["instances"][0]["action"], "updated",
        "{first}"
    );
    assert_tasks_run(&settled_status(&deployment), &first_digest, true);
    // The service carries gantry's labels, as a container does.
    let labels = run(docker(&swarm_manager()).args([
        "service",
        "inspect",
        "--format",
        "{{json .Spec.Labels}}",
        &instance,
    ]));
    let labels: serde_json::Value = serde_json::from_str(&labels).unwrap();
    assert_eq!(
        labels["gantry.pipeline"],
        deployment.name.as_str(),
        "{labels}"
    );
    assert_eq!(labels["gantry.digest"], first_digest.as_str(), "{labels}");

    // A request loop inside the overlay network, bounded in count, until told to stop.
    let loop_script = format!(
        "i=0; ok=0; failed=0; \
         while [ ! -e /tmp/stop ] && [ $i -lt 20000 ]; do \
           i=$((i+1)); \
           ip=$(nslookup tasks.{instance} 2>/dev/null | sed -n 's/^Address: *//p' | tail -n +2 | head -n 1); \
           answer=$(printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 2 \"$ip\" 8080 2>&1); \
           case \"$answer\" in \
             'HTTP/1.'*' 200 '*) ok=$((ok+1)); echo \"body $(echo \"$answer\" | tail -n 1)\" ;; \
             *) failed=$((failed+1)); echo \"failed $ip: $(echo \"$answer\" | head -n 1)\" ;; \
           esac; \
         done; echo \"done ok=$ok failed=$failed\""
    );
    run(docker(&swarm_manager()).args([
        "run",
        "-d",
        "--name",
        &client,
        "--network",
        &network,
        "--label",
        &format!("gantry.pipeline={}", deployment.name),
        &host_image(),
        "sh",
        "-c",
        &loop_script,
    ]));
    eventually(
        "the request loop reaches v1",
        Duration::from_secs(20),
        || {
            let logs = client_logs(&client);
            if logs.contains("body v1") {
                Ok(())
            } else {
                Err(logs.lines().last().unwrap_or_default().to_string())
            }
        },
    );

    commit_version(&deployment, "v2", true);
    let (output, second) = deployment.gantry_json(&["run", &deployment.name]);
    assert!(output.status.success(), "{second}\n{}", stderr(&output));
    let second_digest = deployed_digest(&second);
    assert_ne!(second_digest, first_digest);
    assert_eq!(
        second["deploy"]["instances"][0]["action"], "updated",
        "{second}"
    );
    assert_eq!(
        second["deploy"]["instances"][0]["previous_digest"],
        first_digest.as_str(),
        "{second}"
    );
    // Each task's changes are in the run's log, on the node it ran on.
    let log = stderr(&output);
    assert!(
        log.contains(&format!(
            "updating Swarm service on swarm to {}",
            &second_digest[..19]
        )),
        "{log}"
    );
    assert!(
        log.lines()
            .filter(|line| line.contains(&format!("task {instance}."))
                && line.contains(": running, ")
                && line.contains(&second_digest[..19]))
            .count()
            >= 3,
        "{log}"
    );
    let status = settled_status(&deployment);
    assert_tasks_run(&status, &second_digest, false);
    // Each task answers on the port its node published, at the node's address.
    for task in status["tasks"].as_array().unwrap() {
        let published = task["published"][0].as_str().unwrap_or_default();
        let (address, port) = published
            .strip_suffix("->8080/tcp")
            .and_then(|place| place.rsplit_once(':'))
            .unwrap_or_else(|| panic!("{task}"));
        assert!(address.starts_with("10.77.2"), "{task}");
        assert_eq!(
            fetch(address, port.parse().unwrap()).as_deref(),
            Some("v2\n"),
            "{task}"
        );
    }
    // Deployed again as it is, the service is left alone.
    let again = deployment.succeed(&["deploy", &deployment.name]);
    assert_eq!(again["instances"][0]["action"], "unchanged", "{again}");

    // Start-first: in each slot the old task stops only after the new one runs.
    let lines: Vec<&str> = log.lines().collect();
    for slot in 1..=3 {
        let task = format!("task {instance}.{slot} on ");
        let new_running = lines
            .iter()
            .position(|line| {
                line.contains(&task)
                    && line.contains(": running, ")
                    && line.contains(&second_digest[..19])
            })
            .unwrap_or_else(|| panic!("no new task ran in slot {slot}: {log}"));
        if let Some(old_stopped) = lines.iter().position(|line| {
            line.contains(&task)
                && line.contains(": shutdown, ")
                && line.contains(&first_digest[..19])
        }) {
            assert!(new_running < old_stopped, "slot {slot}: {log}");
        }
    }

    eventually(
        "the request loop reaches v2",
        Duration::from_secs(20),
        || {
            let logs = client_logs(&client);
            if logs.contains("body v2") {
                Ok(())
            } else {
                Err(logs.lines().last().unwrap_or_default().to_string())
            }
        },
    );
    run(docker(&swarm_manager()).args(["exec", &client, "sh", "-c", "echo >/tmp/stop"]));
    let summary = eventually("the request loop ends", Duration::from_secs(20), || {
        let logs = client_logs(&client);
        logs.lines()
            .find(|line| line.starts_with("done "))
            .map(str::to_string)
            .ok_or_else(|| logs.lines().last().unwrap_or_default().to_string())
    });
    let logs = client_logs(&client);
    let failures: Vec<&str> = logs
        .lines()
        .filter(|line| line.starts_with("failed"))
        .collect();
    assert!(summary.ends_with(" failed=0"), "{summary}: {failures:?}");
    let served = logs
        .lines()
        .filter(|line| line.starts_with("body "))
        .count();
    assert!(served >= 20, "{summary}");
}

#[test]
fn a_failing_health_check_is_rolled_back_by_swarm_and_reported() {
    let deployment = swarm_deployment("swarm-fail");
    let instance = deployment.instance("web");
    let network = deployment.instance("net");
    let _cleanup = SwarmCleanup {
        services: vec![instance.clone()],
        containers: Vec::new(),
        network: network.clone(),
    };
    deployment.pipeline(&swarm_deploy(&instance, &network));
    commit_version(&deployment, "v1", true);
    let first = deployment.succeed(&["run", &deployment.name]);
    let first_digest = deployed_digest(&first);

    // v2 lacks the file its health check looks for.
    commit_version(&deployment, "v2", false);
    let (output, second) = deployment.gantry_json(&["run", &deployment.name]);
    assert_eq!(
        output.status.code(),
        Some(1),
        "{second}\n{}",
        stderr(&output)
    );
    let failure = &second["deploy"]["failure"];
    assert!(
        failure["message"]
            .as_str()
            .unwrap_or_default()
            .contains("the update failed and Swarm rolled it back"),
        "{second}"
    );
    let reported = &second["deploy"]["instances"][0];
    assert_eq!(reported["action"], "failed", "{second}");
    assert_eq!(reported["digest"], first_digest.as_str(), "{second}");
    let log = stderr(&output);
    assert!(log.contains("Swarm is rolling the update back"), "{log}");
    assert!(log.contains("unhealthy") || log.contains("failed"), "{log}");

    // The service is back on v1, every task running it; status says so.
    let status = settled_status(&deployment);
    assert_tasks_run(&status, &first_digest, false);
    assert_eq!(status["recorded_digest"], first_digest.as_str(), "{status}");
    // As text: a line per task with its node, state and digest.
    let text = stdout(&deployment.gantry(&["status", &deployment.name]));
    let task_lines: Vec<&str> = text
        .lines()
        .filter(|line| line.trim_start().starts_with(&format!("task {instance}.")))
        .collect();
    assert_eq!(task_lines.len(), 3, "{text}");
    for line in task_lines {
        assert!(line.contains(" on gantry-s"), "{text}");
        assert!(line.contains("running"), "{text}");
        assert!(line.contains(&first_digest[..19]), "{text}");
    }
}

fn client_logs(client: &str) -> String {
    let output = docker(&swarm_manager())
        .args(["logs", client])
        .output()
        .unwrap();
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn host_image() -> String {
    std::env::var("GANTRY_TEST_HOST_IMAGE")
        .unwrap_or_else(|_| "127.0.0.1:5115/gantry-test/busybox:latest".to_string())
}

#[test]
fn a_network_of_one_engine_is_refused_for_a_swarm_service() {
    let deployment = swarm_deployment("swarm-net");
    let instance = deployment.instance("web");
    let network = deployment.instance("bridge");
    let _cleanup = SwarmCleanup {
        services: vec![instance.clone()],
        containers: Vec::new(),
        network: network.clone(),
    };
    run(docker(&swarm_manager()).args([
        "network",
        "create",
        "--driver",
        "bridge",
        "--label",
        &format!("gantry.pipeline={}", deployment.name),
        &network,
    ]));
    deployment.pipeline(&swarm_deploy(&instance, &network));
    commit_version(&deployment, "v1", true);
    let (output, report) = deployment.gantry_json(&["run", &deployment.name]);
    assert_eq!(output.status.code(), Some(1), "{report}");
    let message = report["deploy"]["failure"]["message"]
        .as_str()
        .unwrap_or_default();
    assert!(
        message.contains(&format!(
            "network {network} on swarm is a bridge network of one engine; a Swarm service needs an overlay network"
        )),
        "{report}"
    );
    assert_eq!(
        report["deploy"]["instances"][0]["action"], "not_reached",
        "{report}"
    );
    let services = run(docker(&swarm_manager()).args([
        "service",
        "ls",
        "-q",
        "--filter",
        &format!("name={instance}"),
    ]));
    assert!(
        services.trim().is_empty(),
        "no service was created: {services}"
    );
}

#[test]
fn a_failed_swarm_service_rolls_back_the_ones_updated_before_it() {
    let deployment = swarm_deployment("swarm-revert");
    let api = deployment.instance("api");
    let web = deployment.instance("web");
    let network = deployment.instance("net");
    let _cleanup = SwarmCleanup {
        services: vec![api.clone(), web.clone()],
        containers: Vec::new(),
        network: network.clone(),
    };
    // `api` passes its check on every version; `web` needs /www/healthy.
    let service = |name: &str, requires: &str, file: &str, instance: &str| {
        format!(
            "    {name}:\n      network: {network}\n      requires: [{requires}]\n      \
             stop_timeout: 1s\n      health:\n        exec: [\"test\", \"-f\", \"{file}\"]\n        \
             interval: 200ms\n        timeout: 2s\n      swarm:\n        \
             update: {{ monitor: 1s }}\n      instances:\n        {instance}: {{ host: swarm }}\n"
        )
    };
    deployment.pipeline(&format!(
        "  on_failure: rollback\n  services:\n{}{}",
        service("api", "", "/www/index.html", &api),
        service("web", "api", "/www/healthy", &web)
    ));
    commit_version(&deployment, "v1", true);
    let first = deployment.succeed(&["run", &deployment.name]);
    let first_digest = deployed_digest(&first);

    commit_version(&deployment, "v2", false);
    let (output, second) = deployment.gantry_json(&["run", &deployment.name]);
    assert_eq!(
        output.status.code(),
        Some(1),
        "{second}\n{}",
        stderr(&output)
    );
    let instances = second["deploy"]["instances"].as_array().unwrap();
    let action = |instance: &str| {
        instances
            .iter()
            .find(|report| report["instance"] == instance)
            .map(|report| report["action"].as_str().unwrap_or_default().to_string())
    };
    assert_eq!(action(&api).as_deref(), Some("reverted"), "{second}");
    assert_eq!(action(&web).as_deref(), Some("failed"), "{second}");
    let log = stderr(&output);
    assert!(
        log.contains(&format!(
            "{api}: rolling the Swarm service back to {}",
            &first_digest[..19]
        )),
        "{log}"
    );
    // Both services run v1 again.
    let status = deployment.succeed(&["status", &deployment.name]);
    for instance in status["pipelines"][0]["instances"].as_array().unwrap() {
        let tasks = instance["tasks"].as_array().unwrap();
        assert_eq!(tasks.len(), 1, "{instance}");
        assert_eq!(tasks[0]["state"], "running", "{instance}");
        assert_eq!(tasks[0]["digest"], first_digest.as_str(), "{instance}");
    }
}

/// A Swarm service behind gantry's proxy: the manager's proxy, on a fixed port of the
/// node (a container's `-p`, host mode), joins the service's overlay network and
/// routes to its tasks by name. Requests to that port, at the node's address, while
/// Swarm replaces the three tasks start-first: none fails, and the new version comes.
#[test]
fn a_proxied_swarm_service_is_redeployed_start_first_without_a_failed_request_on_the_proxy_port() {
    const PORT: u16 = 18590;
    let deployment = swarm_deployment("swarm-proxy");
    deployment.config.append(
        "gantry.yaml",
        &format!("proxy:\n  image: \"{}\"\n", crate::proxy::proxy_image()),
    );
    let manager = swarm_manager();
    let _proxy = crate::proxy::ProxyCleanup::new(&[manager.as_str()]);
    let instance = deployment.instance("web");
    let network = deployment.instance("net");
    let _cleanup = SwarmCleanup {
        services: vec![instance.clone()],
        containers: Vec::new(),
        network: network.clone(),
    };
    deployment.pipeline(&format!(
        "  services:\n    web:\n      network: {network}\n      \
         proxy: {{ port: {PORT}, container_port: 8080 }}\n      stop_timeout: 2s\n      \
         health:\n        exec: [\"test\", \"-f\", \"/www/healthy\"]\n        interval: 200ms\n        \
         timeout: 3s\n      swarm:\n        replicas: 3\n        \
         update: {{ parallelism: 1, order: start-first, failure_action: rollback, monitor: 2s }}\n      \
         instances:\n        {instance}: {{ host: swarm }}\n"
    ));
    commit_version(&deployment, "v1", true);
    let first = deployment.succeed(&["run", &deployment.name]);
    let first_digest = deployed_digest(&first);

    let address =
        std::env::var("GANTRY_TEST_SWARM_1_ADDRESS").unwrap_or_else(|_| "10.77.21.2".to_string());
    let url = format!("http://{address}:{PORT}/");
    crate::proxy::wait_for_body(&url, "v1");

    // Half the requests on one connection, half each on a new one, 50 a second each.
    let kept = crate::proxy::Load::start(&url, true, 50, 3000);
    let fresh = crate::proxy::Load::start(&url, false, 50, 3000);
    commit_version(&deployment, "v2", true);
    let (output, second) = deployment.gantry_json(&["run", &deployment.name]);
    assert!(output.status.success(), "{second}\n{}", stderr(&output));
    let second_digest = deployed_digest(&second);
    assert_ne!(second_digest, first_digest);
    crate::proxy::wait_for_body(&url, "v2");
    // A moment of v2 in both loops, then they stop.
    std::thread::sleep(Duration::from_secs(1));
    for seen in [kept.finish(), fresh.finish()] {
        assert!(seen.failed().is_empty(), "{:?}", seen.failed());
        let bodies = seen.bodies();
        assert!(bodies.len() >= 50, "{} answers", bodies.len());
        assert_eq!(bodies.first().copied(), Some("v1"), "{bodies:?}");
        // While Swarm replaces the tasks one at a time, old and new both answer.
        assert_eq!(bodies.last().copied(), Some("v2"), "{bodies:?}");
    }
    assert_tasks_run(&settled_status(&deployment), &second_digest, false);
}
