//! `gantry build`: from a git commit to a pushed image, against the real engine and registries.

use std::process::Command;

use crate::common::*;

#[test]
fn a_fresh_commit_pushes_every_tag_with_the_registrys_digest() {
    require_docker();
    let repo = Repo::from_fixture();
    let sha = repo.git(&["rev-parse", "HEAD"]).trim().to_string();
    let mut config = ConfigDir::new();
    let path = format!("gantry-it/{}", unique("fresh"));
    let repository = format!("{}/{path}", registry());
    config.pipeline(
        "hello",
        &repo.url(),
        &repository,
        &["{{ commit.short }}", "latest", "run-{{ run.number }}"],
    );

    let (output, report) = config.gantry_json(&["build", "hello"]);
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(report["outcome"], "succeeded");
    assert_eq!(report["commit"]["sha"], sha.as_str());
    let digest = report["digest"].as_str().unwrap();
    let tags: Vec<&str> = report["tags"]
        .as_array()
        .unwrap()
        .iter()
        .map(|tag| tag.as_str().unwrap())
        .collect();
    assert_eq!(
        tags,
        vec![
            format!("{repository}:{}", &sha[..7]),
            format!("{repository}:latest"),
            format!("{repository}:run-1"),
        ]
    );
    for tag in [&sha[..7], "latest", "run-1"] {
        assert_eq!(
            registry_digest(&registry(), &path, tag, None),
            digest,
            "tag {tag}"
        );
    }
    let stage_names: Vec<&str> = report["stages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|stage| stage["name"].as_str().unwrap())
        .collect();
    assert_eq!(stage_names, ["checkout", "context", "build", "push"]);

    // The image carries the commit, the source and the pipeline, and the build argument.
    let labels = run(Command::new("docker").args([
        "inspect",
        "--format",
        "{{index .Config.Labels \"org.opencontainers.image.revision\"}} {{index .Config.Labels \"gantry.pipeline\"}} {{index .Config.Labels \"org.opencontainers.image.source\"}} {{json .Config.Env}}",
        tags[0],
    ]));
    assert!(
        labels.starts_with(&format!("{sha} hello file://")),
        "{labels}"
    );
    assert!(
        labels.contains(&format!("HELLO_VERSION={}", &sha[..7])),
        "{labels}"
    );

    // The run is in the state store with its outcome and timings.
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let runs = runtime.block_on(async {
        let store = gantry::store::Store::open(&gantry::store::Location::Directory(
            config.path().join(".gantry"),
        ))
        .await
        .unwrap();
        store.runs(Some("hello"), 10).await.unwrap()
    });
    assert_eq!(runs.len(), 1);
    assert_eq!(runs[0].state, gantry::run::RunState::Succeeded);
    assert_eq!(runs[0].commit.as_deref(), Some(sha.as_str()));
    assert_eq!(runs[0].digest.as_deref(), Some(digest));
    assert_eq!(runs[0].tags.len(), 3);
    assert_eq!(runs[0].stages.len(), 4);

    // People get the same facts without --json.
    let human = config.gantry(&["build", "hello"]);
    assert!(human.status.success(), "{}", stderr(&human));
    let text = stdout(&human);
    assert!(text.contains(&format!("digest  {digest}")), "{text}");
    assert!(text.contains("run #2"), "{text}");
}

#[test]
fn a_second_build_reuses_the_git_cache_and_the_layer_cache() {
    require_docker();
    let repo = Repo::from_fixture();
    let mut config = ConfigDir::new();
    let repository = format!("{}/gantry-it/{}", registry(), unique("cache"));
    config.pipeline("hello", &repo.url(), &repository, &["{{ commit.short }}"]);

    let (first_output, first) = config.gantry_json(&["build", "hello"]);
    assert!(first_output.status.success(), "{}", stderr(&first_output));
    assert_eq!(first["fetch"]["created"], true);
    assert!(first["fetch"]["received_objects"].as_u64().unwrap() > 0);
    let cache = first["fetch"]["cache"].as_str().unwrap().to_string();
    // A marker inside the cache survives only if the cache is not cloned again.
    std::fs::write(std::path::Path::new(&cache).join("gantry-test-marker"), "x").unwrap();

    let (second_output, second) = config.gantry_json(&["build", "hello"]);
    assert!(second_output.status.success(), "{}", stderr(&second_output));
    assert_eq!(second["fetch"]["created"], false);
    assert_eq!(second["fetch"]["cache"], cache.as_str());
    assert_eq!(second["fetch"]["received_objects"], 0);
    assert!(
        std::path::Path::new(&cache)
            .join("gantry-test-marker")
            .exists()
    );
    // Same commit, every step from the layer cache: the very same image and digest.
    assert_eq!(second["digest"], first["digest"]);
    let log = stderr(&second_output);
    assert_eq!(second["builder"], "buildkit");
    assert_eq!(
        buildkit_step(&log, "COPY www /www").as_deref(),
        Some("CACHED"),
        "a step ran again: {log}"
    );

    // After a one-line commit only the new objects come over, and unchanged steps stay cached.
    repo.write("www/index.html", "<p>changed</p>\n");
    let sha = repo.commit("one line");
    let (third_output, third) = config.gantry_json(&["build", "hello"]);
    assert!(third_output.status.success(), "{}", stderr(&third_output));
    assert_eq!(third["commit"]["sha"], sha.as_str());
    assert_eq!(third["fetch"]["created"], false);
    let received = third["fetch"]["received_objects"].as_u64().unwrap();
    assert!((1..=6).contains(&received), "received {received} objects");
    assert_ne!(third["digest"], first["digest"]);
}

#[test]
fn an_older_ref_can_be_built_with_commit() {
    require_docker();
    let repo = Repo::from_fixture();
    let first = repo.git(&["rev-parse", "HEAD"]).trim().to_string();
    repo.git(&["tag", "v1"]);
    repo.write("www/index.html", "<p>second</p>\n");
    repo.commit("second");
    let mut config = ConfigDir::new();
    let repository = format!("{}/gantry-it/{}", registry(), unique("ref"));
    config.pipeline("hello", &repo.url(), &repository, &["{{ commit.short }}"]);

    for reference in ["v1", &first[..10]] {
        let (output, report) = config.gantry_json(&["build", "hello", "--commit", reference]);
        assert!(output.status.success(), "{}", stderr(&output));
        assert_eq!(report["commit"]["sha"], first.as_str());
    }
    let output = config.gantry(&["build", "hello", "--commit", "no-such-ref"]);
    assert_eq!(output.status.code(), Some(1));
    assert!(
        stderr(&output).contains("no-such-ref: no such branch, tag or commit"),
        "{}",
        stderr(&output)
    );
}

#[test]
fn dockerignore_and_symlinks_keep_content_out_of_the_context() {
    require_docker();
    let outside = tempfile::tempdir().unwrap();
    let secret = unique("OUTSIDE-SECRET");
    std::fs::write(outside.path().join("secret.txt"), &secret).unwrap();

    let repo = Repo::from_fixture();
    // The whole context goes into the image, so the test can see what was sent.
    repo.write(
        "Dockerfile",
        "FROM gantry-test/busybox:latest\nCOPY . /ctx\nCMD [\"sh\"]\n",
    );
    repo.write(
        ".dockerignore",
        "secret.txt\n*.md\ntmp/\n!tmp/keep.txt\n**/*.log\n",
    );
    repo.write("tmp/drop.txt", "drop\n");
    repo.write("tmp/keep.txt", "keep\n");
    repo.write("docs/notes.md", "nested markdown is not matched by *.md\n");
    repo.write("deep/debug.log", "log\n");
    std::os::unix::fs::symlink(
        outside.path().join("secret.txt"),
        repo.path().join("absolute-link"),
    )
    .unwrap();
    let relative_target = format!(
        "../{}/secret.txt",
        outside.path().file_name().unwrap().to_string_lossy()
    );
    // Both temp dirs share a parent, so this relative link reaches the outside file too.
    std::os::unix::fs::symlink(&relative_target, repo.path().join("relative-link")).unwrap();
    std::os::unix::fs::symlink("www/index.html", repo.path().join("inside-link")).unwrap();
    repo.commit("context rules");

    let mut config = ConfigDir::new();
    let repository = format!("{}/gantry-it/{}", registry(), unique("context"));
    config.pipeline("hello", &repo.url(), &repository, &["latest"]);
    let (output, report) = config.gantry_json(&["build", "hello"]);
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(report["context"]["symlinks"], 3);

    let image = format!("{repository}:latest");
    let listing = run(Command::new("docker").args([
        "run", "--rm", &image, "sh", "-c",
        "cd /ctx && for f in $(busybox find . | busybox sort); do echo \"$f\"; done; cat absolute-link relative-link 2>&1; cat inside-link",
    ]));
    for present in [
        "./www/index.html",
        "./tmp/keep.txt",
        "./docs/notes.md",
        "./Dockerfile",
        "./.dockerignore",
        "./absolute-link",
    ] {
        assert!(
            listing.lines().any(|line| line == present),
            "{present} missing:\n{listing}"
        );
    }
    for absent in [
        "./secret.txt",
        "./README.md",
        "./tmp/drop.txt",
        "./deep/debug.log",
    ] {
        assert!(
            !listing.lines().any(|line| line == absent),
            "{absent} was sent:\n{listing}"
        );
    }
    assert!(
        !listing.contains(&secret),
        "outside content entered the image:\n{listing}"
    );
    // A link inside the context still works.
    assert!(listing.contains("Hello from gantry"), "{listing}");
}

#[test]
fn a_broken_dockerfile_fails_naming_the_step() {
    require_docker();
    let repo = Repo::from_fixture();
    repo.write(
        "Dockerfile",
        "FROM gantry-test/busybox:latest\nRUN echo before-the-failure && false\nCOPY www /www\n",
    );
    repo.commit("broken");
    let mut config = ConfigDir::new();
    let repository = format!("{}/gantry-it/{}", registry(), unique("broken"));
    config.pipeline("hello", &repo.url(), &repository, &["latest"]);

    // (BuildKit's step names; `buildkit::classic_builds_when_named_...` has the classic ones.)
    let output = config.gantry(&["build", "hello"]);
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    let text = stderr(&output);
    assert!(
        text.contains("failed at build: [2/3] RUN echo before-the-failure && false"),
        "{text}"
    );
    assert!(text.contains("exit code: 1"), "{text}");
    assert!(text.contains("  | before-the-failure"), "{text}");

    // An instruction Docker does not know fails with the engine's reason.
    repo.write(
        "Dockerfile",
        "FROM gantry-test/busybox:latest\nCOPPY www /www\n",
    );
    repo.commit("typo");
    let (output, report) = config.gantry_json(&["build", "hello"]);
    assert_eq!(output.status.code(), Some(1));
    assert_eq!(report["failure"]["stage"], "build");
    let message = report["failure"]["message"]
        .as_str()
        .unwrap()
        .to_lowercase();
    assert!(message.contains("unknown instruction"), "{message}");

    // A Dockerfile that is not there fails before anything is sent to the engine.
    let text = config.gantry_json(&["build", "hello"]).1;
    assert_eq!(text["outcome"], "failed");
    config.write(
        "pipelines/hello.yaml",
        &format!("source: {{ repo: \"{}\" }}\nbuild: {{ dockerfile: Missing.Dockerfile }}\nimage: {{ repository: {repository} }}\n", repo.url()),
    );
    let (output, report) = config.gantry_json(&["build", "hello"]);
    assert_eq!(output.status.code(), Some(1));
    assert_eq!(report["failure"]["stage"], "context");
    assert!(
        report["failure"]["message"]
            .as_str()
            .unwrap()
            .contains("`Missing.Dockerfile` does not exist")
    );
}

#[test]
fn the_auth_registry_refuses_without_credentials_and_accepts_with_them() {
    require_docker();
    let repo = Repo::from_fixture();
    let mut config = ConfigDir::new();
    let path = format!("gantry-it/{}", unique("auth"));
    let repository = format!("{}/{path}", auth_registry());
    config.pipeline("hello", &repo.url(), &repository, &["latest"]);

    let (output, report) = config.gantry_json(&["build", "hello"]);
    assert_eq!(output.status.code(), Some(1));
    assert_eq!(report["failure"]["stage"], "push");
    assert_eq!(report["failure"]["refusal"], "auth", "{report}");
    let human = config.gantry(&["build", "hello"]);
    let text = stderr(&human);
    assert!(text.contains("failed at push: push of"), "{text}");
    assert!(
        text.contains("hint: set `username` and `password`"),
        "{text}"
    );

    // Credentials from gantry.yaml, the password from the environment.
    config.write(
        "gantry.yaml",
        &format!(
            "registries:\n  {}: {{ username: {}, password: \"${{TEST_REGISTRY_PASSWORD}}\" }}\n",
            auth_registry(),
            auth_user()
        ),
    );
    let output = config.gantry_with(
        &["--json", "build", "hello"],
        &[("TEST_REGISTRY_PASSWORD", &auth_password())],
    );
    assert!(output.status.success(), "{}", stderr(&output));
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let served = registry_digest(
        &auth_registry(),
        &path,
        "latest",
        Some((&auth_user(), &auth_password())),
    );
    assert_eq!(report["digest"], served.as_str());
    assert!(
        !stderr(&output).contains(&auth_password()),
        "the password was printed"
    );
    assert!(
        !stdout(&output).contains(&auth_password()),
        "the password was printed"
    );

    // A wrong password is refused as an auth failure too.
    let output = config.gantry_with(
        &["--json", "build", "hello"],
        &[("TEST_REGISTRY_PASSWORD", "wrong")],
    );
    assert_eq!(output.status.code(), Some(1));
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(report["failure"]["refusal"], "auth", "{report}");

    // Without gantry.yaml credentials, Docker's own config.json is used.
    std::fs::remove_file(config.path().join("gantry.yaml")).unwrap();
    let auth = base64_encode(&format!("{}:{}", auth_user(), auth_password()));
    std::fs::write(
        config.docker_config.path().join("config.json"),
        format!(
            "{{\"auths\": {{\"{}\": {{\"auth\": \"{auth}\"}}}}}}",
            auth_registry()
        ),
    )
    .unwrap();
    let output = config.gantry(&["build", "hello"]);
    assert!(output.status.success(), "{}", stderr(&output));
}

#[test]
fn an_unreachable_registry_is_named() {
    require_docker();
    let repo = Repo::from_fixture();
    let mut config = ConfigDir::new();
    // Nothing listens on the discard port of loopback.
    let repository = format!("127.0.0.1:9/gantry-it/{}", unique("unreachable"));
    config.pipeline("hello", &repo.url(), &repository, &["latest"]);
    let (output, report) = config.gantry_json(&["build", "hello"]);
    assert_eq!(output.status.code(), Some(1));
    assert_eq!(report["failure"]["stage"], "push");
    assert_eq!(report["failure"]["refusal"], "unreachable", "{report}");
}

#[test]
fn git_daemon_sources_are_fetched() {
    require_docker();
    let repo = Repo::from_fixture();
    let port = free_port();
    let base = repo.path().parent().unwrap().to_path_buf();
    let mut daemon = Command::new("git")
        .args([
            "daemon",
            "--export-all",
            "--reuseaddr",
            "--listen=127.0.0.1",
            &format!("--port={port}"),
            &format!("--base-path={}", base.display()),
        ])
        .arg(&base)
        // git daemon's children inherit its output; keep them off the test's pipes.
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("git daemon starts");
    wait_for_port(port, &mut daemon);
    let name = repo
        .path()
        .file_name()
        .unwrap()
        .to_string_lossy()
        .into_owned();
    let mut config = ConfigDir::new();
    let repository = format!("{}/gantry-it/{}", registry(), unique("daemon"));
    config.pipeline(
        "hello",
        &format!("git://127.0.0.1:{port}/{name}"),
        &repository,
        &["latest"],
    );
    let (output, report) = config.gantry_json(&["build", "hello"]);
    let _ = daemon.kill();
    let _ = daemon.wait();
    assert_built_head(&output, &report, &repo);
}

#[test]
fn an_unreachable_repository_fails_the_checkout() {
    require_docker();
    let mut config = ConfigDir::new();
    let repository = format!("{}/gantry-it/{}", registry(), unique("norepo"));
    config.pipeline(
        "hello",
        "git://127.0.0.1:9/nothing",
        &repository,
        &["latest"],
    );
    let (output, report) = config.gantry_json(&["build", "hello"]);
    assert_eq!(output.status.code(), Some(1));
    assert_eq!(report["failure"]["stage"], "checkout");
    assert!(
        report["failure"]["message"]
            .as_str()
            .unwrap()
            .starts_with("cannot fetch git://127.0.0.1:9/nothing")
    );
}

#[test]
fn an_unknown_pipeline_is_bad_usage() {
    let mut config = ConfigDir::new();
    config.pipeline("hello", "/nowhere", "127.0.0.1:5115/x", &["latest"]);
    let output = config.gantry(&["build", "helo"]);
    assert_eq!(output.status.code(), Some(2));
    assert_eq!(
        stderr(&output).trim(),
        "error: no pipeline `helo` (did you mean `hello`?)"
    );
}

fn base64_encode(text: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(text)
}

#[test]
fn a_target_stage_and_extra_labels_are_built() {
    require_docker();
    let repo = Repo::from_fixture();
    repo.write(
        "Dockerfile",
        "FROM gantry-test/busybox:latest AS first\nARG VERSION\nRUN echo \"first $VERSION\" > /stage\n\
         FROM gantry-test/busybox:latest AS second\nRUN echo second > /stage\n",
    );
    let sha = repo.commit("two stages");
    let mut config = ConfigDir::new();
    let repository = format!("{}/gantry-it/{}", registry(), unique("target"));
    config.write(
        "pipelines/hello.yaml",
        &format!(
            "source: {{ repo: \"{}\" }}\nbuild:\n  target: first\n  args: {{ VERSION: \"{{{{ commit.short }}}}\" }}\n  labels: {{ team: platform }}\nimage: {{ repository: {repository}, tags: [latest] }}\n",
            repo.url()
        ),
    );
    config.repositories.push(repository.clone());
    let output = config.gantry(&["build", "hello"]);
    assert!(output.status.success(), "{}", stderr(&output));
    let image = format!("{repository}:latest");
    let stage = run(Command::new("docker").args(["run", "--rm", &image, "cat", "/stage"]));
    assert_eq!(stage.trim(), format!("first {}", &sha[..7]));
    let label = run(Command::new("docker").args([
        "inspect",
        "--format",
        "{{index .Config.Labels \"team\"}}",
        &image,
    ]));
    assert_eq!(label.trim(), "platform");
}
