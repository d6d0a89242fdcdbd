//! Outages while gantry works: the state database locked by another process for longer
//! than a forge waits for an answer, its filesystem turned read-only under the daemon,
//! the registry down during a push, an engine stopped between the pull and the swap.

use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::common::*;

/// How long forges wait for a webhook's answer (GitHub: 10 s).
const FORGE_WAIT: Duration = Duration::from_secs(10);

/// Sends push number `index` (a made-up commit id) as a signed GitHub delivery.
fn push_numbered(daemon: &Daemon, pipeline: &str, prefix: &str, index: usize) -> (u16, String) {
    let (headers, body) = forge_push(
        "github",
        &format!("{:040x}", index + 1),
        &format!("{prefix}-{index}"),
        SECRET,
    );
    daemon.post(pipeline, &headers, &body)
}

#[test]
fn a_store_locked_by_another_process_answers_deliveries_503_before_a_forge_gives_up() {
    let deployment = webhook_deployment("locked", "");
    let config = &deployment.config;
    // Pinned, so a queued run ends at once (held) without building.
    let pinned = config.gantry(&["pin", &deployment.name, "--reason", "test"]);
    assert!(pinned.status.success(), "{}", stderr(&pinned));
    let daemon = Daemon::start(config);
    let name = &deployment.name;
    let push = |index: usize| push_numbered(&daemon, name, "locked", index);
    assert_eq!(push(0).0, 202, "{}", daemon.log());

    // Another process takes the write lock and keeps it for longer than forges wait.
    let lock = WriteLock::take(&config.state_database());

    // Three deliveries at once: each is refused with 503 (forges retry that) before a
    // forge would give up, however many wait in line behind one another.
    let started = Instant::now();
    let answers: Vec<(u16, String, Duration)> = std::thread::scope(|scope| {
        let handles: Vec<_> = (1..=3)
            .map(|index| {
                scope.spawn(move || {
                    let (status, answer) = push(index);
                    (status, answer, started.elapsed())
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|handle| handle.join().unwrap())
            .collect()
    });
    for (status, answer, took) in &answers {
        assert_eq!(*status, 503, "{answer}\n{}", daemon.log());
        assert!(answer.contains("locked"), "{answer}");
        assert!(*took < FORGE_WAIT, "answered after {took:?}: {answer}");
    }
    let (status, health) = daemon.get("/healthz");
    assert_eq!(status, 503, "{health}");
    assert!(health.contains("locked"), "{health}");

    // The lock goes: the forge's retry of each delivery is taken, and health is back.
    lock.release();
    for index in 1..=3 {
        let (status, answer) = push(index);
        assert_eq!(status, 202, "{answer}\n{}", daemon.log());
    }
    eventually(
        "healthz is ok again",
        Duration::from_secs(10),
        || match daemon.get("/healthz") {
            (200, _) => Ok(()),
            other => Err(format!("{other:?}")),
        },
    );
}

#[test]
fn sigterm_while_the_store_is_locked_stops_in_time_and_leaves_the_run_to_the_next_start() {
    let deployment = webhook_deployment("termlocked", "");
    // A short build: once it is done, the run waits to record it, behind the lock.
    deployment.repo.write("Dockerfile", &slow_dockerfile(2));
    let commit = deployment.repo.commit("a build that ends under the lock");
    let mut daemon = Daemon::start(&deployment.config);
    crate::serve::push(&daemon, &deployment, &commit);
    wait_building(&deployment, &daemon);

    let lock = WriteLock::take(&deployment.config.state_database());
    std::thread::sleep(Duration::from_secs(3));
    let started = Instant::now();
    let status = daemon.terminate();
    let took = started.elapsed();
    let log = daemon.log();
    assert!(status.success(), "{status:?}\n{log}");
    // The grace (30 s) and intake's wait for the lock (4 s), well within systemd's
    // TimeoutStopSec=45 in dist/gantry.service.
    assert!(
        took < Duration::from_secs(40),
        "stopping took {took:?}\n{log}"
    );
    assert!(!log.contains("panicked"), "{log}");
    assert!(log.contains("run abandoned at shutdown"), "{log}");
    assert!(log.contains("the next start recovers them"), "{log}");
    lock.release();

    // The run is still `running` in the store; the next start records it interrupted
    // and queues its commit again.
    let runs = eventually_runs_after_restart(&deployment);
    assert_eq!(runs[0]["state"], "interrupted", "{runs:?}");
    assert_eq!(runs[1]["trigger"], "retry", "{runs:?}");
}

#[test]
fn sigterm_lets_the_running_run_finish_and_starts_no_other() {
    let mut deployment = webhook_deployment("nostart", "");
    // One run at a time: the second pipeline's run waits for the first's permit.
    let names = slow_pipelines(&mut deployment, 2, 3, 1);
    let states = || -> Vec<String> {
        let (_, all) = deployment.gantry_json(&["runs"]);
        names
            .iter()
            .map(|name| {
                all.as_array()
                    .unwrap()
                    .iter()
                    .find(|run| run["pipeline"] == name.as_str())
                    .map_or("none".to_string(), |run| {
                        run["state"].as_str().unwrap().to_string()
                    })
            })
            .collect()
    };
    let mut daemon = Daemon::start(&deployment.config);
    eventually("one run goes", Duration::from_secs(30), || {
        let states = states();
        if states.iter().any(|state| state == "running") {
            Ok(())
        } else {
            Err(format!("{states:?}"))
        }
    });
    let status = daemon.terminate();
    assert!(status.success(), "{status:?}\n{}", daemon.log());
    let mut ended = states();
    ended.sort();
    // The one that went finished in the grace; the other never started and waits.
    assert_eq!(ended, ["queued", "succeeded"], "{}", daemon.log());
}

/// Starts the daemon again and waits until it has recovered run #1; the runs, oldest first.
fn eventually_runs_after_restart(deployment: &Deployment) -> Vec<serde_json::Value> {
    let daemon = Daemon::start(&deployment.config);
    eventually("the run is recovered", Duration::from_secs(20), || {
        let (_, runs) = deployment.config.gantry_json(&["runs", &deployment.name]);
        let mut runs = runs.as_array().cloned().unwrap_or_default();
        runs.reverse();
        match runs.first() {
            Some(first) if first["state"] == "interrupted" && runs.len() == 2 => Ok(runs),
            _ => Err(format!("{runs:?}\n{}", daemon.log())),
        }
    })
}

/// SQLite's write lock, taken by another process's connection (`BEGIN EXCLUSIVE`) and
/// held until `release` (or 60 s).
struct WriteLock {
    release: mpsc::Sender<()>,
    holder: std::thread::JoinHandle<()>,
}

impl WriteLock {
    fn take(database: &std::path::Path) -> WriteLock {
        let (locked, release) = (mpsc::channel(), mpsc::channel::<()>());
        let database = database.to_path_buf();
        let holder = std::thread::spawn({
            let (locked, release) = (locked.0, release.1);
            move || {
                with_database(&database, async |pool| {
                    let mut connection = pool.acquire().await.unwrap();
                    sqlx::query("BEGIN EXCLUSIVE")
                        .execute(&mut *connection)
                        .await
                        .unwrap();
                    locked.send(()).unwrap();
                    let _ = tokio::task::spawn_blocking(move || {
                        release.recv_timeout(Duration::from_secs(60))
                    })
                    .await;
                    sqlx::query("ROLLBACK")
                        .execute(&mut *connection)
                        .await
                        .unwrap();
                })
            }
        });
        locked.1.recv_timeout(Duration::from_secs(10)).unwrap();
        WriteLock {
            release: release.0,
            holder,
        }
    }

    fn release(self) {
        self.release.send(()).unwrap();
        self.holder.join().unwrap();
    }
}

/// A registry of the test's own on a free loopback port, stopped and started at will
/// (its data stays in a directory of its own).
struct OwnRegistry {
    dir: tempfile::TempDir,
    port: u16,
    process: Option<std::process::Child>,
}

impl OwnRegistry {
    fn start() -> OwnRegistry {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        std::fs::write(
            dir.path().join("config.yml"),
            format!(
                "version: 0.1\nlog: {{ level: error }}\nstorage:\n  filesystem: {{ rootdirectory: {} }}\n\
                 http: {{ addr: \"127.0.0.1:{port}\", secret: outage-test }}\n",
                dir.path().join("data").display()
            ),
        )
        .unwrap();
        let mut registry = OwnRegistry {
            dir,
            port,
            process: None,
        };
        registry.resume();
        registry
    }

    fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    fn resume(&mut self) {
        let mut process = std::process::Command::new("docker-registry")
            .arg("serve")
            .arg(self.dir.path().join("config.yml"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        wait_for_port(self.port, &mut process);
        self.process = Some(process);
    }

    fn stop(&mut self) {
        if let Some(mut process) = self.process.take() {
            let _ = process.kill();
            let _ = process.wait();
        }
    }
}

impl Drop for OwnRegistry {
    fn drop(&mut self) {
        self.stop();
    }
}

#[test]
fn a_registry_down_during_the_push_is_tried_again_then_fails_the_run_with_nothing_deployed() {
    let mut registry = OwnRegistry::start();
    let deployment = Deployment::new("reg-down", &[]);
    let name = &deployment.name;
    let repository = format!("{}/gantry-it/{name}", registry.address());
    let _images = RemoveImages(vec![repository.clone()]);
    let web = deployment.instance("web");
    deployment.config.write(
        &format!("pipelines/{name}.yaml"),
        &format!(
            "source: {{ repo: \"{}\", branch: main }}\nimage: {{ repository: \"{repository}\" }}\ndeploy:\n{}",
            deployment.repo.url(),
            one_instance(&web)
        ),
    );
    deployment.succeed(&["run", name, "--json"]);
    let serves = || fetch("127.0.0.1", published_port(LOCAL_DOCKER, &web));
    assert_eq!(serves().as_deref(), Some("v1\n"));

    // Down through every attempt: the run fails at push, and v1 keeps running.
    registry.stop();
    deployment.repo.write("www/index.html", "v2\n");
    deployment.repo.commit("v2");
    let started = Instant::now();
    let (output, report) = deployment.gantry_json(&["run", name, "--json"]);
    assert_eq!(output.status.code(), Some(1), "{report}");
    let failure = &report["build"]["failure"];
    assert_eq!(failure["stage"], "push", "{report}");
    let message = failure["message"].as_str().unwrap();
    assert!(message.contains("(after 3 attempts)"), "{message}");
    assert!(message.contains(&registry.address()), "{message}");
    assert!(
        started.elapsed() >= Duration::from_secs(6),
        "no waits between attempts"
    );
    assert!(report["deploy"].is_null(), "{report}");
    assert_eq!(serves().as_deref(), Some("v1\n"), "something was deployed");

    // Back before the last attempt: the push goes through and the run deploys.
    deployment.repo.write("www/index.html", "v3\n");
    deployment.repo.commit("v3");
    let mut run = deployment
        .config
        .command(&["run", name])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let progress = std::io::BufReader::new(run.stderr.take().unwrap());
    let mut lines = std::io::BufRead::lines(progress);
    let mut seen = Vec::new();
    for line in lines.by_ref() {
        let line = line.unwrap();
        seen.push(line.clone());
        if line.contains("trying again in 2s (attempt 2 of 3)") {
            break;
        }
    }
    assert!(
        seen.last()
            .is_some_and(|line| line.contains("trying again")),
        "{seen:#?}"
    );
    registry.resume();
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    let status = run.wait().unwrap();
    assert!(status.success(), "{seen:#?}\n{rest:#?}");
    assert_eq!(serves().as_deref(), Some("v3\n"));
}

/// Extra engine 4, which this file alone stops: brought up (by `scripts/test-env.sh`,
/// which leaves the others as they are) when made, and again when dropped.
struct StoppableEngine;

impl StoppableEngine {
    const INDEX: usize = 4;

    fn up() -> StoppableEngine {
        Self::start();
        StoppableEngine
    }

    fn start() {
        let root = env!("CARGO_MANIFEST_DIR");
        run(std::process::Command::new("bash")
            .arg(format!("{root}/scripts/test-env.sh"))
            .args(["hosts", &Self::INDEX.to_string()])
            .stdout(std::process::Stdio::null()));
    }

    /// Stops the engine's daemon (its containers stop with it), as an operator or a
    /// crash of the host would.
    fn stop(&self) {
        let pid = std::fs::read_to_string(format!("/run/gantry-h{}.pid", Self::INDEX)).unwrap();
        run(std::process::Command::new("kill").arg(pid.trim()));
        eventually(
            "the engine stops",
            Duration::from_secs(30),
            || match docker(&host_docker(Self::INDEX)).arg("version").output() {
                Ok(output) if output.status.success() => Err("still answers".to_string()),
                _ => Ok(()),
            },
        );
    }
}

impl Drop for StoppableEngine {
    fn drop(&mut self) {
        StoppableEngine::start();
    }
}

#[test]
fn an_engine_stopped_between_pull_and_swap_ends_the_deploy_and_returns_what_was_swapped() {
    let engine = StoppableEngine::up();
    let deployment = Deployment::new("engine-down", &[1, StoppableEngine::INDEX]);
    let name = &deployment.name;
    let (first, second) = (deployment.instance("a"), deployment.instance("b"));
    deployment.pipeline(&format!(
        "  services:\n    web:\n      ports: [\"8080\"]\n      stop_timeout: 1s\n      \
         health: {{ http: {{ port: 8080, path: /healthz }}, interval: 100ms }}\n      \
         instances:\n        {first}: {{ host: h1 }}\n        {second}: {{ host: h{} }}\n  \
         tasks:\n    wait: {{ service: web, command: [\"sleep\", \"4\"], when: before, host: h1 }}\n",
        StoppableEngine::INDEX
    ));
    deployment.succeed(&["run", name, "--json"]);
    let serves = |instance: &str, index: usize| {
        fetch(
            &host_address(index),
            published_port(&host_docker(index), instance),
        )
    };
    assert_eq!(serves(&first, 1).as_deref(), Some("v1\n"));
    let first_v1 = container_id(&host_docker(1), &first);

    // v2: every host pulls it; while the release task runs, engine 4 stops.
    deployment.repo.write("www/index.html", "v2\n");
    deployment.repo.commit("v2");
    let mut run = deployment
        .config
        .command(&["run", name])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufRead::lines(std::io::BufReader::new(run.stderr.take().unwrap()));
    let mut seen = Vec::new();
    for line in lines.by_ref() {
        let line = line.unwrap();
        seen.push(line.clone());
        if line.contains("task wait: running in") {
            break;
        }
    }
    assert!(
        seen.iter().any(|line| line.contains("pulling")),
        "{seen:#?}"
    );
    engine.stop();
    seen.extend(lines.map_while(Result::ok));
    let status = run.wait().unwrap();
    let log = seen.join("\n");
    assert_eq!(status.code(), Some(1), "{log}");
    assert!(
        log.contains(&format!("h{}", StoppableEngine::INDEX)),
        "{log}"
    );
    // The instance swapped before the failure is back on v1, in its own container, and
    // nothing is left renamed aside.
    assert_eq!(serves(&first, 1).as_deref(), Some("v1\n"), "{log}");
    assert_eq!(container_id(&host_docker(1), &first), first_v1);
    let leftovers = docker(&host_docker(1))
        .args(["ps", "-aq", "--filter", &format!("name={first}.previous")])
        .output()
        .unwrap();
    assert!(
        stdout(&leftovers).trim().is_empty(),
        "a .previous container is left"
    );
    let runs = deployment.succeed(&["runs", name, "--json"]);
    assert_eq!(runs[0]["state"], "failed", "{runs}");
    assert_eq!(runs[0]["failed_stage"], "deploy", "{runs}");

    // The engine comes back: its container with it, and the next deploy rolls v2 out.
    drop(engine);
    let _engine = StoppableEngine;
    eventually(
        "the instance on the engine is back",
        Duration::from_secs(30),
        || match serves(&second, StoppableEngine::INDEX) {
            Some(body) if body == "v1\n" => Ok(()),
            other => Err(format!("{other:?}")),
        },
    );
    deployment.succeed(&["deploy", name, "--json"]);
    assert_eq!(serves(&first, 1).as_deref(), Some("v2\n"));
    assert_eq!(
        serves(&second, StoppableEngine::INDEX).as_deref(),
        Some("v2\n")
    );
}

/// A small ext4 filesystem on a loop device, mounted `errors=remount-ro`, which the test
/// can make fail: ext4 then turns it read-only under the open files, as it does on a
/// disk error. Unmounted and detached when dropped.
struct FailingDisk {
    dir: tempfile::TempDir,
    device: String,
}

impl FailingDisk {
    fn mount() -> FailingDisk {
        let dir = tempfile::tempdir().unwrap();
        let image = dir.path().join("disk.img");
        std::fs::File::create(&image)
            .unwrap()
            .set_len(48 * 1024 * 1024)
            .unwrap();
        run(std::process::Command::new("mkfs.ext4")
            .arg("-q")
            .arg(&image));
        let device = run(std::process::Command::new("losetup")
            .args(["--find", "--show"])
            .arg(&image))
        .trim()
        .to_string();
        let disk = FailingDisk { dir, device };
        std::fs::create_dir(disk.path()).unwrap();
        run(std::process::Command::new("mount")
            .args(["-o", "errors=remount-ro", &disk.device])
            .arg(disk.path()));
        disk
    }

    fn path(&self) -> std::path::PathBuf {
        self.dir.path().join("mounted")
    }

    /// An ext4 error on the filesystem: from now on every write to it fails (EROFS).
    fn fail(&self) {
        let name = self.device.trim_start_matches("/dev/");
        std::fs::write(format!("/sys/fs/ext4/{name}/trigger_fs_error"), "1").unwrap();
    }
}

impl Drop for FailingDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(self.path())
            .status();
        let _ = std::process::Command::new("losetup")
            .args(["-d", &self.device])
            .status();
    }
}

#[test]
fn a_state_directory_turned_read_only_is_answered_503_and_loses_no_delivery_it_took() {
    let disk = FailingDisk::mount();
    let deployment = webhook_deployment("readonly", "");
    let config = &deployment.config;
    let state = disk.path().join("state");
    config.append("gantry.yaml", &format!("state: {}\n", state.display()));
    // Pinned, so a queued run ends at once (held) without building.
    let pinned = config.gantry(&["pin", &deployment.name, "--reason", "test"]);
    assert!(pinned.status.success(), "{}", stderr(&pinned));
    let mut daemon = Daemon::start(config);
    let name = &deployment.name;
    let push = |index: usize| push_numbered(&daemon, name, "readonly", index);
    let mut accepted = Vec::new();
    for index in 0..3 {
        let (status, answer) = push(index);
        assert_eq!(status, 202, "{answer}");
        accepted.push(
            serde_json::from_str::<serde_json::Value>(&answer).unwrap()["run_id"]
                .as_i64()
                .unwrap(),
        );
    }

    disk.fail();
    for index in 3..6 {
        let started = Instant::now();
        let (status, answer) = push(index);
        assert_eq!(status, 503, "{answer}\n{}", daemon.log());
        assert!(
            answer.contains("read-only") || answer.contains("failed a write"),
            "{answer}"
        );
        assert!(started.elapsed() < FORGE_WAIT, "{answer}");
    }
    let (status, health) = daemon.get("/healthz");
    assert_eq!(status, 503, "{health}");
    assert!(health.contains("store_unwritable"), "{health}");
    // The daemon stays up and stops cleanly.
    assert!(daemon.terminate().success(), "{}", daemon.log());

    // Every delivery answered 202 is in the database (read from a copy: the
    // filesystem takes no more writes, not even SQLite's lock files).
    let copy = tempfile::tempdir().unwrap();
    for file in ["state.db", "state.db-wal"] {
        if state.join(file).exists() {
            std::fs::copy(state.join(file), copy.path().join(file)).unwrap();
        }
    }
    let stored: Vec<i64> = with_database(&copy.path().join("state.db"), async |pool| {
        sqlx::query_scalar("SELECT id FROM runs")
            .fetch_all(pool)
            .await
            .unwrap()
    });
    for run in accepted {
        assert!(
            stored.contains(&run),
            "run {run} was answered 202 but is not stored: {stored:?}"
        );
    }
}
