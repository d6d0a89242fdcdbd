//! The state store on a filesystem that fills up: no answered delivery is lost, no
//! write leaves the database locked, and intake comes back when space does.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::common::*;

/// A small tmpfs the test mounts (tests run as root) and unmounts when dropped.
struct SmallDisk {
    dir: tempfile::TempDir,
}

impl SmallDisk {
    fn mount(size: &str) -> SmallDisk {
        let dir = tempfile::tempdir().unwrap();
        run(Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path()));
        SmallDisk { dir }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Writes a file until the filesystem refuses more, then gives `spare` bytes back.
    fn fill(&self, spare: u64) -> PathBuf {
        let path = self.path().join("filler");
        let mut file = std::fs::File::create(&path).unwrap();
        let chunk = vec![0u8; 16 * 1024];
        while file.write_all(&chunk).is_ok() {}
        let _ = file.flush();
        // The last bytes too, a few at a time.
        while file.write_all(&chunk[..64]).is_ok() {}
        let length = file.metadata().unwrap().len();
        file.set_len(length.saturating_sub(spare)).unwrap();
        path
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}

#[test]
fn a_full_disk_refuses_deliveries_with_503_and_loses_none_it_accepted() {
    let disk = SmallDisk::mount("3m");
    let deployment = webhook_deployment("fulldisk", "");
    let config = &deployment.config;
    let state = disk.path().join("state");
    config.append(
        "gantry.yaml",
        &format!(
            "state: {}\nserver:\n  token: full-disk-operator-token-0123\n",
            state.display()
        ),
    );
    // Pinned, so each run ends at once (held) without building.
    let pinned = config.gantry(&["pin", &deployment.name, "--reason", "test"]);
    assert!(pinned.status.success(), "{}", stderr(&pinned));
    let mut daemon = Daemon::start(config);
    let name = &deployment.name;
    let push = |index: usize| {
        let commit = format!("{:040x}", index + 1);
        // Long delivery ids make each row larger, so the disk fills sooner.
        let id = format!("{index:0>120}");
        let (headers, body) = forge_push("github", &commit, &id, SECRET);
        daemon.post(name, &headers, &body)
    };

    // A little room left: some pushes are taken before the disk is full.
    let filler = disk.fill(256 * 1024);
    let mut accepted: Vec<i64> = Vec::new();
    let mut refused = 0;
    let mut index = 0;
    while refused < 3 {
        assert!(index < 2_000, "the disk never filled: {}", daemon.log());
        let (status, answer) = push(index);
        index += 1;
        match status {
            202 => {
                let answer: serde_json::Value = serde_json::from_str(&answer).unwrap();
                assert_eq!(answer["queued"], true, "{answer}");
                accepted.push(answer["run_id"].as_i64().unwrap());
            }
            503 => {
                assert!(answer.contains("full"), "{answer}");
                refused += 1;
            }
            other => panic!("{other}: {answer}\n{}", daemon.log()),
        }
    }
    assert!(
        !accepted.is_empty(),
        "no push was taken before the disk filled"
    );
    // The store says why, to anyone who asks. (SQLite may still find room in pages it
    // already has, so a write can succeed now and then; the daemon says why as soon
    // as one fails.)
    let trigger = || {
        curl(&[
            "-X",
            "POST",
            "-H",
            "Authorization: Bearer full-disk-operator-token-0123",
            &daemon.url(&format!("/api/v1/pipelines/{name}/trigger")),
        ])
    };
    let refusal = eventually(
        "the API refuses with why",
        Duration::from_secs(20),
        || match trigger() {
            (503, answer) => Ok(answer),
            (202, answer) => {
                let answer: serde_json::Value = serde_json::from_str(&answer).unwrap();
                accepted.push(answer["run_id"].as_i64().unwrap());
                Err(answer.to_string())
            }
            other => panic!("{other:?}"),
        },
    );
    assert!(refusal.contains("disk"), "{refusal}");
    let mut extra = index + 1_000;
    eventually(
        "/healthz says the store cannot write",
        Duration::from_secs(20),
        || {
            match daemon.get("/healthz") {
                (503, health) if health.contains("store_unwritable") => Ok(()),
                other => {
                    // Another write, to show the store as it is now.
                    extra += 1;
                    if let (202, answer) = push(extra) {
                        let answer: serde_json::Value = serde_json::from_str(&answer).unwrap();
                        accepted.push(answer["run_id"].as_i64().unwrap());
                    }
                    Err(format!("{other:?}"))
                }
            }
        },
    );
    // No connection was left inside a transaction: another process can take the lock.
    let database = state.join("state.db");
    let locked = with_database(&database, async |pool| {
        let mut connection = pool.acquire().await.unwrap();
        let begun = sqlx::query("BEGIN IMMEDIATE")
            .execute(&mut *connection)
            .await;
        let _ = sqlx::query("ROLLBACK").execute(&mut *connection).await;
        begun.err().map(|error| error.to_string())
    });
    assert_eq!(locked, None, "{}", daemon.log());

    // Space comes back: intake works again, without a restart.
    std::fs::remove_file(filler).unwrap();
    let queued = eventually("a push is queued again", Duration::from_secs(20), || {
        let (status, answer) = push(index);
        match status {
            202 => Ok(answer),
            _ => Err(format!("{status} {answer}")),
        }
    });
    let answer: serde_json::Value = serde_json::from_str(&queued).unwrap();
    accepted.push(answer["run_id"].as_i64().unwrap());
    eventually(
        "healthz is ok again",
        Duration::from_secs(20),
        || match daemon.get("/healthz") {
            (200, _) => Ok(()),
            other => Err(format!("{other:?}")),
        },
    );

    // Every run answered 202 is in the database after a clean stop, and none is left
    // running.
    let status = daemon.terminate();
    assert!(status.success(), "{status:?}");
    let (stored, running) = with_database(&database, async |pool| {
        let stored: Vec<i64> = sqlx::query_scalar("SELECT id FROM runs")
            .fetch_all(pool)
            .await
            .unwrap();
        let running: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM runs WHERE state IN ('running')")
                .fetch_one(pool)
                .await
                .unwrap();
        (stored, running)
    });
    for run in &accepted {
        assert!(
            stored.contains(run),
            "run {run} was answered 202 and is gone"
        );
    }
    assert_eq!(running, 0);
}
