//! Several images from one repository: a two-target Dockerfile built into a web and a
//! worker image in one run, both pushed with confirmed digests and deployed beside an
//! accessory; a second push replaces both and leaves the accessory; a rollback
//! returns both images together.

use crate::common::*;

const DOCKERFILE: &str = "\
FROM gantry-test/busybox:latest AS base
COPY www /www
EXPOSE 8080
CMD [\"httpd\", \"-f\", \"-p\", \"8080\", \"-h\", \"/www\"]

FROM base AS web
RUN echo web >/www/role

FROM base AS worker
RUN echo worker >/www/role
";

/// `path` from `container`'s published port 8080 on the main engine.
fn page(container: &str, path: &str) -> Option<String> {
    let port = published_port(LOCAL_DOCKER, container);
    let output = std::process::Command::new("curl")
        .args(["-fsS", "-m", "5", &format!("http://127.0.0.1:{port}{path}")])
        .output()
        .ok()?;
    output
        .status
        .success()
        .then(|| String::from_utf8_lossy(&output.stdout).trim().to_string())
}

fn label(container: &str, name: &str) -> String {
    inspect(LOCAL_DOCKER, container)["Config"]["Labels"][name]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

#[test]
fn two_images_from_one_commit_deploy_together_and_roll_back_together() {
    let deployment = Deployment::new("imgs", &[]);
    let name = &deployment.name;
    let (web_repository, worker_repository) = (
        format!("{}-web", deployment.repository),
        format!("{}-worker", deployment.repository),
    );
    let _images = RemoveImages(vec![web_repository.clone(), worker_repository.clone()]);
    deployment.repo.write("Dockerfile", DOCKERFILE);
    deployment.repo.commit("two targets");
    let (web, worker, db) = (
        deployment.instance("web"),
        deployment.instance("worker"),
        deployment.instance("db"),
    );
    let accessory = std::env::var("GANTRY_TEST_HOST_IMAGE")
        .unwrap_or_else(|_| format!("{}/gantry-test/busybox:latest", registry()));
    let service = |image: &str, instance: &str, requires: &str| {
        format!(
            "    {image}:\n      image: {image}\n      requires: [{requires}]\n      ports: [\"8080\"]\n      \
             stop_timeout: 1s\n      health: {{ http: {{ port: 8080, path: /role }}, interval: 100ms }}\n      \
             instances: {{ {instance}: {{}} }}\n"
        )
    };
    deployment.config.write(
        &format!("pipelines/{name}.yaml"),
        &format!(
            "source: {{ repo: \"{}\", branch: main }}\n\
             images:\n  web: {{ repository: \"{web_repository}\", target: web }}\n  \
             worker: {{ repository: \"{worker_repository}\", target: worker }}\n\
             deploy:\n  services:\n{}{}    db:\n      accessory: true\n      image: \"{accessory}\"\n      \
             command: [\"sh\", \"-c\", \"mkdir -p /w && echo db >/w/role && exec httpd -f -p 8080 -h /w\"]\n      \
             ports: [\"8080\"]\n      stop_timeout: 1s\n      \
             health: {{ http: {{ port: 8080, path: /role }}, interval: 100ms }}\n      \
             instances: {{ {db}: {{}} }}\n",
            deployment.repo.url(),
            service("web", &web, ""),
            service("worker", &worker, "db"),
        ),
    );

    // One run builds both targets, pushes both, and deploys both beside the accessory.
    let first = deployment.succeed(&["run", name, "--json"]);
    let images = first["build"]["images"].as_array().unwrap().clone();
    assert_eq!(images.len(), 2, "{first}");
    let digest_of = |report: &serde_json::Value, image: &str| {
        report["build"]["images"]
            .as_array()
            .unwrap()
            .iter()
            .find(|built| built["name"] == image)
            .map(|built| built["digest"].as_str().unwrap().to_string())
            .unwrap()
    };
    let short = &deployment.head()[..7];
    let registry = registry();
    for (image, repository) in [("web", &web_repository), ("worker", &worker_repository)] {
        let path = repository.strip_prefix(&format!("{registry}/")).unwrap();
        assert_eq!(
            digest_of(&first, image),
            registry_digest(&registry, path, short, None),
            "the registry serves what the run recorded for {image}"
        );
    }
    let (web_v1, worker_v1) = (digest_of(&first, "web"), digest_of(&first, "worker"));
    assert_ne!(web_v1, worker_v1);
    assert_eq!(page(&web, "/role").as_deref(), Some("web"));
    assert_eq!(page(&worker, "/role").as_deref(), Some("worker"));
    assert_eq!(page(&db, "/role").as_deref(), Some("db"));
    assert_eq!(label(&web, "gantry.digest"), web_v1);
    assert_eq!(label(&worker, "gantry.digest"), worker_v1);
    let db_id = container_id(LOCAL_DOCKER, &db);

    // The run records both images.
    let runs = deployment.succeed(&["runs", name, "--json"]);
    assert_eq!(
        runs[0]["images"],
        serde_json::json!({
            "web": format!("{web_repository}@{web_v1}"),
            "worker": format!("{worker_repository}@{worker_v1}"),
        }),
        "{runs}"
    );

    // `status` shows each service's image.
    let status = deployment.succeed(&["status", name, "--json"]);
    let rows = status["pipelines"][0]["instances"]
        .as_array()
        .unwrap()
        .clone();
    let image_of = |instance: &str| {
        rows.iter()
            .find(|row| row["instance"] == instance)
            .map(|row| row["image"].as_str().unwrap_or_default().to_string())
            .unwrap()
    };
    assert_eq!(image_of(&web), web_repository, "{status}");
    assert_eq!(image_of(&worker), worker_repository, "{status}");
    assert_eq!(image_of(&db), accessory, "{status}");
    let worker_row = rows
        .iter()
        .find(|row| row["instance"] == worker.as_str())
        .unwrap();
    assert_eq!(
        worker_row["tags"],
        serde_json::json!([format!("{worker_repository}:{short}")]),
        "{status}"
    );
    assert_eq!(worker_row["drift"], serde_json::json!([]), "{status}");

    // A second push replaces web and worker; the accessory's container stays.
    deployment.repo.write("www/index.html", "v2\n");
    deployment.repo.commit("v2");
    let second = deployment.succeed(&["run", name, "--json"]);
    let (web_v2, worker_v2) = (digest_of(&second, "web"), digest_of(&second, "worker"));
    assert!(web_v2 != web_v1 && worker_v2 != worker_v1, "{second}");
    assert_eq!(page(&web, "/").as_deref(), Some("v2"));
    assert_eq!(page(&worker, "/").as_deref(), Some("v2"));
    assert_eq!(label(&web, "gantry.digest"), web_v2);
    assert_eq!(label(&worker, "gantry.digest"), worker_v2);
    assert_eq!(
        container_id(LOCAL_DOCKER, &db),
        db_id,
        "the push replaced the accessory"
    );

    // A rollback returns both images to the first run's digests, together.
    let rollback = deployment.succeed(&["rollback", name, "--json"]);
    assert_eq!(rollback["images"]["web"]["digest"], web_v1, "{rollback}");
    assert_eq!(
        rollback["images"]["worker"]["digest"], worker_v1,
        "{rollback}"
    );
    assert_eq!(label(&web, "gantry.digest"), web_v1);
    assert_eq!(label(&worker, "gantry.digest"), worker_v1);
    assert_eq!(page(&web, "/").as_deref(), Some("v1"));
    assert_eq!(page(&worker, "/role").as_deref(), Some("worker"));
    assert_eq!(
        container_id(LOCAL_DOCKER, &db),
        db_id,
        "the rollback replaced the accessory"
    );

    // `deploy --image` names which image it replaces; the other stays as built.
    deployment.succeed(&["unpin", name, "--json"]);
    let output = deployment.gantry(&["deploy", name, "--image", &web_v2, "--json"]);
    assert_eq!(output.status.code(), Some(1), "{}", stdout(&output));
    assert!(
        stdout(&output).contains("name the one --image gives: --image NAME=REF"),
        "{}",
        stdout(&output)
    );
    let given = format!("web={web_repository}@{web_v1}");
    let deployed = deployment.succeed(&["deploy", name, "--image", &given, "--json"]);
    assert_eq!(deployed["images"]["web"]["digest"], web_v1, "{deployed}");
    assert_eq!(
        deployed["images"]["worker"]["digest"], worker_v2,
        "{deployed}"
    );
    assert_eq!(label(&worker, "gantry.digest"), worker_v2);
    assert_eq!(label(&web, "gantry.digest"), web_v1);
}

#[test]
fn one_image_that_fails_to_build_fails_the_run_and_deploys_nothing() {
    let deployment = Deployment::new("imgs-fail", &[]);
    let name = &deployment.name;
    let (web_repository, worker_repository) = (
        format!("{}-web", deployment.repository),
        format!("{}-worker", deployment.repository),
    );
    let _images = RemoveImages(vec![web_repository.clone(), worker_repository.clone()]);
    deployment.repo.write(
        "Dockerfile",
        &format!("{DOCKERFILE}\nFROM base AS broken\nRUN echo the worker cannot build && exit 3\n"),
    );
    deployment.repo.commit("a broken target");
    let web = deployment.instance("web");
    deployment.config.write(
        &format!("pipelines/{name}.yaml"),
        &format!(
            "source: {{ repo: \"{}\", branch: main }}\n\
             images:\n  web: {{ repository: \"{web_repository}\", target: web }}\n  \
             worker: {{ repository: \"{worker_repository}\", target: broken }}\n\
             deploy:\n  services:\n    web:\n      image: web\n      ports: [\"8080\"]\n      \
             instances: {{ {web}: {{}} }}\n",
            deployment.repo.url(),
        ),
    );
    let (output, report) = deployment.gantry_json(&["run", name, "--json"]);
    assert_eq!(output.status.code(), Some(1), "{report}");
    let failure = &report["build"]["failure"];
    assert_eq!(failure["stage"], "build", "{report}");
    assert!(
        failure["message"]
            .as_str()
            .unwrap()
            .starts_with("[worker] "),
        "{report}"
    );
    assert!(
        failure["details"]
            .to_string()
            .contains("the worker cannot build"),
        "{report}"
    );
    assert!(report["deploy"].is_null(), "{report}");
    let listed = docker(LOCAL_DOCKER)
        .args(["ps", "-aq", "--filter", &format!("name={web}")])
        .output()
        .unwrap();
    assert!(stdout(&listed).trim().is_empty(), "a container was started");
}
