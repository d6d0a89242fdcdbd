//! Polling many repositories: one remote that hangs delays only its own pipelines.

use std::time::Duration;

use crate::common::*;

/// A TCP server on loopback that takes connections and never says a word.
fn silent_server() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for stream in listener.incoming().flatten() {
            // Kept open and unread until the test process ends.
            held.push(stream);
        }
    });
    port
}

#[test]
fn a_remote_that_hangs_delays_only_its_own_pipelines() {
    let deployment = webhook_deployment("pollfine", "  poll: 1s\n");
    let config = &deployment.config;
    // Pinned: each run ends at once (held); what matters is that it was queued.
    let pinned = config.gantry(&["pin", &deployment.name, "--reason", "test"]);
    assert!(pinned.status.success(), "{}", stderr(&pinned));
    let silent = silent_server();
    config.write(
        "pipelines/stuck.yaml",
        &format!(
            "source:\n  repo: http://127.0.0.1:{silent}/team/stuck.git\n  branch: main\n  poll: 1s\n\
             image:\n  repository: {}/gantry-it/stuck\n",
            registry()
        ),
    );
    let daemon = Daemon::start(config);
    let first = deployment.head();
    let polled = |commit: &str| {
        runs(&deployment)
            .iter()
            .any(|run| run["requested"] == commit || run["commit"] == commit)
    };
    eventually("the first head is polled", Duration::from_secs(20), || {
        if polled(&first) {
            Ok(())
        } else {
            Err(daemon.log())
        }
    });
    // The silent remote is being asked all this while; a new commit is still seen.
    let second = deployment.repo.commit("while another remote hangs");
    eventually("the new head is polled", Duration::from_secs(20), || {
        if polled(&second) {
            Ok(())
        } else {
            Err(daemon.log())
        }
    });
    // The silent remote's listing gives up, and says so.
    eventually(
        "the hanging remote times out",
        Duration::from_secs(30),
        || {
            let log = daemon.log();
            if log.contains("did not answer within 10s") && log.contains("team/stuck.git") {
                Ok(())
            } else {
                Err(log)
            }
        },
    );
}
