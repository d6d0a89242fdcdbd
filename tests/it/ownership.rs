//! gantry touches only the containers it created for that pipeline and instance: not
//! another pipeline's under the same name, not one made by hand.

use crate::common::*;

/// A deploy section with one instance named `instance` on `local`.
fn one_instance(instance: &str) -> String {
    format!(
        "  services:\n    web:\n      ports: [\"8080\"]\n      stop_timeout: 1s\n      \
         health:\n        http: {{ port: 8080, path: /healthz }}\n        interval: 100ms\n      \
         instances:\n        {instance}: {{}}\n"
    )
}

/// The container's id and whether it runs, as Docker reports them.
fn container_state(name: &str) -> (String, bool) {
    let inspected = inspect(LOCAL_DOCKER, name);
    (
        inspected["Id"].as_str().unwrap().to_string(),
        inspected["State"]["Running"].as_bool().unwrap(),
    )
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
    let before = container_state(&instance);
    assert!(before.1);

    let beta = Deployment::new("intruder", &[]);
    beta.pipeline(&one_instance(&instance));
    for command in [
        vec!["run", beta.name.as_str()],
        vec!["deploy", beta.name.as_str()],
        vec!["stop", beta.name.as_str()],
        vec!["restart", beta.name.as_str()],
        vec!["start", beta.name.as_str()],
    ] {
        let output = beta.gantry(&command);
        assert_eq!(
            output.status.code(),
            Some(1),
            "{command:?}: {}",
            stderr(&output)
        );
        let said = stderr(&output);
        assert!(
            said.contains(&format!(
                "container `{instance}` on `local` belongs to pipeline `{}`",
                alpha.name
            )),
            "{command:?}: {said}"
        );
        assert_eq!(container_state(&instance), before, "{command:?} touched it");
    }
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
    let image = std::env::var("GANTRY_TEST_HOST_IMAGE")
        .unwrap_or_else(|_| "127.0.0.1:5115/gantry-test/busybox:latest".to_string());
    run(docker(LOCAL_DOCKER).args([
        "run",
        "-d",
        "--name",
        &hand_made,
        "--label",
        &format!("gantry.pipeline={}", beta.name),
        &image,
        "sleep",
        "600",
    ]));
    let by_hand = container_state(&hand_made);
    beta.pipeline(&one_instance(&hand_made));
    for command in [
        vec!["deploy", beta.name.as_str()],
        vec!["stop", beta.name.as_str()],
    ] {
        let output = beta.gantry(&command);
        assert_eq!(
            output.status.code(),
            Some(1),
            "{command:?}: {}",
            stderr(&output)
        );
        assert!(
            stderr(&output).contains(&format!("container `{hand_made}` on `local`")),
            "{command:?}: {}",
            stderr(&output)
        );
        assert_eq!(
            container_state(&hand_made),
            by_hand,
            "{command:?} touched it"
        );
    }

    // A rollback likewise: alpha has two deployments, and its container was replaced
    // by hand.
    alpha.repo.write("www/index.html", "v2\n");
    alpha.repo.commit("v2");
    alpha.succeed(&["run", &alpha.name]);
    run(docker(LOCAL_DOCKER).args(["rm", "-f", &instance]));
    run(docker(LOCAL_DOCKER).args([
        "run",
        "-d",
        "--name",
        &instance,
        "--label",
        &format!("gantry.pipeline={}", alpha.name),
        &image,
        "sleep",
        "600",
    ]));
    let replaced = container_state(&instance);
    let output = alpha.gantry(&["rollback", &alpha.name]);
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    assert!(
        stderr(&output).contains("was not created by gantry"),
        "{}",
        stderr(&output)
    );
    assert_eq!(container_state(&instance), replaced);
}
