//! The daemon: the real `gantry serve` on a loopback port, fed signed webhooks shaped
//! like each forge's own examples, building and deploying real commits.

use std::time::Duration;

use gantry::source::webhook::sign;

use crate::common::*;

fn headers(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(name, value)| (name.to_string(), value.to_string()))
        .collect()
}

#[test]
fn serve_builds_and_deploys_the_exact_commit_each_forge_pushes() {
    let deployment = webhook_deployment("forges", "");
    let daemon = Daemon::start(&deployment.config);
    let mut expected_runs = 0;
    for forge in [
        "github",
        "gitlab",
        "gitea",
        "forgejo",
        "bitbucket",
        "generic",
    ] {
        deployment
            .repo
            .write("www/index.html", &format!("pushed via {forge}\n"));
        let commit = deployment.repo.commit(&format!("a push via {forge}"));
        let delivery = unique(&format!("{forge}-delivery"));

        // A wrong signature (or token) is refused and stores nothing.
        let (bad_headers, bad_body) = forge_push(forge, &commit, &unique("bad"), "not-the-secret");
        let (status, answer) = daemon.post(&deployment.name, &bad_headers, &bad_body);
        assert_eq!(status, 401, "{forge}: {answer}");
        assert_eq!(runs(&deployment).len(), expected_runs, "{forge}");

        let (good_headers, body) = forge_push(forge, &commit, &delivery, SECRET);
        let (status, answer) = daemon.post(&deployment.name, &good_headers, &body);
        assert_eq!(status, 202, "{forge}: {answer}\n{}", daemon.log());
        let answered: serde_json::Value = serde_json::from_str(&answer).unwrap();
        assert_eq!(answered["queued"], true, "{answer}");
        assert_eq!(answered["commit"], commit.as_str(), "{answer}");
        // The same delivery again: the same answer, nothing new queued.
        let (again_status, again) = daemon.post(&deployment.name, &good_headers, &body);
        assert_eq!((again_status, &again), (202, &answer), "{forge}");
        expected_runs += 1;

        let all = wait_idle(&deployment, &daemon, expected_runs);
        assert_eq!(all.len(), expected_runs, "{forge}: {all:?}");
        let newest = &all[0];
        assert_eq!(
            newest["state"],
            "succeeded",
            "{forge}: {newest}\n{}",
            daemon.log()
        );
        assert_eq!(newest["commit"], commit.as_str(), "{forge}");
        assert_eq!(newest["number"], answered["run"], "{forge}");
        assert!(
            newest["trigger"].as_str().unwrap().starts_with(&format!(
                "webhook {}",
                if forge == "bitbucket" {
                    "bitbucket"
                } else {
                    forge
                }
            )),
            "{newest}"
        );
        assert_eq!(deployed_commit(&deployment), commit, "{forge}");
    }
    // The log of a webhook run is stored and readable.
    let output = deployment.gantry(&["logs", &format!("{}#1", deployment.name)]);
    let log = stdout(&output);
    // The Dockerfile's first step, as either builder names it.
    assert!(
        log.lines()
            .any(|line| line.starts_with("[build] ") && line.contains("FROM ")),
        "{log}"
    );
    assert!(
        log.contains("[deploy] ") && log.contains("healthy after"),
        "{log}"
    );
}

#[test]
fn serve_answers_pings_other_refs_and_bad_deliveries_without_queueing() {
    let deployment = webhook_deployment("answers", "");
    deployment
        .config
        .append("gantry.yaml", "server:\n  max_body: 64k\n");
    deployment.config.write(
        "pipelines/nosecret.yaml",
        &format!(
            "source: {{ repo: {}, branch: main }}\nimage: {{ repository: {}/x }}\n",
            deployment.repo.url(),
            deployment.repository
        ),
    );
    deployment.config.write(
        "pipelines/open.yaml",
        &format!(
            "source: {{ repo: {}, branch: main, webhook: {{ unsigned: true }} }}\nimage: {{ repository: {}/open }}\n",
            deployment.repo.url(),
            deployment.repository
        ),
    );
    let daemon = Daemon::start(&deployment.config);
    let signed = |event: &str, body: &serde_json::Value| {
        let body = serde_json::to_vec(body).unwrap();
        let headers = github_headers(event, &unique("d"), &body);
        daemon.post(&deployment.name, &headers, &body)
    };
    let check = |(status, answer): (u16, String), expected: u16, says: &str| {
        assert_eq!(status, expected, "{answer}");
        assert!(answer.contains(says), "{answer} does not say {says}");
    };
    let commit = deployment.head();
    check(
        signed("ping", &serde_json::json!({ "zen": "hi" })),
        200,
        "pong",
    );
    check(
        signed(
            "push",
            &serde_json::json!({ "ref": "refs/heads/other", "after": commit }),
        ),
        202,
        "a push to refs/heads/other",
    );
    check(
        signed(
            "push",
            &serde_json::json!({ "ref": "refs/tags/v1", "after": commit }),
        ),
        202,
        "a tag push",
    );
    check(
        signed(
            "push",
            &serde_json::json!({ "ref": "refs/heads/main", "after": "0000000000000000000000000000000000000000", "deleted": true }),
        ),
        202,
        "was deleted",
    );
    check(signed("issues", &serde_json::json!({})), 202, "not a push");
    let malformed = b"{\"ref\": ";
    check(
        daemon.post(
            &deployment.name,
            &headers(&[
                ("X-GitHub-Event", "push"),
                ("X-Hub-Signature-256", &sign(SECRET.as_bytes(), malformed)),
            ]),
            malformed,
        ),
        400,
        "malformed",
    );
    check(
        daemon.post(
            &deployment.name,
            &headers(&[("X-GitHub-Event", "push")]),
            b"{}",
        ),
        401,
        "carries no signature",
    );
    let oversized = vec![b' '; 100 * 1024];
    let (status, _) = daemon.post(
        &deployment.name,
        &headers(&[
            ("X-GitHub-Event", "push"),
            ("X-Hub-Signature-256", &sign(SECRET.as_bytes(), &oversized)),
        ]),
        &oversized,
    );
    assert_eq!(status, 413);
    check(
        daemon.post("no-such-pipeline", &[], b"{}"),
        404,
        "no pipeline",
    );
    check(
        daemon.post("nosecret", &headers(&[("X-GitHub-Event", "push")]), b"{}"),
        403,
        "takes no webhooks",
    );
    // A pipeline that opted out of signatures takes an unsigned delivery.
    check(
        daemon.post(
            "open",
            &headers(&[("X-Gantry-Event", "push")]),
            format!(r#"{{"ref": "refs/heads/elsewhere", "after": "{commit}"}}"#).as_bytes(),
        ),
        202,
        "a push to refs/heads/elsewhere",
    );
    check(
        daemon.post(
            "open",
            &[],
            format!(r#"{{"ref": "refs/heads/main", "after": "{commit}"}}"#).as_bytes(),
        ),
        400,
        "no forge's webhook headers",
    );
    assert_eq!(runs(&deployment), Vec::<serde_json::Value>::new());
}

#[test]
fn serve_coalesces_ten_quick_pushes_and_deploys_the_last() {
    let deployment = webhook_deployment("coalesce", "");
    let daemon = Daemon::start(&deployment.config);
    let mut last = String::new();
    for push in 1..=10 {
        deployment
            .repo
            .write("www/index.html", &format!("push {push}\n"));
        last = deployment.repo.commit(&format!("push {push}"));
        let (headers, body) = forge_push("generic", &last, &unique("push"), SECRET);
        let (status, answer) = daemon.post(&deployment.name, &headers, &body);
        assert_eq!(status, 202, "{answer}");
    }
    let all = wait_idle(&deployment, &daemon, 10);
    assert_eq!(all.len(), 10, "every push is a recorded run: {all:?}");
    let worked: Vec<&serde_json::Value> = all
        .iter()
        .filter(|run| run["state"] != "coalesced")
        .collect();
    assert!(
        worked.len() <= 3,
        "{} runs did work: {worked:?}",
        worked.len()
    );
    assert!(
        worked.iter().all(|run| run["state"] == "succeeded"),
        "{worked:?}"
    );
    assert_eq!(all[0]["commit"], last.as_str());
    assert_eq!(deployed_commit(&deployment), last);
    assert_eq!(fetch_instance(&deployment).as_deref(), Some("push 10\n"));
}

fn fetch_instance(deployment: &Deployment) -> Option<String> {
    let port = published_port(LOCAL_DOCKER, &deployment.instance("web-1"));
    fetch("127.0.0.1", port)
}

#[test]
fn serve_polls_a_repository_and_builds_a_new_commit() {
    let deployment = webhook_deployment("poll", "  poll: 1s\n");
    let daemon = Daemon::start(&deployment.config);
    // The head at start is built once (nothing ran before).
    let first = deployment.head();
    let runs_now = wait_idle(&deployment, &daemon, 1);
    assert_eq!(runs_now[0]["commit"], first.as_str(), "{runs_now:?}");
    assert_eq!(runs_now[0]["trigger"], "poll");
    deployment.repo.write("www/index.html", "polled\n");
    let second = deployment.repo.commit("polled");
    let runs_now = wait_idle(&deployment, &daemon, 2);
    assert_eq!(runs_now[0]["commit"], second.as_str(), "{runs_now:?}");
    assert_eq!(runs_now[0]["state"], "succeeded", "{runs_now:?}");
    assert_eq!(deployed_commit(&deployment), second);
    // An unchanged head queues nothing more: a fixed wait, as nothing is to happen.
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(runs(&deployment).len(), 2);

    // A pipeline removed from the config is no longer polled.
    std::fs::remove_file(
        deployment
            .config
            .path()
            .join(format!("pipelines/{}.yaml", deployment.name)),
    )
    .unwrap();
    eventually("the pipeline is unloaded", Duration::from_secs(20), || {
        let (status, health) = daemon.get("/healthz");
        let parsed: serde_json::Value = serde_json::from_str(&health).unwrap_or_default();
        let loaded = parsed["pipelines"]
            .as_array()
            .map(|names| names.iter().any(|name| name == deployment.name.as_str()));
        match (status, loaded) {
            (200, Some(false)) => Ok(()),
            _ => Err(format!("HTTP {status} {health}\n{}", daemon.log())),
        }
    });
    deployment.repo.commit("after the pipeline was removed");
    // A fixed wait: three polls' time in which no run may be queued.
    std::thread::sleep(Duration::from_secs(3));
    let (_, all) = deployment.gantry_json(&["runs", "--limit", "100"]);
    let ours = all
        .as_array()
        .unwrap()
        .iter()
        .filter(|run| run["pipeline"] == deployment.name.as_str())
        .count();
    assert_eq!(ours, 2);
}

#[test]
fn serve_keeps_the_last_good_config_through_an_invalid_edit() {
    let deployment = webhook_deployment("reload", "");
    let daemon = Daemon::start(&deployment.config);
    let file = format!("pipelines/{}.yaml", deployment.name);
    let good = std::fs::read_to_string(deployment.config.path().join(&file)).unwrap();
    deployment.config.write(
        &file,
        &good.replace("branch: main", "branch: main\n  brunch: typo"),
    );
    let health = eventually("the config error shows", Duration::from_secs(20), || {
        let (_, body) = daemon.get("/healthz");
        let health: serde_json::Value = serde_json::from_str(&body).unwrap();
        if health["status"] == "config_errors" {
            Ok(health)
        } else {
            Err(format!("{body}\n{}", daemon.log()))
        }
    });
    let error = health["config_errors"][0].as_str().unwrap();
    assert!(
        error.contains(&format!(
            "{}.yaml:4:3: unknown key `brunch`",
            deployment.name
        )),
        "{error}"
    );
    assert!(
        daemon.log().contains("unknown key `brunch`"),
        "{}",
        daemon.log()
    );
    // The old pipeline keeps working.
    let commit = deployment.repo.commit("while the config is broken");
    let (headers, body) = forge_push("generic", &commit, &unique("d"), SECRET);
    assert_eq!(daemon.post(&deployment.name, &headers, &body).0, 202);
    let all = wait_idle(&deployment, &daemon, 1);
    assert_eq!(all[0]["state"], "succeeded", "{all:?}");

    // Fixed, with one more tag, saved the way many editors save (a new file renamed
    // over the old one): new runs use it.
    write_pipeline(&deployment, "", ", \"reloaded\"");
    let path = deployment.config.path().join(&file);
    let saved = path.with_file_name(format!(".{}.yaml.swp", deployment.name));
    std::fs::rename(&path, &saved).unwrap();
    std::fs::write(
        &path,
        good.replace("branch: main", "branch: main\n  brunch: again"),
    )
    .unwrap();
    // A fixed pause between the two writes, as an editor makes one: nothing is waited for,
    // the daemon may or may not load the broken file in between.
    std::thread::sleep(Duration::from_millis(500));
    std::fs::rename(&saved, &path).unwrap();
    eventually(
        "the fixed config is loaded",
        Duration::from_secs(20),
        || {
            let (_, health) = daemon.get("/healthz");
            if health.contains("\"status\":\"ok\"") {
                Ok(())
            } else {
                Err(format!("{health}\n{}", daemon.log()))
            }
        },
    );
    let commit = deployment.repo.commit("after the fix");
    let (headers, body) = forge_push("generic", &commit, &unique("d"), SECRET);
    assert_eq!(daemon.post(&deployment.name, &headers, &body).0, 202);
    let all = wait_idle(&deployment, &daemon, 2);
    let tags: Vec<&str> = all[0]["tags"]
        .as_array()
        .unwrap()
        .iter()
        .map(|tag| tag.as_str().unwrap())
        .collect();
    assert!(
        tags.iter().any(|tag| tag.ends_with(":reloaded")),
        "{tags:?}"
    );

    // A removed pipeline refuses webhooks.
    std::fs::remove_file(deployment.config.path().join(&file)).unwrap();
    eventually(
        "the removed pipeline refuses webhooks",
        Duration::from_secs(20),
        || match daemon.post(&deployment.name, &headers, &body) {
            (404, _) => Ok(()),
            (status, answer) => Err(format!("HTTP {status} {answer}\n{}", daemon.log())),
        },
    );
}

#[test]
fn serve_retries_a_run_interrupted_by_kill_9_and_keeps_both_in_history() {
    let deployment = webhook_deployment("crash", "");
    // A build slow enough to be killed in the middle of.
    deployment.repo.write("Dockerfile", &slow_dockerfile(3));
    let commit = deployment.repo.commit("slow build");
    let mut daemon = Daemon::start(&deployment.config);
    let (headers, body) = forge_push("generic", &commit, &unique("d"), SECRET);
    assert_eq!(daemon.post(&deployment.name, &headers, &body).0, 202);
    // Wait until the build stage is under way, then kill the daemon outright.
    wait_building(&deployment, &daemon);
    daemon.kill();
    assert_eq!(runs(&deployment)[0]["state"], "running");

    let daemon = Daemon::start(&deployment.config);
    let all = wait_idle(&deployment, &daemon, 2);
    assert_eq!(all.len(), 2, "{all:?}");
    assert_eq!(all[1]["state"], "interrupted", "{all:?}");
    assert_eq!(all[0]["state"], "succeeded", "{all:?}\n{}", daemon.log());
    assert_eq!(all[0]["trigger"], "retry");
    assert_eq!(all[0]["commit"], commit.as_str());
    assert_eq!(deployed_commit(&deployment), commit);
}

#[test]
fn trigger_runs_and_logs_work_on_the_state_directory_with_or_without_the_daemon() {
    let deployment = webhook_deployment("trigger", "");
    deployment
        .config
        .append("gantry.yaml", "server:\n  keep_runs: 2\n");
    // Without a daemon the run waits in the queue.
    let queued = deployment.succeed(&["trigger", &deployment.name]);
    assert_eq!(queued["queued"], true);
    let listed = runs(&deployment);
    assert_eq!(listed[0]["state"], "queued", "{listed:?}");
    let text = stdout(&deployment.gantry(&["runs"]));
    assert!(text.contains("queued"), "{text}");

    let mut daemon = Daemon::start(&deployment.config);
    let all = wait_idle(&deployment, &daemon, 1);
    assert_eq!(all[0]["state"], "succeeded", "{all:?}\n{}", daemon.log());
    assert_eq!(all[0]["commit"], deployment.head().as_str());
    // logs --follow of a run that is going prints to its end.
    deployment.repo.write("www/index.html", "followed\n");
    let commit = deployment.repo.commit("followed");
    let triggered = deployment.succeed(&["trigger", &deployment.name, "--commit", &commit]);
    let run = format!("{}#{}", deployment.name, triggered["run"]);
    let followed = deployment.gantry(&["logs", &run, "--follow"]);
    let log = stdout(&followed);
    assert!(log.contains("[checkout] started"), "{log}");
    assert!(log.contains("[deploy] done in"), "{log}");
    deployment.succeed(&["trigger", &deployment.name]);
    wait_idle(&deployment, &daemon, 2);
    // keep_runs: 2: the oldest run is gone.
    let kept = runs(&deployment);
    assert_eq!(kept.len(), 2, "{kept:?}");
    let output = deployment.gantry(&["logs", &format!("{}#1", deployment.name)]);
    assert_eq!(output.status.code(), Some(2));
    // The runs and their stages are counted for Prometheus.
    let (status, metrics) = daemon.get("/metrics");
    assert_eq!(status, 200);
    assert!(
        metrics.contains(&format!(
            "gantry_runs_total{{pipeline=\"{}\",outcome=\"succeeded\"}} 3",
            deployment.name
        )),
        "{metrics}"
    );
    assert!(
        metrics.contains(&format!(
            "gantry_stage_duration_seconds_count{{pipeline=\"{}\",stage=\"build\"}} 3",
            deployment.name
        )),
        "{metrics}"
    );
    assert!(
        metrics.contains(&format!(
            "gantry_deployments{{pipeline=\"{}\",kind=\"run\",outcome=\"succeeded\"}} 3",
            deployment.name
        )),
        "{metrics}"
    );
    // SIGTERM: a clean exit.
    assert!(daemon.terminate().success(), "{}", daemon.log());
    assert!(
        daemon.log().contains("gantry serve: stopped"),
        "{}",
        daemon.log()
    );
}

/// Sends a generic push of `commit` and returns the queued run's number.
pub(crate) fn push(daemon: &Daemon, deployment: &Deployment, commit: &str) -> i64 {
    let (headers, body) = forge_push("generic", commit, &unique("d"), SECRET);
    let (status, answer) = daemon.post(&deployment.name, &headers, &body);
    assert_eq!(status, 202, "{answer}");
    let answer: serde_json::Value = serde_json::from_str(&answer).unwrap();
    answer["run"].as_i64().unwrap()
}

fn run_numbered(runs: &[serde_json::Value], number: i64) -> &serde_json::Value {
    runs.iter().find(|run| run["number"] == number).unwrap()
}

#[test]
fn serve_never_replaces_a_newer_deploy_and_holds_a_pinned_pipeline() {
    let deployment = webhook_deployment("order", "");
    let daemon = Daemon::start(&deployment.config);
    let older = deployment.head();
    push(&daemon, &deployment, &older);
    wait_idle(&deployment, &daemon, 1);
    deployment.repo.write("www/index.html", "newer\n");
    let newer = deployment.repo.commit("newer");
    push(&daemon, &deployment, &newer);
    wait_idle(&deployment, &daemon, 2);
    assert_eq!(deployed_commit(&deployment), newer);

    // The same commit again (another delivery id, or a poll) has nothing to do.
    let again = push(&daemon, &deployment, &newer);
    let all = wait_idle(&deployment, &daemon, 3);
    let repeated = run_numbered(&all, again);
    assert_eq!(repeated["state"], "skipped", "{repeated}");
    assert!(
        repeated["message"]
            .as_str()
            .unwrap()
            .contains("already deployed"),
        "{repeated}"
    );

    // A late delivery of the older commit must not replace the newer deploy.
    let late = push(&daemon, &deployment, &older);
    let all = wait_idle(&deployment, &daemon, 4);
    let skipped = run_numbered(&all, late);
    assert_eq!(skipped["state"], "skipped", "{skipped}");
    assert!(
        skipped["message"]
            .as_str()
            .unwrap()
            .contains("not a descendant of the deployed"),
        "{skipped}"
    );
    // The run fetched once, and told the ancestry from that fetch.
    let log = deployment.gantry(&["logs", &format!("{}#{late}", deployment.name)]);
    assert_eq!(
        stdout(&log).matches("[checkout] fetching").count(),
        1,
        "{}",
        stdout(&log)
    );
    assert_eq!(deployed_commit(&deployment), newer);

    // After a rollback the pipeline is pinned: pushes are recorded, not deployed.
    deployment.succeed(&["rollback", &deployment.name]);
    assert_eq!(deployed_commit(&deployment), older);
    deployment.repo.write("www/index.html", "held\n");
    let held_commit = deployment.repo.commit("held");
    let held = push(&daemon, &deployment, &held_commit);
    let all = wait_idle(&deployment, &daemon, 6);
    let held_run = run_numbered(&all, held);
    assert_eq!(held_run["state"], "held", "{held_run}");
    assert!(
        held_run["message"].as_str().unwrap().contains("pinned"),
        "{held_run}"
    );
    assert_eq!(deployed_commit(&deployment), older);
    // Whoever queued it: a run the daemon takes from the queue is held too.
    let triggered = deployment.succeed(&["trigger", &deployment.name, "--commit", &held_commit]);
    let all = wait_idle(&deployment, &daemon, 7);
    let triggered_run = run_numbered(&all, triggered["run"].as_i64().unwrap());
    assert_eq!(triggered_run["state"], "held", "{triggered_run}");
    assert_eq!(deployed_commit(&deployment), older);

    deployment.succeed(&["unpin", &deployment.name]);
    let released = push(&daemon, &deployment, &held_commit);
    let all = wait_idle(&deployment, &daemon, 8);
    assert_eq!(run_numbered(&all, released)["state"], "succeeded");
    assert_eq!(deployed_commit(&deployment), held_commit);
}

#[test]
fn serve_runs_at_most_max_builds_at_once() {
    let mut deployment = webhook_deployment("bound", "");
    let names = slow_pipelines(&mut deployment, 3, 2, 2);
    let daemon = Daemon::start(&deployment.config);
    let spans: Vec<(i64, i64)> =
        eventually("the three runs succeed", Duration::from_secs(120), || {
            let (_, all) = deployment.gantry_json(&["runs", "--limit", "100"]);
            let ours: Vec<&serde_json::Value> = all
                .as_array()
                .unwrap()
                .iter()
                .filter(|run| names.iter().any(|name| run["pipeline"] == name.as_str()))
                .collect();
            if ours.len() == 3 && ours.iter().all(|run| run["state"] == "succeeded") {
                Ok(ours
                    .iter()
                    .map(|run| {
                        (
                            run["started_at"].as_i64().unwrap(),
                            run["finished_at"].as_i64().unwrap(),
                        )
                    })
                    .collect())
            } else {
                Err(format!("{ours:?}\n{}", daemon.log()))
            }
        });
    // At each run's start, count the runs going: never more than two, and two did overlap.
    let most = spans
        .iter()
        .map(|(start, _)| {
            spans
                .iter()
                .filter(|(other_start, other_end)| other_start <= start && start < other_end)
                .count()
        })
        .max()
        .unwrap();
    assert_eq!(most, 2, "{spans:?}");
}

#[test]
fn serve_lets_a_running_build_finish_on_sigterm() {
    let deployment = webhook_deployment("sigterm", "");
    deployment.repo.write("Dockerfile", &slow_dockerfile(2));
    let commit = deployment.repo.commit("slow build");
    let mut daemon = Daemon::start(&deployment.config);
    push(&daemon, &deployment, &commit);
    wait_building(&deployment, &daemon);
    let status = daemon.terminate();
    assert!(status.success(), "{status:?}\n{}", daemon.log());
    // The run was let finish (build, push and deploy), not cut off.
    let all = runs(&deployment);
    assert_eq!(all.len(), 1, "{all:?}");
    assert_eq!(all[0]["state"], "succeeded", "{all:?}\n{}", daemon.log());
    assert_eq!(deployed_commit(&deployment), commit);
    assert!(daemon.log().contains("gantry serve: stopped"));
}

#[test]
fn serve_shares_one_poll_per_repository_and_backs_off_a_failing_remote() {
    let mut deployment = webhook_deployment("pollshare", "  poll: 1s\n");
    let twin = deployment.instance("twin");
    let twin_repository = format!("{}-twin", deployment.repository);
    deployment.config.repositories.push(twin_repository);
    deployment.config.write(
        &format!("pipelines/{twin}.yaml"),
        &format!(
            "source: {{ repo: {}, branch: main, poll: 1s }}\nimage: {{ repository: {}-twin }}\n",
            deployment.repo.url(),
            deployment.repository
        ),
    );
    let missing = tempfile::tempdir().unwrap();
    let broken = deployment.instance("broken");
    deployment.config.write(
        &format!("pipelines/{broken}.yaml"),
        &format!(
            "source: {{ repo: \"file://{}/gone\", branch: main, poll: 1s }}\nimage: {{ repository: {}-broken }}\n",
            missing.path().display(),
            deployment.repository
        ),
    );
    let daemon = Daemon::start_with(
        &deployment.config,
        &[("GANTRY_LOG", "info,gantry::engine::poller=debug")],
    );
    // A fixed wait: 8 s of polling, whose log lines are then counted (too many is the failure).
    std::thread::sleep(Duration::from_secs(8));
    let log = daemon.log();
    // One listing serves both pipelines of the repository.
    let shared = log
        .lines()
        .filter(|line| line.contains("listed remote heads"))
        .find(|line| line.contains(&deployment.name) && line.contains(&twin));
    assert!(shared.is_some(), "{log}");
    // The failing remote is asked again later and later: 2 s, then 4 s, then 8 s.
    let retries: Vec<u64> = log
        .lines()
        .filter(|line| line.contains("polling failed"))
        .filter_map(|line| {
            line.split("retry_in_s=")
                .nth(1)?
                .split_whitespace()
                .next()?
                .parse()
                .ok()
        })
        .collect();
    assert!(retries.len() >= 2, "{log}");
    assert!(
        retries.windows(2).all(|pair| pair[1] > pair[0]),
        "{retries:?}"
    );
    assert!(
        retries.len() <= 4,
        "a failing remote was asked too often: {retries:?}"
    );
}

#[test]
fn serve_finishes_a_running_run_with_the_config_it_started_with() {
    let deployment = webhook_deployment("snapshot", "");
    deployment.repo.write("Dockerfile", &slow_dockerfile(2));
    let first = deployment.repo.commit("slow build");
    let daemon = Daemon::start(&deployment.config);
    push(&daemon, &deployment, &first);
    wait_building(&deployment, &daemon);
    // An edit while the run builds: a new tag for new runs only.
    write_pipeline(&deployment, "", ", \"edited\"");
    eventually("the edit is loaded", Duration::from_secs(20), || {
        let log = daemon.log();
        if log.contains("config reloaded") {
            Ok(())
        } else {
            Err(log)
        }
    });
    let all = wait_idle(&deployment, &daemon, 1);
    let tags_of = |run: &serde_json::Value| -> Vec<String> {
        run["tags"]
            .as_array()
            .unwrap()
            .iter()
            .map(|tag| tag.as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(all[0]["state"], "succeeded", "{all:?}");
    assert!(
        !tags_of(&all[0]).iter().any(|tag| tag.ends_with(":edited")),
        "{all:?}"
    );
    let second = deployment.repo.commit("after the edit");
    push(&daemon, &deployment, &second);
    let all = wait_idle(&deployment, &daemon, 2);
    assert!(
        tags_of(&all[0]).iter().any(|tag| tag.ends_with(":edited")),
        "{all:?}"
    );
}
