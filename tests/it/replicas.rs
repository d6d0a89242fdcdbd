//! Several `gantry serve` replicas sharing one PostgreSQL state (the test database of
//! `scripts/test-env.sh`, a schema of its own per test): deliveries answered by any
//! replica, each run executed by one, a replica killed with SIGKILL taken over, and
//! polling done by one replica at a time.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use crate::common::*;

/// The replica id a daemon logged when it joined.
fn replica_id(daemon: &Daemon) -> String {
    let log = strip_colors(&daemon.log());
    let line = log
        .lines()
        .find(|line| line.contains("state store open"))
        .unwrap_or_else(|| panic!("no replica line in\n{log}"));
    let start = line.find("replica=").unwrap() + "replica=".len();
    let value = line[start..].split_whitespace().next().unwrap();
    value.trim_matches('"').to_string()
}

/// The run numbers a daemon's log says it started.
fn started_runs(daemon: &Daemon) -> Vec<i64> {
    strip_colors(&daemon.log())
        .lines()
        .filter(|line| line.contains("run started"))
        .filter_map(|line| {
            let start = line.find(" run=")? + " run=".len();
            line[start..].split_whitespace().next()?.parse().ok()
        })
        .collect()
}

/// Whether the daemon's log last said it leads the polling.
fn leads(daemon: &Daemon) -> bool {
    strip_colors(&daemon.log())
        .lines()
        .rfind(|line| line.contains("polling lease changed hands"))
        .is_some_and(|line| line.contains("leads=true"))
}

fn strip_colors(text: &str) -> String {
    let mut plain = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(character) = chars.next() {
        if character == '\u{1b}' {
            for next in chars.by_ref() {
                if next.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            plain.push(character);
        }
    }
    plain
}

#[test]
fn two_replicas_share_the_queue_and_a_killed_one_is_taken_over() {
    let schema = Schema::new();
    let deployment = webhook_deployment("replicas", "");
    let config = &deployment.config;
    config.append(
        "gantry.yaml",
        &format!(
            "state: \"{}\"\nserver:\n  keep_runs: 100000\n  public_read: true\n",
            schema.url()
        ),
    );
    const PUSHES: usize = 200;
    let name = deployment.name.clone();
    let mut daemons = [Daemon::start(config), Daemon::start(config)];
    let ids = [replica_id(&daemons[0]), replica_id(&daemons[1])];
    assert_ne!(ids[0], ids[1]);

    // Each build takes 2 s (every push changes the step, so none is cached), so that
    // a run can be killed in the middle of its build.
    let token = unique("build");
    let dockerfile = |push: usize| {
        let step = format!("RUN sleep 2 && echo {token} {push}");
        slow_dockerfile(2).replace("RUN sleep 2", &step)
    };
    deployment.repo.write("Dockerfile", &dockerfile(PUSHES));
    // A delivery sent to both replicas is one run: the second answer is the first's.
    let commit = deployment.repo.commit("first push");
    let (headers, body) = forge_push("github", &commit, &unique("twice"), SECRET);
    let answer_one = daemons[0].post(&name, &headers, &body);
    let answer_two = daemons[1].post(&name, &headers, &body);
    assert_eq!(answer_one.0, 202, "{answer_one:?}");
    assert_eq!(answer_one, answer_two);

    // Deliveries spread over both replicas; halfway, the replica running a run is
    // killed in the middle of it, and the rest go to the other.
    let started = Instant::now();
    let mut answered: Vec<(String, i64)> = Vec::new();
    let mut killed: Option<(usize, i64)> = None;
    for index in 0..PUSHES {
        assert!(started.elapsed() < Duration::from_secs(240), "too slow");
        deployment
            .repo
            .write("www/index.html", &format!("push {index}\n"));
        deployment.repo.write("Dockerfile", &dockerfile(index));
        let commit = deployment.repo.commit(&format!("push {index}"));
        let (headers, body) = forge_push("github", &commit, &unique("spread"), SECRET);
        let to = match killed {
            Some((dead, _)) => 1 - dead,
            None => index % 2,
        };
        let answer = daemons[to].post(&name, &headers, &body);
        assert_eq!(answer.0, 202, "{answer:?}\n{}", daemons[to].log());
        let run = serde_json::from_str::<serde_json::Value>(&answer.1).unwrap()["run_id"]
            .as_i64()
            .unwrap();
        answered.push((commit, run));
        if index == PUSHES / 2 {
            let running = eventually("a run building", Duration::from_secs(60), || {
                runs(&deployment)
                    .into_iter()
                    .find(|run| {
                        let stages = run["stages"].as_array().unwrap();
                        // Building: the context is packed, the build not finished.
                        run["state"] == "running"
                            && stages
                                .last()
                                .is_some_and(|stage| stage["name"] == "context")
                    })
                    .ok_or_else(|| "none yet".to_string())
            });
            // Both replicas answer the same history meanwhile.
            let listed = |daemon: &Daemon| {
                let (status, text) = daemon.get(&format!("/api/v1/runs?pipeline={name}&limit=5"));
                assert_eq!(status, 200, "{text}");
                let runs: serde_json::Value = serde_json::from_str(&text).unwrap();
                runs["runs"]
                    .as_array()
                    .unwrap_or_else(|| panic!("{runs}"))
                    .iter()
                    .map(|run| run["id"].as_i64().unwrap())
                    .collect::<Vec<_>>()
            };
            assert_eq!(listed(&daemons[0]), listed(&daemons[1]));
            let holder = running["replica"].as_str().unwrap_or_default();
            let dead = ids
                .iter()
                .position(|id| id == holder)
                .unwrap_or_else(|| panic!("{running}"));
            daemons[dead].kill();
            killed = Some((dead, running["id"].as_i64().unwrap()));
        }
    }
    let (dead, killed_run) = killed.unwrap();
    let survivor = &daemons[1 - dead];

    // The survivor recovers the killed replica's run once its row expires, and
    // finishes the queue.
    let runs = wait_idle(&deployment, survivor, answered.len());
    let by_id: BTreeMap<i64, &serde_json::Value> = runs
        .iter()
        .map(|run| (run["id"].as_i64().unwrap(), run))
        .collect();
    for (commit, run) in &answered {
        let stored = by_id
            .get(run)
            .unwrap_or_else(|| panic!("the 202 for {commit} named run {run}, not stored"));
        assert!(
            !["queued", "running"].contains(&stored["state"].as_str().unwrap()),
            "{stored}"
        );
    }
    assert_eq!(
        by_id[&killed_run]["state"], "interrupted",
        "{}",
        by_id[&killed_run]
    );

    // Each run was executed by one replica only: the runs the two logs started are
    // distinct, and they are the runs that have stages.
    let (by_first, by_second) = (started_runs(&daemons[0]), started_runs(&daemons[1]));
    let mut executed: BTreeMap<i64, usize> = BTreeMap::new();
    for number in by_first.iter().chain(&by_second) {
        *executed.entry(*number).or_default() += 1;
    }
    let twice: Vec<_> = executed.iter().filter(|(_, count)| **count > 1).collect();
    assert!(twice.is_empty(), "runs executed twice: {twice:?}");
    let with_stages: BTreeSet<i64> = runs
        .iter()
        .filter(|run| !run["stages"].as_array().unwrap().is_empty())
        .map(|run| run["number"].as_i64().unwrap())
        .collect();
    let executed: BTreeSet<i64> = executed.into_keys().collect();
    assert!(
        with_stages.is_subset(&executed),
        "runs with stages {with_stages:?}, started {executed:?}"
    );

    let newest = &answered.last().unwrap().0;
    assert_eq!(&deployed_commit(&deployment), newest, "{}", survivor.log());
    eprintln!(
        "replicas: {} deliveries, {} runs, {} executed ({} by the first replica, {} by the second; replica {} killed), in {:.0?}",
        answered.len() + 1,
        runs.len(),
        executed.len(),
        by_first.len(),
        by_second.len(),
        dead + 1,
        started.elapsed()
    );
}

/// A deployment on a fresh schema with two replicas; `extra_source` joins the
/// pipeline's source keys, and each build takes 2 s.
fn two_replicas(
    prefix: &str,
    extra_source: &str,
) -> (Schema, Deployment, [Daemon; 2], [String; 2]) {
    let schema = Schema::new();
    let deployment = webhook_deployment(prefix, extra_source);
    deployment.config.append(
        "gantry.yaml",
        &format!(
            "state: \"{}\"\nserver:\n  public_read: true\n",
            schema.url()
        ),
    );
    let daemons = [
        Daemon::start(&deployment.config),
        Daemon::start(&deployment.config),
    ];
    let ids = [replica_id(&daemons[0]), replica_id(&daemons[1])];
    (schema, deployment, daemons, ids)
}

#[test]
fn the_run_of_a_killed_replica_is_queued_again_by_another_and_deployed() {
    let (_schema, deployment, mut daemons, ids) = two_replicas("takeover", "");
    // A step of its own, never in the engine's build cache: the build takes its 6 s.
    let step = format!("RUN sleep 6 && echo {}", unique("takeover"));
    deployment.repo.write(
        "Dockerfile",
        &slow_dockerfile(6).replace("RUN sleep 6", &step),
    );
    let commit = deployment.repo.commit("slow build");
    let (headers, body) = forge_push("github", &commit, &unique("takeover"), SECRET);
    let answer = daemons[0].post(&deployment.name, &headers, &body);
    assert_eq!(answer.0, 202, "{answer:?}");
    let running = eventually("the run builds", Duration::from_secs(60), || {
        runs(&deployment)
            .into_iter()
            .find(|run| run["state"] == "running" && run["stages"].as_array().unwrap().len() == 2)
            .ok_or_else(|| "not yet".to_string())
    });
    let holder = running["replica"].as_str().unwrap();
    let dead = ids.iter().position(|id| id == holder).unwrap();
    // The other replica follows the log its peer writes (for 1 s of the 6 s build).
    let url = daemons[1 - dead].url(&format!("/api/v1/runs/{}/log", running["id"]));
    let (_, followed) = curl(&["-N", "-m", "1", "-H", "Accept: text/event-stream", &url]);
    assert!(
        followed.contains("event: line") && followed.contains("RUN sleep"),
        "{followed}"
    );
    let killed_at = Instant::now();
    daemons[dead].kill();
    let survivor = &daemons[1 - dead];
    // Within the replica's lease (10 s) and a renewal, its run is interrupted and the
    // commit queued again, then built and deployed by the survivor.
    let runs = wait_idle(&deployment, survivor, 2);
    let interrupted = runs.iter().find(|run| run["id"] == running["id"]).unwrap();
    assert_eq!(interrupted["state"], "interrupted", "{interrupted}");
    let retry = runs
        .iter()
        .find(|run| run["trigger"] == "retry")
        .unwrap_or_else(|| panic!("not queued again: {runs:#?}"));
    assert_eq!(retry["state"], "succeeded", "{retry}\n{}", survivor.log());
    assert_eq!(retry["requested"].as_str(), Some(commit.as_str()));
    assert_eq!(retry["replica"].as_str(), Some(ids[1 - dead].as_str()));
    assert_eq!(deployed_commit(&deployment), commit);
    eprintln!(
        "takeover: the killed replica's run deployed by the other {:.1?} after the kill",
        killed_at.elapsed()
    );
}

#[test]
fn one_replica_polls_at_a_time_and_another_takes_over_when_it_dies() {
    let (_schema, deployment, mut daemons, ids) = two_replicas("pollers", "  poll: 1s\n");
    let leader = |daemons: &[Daemon; 2]| {
        eventually(
            "a replica leads the polling",
            Duration::from_secs(20),
            || {
                let leading: Vec<usize> = (0..2).filter(|index| leads(&daemons[*index])).collect();
                match leading.as_slice() {
                    [one] => Ok(*one),
                    other => Err(format!(
                        "leading: {other:?}\n{}",
                        daemons
                            .iter()
                            .map(|daemon| strip_colors(&daemon.log())
                                .lines()
                                .filter(|line| line.contains("lease") || line.contains("replica"))
                                .collect::<Vec<_>>()
                                .join("\n"))
                            .collect::<Vec<_>>()
                            .join("\n---\n")
                    )),
                }
            },
        )
    };
    let first = leader(&daemons);
    let commit = deployment.repo.commit("polled");
    let runs_of = |commit: &str| {
        runs(&deployment)
            .into_iter()
            .filter(|run| run["requested"].as_str() == Some(commit))
            .collect::<Vec<_>>()
    };
    eventually(
        "the poll queues the commit",
        Duration::from_secs(30),
        || match runs_of(&commit).as_slice() {
            [] => Err("not yet".to_string()),
            [_] => Ok(()),
            more => panic!("queued by more than one replica: {more:#?}"),
        },
    );
    wait_idle(&deployment, &daemons[1 - first], 1);
    // Two more seconds of polling by both: still one run for the commit.
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(runs_of(&commit).len(), 1);

    daemons[first].kill();
    let killed_at = Instant::now();
    let next = deployment.repo.commit("polled after the kill");
    eventually(
        "the other replica polls",
        Duration::from_secs(30),
        || match runs_of(&next).as_slice() {
            [] => Err("not yet".to_string()),
            _ => Ok(()),
        },
    );
    let took_over = killed_at.elapsed();
    // (The killed replica's log ends saying it led: only the survivor's tells now.)
    assert!(
        leads(&daemons[1 - first]),
        "{}: {}",
        ids[1 - first],
        daemons[1 - first].log()
    );
    wait_idle(&deployment, &daemons[1 - first], 2);
    assert_eq!(deployed_commit(&deployment), next);
    eprintln!("polling: taken over {took_over:.1?} after the leader was killed");
}
