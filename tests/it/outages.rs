//! Outages while gantry works: the state database locked by another process for longer
//! than a forge waits for an answer.

use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::common::*;

/// How long forges wait for a webhook's answer (GitHub: 10 s).
const FORGE_WAIT: Duration = Duration::from_secs(10);

#[test]
fn a_store_locked_by_another_process_answers_deliveries_503_before_a_forge_gives_up() {
    let deployment = webhook_deployment("locked", "");
    let config = &deployment.config;
    // Pinned, so a queued run ends at once (held) without building.
    let pinned = config.gantry(&["pin", &deployment.name, "--reason", "test"]);
    assert!(pinned.status.success(), "{}", stderr(&pinned));
    let daemon = Daemon::start(config);
    let name = &deployment.name;
    let push = |index: usize| {
        let (headers, body) = forge_push(
            "github",
            &format!("{:040x}", index + 1),
            &format!("locked-{index}"),
            SECRET,
        );
        daemon.post(name, &headers, &body)
    };
    assert_eq!(push(0).0, 202, "{}", daemon.log());

    // Another process takes the write lock and keeps it for longer than forges wait.
    let database = config.state_database();
    let (locked, release) = (mpsc::channel(), mpsc::channel::<()>());
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
    release.0.send(()).unwrap();
    holder.join().unwrap();
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
