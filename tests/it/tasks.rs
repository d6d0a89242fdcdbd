//! Release tasks (`deploy.tasks`): one-off containers of the new image that run
//! before any instance is swapped or after every instance is healthy, and by hand
//! with `gantry task`; none is ever left behind.

use crate::common::*;

/// The newest run's stored log, line by line.
fn last_run_log(deployment: &Deployment) -> Vec<String> {
    let number = runs(deployment)[0]["number"].as_i64().unwrap();
    let output = deployment.gantry(&["logs", &format!("{}#{number}", deployment.name)]);
    assert!(output.status.success(), "{}", stderr(&output));
    stdout(&output).lines().map(str::to_string).collect()
}

/// Task containers of the pipeline on an engine, running or not.
fn task_containers(engine: &str, pipeline: &str) -> String {
    run(docker(engine).args([
        "ps",
        "-a",
        "--filter",
        &format!("label=gantry.pipeline={pipeline}"),
        "--filter",
        "label=gantry.task",
        "--format",
        "{{.Names}}",
    ]))
}

fn assert_no_task_container(deployment: &Deployment, engines: &[&str]) {
    for engine in engines {
        assert_eq!(
            task_containers(engine, &deployment.name).trim(),
            "",
            "a task container was left on {engine}"
        );
    }
}

fn is_running(container: &str) -> bool {
    inspect(LOCAL_DOCKER, container)["State"]["Running"] == true
}

/// The position of the first line that contains `text`.
fn line_of(lines: &[String], text: &str) -> usize {
    lines
        .iter()
        .position(|line| line.contains(text))
        .unwrap_or_else(|| panic!("no line with `{text}` in:\n{}", lines.join("\n")))
}

#[test]
fn a_failing_before_task_stops_the_deploy_before_any_swap_with_its_output_in_the_run_log() {
    let deployment = Deployment::new("taskfail", &[]);
    let instance = deployment.instance("web-1");
    let with_task = |command: &str| {
        deployment.pipeline(&format!(
            "{}  tasks:\n    migrate: {{ service: web, command: [\"sh\", \"-c\", \"{command}\"] }}\n",
            one_instance(&instance)
        ));
    };
    with_task("echo migrating to $(cat /www/index.html)");
    deployment.succeed(&["run", &deployment.name]);
    let log = last_run_log(&deployment);
    assert!(
        line_of(&log, "task migrate: migrating to v1")
            < line_of(&log, &format!("{instance} on local: starting")),
        "the task ran before the swap: {log:?}"
    );
    let old_id = container_id(LOCAL_DOCKER, &instance);

    deployment.repo.write("www/index.html", "v2\n");
    deployment.repo.commit("v2");
    with_task(
        "echo applying 0042_orders to $(cat /www/index.html); echo migration failed: relation orders exists >&2; exit 3",
    );
    let output = deployment.gantry(&["run", &deployment.name]);
    let errors = stderr(&output);
    assert_eq!(output.status.code(), Some(1), "{errors}");
    assert!(
        errors.contains("task `migrate` on local exited with code 3"),
        "{errors}"
    );
    assert!(errors.contains("no container was swapped"), "{errors}");
    assert!(
        errors.contains("| last 2 lines of the task's output:")
            && errors.contains("migration failed: relation orders exists"),
        "the failure shows the task's last lines: {errors}"
    );
    // Nothing was swapped: the old container serves v1 still.
    assert_eq!(container_id(LOCAL_DOCKER, &instance), old_id);
    assert!(is_running(&instance));
    let port = published_port(LOCAL_DOCKER, &instance);
    assert_eq!(fetch("127.0.0.1", port).as_deref(), Some("v1\n"));
    let log = last_run_log(&deployment);
    // The task ran the new image while the old container went on serving.
    line_of(&log, "[deploy] task migrate: applying 0042_orders to v2");
    line_of(
        &log,
        "[deploy] task migrate: migration failed: relation orders exists",
    );
    assert!(
        !log.iter()
            .any(|line| line.contains(&format!("{instance} on local: starting"))),
        "{log:?}"
    );
    let run = &runs(&deployment)[0];
    assert_eq!(run["state"], "failed", "{run}");
    assert_eq!(run["failed_stage"], "deploy", "{run}");
    assert_no_task_container(&deployment, &[LOCAL_DOCKER]);
}

#[test]
fn an_after_task_runs_once_when_every_instance_is_healthy_and_its_failure_swaps_nothing_back() {
    let deployment = Deployment::new("taskafter", &[1]);
    let (first, second) = (deployment.instance("web-1"), deployment.instance("web-2"));
    let network = deployment.instance("net");
    let marks = tempfile::tempdir().unwrap();
    // The after-task asks both instances over the service's network what they serve,
    // and marks a file in the service's volume. A before-task runs on h1, where no
    // instance lives, so the image is pulled there too.
    let pipeline = |after: &str| {
        deployment.pipeline(&format!(
            "  batch: 1\n  services:\n    web:\n      ports: [\"8080\"]\n      network: {network}\n      \
             volumes: [\"{marks}:/marks\"]\n      stop_timeout: 1s\n      \
             health:\n        http: {{ port: 8080, path: /healthz }}\n        interval: 100ms\n      \
             instances:\n        {first}: {{}}\n        {second}: {{}}\n  \
             tasks:\n    \
             smoke: {{ service: web, when: after, command: [\"sh\", \"-c\", \"{after}\"] }}\n    \
             audit: {{ service: web, host: h1, command: [\"sh\", \"-c\", \"echo audited on h1\"] }}\n",
            marks = marks.path().display()
        ));
    };
    let smoke = format!(
        "echo ran >> /marks/smoke; echo first says $(wget -q -O - http://{first}:8080/); \
         echo second says $(wget -q -O - http://{second}:8080/)"
    );
    pipeline(&smoke);
    deployment.succeed(&["run", &deployment.name]);
    let v1_ids = [
        container_id(LOCAL_DOCKER, &first),
        container_id(LOCAL_DOCKER, &second),
    ];

    deployment.repo.write("www/index.html", "v2\n");
    deployment.repo.commit("v2");
    deployment.succeed(&["run", &deployment.name]);
    let log = last_run_log(&deployment);
    let smoke_started = line_of(&log, "task smoke: running");
    assert!(line_of(&log, &format!("{first} on local: healthy")) < smoke_started);
    assert!(line_of(&log, &format!("{second} on local: healthy")) < smoke_started);
    line_of(&log, "task smoke: first says v2");
    line_of(&log, "task smoke: second says v2");
    assert!(
        line_of(&log, "task audit: audited on h1")
            < line_of(&log, &format!("{first} on local: starting"))
    );
    assert_eq!(
        log.iter()
            .filter(|line| line.contains("task smoke: running"))
            .count(),
        1,
        "{log:?}"
    );
    // Once per deploy: one mark for the v1 run, one for the v2 run.
    let marked = std::fs::read_to_string(marks.path().join("smoke")).unwrap();
    assert_eq!(marked, "ran\nran\n");

    // A failing after-task fails the run, and the new containers stay.
    pipeline("echo smoke test failed; exit 5");
    deployment.repo.write("www/index.html", "v3\n");
    deployment.repo.commit("v3");
    let output = deployment.gantry(&["run", &deployment.name]);
    let errors = stderr(&output);
    assert_eq!(output.status.code(), Some(1), "{errors}");
    assert!(
        errors.contains("task `smoke` on local exited with code 5"),
        "{errors}"
    );
    assert!(errors.contains("swaps nothing back"), "{errors}");
    assert!(errors.contains("smoke test failed"), "{errors}");
    for (name, v1_id) in [(&first, &v1_ids[0]), (&second, &v1_ids[1])] {
        assert_ne!(&container_id(LOCAL_DOCKER, name), v1_id);
        assert!(is_running(name));
        let port = published_port(LOCAL_DOCKER, name);
        assert_eq!(fetch("127.0.0.1", port).as_deref(), Some("v3\n"), "{name}");
    }
    assert_no_task_container(&deployment, &[LOCAL_DOCKER, &host_docker(1)]);
}

#[test]
fn a_task_that_outlives_its_timeout_is_killed_and_removed_before_any_swap() {
    let deployment = Deployment::new("tasktimeout", &[]);
    let instance = deployment.instance("web-1");
    deployment.pipeline(&one_instance(&instance));
    deployment.succeed(&["run", &deployment.name]);
    let old_id = container_id(LOCAL_DOCKER, &instance);

    deployment.pipeline(&format!(
        "{}  tasks:\n    migrate: {{ service: web, timeout: 1s, command: [\"sh\", \"-c\", \"echo waiting for a lock; exec sleep 600\"] }}\n",
        one_instance(&instance)
    ));
    let output = deployment.gantry(&["deploy", &deployment.name, "--force"]);
    let errors = stderr(&output);
    assert_eq!(output.status.code(), Some(1), "{errors}");
    assert!(
        errors.contains("did not finish within 1s and was killed"),
        "{errors}"
    );
    assert!(errors.contains("no container was swapped"), "{errors}");
    assert!(errors.contains("waiting for a lock"), "{errors}");
    assert_eq!(container_id(LOCAL_DOCKER, &instance), old_id);
    assert!(is_running(&instance));
    line_of(
        &last_run_log(&deployment),
        "task migrate: did not finish within 1s; killing it",
    );
    assert_no_task_container(&deployment, &[LOCAL_DOCKER]);
}

#[test]
fn gantry_task_runs_one_by_hand_against_the_deployed_image() {
    let deployment = Deployment::new("taskhand", &[]);
    let instance = deployment.instance("web-1");
    let service = one_instance(&instance).replace(
        "      ports:",
        "      env: { GREETING: hello }\n      ports:",
    );
    deployment.pipeline(&format!(
        "{service}  tasks:\n    \
         report: {{ service: web, when: after, command: [\"sh\", \"-c\", \"echo $GREETING from $(cat /www/index.html)\"] }}\n    \
         broken: {{ service: web, when: after, command: [\"sh\", \"-c\", \"echo cannot reach the database >&2; exit 4\"] }}\n"
    ));
    // Nothing is deployed yet: nothing to run it against.
    let output = deployment.gantry(&["task", &deployment.name, "report"]);
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    assert!(
        stderr(&output).contains("has no successful deployment"),
        "{}",
        stderr(&output)
    );

    // A deploy whose after-task fails leaves the new image running; `gantry task` uses it.
    let output = deployment.gantry(&["run", &deployment.name]);
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    let digest = inspect(LOCAL_DOCKER, &instance)["Config"]["Labels"]["gantry.digest"]
        .as_str()
        .unwrap()
        .to_string();
    let (output, report) = deployment.gantry_json(&["task", &deployment.name, "report"]);
    assert!(output.status.success(), "{report}\n{}", stderr(&output));
    assert!(
        stderr(&output).contains("task report: hello from v1"),
        "the task's output, with its service's env and the image's: {}",
        stderr(&output)
    );
    assert_eq!(report["outcome"], "succeeded", "{report}");
    assert_eq!(
        report["image"]["image"]["digest"],
        digest.as_str(),
        "{report}"
    );
    assert_eq!(report["image"]["source"], "running", "{report}");
    assert_eq!(report["run"]["exit_code"], 0, "{report}");
    let output = deployment.gantry(&["task", &deployment.name, "report"]);
    assert!(
        stdout(&output).starts_with(&format!(
            "task report of {} ran on local in",
            deployment.name
        )),
        "{}",
        stdout(&output)
    );

    let output = deployment.gantry(&["task", &deployment.name, "broken"]);
    let errors = stderr(&output);
    assert_eq!(output.status.code(), Some(1), "{errors}");
    assert!(errors.contains("exited with code 4"), "{errors}");
    assert!(
        errors.contains("  |   cannot reach the database"),
        "{errors}"
    );
    let (output, report) = deployment.gantry_json(&["task", &deployment.name, "broken"]);
    assert_eq!(output.status.code(), Some(1), "{report}");
    assert_eq!(report["outcome"], "failed", "{report}");
    assert_eq!(report["run"]["exit_code"], 4, "{report}");
    assert_eq!(
        report["run"]["logs"],
        serde_json::json!(["cannot reach the database"]),
        "{report}"
    );

    let output = deployment.gantry(&["task", &deployment.name, "reprot"]);
    assert_eq!(output.status.code(), Some(2));
    assert!(
        stderr(&output).contains("has no task `reprot` (did you mean `report`?)"),
        "{}",
        stderr(&output)
    );
    assert_no_task_container(&deployment, &[LOCAL_DOCKER]);
}

/// Writes the pipeline of one instance with a task `long` that runs `command`.
fn with_long_task(deployment: &Deployment, instance: &str, command: &str) {
    deployment.pipeline(&format!(
        "{}  tasks:\n    long: {{ service: web, command: [\"sh\", \"-c\", \"{command}\"] }}\n",
        one_instance(instance)
    ));
}

/// A deployed pipeline, then the same with a task `long` that prints and sleeps.
fn deployed_with_a_long_task(prefix: &str) -> (Deployment, String) {
    let deployment = Deployment::new(prefix, &[]);
    let instance = deployment.instance("web-1");
    deployment.pipeline(&one_instance(&instance));
    deployment.succeed(&["run", &deployment.name]);
    // Added after the deploy, so that only `gantry task` runs it.
    with_long_task(
        &deployment,
        &instance,
        "echo rebuilding the index; exec sleep 600",
    );
    (deployment, instance)
}

/// Starts `gantry task PIPELINE long` and waits until its container runs; its name.
fn start_long_task(deployment: &Deployment) -> (std::process::Child, String) {
    let child = deployment
        .config
        .command(&["task", &deployment.name, "long"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let container = eventually(
        "the task's container runs",
        std::time::Duration::from_secs(30),
        || {
            let names = task_containers(LOCAL_DOCKER, &deployment.name);
            let name = names.trim();
            let running = !name.is_empty() && is_running(name);
            running.then(|| name.to_string()).ok_or(names)
        },
    );
    (child, container)
}

#[test]
fn gantry_task_interrupted_with_ctrl_c_kills_and_removes_its_container() {
    let (deployment, _) = deployed_with_a_long_task("taskint");
    let (child, container) = start_long_task(&deployment);
    run(std::process::Command::new("kill").args(["-INT", &child.id().to_string()]));
    let output = child.wait_with_output().unwrap();
    let errors = stderr(&output);
    assert_eq!(output.status.code(), Some(1), "{errors}");
    assert!(errors.contains("interrupted and was killed"), "{errors}");
    assert!(errors.contains("rebuilding the index"), "{errors}");
    let left =
        run(docker(LOCAL_DOCKER).args(["ps", "-aq", "--filter", &format!("name={container}")]));
    assert_eq!(left.trim(), "", "{container} is gone");
    assert_no_task_container(&deployment, &[LOCAL_DOCKER]);
}

#[test]
fn a_task_left_by_a_killed_gantry_is_waited_for_while_it_runs_then_removed() {
    let (deployment, instance) = deployed_with_a_long_task("taskleft");
    let (mut child, container) = start_long_task(&deployment);
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(is_running(&container), "SIGKILL leaves the task running");

    // The next run neither kills the old one halfway nor runs beside it. (`--wait`:
    // the killed gantry's lease expires first.)
    let output = deployment.gantry(&["task", &deployment.name, "long", "--wait"]);
    let errors = stderr(&output);
    assert_eq!(output.status.code(), Some(1), "{errors}");
    assert!(
        errors.contains(&format!(
            "{container}, an earlier run of this task, is still running"
        )),
        "{errors}"
    );
    assert!(is_running(&container));

    // Once it has ended, it is removed before the task runs again.
    run(docker(LOCAL_DOCKER).args(["kill", &container]));
    with_long_task(&deployment, &instance, "echo done");
    let output = deployment.gantry(&["task", &deployment.name, "long"]);
    let errors = stderr(&output);
    assert!(output.status.success(), "{errors}");
    assert!(
        errors.contains(&format!("removing {container} left by an interrupted run")),
        "{errors}"
    );
    assert_no_task_container(&deployment, &[LOCAL_DOCKER]);
}
