//! A deploy that loses its lease stops before it changes another container, reverts
//! what `on_failure` says, and records why.

use std::process::Stdio;
use std::time::Duration;

use crate::common::*;

/// Whether a container of that name exists.
fn exists(name: &str) -> bool {
    docker(LOCAL_DOCKER)
        .args(["inspect", name])
        .output()
        .is_ok_and(|output| output.status.success())
}

/// Writes the lease row as another process taking it over would.
fn steal_lease(database: &std::path::Path, pipeline: &str) -> u64 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    with_database(database, async |pool| {
        sqlx::query(
            "UPDATE leases SET owner = 'another gantry (test)', acquired_at = ?1, expires_at = ?2
             WHERE pipeline = ?3",
        )
        .bind(now)
        .bind(now + 120_000)
        .bind(pipeline)
        .execute(pool)
        .await
        .unwrap()
        .rows_affected()
    })
}

#[test]
fn a_deploy_that_loses_its_lease_stops_and_returns_what_it_changed() {
    let deployment = Deployment::new("lost", &[]);
    let (first, second) = (deployment.instance("web-1"), deployment.instance("web-2"));
    let deploy = |command: &str| {
        format!(
            "  batch: 1\n  services:\n    web:\n      command: [\"sh\", \"-c\", \"{command}\"]\n      \
             stop_timeout: 1s\n      health:\n        exec: [\"test\", \"-f\", \"/tmp/ready\"]\n        \
             timeout: 30s\n        interval: 100ms\n      instances:\n        {first}: {{}}\n        {second}: {{}}\n"
        )
    };
    deployment.pipeline(&deploy("touch /tmp/ready; exec httpd -f -p 8080 -h /www"));
    deployment.succeed(&["run", &deployment.name]);
    let ids = || {
        (
            container_id(LOCAL_DOCKER, &first),
            container_id(LOCAL_DOCKER, &second),
        )
    };
    let before = ids();

    // The new version takes longer to get ready than the lease goes between renewals.
    deployment.pipeline(&deploy(
        "sleep 7; touch /tmp/ready; exec httpd -f -p 8080 -h /www",
    ));
    let child = deployment
        .config
        .command(&["--json", "deploy", &deployment.name])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Once the first instance is being replaced, another process takes the lease.
    eventually(
        "the first instance is swapped",
        Duration::from_secs(30),
        || match exists(&format!("{first}.previous")) {
            true => Ok(()),
            false => Err("no .previous container yet".to_string()),
        },
    );
    assert_eq!(
        steal_lease(&deployment.config.state_database(), &deployment.name),
        1
    );

    let output = child.wait_with_output().unwrap();
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let message = report["failure"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("the deploy lease was taken over (now held by another gantry (test))"),
        "{report}"
    );
    let actions: Vec<(&str, &str)> = report["instances"]
        .as_array()
        .unwrap()
        .iter()
        .map(|instance| {
            (
                instance["instance"].as_str().unwrap(),
                instance["action"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        actions,
        [
            (first.as_str(), "reverted"),
            (second.as_str(), "not_reached")
        ],
        "{report}"
    );
    // The first instance runs its old container again; the second was never touched.
    assert_eq!(ids(), before);
    // The run says why.
    let (_, runs) = deployment.gantry_json(&["runs", &deployment.name]);
    assert!(
        runs[0]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("deploy lease was taken over"),
        "{runs}"
    );
}
