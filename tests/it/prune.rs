//! Hosts stay clean: after each deploy, and with `gantry prune`, a pipeline's images
//! beyond `deploy.keep_images` and its stopped `.previous` containers go, and nothing
//! else does: not what runs, not the rollback target, not what a container uses, not
//! what gantry cannot tell is the pipeline's.

use std::collections::BTreeSet;
use std::process::Stdio;

use crate::common::*;

/// The base image as engine `engine` knows it (extra engines pull it from the registry).
fn base_image(engine: &str) -> String {
    if engine == LOCAL_DOCKER {
        std::env::var("GANTRY_TEST_BASE_IMAGE").unwrap_or("gantry-test/busybox:latest".into())
    } else {
        std::env::var("GANTRY_TEST_HOST_IMAGE")
            .unwrap_or("127.0.0.1:5115/gantry-test/busybox:latest".into())
    }
}

/// Images and containers a test makes by hand on one engine; removed when it ends.
struct HandMade {
    engine: String,
    images: Vec<String>,
    containers: Vec<String>,
}

impl HandMade {
    fn new(engine: &str) -> HandMade {
        HandMade {
            engine: engine.to_string(),
            images: Vec::new(),
            containers: Vec::new(),
        }
    }

    /// `docker tag SOURCE NAME`.
    fn tag(&mut self, source: &str, name: &str) {
        run(docker(&self.engine).args(["tag", source, name]));
        self.images.push(name.to_string());
    }

    /// Builds `dockerfile` (no context) as `name`.
    fn build(&mut self, name: &str, dockerfile: &str) {
        let mut child = docker(&self.engine)
            .args(["build", "-q", "-t", name, "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        use std::io::Write;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(dockerfile.as_bytes())
            .unwrap();
        let output = child.wait_with_output().unwrap();
        assert!(
            output.status.success(),
            "building {name}: {}",
            stderr(&output)
        );
        self.images.push(name.to_string());
    }

    /// `docker create` (or `docker run -d` when `running`) of `image` as `name`, labelled `labels`.
    fn container(&mut self, name: &str, labels: &[(&str, &str)], image: &str, running: bool) {
        let mut command = docker(&self.engine);
        match running {
            true => command.args(["run", "-d"]),
            false => command.arg("create"),
        };
        command.args(["--name", name]);
        for (key, value) in labels {
            command.args(["--label", &format!("{key}={value}")]);
        }
        run(command.args([image, "sleep", "600"]));
        self.containers.push(name.to_string());
    }

    fn remove_container(&mut self, name: &str) {
        run(docker(&self.engine).args(["rm", "-f", name]));
        self.containers.retain(|kept| kept != name);
    }
}

impl Drop for HandMade {
    fn drop(&mut self) {
        for container in &self.containers {
            let _ = docker(&self.engine).args(["rm", "-f", container]).output();
        }
        // By name: a tag of a shared image only loses the tag.
        for image in &self.images {
            let _ = docker(&self.engine).args(["rmi", image]).output();
        }
    }
}

fn exists(engine: &str, kind: &str, name: &str) -> bool {
    docker(engine)
        .args([kind, "inspect", name])
        .output()
        .is_ok_and(|output| output.status.success())
}

/// The fixture with a Dockerfile step of the test's own: its images share no parent
/// layer with other tests' builds, so removing them never takes another test's cache.
fn own_dockerfile(deployment: &Deployment) {
    deployment.repo.write(
        "Dockerfile",
        &format!(
            "FROM gantry-test/busybox:latest\nENV PRUNE_TEST={}\nCOPY www /www\nEXPOSE 8080\n\
             CMD [\"httpd\", \"-f\", \"-p\", \"8080\", \"-h\", \"/www\"]\n",
            deployment.name
        ),
    );
}

/// Commits version `version` of the page and runs `command` (`run` or `build`); the digest built.
fn release(deployment: &Deployment, version: usize, command: &str) -> String {
    deployment
        .repo
        .write("www/index.html", &format!("v{version}\n"));
    deployment.repo.commit(&format!("v{version}"));
    let report = deployment.succeed(&[command, &deployment.name]);
    report["build"]["digest"]
        .as_str()
        .or_else(|| report["digest"].as_str())
        .unwrap_or_else(|| panic!("no digest: {report}"))
        .to_string()
}

/// The digests of the pipeline's images on an engine: its label and its repository.
fn pipeline_digests(engine: &str, deployment: &Deployment) -> BTreeSet<String> {
    let label = format!("label=gantry.pipeline={}", deployment.name);
    run(docker(engine).args([
        "images",
        "--digests",
        "--format",
        "{{.Digest}}",
        "--filter",
        &label,
        &deployment.repository,
    ]))
    .lines()
    .filter(|digest| digest.starts_with("sha256:"))
    .map(str::to_string)
    .collect()
}

fn set(digests: &[&String]) -> BTreeSet<String> {
    digests.iter().map(|digest| digest.to_string()).collect()
}

/// The names of the listed items of one kind on one host, with each one's reason.
fn listed(items: &serde_json::Value, host: &str, kind: &str) -> BTreeSet<(String, String)> {
    items
        .as_array()
        .unwrap()
        .iter()
        .filter(|item| item["host"] == host && item["kind"] == kind)
        .map(|item| {
            (
                item["name"].as_str().unwrap().to_string(),
                item["reason"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect()
}

/// The labels gantry gives an instance's container.
fn owned_by<'a>(pipeline: &'a str, instance: &'a str) -> [(&'a str, &'a str); 2] {
    [("gantry.pipeline", pipeline), ("gantry.instance", instance)]
}

fn two_instances(deployment: &Deployment, keep: usize, second_host: &str) -> (String, String) {
    let (first, second) = (deployment.instance("a"), deployment.instance("b"));
    deployment.pipeline(&format!(
        "  keep_images: {keep}\n  services:\n    web:\n      ports: [\"8080\"]\n      stop_timeout: 1s\n      \
         health:\n        http: {{ port: 8080, path: /healthz }}\n        interval: 100ms\n      \
         instances:\n        {first}: {{}}\n        {second}: {{ host: {second_host} }}\n"
    ));
    (first, second)
}

#[test]
fn each_deploy_leaves_the_newest_images_on_every_host_and_nothing_hand_made_goes() {
    let deployment = Deployment::new("prune-keep", &[1]);
    let remote = host_docker(1);
    own_dockerfile(&deployment);
    two_instances(&deployment, 2, "h1");
    let mut local_things = HandMade::new(LOCAL_DOCKER);
    let mut remote_things = HandMade::new(&remote);
    let copy = format!("{}-copy:latest", deployment.name);
    let lookalike = format!("{}-lookalike:1", deployment.name);
    let unlabelled = format!("{}:handmade", deployment.repository);
    let holder = format!("{}-holder", deployment.name);
    for (engine, things) in [
        (LOCAL_DOCKER, &mut local_things),
        (remote.as_str(), &mut remote_things),
    ] {
        let base = base_image(engine);
        // The base image under another name; an image with the pipeline's labels in
        // another repository; one in the pipeline's repository without its labels; a
        // stopped container of someone's.
        things.tag(&base, &copy);
        things.build(
            &lookalike,
            &format!(
                "FROM {base}\nLABEL gantry.pipeline={} org.opencontainers.image.revision=0000\n",
                deployment.name
            ),
        );
        things.build(
            &unlabelled,
            &format!("FROM {base}\nENV HANDMADE={}\n", deployment.name),
        );
        things.container(&holder, &[], &copy, false);
    }

    let digests: Vec<String> = (1..=4)
        .map(|version| release(&deployment, version, "run"))
        .collect();
    // The two newest stay on both hosts: the running one and the rollback target.
    let newest = set(&[&digests[2], &digests[3]]);
    assert_eq!(pipeline_digests(LOCAL_DOCKER, &deployment), newest);
    assert_eq!(pipeline_digests(&remote, &deployment), newest);
    for engine in [LOCAL_DOCKER, remote.as_str()] {
        for image in [&copy, &lookalike, &unlabelled] {
            assert!(exists(engine, "image", image), "{image} on {engine}");
        }
        assert!(exists(engine, "container", &holder), "{holder} on {engine}");
    }
    // The run's log says what went, on each host.
    let output = deployment.gantry(&["logs", &format!("{}#4", deployment.name)]);
    let log = stdout(&output);
    for host in ["local", "h1"] {
        assert!(
            log.contains(&format!(
                "prune: {host}: removed image {}@",
                deployment.repository
            )),
            "{log}"
        );
    }
    assert!(!log.contains("warning"), "{log}");
}

#[test]
fn prune_dry_run_lists_what_prune_then_removes() {
    let deployment = Deployment::new("prune-dry", &[]);
    own_dockerfile(&deployment);
    let first = deployment.instance("a");
    deployment.pipeline(&format!("  keep_images: 3\n{}", one_instance(&first)));
    // Deployed, built twice without a deploy, deployed again: four images, none pruned yet.
    let rollback_target = release(&deployment, 1, "run");
    let built = [
        release(&deployment, 2, "build"),
        release(&deployment, 3, "build"),
    ];
    let running = release(&deployment, 4, "run");
    assert_eq!(
        pipeline_digests(LOCAL_DOCKER, &deployment),
        set(&[&rollback_target, &built[0], &built[1], &running])
    );

    deployment.pipeline(&format!("  keep_images: 1\n{}", one_instance(&first)));
    let (output, dry) = deployment.gantry_json(&["prune", &deployment.name, "--dry-run"]);
    assert!(output.status.success(), "{dry}\n{}", stderr(&output));
    assert_eq!(dry["dry_run"], true, "{dry}");
    assert_eq!(dry["keep_images"], 1, "{dry}");
    let reference = |digest: &String| format!("{}@{digest}", deployment.repository);
    let would = listed(&dry["removed"], "local", "image");
    let expected: BTreeSet<(String, String)> = built
        .iter()
        .map(|digest| (reference(digest), String::new()))
        .collect();
    assert_eq!(would, expected, "{dry}");
    assert_eq!(
        listed(&dry["kept"], "local", "image"),
        BTreeSet::from([
            (reference(&running), "deployed".to_string()),
            (reference(&rollback_target), "rollback_target".to_string()),
        ]),
        "{dry}"
    );
    // Nothing went.
    assert_eq!(pipeline_digests(LOCAL_DOCKER, &deployment).len(), 4);
    // The same for people.
    let text = stdout(&deployment.gantry(&["prune", &deployment.name, "--dry-run"]));
    assert!(text.contains("would remove"), "{text}");
    for digest in &built {
        // `repository@sha256:` and the digest's first 12 characters.
        assert!(text.contains(&digest[..19]), "{text}");
    }

    let (output, done) = deployment.gantry_json(&["prune", &deployment.name]);
    assert!(output.status.success(), "{done}\n{}", stderr(&output));
    assert_eq!(done["dry_run"], false, "{done}");
    assert_eq!(done["removed"], dry["removed"], "{done}");
    assert_eq!(done["errors"], serde_json::json!([]), "{done}");
    assert_eq!(
        pipeline_digests(LOCAL_DOCKER, &deployment),
        set(&[&rollback_target, &running])
    );
}

#[test]
fn what_runs_what_rollback_needs_and_what_a_container_uses_stay_with_keep_images_one() {
    let deployment = Deployment::new("prune-protect", &[]);
    own_dockerfile(&deployment);
    let first = deployment.instance("a");
    deployment.pipeline(&format!("  keep_images: 1\n{}", one_instance(&first)));
    let mut things = HandMade::new(LOCAL_DOCKER);
    let holder = format!("{}-holder", deployment.name);

    let one = release(&deployment, 1, "run");
    // Someone's stopped container on the first image.
    things.container(
        &holder,
        &[],
        &format!("{}@{one}", deployment.repository),
        false,
    );
    let two = release(&deployment, 2, "run");
    let three = release(&deployment, 3, "run");
    // One image to keep, three stay: the running one, the rollback target (older than
    // it), and the one a container uses.
    assert_eq!(
        pipeline_digests(LOCAL_DOCKER, &deployment),
        set(&[&one, &two, &three])
    );

    // Back to the second: it runs, older than the third, which is now the rollback target.
    deployment.succeed(&["rollback", &deployment.name]);
    assert_eq!(
        pipeline_digests(LOCAL_DOCKER, &deployment),
        set(&[&one, &two, &three])
    );
    things.remove_container(&holder);
    let (output, report) = deployment.gantry_json(&["prune", &deployment.name]);
    assert!(output.status.success(), "{report}\n{}", stderr(&output));
    let reference = |digest: &String| format!("{}@{digest}", deployment.repository);
    assert_eq!(
        listed(&report["removed"], "local", "image"),
        BTreeSet::from([(reference(&one), String::new())]),
        "{report}"
    );
    assert_eq!(
        listed(&report["kept"], "local", "image"),
        BTreeSet::from([
            (reference(&two), "deployed".to_string()),
            (reference(&three), "rollback_target".to_string()),
        ]),
        "{report}"
    );
    assert_eq!(
        pipeline_digests(LOCAL_DOCKER, &deployment),
        set(&[&two, &three])
    );
}

#[test]
fn prune_removes_the_pipelines_stopped_previous_containers_and_nobody_elses() {
    let deployment = Deployment::new("prune-left", &[]);
    let (first, second) = two_instances(&deployment, 3, "local");
    let digest = release(&deployment, 1, "run");
    let image = format!("{}@{digest}", deployment.repository);
    let mut things = HandMade::new(LOCAL_DOCKER);
    // Left by an interrupted deploy: one stopped, one still running.
    let stopped = format!("{first}.previous");
    let running = format!("{second}.previous");
    things.container(&stopped, &owned_by(&deployment.name, &first), &image, false);
    things.container(&running, &owned_by(&deployment.name, &second), &image, true);
    // Stopped `.previous` containers that are not the pipeline's: someone's, and another pipeline's.
    let mine = format!("{}-mine.previous", deployment.name);
    let theirs_instance = format!("{}-theirs", deployment.name);
    let theirs = format!("{theirs_instance}.previous");
    let base = base_image(LOCAL_DOCKER);
    things.container(&mine, &[], &base, false);
    let other = format!("{}-other", deployment.name);
    things.container(&theirs, &owned_by(&other, &theirs_instance), &base, false);

    let (output, report) = deployment.gantry_json(&["prune", &deployment.name]);
    assert!(output.status.success(), "{report}\n{}", stderr(&output));
    assert_eq!(
        listed(&report["removed"], "local", "container"),
        BTreeSet::from([(stopped.clone(), String::new())]),
        "{report}"
    );
    assert_eq!(
        listed(&report["kept"], "local", "container"),
        BTreeSet::from([(running.clone(), "running".to_string())]),
        "{report}"
    );
    assert!(!exists(LOCAL_DOCKER, "container", &stopped));
    for name in [&running, &mine, &theirs, &first, &second] {
        assert!(exists(LOCAL_DOCKER, "container", name), "{name}");
    }
}
