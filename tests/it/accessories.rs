//! Accessories: a service whose image the pipeline does not build, started once, left
//! alone by later deploys, `--force` and rollbacks, replaced only when its own spec
//! changes, with its named volume's data kept.

use crate::common::*;

/// The body `path` of a container's published port 8080 on the main engine.
fn page(container: &str, path: &str) -> String {
    let port = published_port(LOCAL_DOCKER, container);
    let output = std::process::Command::new("curl")
        .args(["-fsS", "-m", "5", &format!("http://127.0.0.1:{port}{path}")])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{container}{path}: {}",
        stderr(&output)
    );
    String::from_utf8_lossy(&output.stdout).trim().to_string()
}

#[test]
fn an_accessory_starts_once_stays_through_deploys_and_rollbacks_and_keeps_its_volume() {
    let deployment = Deployment::new("acc", &[]);
    let name = &deployment.name;
    let (db, web, volume) = (
        deployment.instance("db"),
        deployment.instance("web"),
        format!("{name}-db-data"),
    );
    // The registry's copy of the base image, as a team names postgres:16.
    let image = std::env::var("GANTRY_TEST_HOST_IMAGE")
        .unwrap_or_else(|_| format!("{}/gantry-test/busybox:latest", registry()));
    let pipeline = |mode: &str| {
        format!(
            "  services:\n    db:\n      accessory: true\n      image: \"{image}\"\n      \
             command: [\"sh\", \"-c\", \"mkdir -p /data/www && (test -f /data/www/first || date +%s%N >/data/www/first) && echo $DB_MODE >/data/www/mode && exec httpd -f -p 8080 -h /data/www\"]\n      \
             env: {{ DB_MODE: {mode} }}\n      ports: [\"8080\"]\n      volumes: [\"{volume}:/data\"]\n      \
             stop_timeout: 1s\n      health: {{ http: {{ port: 8080, path: /first }}, interval: 100ms }}\n      \
             instances: {{ {db}: {{}} }}\n    web:\n      requires: [db]\n      ports: [\"8080\"]\n      \
             stop_timeout: 1s\n      health: {{ http: {{ port: 8080, path: /healthz }}, interval: 100ms }}\n      \
             instances: {{ {web}: {{}} }}\n"
        )
    };
    deployment.pipeline(&pipeline("one"));
    let first = deployment.succeed(&["run", name, "--json"]);
    let db_id = container_id(LOCAL_DOCKER, &db);
    let created = page(&db, "/first");
    assert_eq!(page(&db, "/mode"), "one");
    let web_v1 = container_id(LOCAL_DOCKER, &web);
    let status = deployment.succeed(&["status", name, "--json"]);
    let rows = status["pipelines"][0]["instances"]
        .as_array()
        .unwrap()
        .clone();
    let row = |instance: &str| {
        rows.iter()
            .find(|row| row["instance"] == instance)
            .unwrap()
            .clone()
    };
    assert_eq!(row(&db)["image"], image.as_str(), "{status}");
    assert_eq!(row(&db)["drift"], serde_json::json!([]), "{status}");
    assert!(first.to_string().contains(&db), "{first}");

    // A new commit, a forced redeploy, a rollback: the app moves, the accessory stays.
    deployment.repo.write("www/index.html", "v2\n");
    deployment.repo.commit("v2");
    deployment.succeed(&["run", name, "--json"]);
    let web_v2 = container_id(LOCAL_DOCKER, &web);
    assert_ne!(web_v2, web_v1);
    assert_eq!(
        container_id(LOCAL_DOCKER, &db),
        db_id,
        "a push replaced the accessory"
    );
    deployment.succeed(&["deploy", name, "--force", "--json"]);
    assert_ne!(container_id(LOCAL_DOCKER, &web), web_v2);
    assert_eq!(
        container_id(LOCAL_DOCKER, &db),
        db_id,
        "--force replaced the accessory"
    );
    deployment.succeed(&["rollback", name, "--json"]);
    assert_eq!(
        fetch("127.0.0.1", published_port(LOCAL_DOCKER, &web)).as_deref(),
        Some("v1\n")
    );
    assert_eq!(
        container_id(LOCAL_DOCKER, &db),
        db_id,
        "a rollback replaced the accessory"
    );

    // Its own spec changes: a new container, on the same volume.
    deployment.succeed(&["unpin", name, "--json"]);
    deployment.pipeline(&pipeline("two"));
    deployment.succeed(&["deploy", name, "--json"]);
    assert_ne!(
        container_id(LOCAL_DOCKER, &db),
        db_id,
        "the changed accessory was kept"
    );
    assert_eq!(page(&db, "/mode"), "two");
    assert_eq!(page(&db, "/first"), created, "the volume's data was lost");
    // (`deploy` rolls out the newest build.)
    assert_eq!(
        fetch("127.0.0.1", published_port(LOCAL_DOCKER, &web)).as_deref(),
        Some("v2\n")
    );

    drop(deployment);
    let _ = docker(LOCAL_DOCKER)
        .args(["volume", "rm", "-f", &volume])
        .output();
}

#[test]
fn an_accessory_names_its_image_and_only_an_accessory_may() {
    let deployment = Deployment::new("acc-config", &[]);
    deployment.pipeline(
        "  services:\n    db:\n      accessory: true\n      instances: { a: {} }\n    \
         web:\n      image: \"redis:7\"\n      instances: { b: {} }\n    \
         cache:\n      accessory: true\n      image: \"redis:7:bad\"\n      instances: { c: {} }\n",
    );
    let output = deployment.gantry(&["validate"]);
    assert_eq!(output.status.code(), Some(2));
    let text = stdout(&output) + &stderr(&output);
    for expected in [
        "`deploy.services.db` is an accessory: name its image (`image: postgres:16`)".to_string(),
        format!(
            "`deploy.services.web.image`: `redis:7` is not one of the pipeline's images (`{}`); a service with an image of its own is an accessory (`accessory: true`)",
            deployment.name
        ),
        "`deploy.services.cache.image`: ".to_string(),
    ] {
        assert!(text.contains(expected.as_str()), "{expected}\n{text}");
    }
}
