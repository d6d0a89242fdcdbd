//! `build.builder`, `build.secrets`, `build.cache_from`: BuildKit and the classic builder
//! against the real engines and registry, the pushed image inspected layer by layer.

use std::process::Command;

use sha2::Digest as _;

use crate::common::*;

/// Writes `pipelines/hello.yaml` building `repo` into `repository` with `build` (lines
/// indented under `build:`).
fn pipeline(config: &mut ConfigDir, repo: &Repo, repository: &str, tags: &str, build: &str) {
    config.write(
        "pipelines/hello.yaml",
        &format!(
            "source: {{ repo: \"{}\" }}\nbuild:\n  args: {{ VERSION: \"{{{{ commit.short }}}}\" }}\n{build}\
             image: {{ repository: {repository}, tags: [{tags}] }}\n",
            repo.url()
        ),
    );
    if !config.repositories.iter().any(|known| known == repository) {
        config.repositories.push(repository.to_string());
    }
}

/// `CreatedBy` and `Comment` of every entry of an image's history, one per line.
fn history(image: &str) -> String {
    run(Command::new("docker").args([
        "history",
        "--no-trunc",
        "--format",
        "{{.CreatedBy}} | {{.Comment}}",
        image,
    ]))
}

fn sha256_hex(text: &str) -> String {
    hex::encode(sha2::Sha256::digest(text.as_bytes()))
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|window| window == needle.as_bytes())
}

#[test]
fn build_secrets_are_usable_in_run_steps_and_absent_from_the_pushed_image() {
    require_docker();
    let file_secret = format!("{}-from-a-file-Qx7", unique("gantry-secret"));
    let env_secret = format!("{}-from-the-env-Zk4", unique("gantry-secret"));
    let repo = Repo::from_fixture();
    // Each step keeps a hash of its secret (so the test can tell it had the value) and
    // prints the value (which gantry must mask).
    // BuildKit's cache keys leave secrets out by design: the first step makes this
    // test's steps new, or a step cached by an earlier run would not see these values.
    repo.write(
        "Dockerfile",
        &format!(
            "FROM gantry-test/busybox:latest\n\
         RUN echo {} > /nonce\n\
         RUN --mount=type=secret,id=file_token,required=true \
             sha256sum /run/secrets/file_token | cut -d' ' -f1 > /file_token.sha256 && \
             echo \"file token is $(cat /run/secrets/file_token)\"\n\
         RUN --mount=type=secret,id=env_token,required=true \
             sha256sum /run/secrets/env_token | cut -d' ' -f1 > /env_token.sha256 && \
             echo \"env token is $(cat /run/secrets/env_token)\"\n\
         RUN test ! -e /run/secrets/file_token && test ! -e /run/secrets/env_token\n\
         CMD [\"cat\", \"/file_token.sha256\", \"/env_token.sha256\"]\n",
            unique("nonce")
        ),
    );
    repo.commit("secrets");
    let mut config = ConfigDir::new();
    let path = format!("gantry-it/{}", unique("secrets"));
    let repository = format!("{}/{path}", registry());
    // No trailing newline: the hash is of exactly the value.
    config.write("secrets/token.txt", &file_secret);
    pipeline(
        &mut config,
        &repo,
        &repository,
        "latest",
        "  secrets:\n    file_token: { file: secrets/token.txt }\n    env_token: { env: GANTRY_IT_ENV_TOKEN }\n",
    );
    let environment = [("GANTRY_IT_ENV_TOKEN", env_secret.as_str())];

    let output = config.gantry_with(&["--json", "build", "hello"], &environment);
    assert!(output.status.success(), "{}", stderr(&output));
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(report["builder"], "buildkit", "{report}");
    let digest = report["digest"].as_str().unwrap().to_string();

    // What gantry printed and stored shows that the steps printed something, masked.
    let log = stderr(&output);
    assert!(log.contains("file token is ***"), "{log}");
    assert!(log.contains("env token is ***"), "{log}");
    let stored = stdout(&config.gantry_with(&["logs", "hello#1"], &environment));
    assert!(stored.contains("env token is ***"), "{stored}");
    for text in [&log, &stdout(&output), &stored] {
        assert!(!text.contains(&file_secret), "the file secret was printed");
        assert!(!text.contains(&env_secret), "the env secret was printed");
    }

    // The pushed image, as a host pulls it: by digest, with nothing of it left locally.
    run(Command::new("docker").args(["rmi", &format!("{repository}:latest")]));
    let pushed = format!("{repository}@{digest}");
    run(Command::new("docker").args(["pull", "-q", &pushed]));
    // The steps had the values...
    let hashes = run(Command::new("docker").args(["run", "--rm", &pushed]));
    assert_eq!(
        hashes.split_whitespace().collect::<Vec<_>>(),
        [sha256_hex(&file_secret), sha256_hex(&env_secret)]
    );
    // ...and no history entry has them...
    let entries = history(&pushed);
    assert!(
        entries.contains("sha256sum /run/secrets/file_token"),
        "{entries}"
    );
    assert!(!entries.contains(&file_secret), "{entries}");
    assert!(!entries.contains(&env_secret), "{entries}");
    // ...nor any layer or the image's config: `docker save` writes every layer as an
    // uncompressed tar, so the bytes of every file are in its output.
    let saved = Command::new("docker")
        .args(["save", &pushed])
        .output()
        .unwrap();
    assert!(saved.status.success(), "{}", stderr(&saved));
    assert!(
        contains(&saved.stdout, &sha256_hex(&file_secret)),
        "the search does not see the content of layers"
    );
    assert!(
        !contains(&saved.stdout, &file_secret),
        "a layer holds the file secret"
    );
    assert!(
        !contains(&saved.stdout, &env_secret),
        "a layer holds the env secret"
    );
    run(Command::new("docker").args(["rmi", &pushed]));

    // A secret that cannot be read fails the build before anything reaches the engine.
    std::fs::remove_file(config.path().join("secrets/token.txt")).unwrap();
    let output = config.gantry_with(&["--json", "build", "hello"], &environment);
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(report["failure"]["stage"], "build");
    let message = report["failure"]["message"].as_str().unwrap();
    assert!(
        message.starts_with("build secret `file_token`: cannot read "),
        "{message}"
    );
}

#[test]
fn classic_builds_when_named_and_auto_builds_with_buildkit() {
    require_docker();
    let repo = Repo::from_fixture();
    let sha = repo.git(&["rev-parse", "HEAD"]).trim().to_string();
    let mut config = ConfigDir::new();
    let repository = format!("{}/gantry-it/{}", registry(), unique("builders"));
    let labels_of = |image: &str| {
        run(Command::new("docker").args([
            "inspect",
            "--format",
            "{{json .Config.Labels}} {{json .Config.Env}}",
            image,
        ]))
    };

    pipeline(
        &mut config,
        &repo,
        &repository,
        "classic",
        "  builder: classic\n",
    );
    let (output, report) = config.gantry_json(&["build", "hello"]);
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(report["builder"], "classic", "{report}");
    let log = stderr(&output);
    assert!(log.contains("[build] builder: classic"), "{log}");
    assert!(log.contains("[build] Step 1/"), "{log}");
    let classic_image = format!("{repository}:classic");
    let classic_history = history(&classic_image);
    assert!(!classic_history.contains("buildkit"), "{classic_history}");
    // The labels went into the Dockerfile as one instruction: one step.
    assert_eq!(
        classic_history.matches("LABEL").count(),
        1,
        "{classic_history}"
    );

    // The default is `auto`: BuildKit on this engine, with the same labels and arguments.
    pipeline(&mut config, &repo, &repository, "auto", "");
    let (output, report) = config.gantry_json(&["build", "hello"]);
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(report["builder"], "buildkit", "{report}");
    let log = stderr(&output);
    assert!(log.contains("[build] builder: buildkit"), "{log}");
    assert!(!log.contains("Step 1/"), "{log}");
    let auto_image = format!("{repository}:auto");
    let auto_history = history(&auto_image);
    // Every step BuildKit made says so; the labels cost no step of their own.
    assert!(
        auto_history.contains("COPY www /www # buildkit | buildkit.dockerfile.v0"),
        "{auto_history}"
    );
    assert!(!auto_history.contains("LABEL"), "{auto_history}");
    assert_eq!(labels_of(&auto_image), labels_of(&classic_image));
    assert!(
        labels_of(&auto_image)
            .contains(&format!("\"org.opencontainers.image.revision\":\"{sha}\"")),
        "{}",
        labels_of(&auto_image)
    );

    // Both name the step that failed, with its last lines.
    repo.write(
        "Dockerfile",
        "FROM gantry-test/busybox:latest\nRUN echo before-the-failure && false\nCOPY www /www\n",
    );
    repo.commit("broken");
    for (builder, step, reason) in [
        (
            "  builder: classic\n",
            "failed at build: Step 2/4 : RUN echo before-the-failure && false",
            "returned a non-zero code: 1",
        ),
        (
            "",
            "failed at build: [2/3] RUN echo before-the-failure && false",
            "exit code: 1",
        ),
    ] {
        pipeline(&mut config, &repo, &repository, "broken", builder);
        let output = config.gantry(&["build", "hello"]);
        assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
        let text = stderr(&output);
        assert!(text.contains(step), "{text}");
        assert!(text.contains(reason), "{text}");
        assert!(text.contains("  | before-the-failure"), "{text}");
    }
}

#[test]
fn a_target_stage_and_build_args_work_with_both_builders() {
    require_docker();
    let repo = Repo::from_fixture();
    repo.write(
        "Dockerfile",
        "FROM gantry-test/busybox:latest AS first\nARG VERSION\nRUN echo \"first $VERSION\" > /stage\n\
         FROM gantry-test/busybox:latest AS second\nRUN echo second > /stage\n",
    );
    let sha = repo.commit("two stages");
    let mut config = ConfigDir::new();
    let repository = format!("{}/gantry-it/{}", registry(), unique("stages"));
    for builder in ["classic", "buildkit"] {
        pipeline(
            &mut config,
            &repo,
            &repository,
            builder,
            &format!("  builder: {builder}\n  target: first\n  labels: {{ team: platform }}\n"),
        );
        let (output, report) = config.gantry_json(&["build", "hello"]);
        assert!(output.status.success(), "{}", stderr(&output));
        assert_eq!(report["builder"], builder, "{report}");
        let image = format!("{repository}:{builder}");
        let stage = run(Command::new("docker").args(["run", "--rm", &image, "cat", "/stage"]));
        assert_eq!(stage.trim(), format!("first {}", &sha[..7]), "{builder}");
        let labels = run(Command::new("docker").args([
            "inspect",
            "--format",
            "{{index .Config.Labels \"team\"}} {{index .Config.Labels \"gantry.pipeline\"}}",
            &image,
        ]));
        assert_eq!(labels.trim(), "platform hello", "{builder}");
    }
}

/// Removes `image` from one engine when the test ends, however it ends.
struct RemoveOnDrop {
    engine: String,
    image: String,
}

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = docker(&self.engine)
            .args(["rmi", "-f", &self.image])
            .output();
    }
}

#[test]
fn cache_from_a_pushed_image_lets_a_fresh_engine_skip_a_slow_step() {
    require_docker();
    let repo = Repo::from_fixture();
    // The slow step writes random bytes: run again, it would make a different layer. Its
    // nonce keeps an earlier run's cache on the engine out of the picture.
    repo.write(
        "Dockerfile",
        &format!(
            "FROM {}\nRUN sleep 3 && echo {} && head -c 32 /dev/urandom | od -An -tx1 > /random\n\
             COPY www /www\n",
            std::env::var("GANTRY_TEST_HOST_IMAGE")
                .unwrap_or_else(|_| format!("{}/gantry-test/busybox:latest", registry())),
            unique("nonce")
        ),
    );
    let first_sha = repo.commit("slow step");
    let mut config = ConfigDir::new();
    let path = format!("gantry-it/{}", unique("cache-from"));
    let repository = format!("{}/{path}", registry());
    // Engine 1 has never seen this repository: only the registry can give it the layer.
    config.write(
        "gantry.yaml",
        &format!("hosts:\n  h1: {{ docker: \"{}\" }}\n", host_docker(1)),
    );
    // As a team would write it: every build may reuse the last pushed image's layers.
    let build = |host: &str| format!("  host: {host}\n  cache_from: [\"{repository}:latest\"]\n");
    let tags = "\"{{ commit.short }}\", latest";
    pipeline(&mut config, &repo, &repository, tags, &build("local"));
    let (output, first) = config.gantry_json(&["build", "hello"]);
    assert!(output.status.success(), "{first}\n{}", stderr(&output));
    assert_eq!(first["builder"], "buildkit");
    // Nothing to reuse yet: the missing image costs the cache, not the build.
    let log = stderr(&output);
    assert_eq!(
        buildkit_step(&log, "importing cache manifest").as_deref(),
        Some("ERROR"),
        "{log}"
    );
    assert_eq!(
        buildkit_step(&log, "RUN sleep 3").as_deref(),
        Some("DONE"),
        "{log}"
    );

    // A one-line commit, built on the other engine.
    repo.write("www/index.html", "<p>changed</p>\n");
    let second_sha = repo.commit("one line");
    let _cleanup = [&second_sha[..7], "latest"].map(|tag| RemoveOnDrop {
        engine: host_docker(1),
        image: format!("{repository}:{tag}"),
    });
    pipeline(&mut config, &repo, &repository, tags, &build("h1"));
    let (output, second) = config.gantry_json(&["build", "hello"]);
    assert!(output.status.success(), "{second}\n{}", stderr(&output));
    let log = stderr(&output);
    assert!(log.contains("building on `h1`"), "{log}");
    assert_eq!(
        buildkit_step(&log, "RUN sleep 3").as_deref(),
        Some("CACHED"),
        "{log}"
    );
    assert_eq!(
        buildkit_step(&log, "COPY www").as_deref(),
        Some("DONE"),
        "{log}"
    );

    // The slow step's layer in the second image is the very one the first build made.
    let layers = |tag: &str| -> Vec<String> {
        let manifest = run(Command::new("curl").args([
            "-sS",
            "-H",
            "Accept: application/vnd.docker.distribution.manifest.v2+json",
            &format!("http://{}/v2/{path}/manifests/{tag}", registry()),
        ]));
        let manifest: serde_json::Value = serde_json::from_str(&manifest).unwrap();
        manifest["layers"]
            .as_array()
            .unwrap_or_else(|| panic!("no layers: {manifest}"))
            .iter()
            .map(|layer| layer["digest"].as_str().unwrap().to_string())
            .collect()
    };
    let (first_layers, second_layers) = (layers(&first_sha[..7]), layers(&second_sha[..7]));
    assert_eq!(first_layers.len(), 3, "{first_layers:?}");
    assert_eq!(first_layers[..2], second_layers[..2]);
    assert_ne!(first_layers[2], second_layers[2]);
    assert_ne!(first["digest"], second["digest"]);
}
