//! Deploys: the real binary rolling images out to the main engine and to the extra
//! engines `scripts/test-env.sh` runs in their own network namespaces.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use crate::common::*;

fn timestamp(value: &serde_json::Value) -> SystemTime {
    humantime::parse_rfc3339_weak(value.as_str().unwrap()).unwrap()
}

pub(crate) fn instances_by_name(report: &serde_json::Value) -> Vec<(String, String)> {
    report["deploy"]["instances"]
        .as_array()
        .or_else(|| report["instances"].as_array())
        .unwrap()
        .iter()
        .map(|instance| {
            (
                instance["instance"].as_str().unwrap().to_string(),
                instance["action"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

#[test]
fn deploy_across_three_hosts_follows_requires_and_skips_unchanged_instances_unless_forced() {
    let deployment = Deployment::new("three", &[1, 2, 3]);
    let (db, web) = ("db", "web");
    let mut instances = Vec::new();
    let mut deploy = String::from("  batch: 2\n  services:\n");
    for (service, requires, check) in [
        (
            web,
            "[db]",
            "http: { port: 8080, path: /healthz, status: 200, body: \"ok\" }",
        ),
        (db, "[]", "tcp: { port: 8080 }"),
    ] {
        deploy.push_str(&format!(
            "    {service}:\n      requires: {requires}\n      ports: [\"8080\"]\n      env: {{ ROLE: {service} }}\n      stop_timeout: 1s\n      \
             health:\n        {check}\n        timeout: 20s\n        interval: 200ms\n      instances:\n"
        ));
        for host in 1..=3 {
            let instance = deployment.instance(&format!("{service}-{host}"));
            deploy.push_str(&format!("        {instance}: {{ host: h{host} }}\n"));
            instances.push((service, host, instance));
        }
    }
    deployment.pipeline(&deploy);

    let report = deployment.succeed(&["run", &deployment.name]);
    let digest = report["build"]["digest"].as_str().unwrap().to_string();
    let deployed = instances_by_name(&report);
    assert_eq!(deployed.len(), 6, "{report}");
    assert!(
        deployed.iter().all(|(_, action)| action == "updated"),
        "{report}"
    );
    // The report lists db's instances before web's, and the engines agree:
    // every db container started before any web container.
    assert!(
        deployed[..3].iter().all(|(name, _)| name.contains("-db-")),
        "{report}"
    );
    let started = |service: &str| -> Vec<SystemTime> {
        instances
            .iter()
            .filter(|(of, _, _)| *of == service)
            .map(|(_, host, name)| {
                timestamp(&inspect(&host_docker(*host), name)["State"]["StartedAt"])
            })
            .collect()
    };
    let last_db = started(db).into_iter().max().unwrap();
    let first_web = started(web).into_iter().min().unwrap();
    assert!(
        last_db < first_web,
        "db started last at {last_db:?}, web first at {first_web:?}"
    );
    // Each container carries its labels, and serves from its host's address.
    for (service, host, name) in &instances {
        let container = inspect(&host_docker(*host), name);
        let labels = &container["Config"]["Labels"];
        assert_eq!(labels["gantry.pipeline"], deployment.name.as_str());
        assert_eq!(labels["gantry.service"], *service);
        assert_eq!(labels["gantry.instance"], name.as_str());
        assert_eq!(labels["gantry.digest"], digest.as_str());
        assert_eq!(labels["gantry.commit"], deployment.head().as_str());
        assert!(
            labels["gantry.spec"]
                .as_str()
                .is_some_and(|hash| hash.len() == 16)
        );
        let port = published_port(&host_docker(*host), name);
        assert_eq!(fetch(&host_address(*host), port).as_deref(), Some("v1\n"));
    }

    let (_, status) = deployment.gantry_json(&["status", &deployment.name]);
    let listed = status["pipelines"][0]["instances"].as_array().unwrap();
    assert_eq!(listed.len(), 6, "{status}");
    let tag = format!("{}:{}", deployment.repository, &deployment.head()[..7]);
    for instance in listed {
        assert_eq!(instance["digest"], digest.as_str(), "{instance}");
        assert_eq!(instance["tags"], serde_json::json!([tag]), "{instance}");
        assert_eq!(instance["commit"], deployment.head().as_str(), "{instance}");
        assert_eq!(instance["state"], "running", "{instance}");
        assert_eq!(instance["drift"], serde_json::json!([]), "{instance}");
    }

    // Nothing changed: no container is touched.
    let ids: Vec<String> = instances
        .iter()
        .map(|(_, host, name)| container_id(&host_docker(*host), name))
        .collect();
    let again = deployment.succeed(&["deploy", &deployment.name]);
    assert!(
        instances_by_name(&again)
            .iter()
            .all(|(_, action)| action == "unchanged"),
        "{again}"
    );
    let same: Vec<String> = instances
        .iter()
        .map(|(_, host, name)| container_id(&host_docker(*host), name))
        .collect();
    assert_eq!(ids, same);

    // --force replaces every one, and leaves no old container behind.
    let forced = deployment.succeed(&["deploy", &deployment.name, "--force"]);
    assert!(
        instances_by_name(&forced)
            .iter()
            .all(|(_, action)| action == "updated"),
        "{forced}"
    );
    for ((_, host, name), old) in instances.iter().zip(&ids) {
        assert_ne!(&container_id(&host_docker(*host), name), old);
        let leftovers = run(docker(&host_docker(*host)).args([
            "ps",
            "-aq",
            "--filter",
            &format!("name={name}.previous"),
        ]));
        assert_eq!(leftovers.trim(), "", "{name}.previous was left on h{host}");
    }
}

/// The answer of the service's newest healthy container, found the way a proxy
/// that follows Docker (Traefik, for one) finds it: by label and health, newest first.
fn ask_service(pipeline: &str) -> Result<String, String> {
    let listed = run(docker(LOCAL_DOCKER).args([
        "ps",
        "--filter",
        &format!("label=gantry.pipeline={pipeline}"),
        "--filter",
        "health=healthy",
        "--format",
        "{{.Ports}}",
    ]));
    let ports = listed.lines().next().ok_or("no healthy container")?;
    // `0.0.0.0:49153->8080/tcp, :::49153->8080/tcp`
    let port = ports
        .split("->")
        .next()
        .and_then(|binding| binding.rsplit(':').next())
        .and_then(|port| port.parse::<u16>().ok())
        .ok_or_else(|| format!("no published port in `{ports}`"))?;
    fetch("127.0.0.1", port).ok_or_else(|| format!("request to port {port} failed"))
}

#[test]
fn deploy_without_a_fixed_host_port_starts_the_new_container_first_and_drops_no_request() {
    let deployment = Deployment::new("startfirst", &[]);
    let instance = deployment.instance("web-1");
    // The image's own HEALTHCHECK lets the engine (and so a proxy) tell when a container is ready.
    let dockerfile = "FROM gantry-test/busybox:latest\nCOPY www /www\nEXPOSE 8080\n\
         HEALTHCHECK --interval=200ms --timeout=2s --retries=1 \
         CMD [\"wget\", \"-q\", \"-O\", \"/dev/null\", \"http://127.0.0.1:8080/healthz\"]\n\
         CMD [\"httpd\", \"-f\", \"-p\", \"8080\", \"-h\", \"/www\"]\n";
    deployment.repo.write("Dockerfile", dockerfile);
    deployment.repo.commit("healthcheck");
    deployment.pipeline(&format!(
        "  services:\n    web:\n      ports: [\"8080\"]\n      \
         stop_timeout: 1s\n      health:\n        docker: true\n        timeout: 20s\n        interval: 100ms\n      \
         instances:\n        {instance}: {{}}\n"
    ));
    deployment.succeed(&["run", &deployment.name]);
    assert_eq!(ask_service(&deployment.name).as_deref(), Ok("v1\n"));
    deployment.repo.write("www/index.html", "v2\n");
    deployment.repo.commit("v2");

    // A bounded loop of requests runs while v2 rolls out, then once more forced.
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let prober = {
        let done = done.clone();
        let pipeline = deployment.name.clone();
        std::thread::spawn(move || {
            let mut answers = Vec::new();
            let started = Instant::now();
            while !done.load(std::sync::atomic::Ordering::SeqCst)
                && started.elapsed() < Duration::from_secs(120)
            {
                answers.push(ask_service(&pipeline));
                std::thread::sleep(Duration::from_millis(20));
            }
            answers
        })
    };
    // Fixed windows of requests on both sides of the rollouts, not a wait for anything:
    // the loop must be answered by v1 before, and drop nothing as the old container goes.
    std::thread::sleep(Duration::from_millis(300));
    deployment.succeed(&["run", &deployment.name]);
    deployment.succeed(&["deploy", &deployment.name, "--force"]);
    std::thread::sleep(Duration::from_millis(300));
    done.store(true, std::sync::atomic::Ordering::SeqCst);
    let answers = prober.join().unwrap();
    let failed: Vec<&String> = answers
        .iter()
        .filter_map(|answer| answer.as_ref().err())
        .collect();
    assert!(
        answers.len() > 20,
        "only {} requests were made",
        answers.len()
    );
    assert!(
        failed.is_empty(),
        "{} of {} requests failed: {failed:?}",
        failed.len(),
        answers.len()
    );
    assert_eq!(answers.first(), Some(&Ok("v1\n".to_string())));
    assert_eq!(answers.last(), Some(&Ok("v2\n".to_string())));
}

#[test]
fn deploy_of_an_image_that_fails_its_check_keeps_the_old_version_and_reverts_updated_instances() {
    let deployment = Deployment::new("failing", &[1, 2]);
    let (first, second) = (deployment.instance("web-1"), deployment.instance("web-2"));
    deployment.pipeline(&format!(
        "  batch: 1\n  services:\n    web:\n      ports: [\"8080\"]\n      stop_timeout: 1s\n      \
         health:\n        http: {{ port: 8080, path: /healthz }}\n        timeout: 3s\n        interval: 200ms\n      \
         instances:\n        {first}: {{ host: h1 }}\n        {second}: {{ host: h2, env: {{ BREAK: \"yes\" }} }}\n"
    ));
    let report = deployment.succeed(&["run", &deployment.name]);
    let old_digest = report["build"]["digest"].as_str().unwrap().to_string();
    let old_ids = [
        container_id(&host_docker(1), &first),
        container_id(&host_docker(2), &second),
    ];

    // v2 breaks its health endpoint where BREAK is set: the first instance
    // passes, the second fails.
    deployment.repo.write("www/index.html", "v2\n");
    deployment.repo.write(
        "Dockerfile",
        "FROM gantry-test/busybox:latest\nCOPY www /www\nEXPOSE 8080\n\
         CMD [\"sh\", \"-c\", \"if [ -n \\\"$BREAK\\\" ]; then rm /www/healthz; echo healthz removed: broken on purpose; fi; exec httpd -f -p 8080 -h /www\"]\n",
    );
    deployment.repo.commit("v2 breaks where BREAK is set");
    let output = deployment.gantry(&["run", &deployment.name]);
    let errors = stderr(&output);
    assert_eq!(output.status.code(), Some(1), "{errors}");
    assert!(
        errors.contains(&format!("http GET {}:", host_address(2))) && errors.contains("/healthz"),
        "the failure names the check: {errors}"
    );
    assert!(errors.contains("HTTP 404, expected 200"), "{errors}");
    assert!(
        errors.contains("broken on purpose"),
        "the new container's log is shown: {errors}"
    );
    assert!(
        errors.contains(&format!("returned to their previous image: {first}")),
        "{errors}"
    );
    // The run's record says so too: its deploy stage failed, with the reason.
    let run = &runs(&deployment)[0];
    let deploy_stage = run["stages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|stage| stage["name"] == "deploy")
        .unwrap_or_else(|| panic!("{run}"));
    assert_eq!(deploy_stage["state"], "failed", "{run}");
    assert_eq!(deploy_stage["message"], run["message"], "{run}");
    assert!(
        run["message"].as_str().unwrap().contains("HTTP 404"),
        "{run}"
    );
    assert_eq!(run["failed_stage"], "deploy", "{run}");
    // Both instances are their old containers again, serving v1.
    for (host, name, old_id) in [(1, &first, &old_ids[0]), (2, &second, &old_ids[1])] {
        assert_eq!(&container_id(&host_docker(host), name), old_id, "{name}");
        let port = published_port(&host_docker(host), name);
        assert_eq!(
            fetch(&host_address(host), port).as_deref(),
            Some("v1\n"),
            "{name}"
        );
    }
    let (_, status) = deployment.gantry_json(&["status", &deployment.name, "--logs", "2"]);
    for instance in status["pipelines"][0]["instances"].as_array().unwrap() {
        assert_eq!(instance["digest"], old_digest.as_str(), "{instance}");
        assert_eq!(instance["drift"], serde_json::json!([]), "{instance}");
        assert!(instance["logs"].is_array(), "{instance}");
    }

    // With `on_failure: halt` the updated instance stays updated.
    deployment.pipeline(&format!(
        "  batch: 1\n  on_failure: halt\n  services:\n    web:\n      ports: [\"8080\"]\n      stop_timeout: 1s\n      \
         health:\n        http: {{ port: 8080, path: /healthz }}\n        timeout: 3s\n        interval: 200ms\n      \
         instances:\n        {first}: {{ host: h1 }}\n        {second}: {{ host: h2, env: {{ BREAK: \"yes\" }} }}\n"
    ));
    let (output, report) = deployment.gantry_json(&["deploy", &deployment.name]);
    assert_eq!(output.status.code(), Some(1), "{report}");
    assert_eq!(
        instances_by_name(&report),
        vec![
            (first.clone(), "updated".to_string()),
            (second.clone(), "failed".to_string())
        ]
    );
    let port = published_port(&host_docker(1), &first);
    assert_eq!(fetch(&host_address(1), port).as_deref(), Some("v2\n"));
    assert_eq!(&container_id(&host_docker(2), &second), &old_ids[1]);
}

#[test]
fn deploy_stops_before_touching_anything_when_a_host_is_down() {
    let deployment = Deployment::new("hostdown", &[1]);
    let (up, down) = (deployment.instance("web-1"), deployment.instance("web-2"));
    let services = |instances: &str| {
        format!(
            "  services:\n    web:\n      ports: [\"8080\"]\n      health:\n        tcp: {{ port: 8080 }}\n      \
             instances:\n{instances}"
        )
    };
    deployment.pipeline(&services(&format!("        {up}: {{ host: h1 }}\n")));
    deployment.succeed(&["run", &deployment.name]);
    let before = container_id(&host_docker(1), &up);

    // A host nothing answers on joins the pipeline.
    deployment.config.append(
        "gantry.yaml",
        &format!(
            "  down: {{ docker: \"tcp://127.0.0.1:{}\", timeout: 1s }}\n",
            free_port()
        ),
    );
    deployment.pipeline(&services(&format!(
        "        {up}: {{ host: h1 }}\n        {down}: {{ host: down }}\n"
    )));
    let started = Instant::now();
    let output = deployment.gantry(&["deploy", &deployment.name, "--force"]);
    let errors = stderr(&output);
    assert_eq!(output.status.code(), Some(1), "{errors}");
    assert!(errors.contains("failed at pull"), "{errors}");
    assert!(errors.contains("host `down`"), "{errors}");
    assert!(errors.contains("no container was touched"), "{errors}");
    assert!(started.elapsed() < Duration::from_secs(30));
    assert_eq!(container_id(&host_docker(1), &up), before);

    // Status reports the host by name and still shows the others.
    let (_, status) = deployment.gantry_json(&["status", &deployment.name]);
    let listed = status["pipelines"][0]["instances"].as_array().unwrap();
    let unreachable = listed
        .iter()
        .find(|instance| instance["host"] == "down")
        .unwrap();
    assert_eq!(unreachable["state"], "unreachable", "{status}");
    assert!(
        unreachable["error"].as_str().unwrap().contains("`down`"),
        "{status}"
    );
    let reachable = listed
        .iter()
        .find(|instance| instance["host"] == "h1")
        .unwrap();
    assert_eq!(reachable["state"], "running", "{status}");
}

#[test]
fn rollback_returns_to_the_previous_digest_and_pins_until_unpinned() {
    let deployment = Deployment::new("rollback", &[]);
    let instance = deployment.instance("web-1");
    deployment.pipeline(&format!(
        "  services:\n    web:\n      ports: [\"8080\"]\n      stop_timeout: 1s\n      health:\n        http: {{ port: 8080, path: /healthz }}\n      \
         instances:\n        {instance}: {{}}\n"
    ));
    let first = deployment.succeed(&["run", &deployment.name]);
    let first_digest = first["build"]["digest"].as_str().unwrap().to_string();
    let first_commit = deployment.head();
    deployment.repo.write("www/index.html", "v2\n");
    deployment.repo.commit("v2");
    let second = deployment.succeed(&["run", &deployment.name]);
    let second_digest = second["build"]["digest"].as_str().unwrap().to_string();
    assert_ne!(first_digest, second_digest);

    let rolled = deployment.succeed(&["rollback", &deployment.name]);
    assert_eq!(rolled["image"]["digest"], first_digest.as_str(), "{rolled}");
    assert!(
        rolled["pinned"]["reason"]
            .as_str()
            .unwrap()
            .contains("rolled back to deployment #1")
    );
    let (_, status) = deployment.gantry_json(&["status", &deployment.name]);
    let pipeline = &status["pipelines"][0];
    assert_eq!(
        pipeline["instances"][0]["digest"],
        first_digest.as_str(),
        "{status}"
    );
    assert_eq!(
        pipeline["instances"][0]["commit"],
        first_commit.as_str(),
        "{status}"
    );
    assert!(pipeline["pinned"]["reason"].is_string(), "{status}");
    let port = published_port(LOCAL_DOCKER, &instance);
    assert_eq!(fetch("127.0.0.1", port).as_deref(), Some("v1\n"));

    // Pinned: a deploy is refused unless forced.
    let output = deployment.gantry(&["deploy", &deployment.name]);
    let errors = stderr(&output);
    assert_eq!(output.status.code(), Some(1), "{errors}");
    assert!(
        errors.contains("is pinned: rolled back to deployment #1"),
        "{errors}"
    );
    assert!(
        errors.contains(&format!("gantry unpin {}", deployment.name)),
        "{errors}"
    );
    assert_eq!(
        deployment.gantry_json(&["status", &deployment.name]).1["pipelines"][0]["instances"][0]["digest"],
        first_digest.as_str()
    );

    let unpinned = deployment.succeed(&["unpin", &deployment.name]);
    assert_eq!(unpinned["was_pinned"], true);
    let redeployed = deployment.succeed(&["deploy", &deployment.name]);
    assert_eq!(
        redeployed["image"]["digest"],
        second_digest.as_str(),
        "{redeployed}"
    );
    assert!(redeployed["pinned"].is_null(), "{redeployed}");
    let port = published_port(LOCAL_DOCKER, &instance);
    assert_eq!(fetch("127.0.0.1", port).as_deref(), Some("v2\n"));

    // --to names an earlier deployment by number; a name that matches nothing is explained.
    let back = deployment.succeed(&["rollback", &deployment.name, "--to", "#1"]);
    assert_eq!(back["image"]["digest"], first_digest.as_str(), "{back}");
    let output = deployment.gantry(&["rollback", &deployment.name, "--to", "999"]);
    assert_eq!(output.status.code(), Some(1));
    assert!(
        stderr(&output).contains("no successful deployment"),
        "{}",
        stderr(&output)
    );
}

/// Starts `gantry deploy` in the background, with stderr captured.
fn spawn_deploy(deployment: &Deployment, extra: &[&str]) -> Child {
    Command::new(env!("CARGO_BIN_EXE_gantry"))
        .arg("--config")
        .arg(deployment.config.path())
        .args(["deploy", &deployment.name])
        .args(extra)
        .env("DOCKER_CONFIG", deployment.config.docker_config.path())
        .env_remove("DOCKER_HOST")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Waits until `gantry status` shows process `holder` deploying, then checks that
/// another deploy is refused naming it; returns that refusal.
fn wait_until_held_by(deployment: &Deployment, holder: u32) -> String {
    let pid = format!("pid {holder} ");
    eventually("the lease is seen held", Duration::from_secs(30), || {
        let (_, status) = deployment.gantry_json(&["status", &deployment.name]);
        let owner = status["pipelines"][0]["deploying"]["owner"]
            .as_str()
            .unwrap_or("");
        if owner.contains(&pid) {
            Ok(())
        } else {
            Err(status.to_string())
        }
    });
    let output = deployment.gantry(&["deploy", &deployment.name, "--force"]);
    let errors = stderr(&output);
    assert_eq!(output.status.code(), Some(1), "{errors}");
    assert!(errors.contains("another deploy of"), "{errors}");
    assert!(errors.contains(&pid), "{errors}");
    errors
}

#[test]
fn deploy_lease_makes_a_second_deploy_wait_or_refuse_and_expires_after_a_kill() {
    let deployment = Deployment::new("lease", &[]);
    let instance = deployment.instance("web-1");
    // The container takes two seconds to become ready, so a deploy holds its lease that long.
    deployment.pipeline(&format!(
        "  services:\n    web:\n      command: [\"sh\", \"-c\", \"sleep 2; touch /tmp/ready; exec httpd -f -p 8080 -h /www\"]\n      stop_timeout: 1s\n      \
         health:\n        exec: [\"test\", \"-f\", \"/tmp/ready\"]\n        timeout: 30s\n        interval: 100ms\n      \
         instances:\n        {instance}: {{}}\n"
    ));
    deployment.succeed(&["build", &deployment.name]);

    let first = spawn_deploy(&deployment, &["--force"]);
    let refusal = wait_until_held_by(&deployment, first.id());
    assert!(refusal.contains("--wait"), "{refusal}");
    // With --wait the second deploy goes ahead once the first is done.
    let waited = deployment.gantry(&["deploy", &deployment.name, "--force", "--wait"]);
    assert!(waited.status.success(), "{}", stderr(&waited));
    assert!(
        stderr(&waited).contains("waiting for another deploy"),
        "{}",
        stderr(&waited)
    );
    let first = first.wait_with_output().unwrap();
    assert!(first.status.success(), "{}", stderr(&first));

    // A deploy killed with SIGKILL keeps its lease only until it expires.
    let mut killed = spawn_deploy(&deployment, &["--force"]);
    let killed_pid = killed.id();
    wait_until_held_by(&deployment, killed_pid);
    killed.kill().unwrap();
    killed.wait().unwrap();
    let refused = deployment.gantry(&["deploy", &deployment.name]);
    assert!(
        stderr(&refused).contains(&format!("pid {killed_pid} ")),
        "the dead holder is named: {}",
        stderr(&refused)
    );
    let started = Instant::now();
    let taken_over = deployment.gantry(&["deploy", &deployment.name, "--force", "--wait"]);
    assert!(taken_over.status.success(), "{}", stderr(&taken_over));
    assert!(started.elapsed() < Duration::from_secs(40));
    // The kill left the instance's old container aside; the next deploy cleaned up.
    let (_, status) = deployment.gantry_json(&["status", &deployment.name]);
    assert_eq!(
        status["pipelines"][0]["instances"][0]["state"], "running",
        "{status}"
    );
    let leftovers = run(docker(LOCAL_DOCKER).args([
        "ps",
        "-aq",
        "--filter",
        &format!("name={instance}.previous"),
    ]));
    assert_eq!(leftovers.trim(), "");
}

#[test]
fn restart_stops_dependents_first_and_starts_them_last() {
    let deployment = Deployment::new("restart", &[]);
    let (db, web) = (deployment.instance("db-1"), deployment.instance("web-1"));
    deployment.pipeline(&format!(
        "  services:\n    web:\n      requires: [db]\n      ports: [\"8080\"]\n      stop_timeout: 1s\n      \
         health:\n        tcp: {{ port: 8080 }}\n      instances:\n        {web}: {{}}\n    \
         db:\n      stop_timeout: 1s\n      instances:\n        {db}: {{}}\n"
    ));
    deployment.succeed(&["run", &deployment.name]);

    let report = deployment.succeed(&["restart", &deployment.name]);
    let steps: Vec<(String, String)> = report["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|step| {
            (
                step["action"].as_str().unwrap().to_string(),
                step["instance"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(
        steps,
        vec![
            ("stop".to_string(), web.clone()),
            ("stop".to_string(), db.clone()),
            ("start".to_string(), db.clone()),
            ("start".to_string(), web.clone()),
        ]
    );
    // The engines' own clocks agree: web stopped before db, and started after it.
    let (web_state, db_state) = (
        inspect(LOCAL_DOCKER, &web)["State"].clone(),
        inspect(LOCAL_DOCKER, &db)["State"].clone(),
    );
    assert!(timestamp(&web_state["FinishedAt"]) <= timestamp(&db_state["FinishedAt"]));
    assert!(timestamp(&web_state["StartedAt"]) >= timestamp(&db_state["StartedAt"]));

    // stop, then status shows the drift; start brings them back; --only narrows it.
    deployment.succeed(&["stop", &deployment.name]);
    let (_, status) = deployment.gantry_json(&["status", &deployment.name]);
    for instance in status["pipelines"][0]["instances"].as_array().unwrap() {
        assert_eq!(instance["state"], "exited", "{status}");
        assert_eq!(
            instance["drift"],
            serde_json::json!(["container exited"]),
            "{status}"
        );
    }
    let started = deployment.succeed(&["start", &deployment.name, "--only", "db"]);
    assert_eq!(started["steps"].as_array().unwrap().len(), 1, "{started}");
    assert_eq!(inspect(LOCAL_DOCKER, &db)["State"]["Running"], true);
    assert_eq!(inspect(LOCAL_DOCKER, &web)["State"]["Running"], false);
    deployment.succeed(&["start", &deployment.name]);
    assert_eq!(inspect(LOCAL_DOCKER, &web)["State"]["Running"], true);

    let output = deployment.gantry(&["restart", &deployment.name, "--only", "[bad"]);
    assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
}

#[test]
fn deploy_fails_fast_when_the_new_container_exits() {
    let deployment = Deployment::new("exits", &[]);
    let instance = deployment.instance("web-1");
    deployment.pipeline(&format!(
        "  services:\n    web:\n      command: [\"sh\", \"-c\", \"echo cannot start: missing config; exit 3\"]\n      \
         restart: \"no\"\n      health:\n        exec: [\"true\"]\n        timeout: 60s\n      \
         instances:\n        {instance}: {{}}\n"
    ));
    let started = Instant::now();
    let output = deployment.gantry(&["run", &deployment.name]);
    let errors = stderr(&output);
    assert_eq!(output.status.code(), Some(1), "{errors}");
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "took {:?}",
        started.elapsed()
    );
    assert!(
        errors.contains("the container exited with code 3"),
        "{errors}"
    );
    assert!(errors.contains("cannot start: missing config"), "{errors}");
    // Nothing ran before, so nothing is left: the failed container is removed.
    let left =
        run(docker(LOCAL_DOCKER).args(["ps", "-aq", "--filter", &format!("name={instance}")]));
    assert_eq!(left.trim(), "");
}

#[test]
fn deploy_with_a_fixed_host_port_stops_the_old_container_first_and_restores_it_on_failure() {
    let deployment = Deployment::new("fixedport", &[]);
    let instance = deployment.instance("web-1");
    let port = free_port();
    deployment.pipeline(&format!(
        "  services:\n    web:\n      ports: [\"127.0.0.1:{port}:8080\"]\n      stop_timeout: 1s\n      \
         health:\n        http: {{ port: 8080, path: /healthz }}\n        timeout: 3s\n        interval: 100ms\n      \
         instances:\n        {instance}: {{}}\n"
    ));
    deployment.succeed(&["run", &deployment.name]);
    assert_eq!(fetch("127.0.0.1", port).as_deref(), Some("v1\n"));

    deployment.repo.write("www/index.html", "v2\n");
    deployment.repo.commit("v2");
    let report = deployment.succeed(&["run", &deployment.name]);
    let lines = stderr(&deployment.gantry(&["deploy", &deployment.name, "--force"]));
    assert!(
        lines.contains("stopping the old container (it holds a fixed host port)"),
        "{lines}"
    );
    assert_eq!(
        instances_by_name(&report),
        vec![(instance.clone(), "updated".to_string())]
    );
    assert_eq!(fetch("127.0.0.1", port).as_deref(), Some("v2\n"));
    let serving = container_id(LOCAL_DOCKER, &instance);

    // v3 cannot pass its check: the old container comes back on the same port.
    deployment.repo.git(&["rm", "-q", "www/healthz"]);
    deployment.repo.write("www/index.html", "v3\n");
    deployment.repo.commit("v3 without a health endpoint");
    let output = deployment.gantry(&["run", &deployment.name]);
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    assert!(
        stderr(&output).contains("HTTP 404, expected 200"),
        "{}",
        stderr(&output)
    );
    assert_eq!(container_id(LOCAL_DOCKER, &instance), serving);
    assert_eq!(fetch("127.0.0.1", port).as_deref(), Some("v2\n"));
}
