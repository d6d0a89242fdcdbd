//! The kill -9 campaign: pushes sent as signed webhooks while the daemon is killed with
//! SIGKILL at random moments (while it takes a delivery, or later: building, pushing,
//! pulling, swapping, checking) and started again. A delivery the daemon did not answer
//! is sent again, as a forge does. Afterwards every delivery answered 2xx is a stored
//! run, every run has an outcome, the instance runs the newest commit, nothing is left
//! renamed aside and no lease is held.
//!
//! The suite pushes `DEFAULT_PUSHES` times; `scripts/chaos.sh` runs the same test with
//! `GANTRY_CHAOS_PUSHES=100`. `GANTRY_CHAOS_SEED` replays a campaign.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use crate::common::*;

const DEFAULT_PUSHES: usize = 6;
/// A campaign ends after this long, however many pushes are left.
const LIMIT: Duration = Duration::from_secs(1_500);

/// xorshift64*: enough randomness for when to kill, reproducible from its seed.
struct Dice(u64);

impl Dice {
    fn below(&mut self, bound: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) % bound.max(1)
    }
}

fn number(variable: &str) -> Option<u64> {
    std::env::var(variable).ok()?.parse().ok()
}

#[test]
fn pushes_while_the_daemon_is_killed_at_random_lose_nothing_and_end_on_the_newest_commit() {
    let pushes = number("GANTRY_CHAOS_PUSHES").map_or(DEFAULT_PUSHES, |n| n as usize);
    let seed = number("GANTRY_CHAOS_SEED").unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64
            | 1
    });
    eprintln!("chaos: {pushes} pushes, GANTRY_CHAOS_SEED={seed}");
    let mut dice = Dice(seed);
    let deployment = webhook_deployment("chaos", "");
    let config = &deployment.config;
    // Every run stays in the history, to be checked.
    config.append("gantry.yaml", "server:\n  keep_runs: 100000\n");
    let name = deployment.name.clone();
    let started = Instant::now();
    let mut daemon = Daemon::start(config);
    // (commit, delivery id, run id answered) per push; kills by the moment they hit.
    let mut answered: Vec<(String, String, i64)> = Vec::new();
    let mut kills: BTreeMap<&str, usize> = BTreeMap::new();
    let mut unanswered = 0;
    for index in 0..pushes {
        assert!(started.elapsed() < LIMIT, "the campaign outlived {LIMIT:?}");
        deployment
            .repo
            .write("www/index.html", &format!("push {index}\n"));
        let commit = deployment.repo.commit(&format!("push {index}"));
        let delivery = unique("chaos");
        let (headers, body) = forge_push("github", &commit, &delivery, SECRET);
        // Half the pushes see a kill: a third of those while the delivery is taken,
        // the rest while its run (or an earlier one) works.
        let kill_at = match dice.below(6) {
            0 => Some(("intake", Duration::from_millis(dice.below(15)))),
            1 | 2 => Some(("run", Duration::from_millis(200 + dice.below(2_500)))),
            _ => None,
        };
        let url = daemon.url(&format!("/hooks/{name}"));
        let sending = {
            let (headers, body) = (headers.clone(), body.clone());
            std::thread::spawn(move || post(&url, &headers, &body))
        };
        let mut sending = Some(sending);
        let mut first = None;
        if let Some((moment, after)) = kill_at {
            if moment == "run" {
                first = sending.take().map(|sending| sending.join().unwrap());
            }
            std::thread::sleep(after);
            daemon.kill();
            *kills.entry(moment).or_default() += 1;
            daemon = Daemon::start(config);
        }
        let mut answer = match (first, sending) {
            (Some(answer), _) => answer,
            (None, Some(sending)) => sending.join().unwrap(),
            (None, None) => unreachable!("one of them holds the answer"),
        };
        // A forge sends an unanswered delivery again, with the same id and body.
        while answer.0 / 100 != 2 {
            assert!(
                answer.0 == 0 || answer.0 >= 500,
                "{answer:?}\n{}",
                daemon.log()
            );
            unanswered += 1;
            std::thread::sleep(Duration::from_millis(200));
            answer = daemon.post(&name, &headers, &body);
        }
        let run = serde_json::from_str::<serde_json::Value>(&answer.1).unwrap()["run_id"]
            .as_i64()
            .unwrap_or_else(|| panic!("{answer:?}"));
        answered.push((commit, delivery, run));
        // Most pushes wait until their run has been taken, so that runs build and
        // deploy (and kills land in them) rather than all coalescing into the last.
        if dice.below(4) != 0 {
            eventually("the run is taken", Duration::from_secs(120), || {
                let queued = runs(&deployment).iter().any(|run| run["state"] == "queued");
                if queued {
                    Err("queued".to_string())
                } else {
                    Ok(())
                }
            });
        }
    }

    // The last daemon finishes what is queued.
    let runs = wait_idle(&deployment, &daemon, 1);
    let by_id: BTreeMap<i64, &serde_json::Value> = runs
        .iter()
        .map(|run| (run["id"].as_i64().unwrap(), run))
        .collect();
    let mut outcomes: BTreeMap<String, usize> = BTreeMap::new();
    for (commit, delivery, run) in &answered {
        let stored = by_id.get(run).unwrap_or_else(|| {
            panic!(
                "delivery {delivery} of {commit} was answered with run {run}, which is not stored"
            )
        });
        let state = stored["state"].as_str().unwrap();
        assert!(!["queued", "running"].contains(&state), "{stored}");
        *outcomes.entry(state.to_string()).or_default() += 1;
    }
    for run in &runs {
        assert!(
            !["queued", "running"].contains(&run["state"].as_str().unwrap()),
            "{run}"
        );
    }
    let newest = &answered.last().unwrap().0;
    assert_eq!(
        &deployed_commit(&deployment),
        newest,
        "{runs:#?}\n{}",
        daemon.log()
    );
    let instance = deployment.instance("web-1");
    let aside = docker(LOCAL_DOCKER)
        .args([
            "ps",
            "-a",
            "--format",
            "{{.Names}}",
            "--filter",
            &format!("name={instance}.previous"),
        ])
        .output()
        .unwrap();
    assert!(
        stdout(&aside).trim().is_empty(),
        "left aside: {}",
        stdout(&aside)
    );
    let leases: i64 = with_database(&config.state_database(), async |pool| {
        sqlx::query_scalar("SELECT COUNT(*) FROM leases WHERE pipeline = ?1")
            .bind(&name)
            .fetch_one(pool)
            .await
            .unwrap()
    });
    assert_eq!(leases, 0, "a deploy lease is still held");
    // Where each kill caught a run: the last stage it had finished.
    let mut caught: BTreeMap<String, usize> = BTreeMap::new();
    for run in runs.iter().filter(|run| run["state"] == "interrupted") {
        let stage = run["stages"]
            .as_array()
            .and_then(|stages| stages.last())
            .and_then(|stage| stage["name"].as_str())
            .unwrap_or("none");
        *caught.entry(stage.to_string()).or_default() += 1;
    }
    let interrupted: usize = caught.values().sum();
    eprintln!(
        "chaos summary: {pushes} pushes in {:.0?}, {} kills ({} while taking a delivery, {} later), \
         {unanswered} deliveries sent again, every 2xx a stored run; their outcomes {outcomes:?}; \
         {} runs in all, {interrupted} interrupted by a kill (by the last stage they finished: {caught:?}); \
         the newest commit runs; \
         nothing left aside; no lease held",
        started.elapsed(),
        kills.values().sum::<usize>(),
        kills.get("intake").copied().unwrap_or(0),
        kills.get("run").copied().unwrap_or(0),
        runs.len(),
    );
}
