//! gantry touches only the containers it created for that pipeline and instance: not
//! another pipeline's under the same name, not one made by hand.

use crate::common::*;

/// The container's id and whether it runs, as Docker reports them.
fn container_state(name: &str) -> (String, bool) {
    let inspected = inspect(LOCAL_DOCKER, name);
    (
        inspected["Id"].as_str().unwrap().to_string(),
        inspected["State"]["Running"].as_bool().unwrap(),
    )
}

/// Each command of the deployment's pipeline exits 1 saying `says`, and leaves the
/// container as it was.
fn refused(deployment: &Deployment, commands: &[&str], container: &str, says: &str) {
    let before = container_state(container);
    for command in commands {
        let output = deployment.gantry(&[command, &deployment.name]);
        let said = stderr(&output);
        assert_eq!(output.status.code(), Some(1), "{command}: {said}");
        assert!(said.contains(says), "{command}: {said}");
        assert_eq!(container_state(container), before, "{command} touched it");
    }
}

/// Starts a container by hand under `name`, labelled with the pipeline only.
fn start_by_hand(name: &str, pipeline: &str) {
    let image = std::env::var("GANTRY_TEST_HOST_IMAGE")
        .unwrap_or_else(|_| format!("{}/gantry-test/busybox:latest", registry()));
    run(docker(LOCAL_DOCKER).args([
        "run",
        "-d",
        "--name",
        name,
        "--label",
        &format!("gantry.pipeline={pipeline}"),
        &image,
        "sleep",
        "600",
    ]));
}

#[test]
fn validate_refuses_two_pipelines_with_one_container_name_on_one_host() {
    let alpha = Deployment::new("alpha", &[]);
    let instance = alpha.instance("web-1");
    alpha.pipeline(&one_instance(&instance));
    let beta = std::fs::read_to_string(
        alpha
            .config
            .path()
            .join(format!("pipelines/{}.yaml", alpha.name)),
    )
    .unwrap();
    alpha.config.write("pipelines/beta.yaml", &beta);
    let output = alpha.gantry(&["validate"]);
    assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
    let errors = stderr(&output);
    for (here, there) in [("beta", alpha.name.as_str()), (alpha.name.as_str(), "beta")] {
        assert!(
            errors.contains(&format!(
                "pipelines/{here}.yaml:16:9: instance `{instance}` on host `local` is also pipeline `{there}`'s"
            )),
            "{errors}"
        );
    }
}

#[test]
fn a_deploy_never_takes_over_another_pipelines_or_a_hand_made_container() {
    // Alpha runs `web-1`; beta, configured elsewhere (its own config and state, so
    // validation cannot see both), names the same container.
    let alpha = Deployment::new("owner", &[]);
    let instance = alpha.instance("web-1");
    alpha.pipeline(&one_instance(&instance));
    alpha.succeed(&["run", &alpha.name]);
    assert!(container_state(&instance).1, "alpha's container runs");

    let beta = Deployment::new("intruder", &[]);
    beta.pipeline(&one_instance(&instance));
    refused(
        &beta,
        &["run", "deploy", "stop", "restart", "start"],
        &instance,
        &format!(
            "container `{instance}` on `local` belongs to pipeline `{}`",
            alpha.name
        ),
    );
    let (_, status) = beta.gantry_json(&["status", &beta.name]);
    assert_eq!(
        status["pipelines"][0]["instances"][0]["state"], "foreign",
        "{status}"
    );
    // Alpha's own view is untouched: no drift.
    let (_, status) = alpha.gantry_json(&["status", &alpha.name]);
    assert_eq!(
        status["pipelines"][0]["instances"][0]["drift"],
        serde_json::json!([]),
        "{status}"
    );

    // A container made by hand under an instance's name is left alone too.
    let hand_made = beta.instance("by-hand");
    start_by_hand(&hand_made, &beta.name);
    beta.pipeline(&one_instance(&hand_made));
    refused(
        &beta,
        &["deploy", "stop"],
        &hand_made,
        &format!("container `{hand_made}` on `local`"),
    );

    // A rollback likewise: alpha has two deployments, and its container was replaced
    // by hand.
    alpha.repo.write("www/index.html", "v2\n");
    alpha.repo.commit("v2");
    alpha.succeed(&["run", &alpha.name]);
    run(docker(LOCAL_DOCKER).args(["rm", "-f", &instance]));
    start_by_hand(&instance, &alpha.name);
    refused(
        &alpha,
        &["rollback"],
        &instance,
        "was not created by gantry",
    );
}
