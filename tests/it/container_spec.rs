//! The container settings a team sets reach the engine as written, and secrets from an
//! `env_file` or a `${file:PATH}` reach the container and no message of gantry's;
//! `status` reports a container that drifted from them.

use std::time::Duration;

use crate::common::*;
use crate::deploy::instances_by_name;

const ENV_FILE_SECRET: &str = "envfile-s3cret-4417";
const FILE_SECRET: &str = "file-s3cret-9023";
const READ_TOKEN: &str = "spec-reader-token-0123456789";

#[test]
fn every_container_setting_reaches_the_engine_and_secrets_reach_only_the_container() {
    let deployment = Deployment::new("spec", &[]);
    let config = &deployment.config;
    let name = &deployment.name;
    let instance = deployment.instance("1");
    let (front, back, volume) = (
        format!("{name}-front"),
        format!("{name}-back"),
        format!("{name}-data"),
    );
    config.write(
        "web.env",
        &format!("# the app's settings\nAPP_MODE=production\nAPI_KEY={ENV_FILE_SECRET}\n"),
    );
    config.write("secrets/db_password", &format!("{FILE_SECRET}\n"));
    config.append(
        "gantry.yaml",
        &format!("server:\n  token: spec-operator-token-0123456789\n  read_token: {READ_TOKEN}\n"),
    );
    deployment.pipeline(&format!(
        "  services:\n    web:\n      ports: [\"8080\"]\n      \
         entrypoint: [httpd]\n      command: [\"-f\", \"-p\", \"8080\", \"-h\", \"/www\"]\n      \
         user: \"65534\"\n      \
         logging: {{ driver: json-file, options: {{ max-size: 1m, max-file: \"2\" }} }}\n      \
         networks: {{ {front}: {{ aliases: [www-{name}] }}, {back}: {{}} }}\n      \
         extra_hosts: [\"db.internal:10.0.0.5\"]\n      \
         ulimits: {{ nofile: {{ soft: 1024, hard: 2048 }} }}\n      \
         read_only: true\n      tmpfs: [\"/tmp:size=1m\"]\n      \
         cap_drop: [ALL]\n      init: true\n      \
         env_file: web.env\n      env: {{ DB_PASSWORD: \"${{file:secrets/db_password}}\" }}\n      \
         stop_timeout: 1s\n      \
         health:\n        http: {{ port: 8080, path: /healthz }}\n        interval: 100ms\n      \
         instances:\n        {instance}: {{ ports: [\"9090\"], volumes: [\"{volume}:/data\"] }}\n"
    ));
    let mut command = config.command(&["run", name, "--json"]);
    command.env("GANTRY_LOG", "debug");
    let run = command.output().unwrap();
    assert!(run.status.success(), "{}\n{}", stdout(&run), stderr(&run));

    let container = inspect(LOCAL_DOCKER, &instance);
    let host_config = &container["HostConfig"];
    assert_eq!(
        container["Config"]["Entrypoint"],
        serde_json::json!(["httpd"])
    );
    assert_eq!(container["Config"]["User"], "65534");
    assert_eq!(
        host_config["LogConfig"],
        serde_json::json!({ "Type": "json-file", "Config": { "max-size": "1m", "max-file": "2" } })
    );
    assert_eq!(
        host_config["ExtraHosts"],
        serde_json::json!(["db.internal:10.0.0.5"])
    );
    assert_eq!(
        host_config["Ulimits"],
        serde_json::json!([{ "Name": "nofile", "Soft": 1024, "Hard": 2048 }])
    );
    assert_eq!(host_config["ReadonlyRootfs"], true);
    assert_eq!(
        host_config["Tmpfs"],
        serde_json::json!({ "/tmp": "size=1m" })
    );
    assert_eq!(host_config["CapDrop"], serde_json::json!(["ALL"]));
    assert_eq!(host_config["Init"], true);
    let bindings = host_config["PortBindings"].as_object().unwrap();
    assert!(
        bindings.contains_key("8080/tcp") && bindings.contains_key("9090/tcp"),
        "{bindings:?}"
    );
    let mounts = container["Mounts"].to_string();
    assert!(
        mounts.contains(&volume) && mounts.contains("/data"),
        "{mounts}"
    );
    // Both networks, the first with its alias, each with the service's and instance's names.
    let networks = &container["NetworkSettings"]["Networks"];
    let aliases = |network: &str| networks[network]["Aliases"].to_string();
    assert!(
        aliases(&front).contains(&format!("www-{name}")),
        "{networks}"
    );
    assert!(
        aliases(&front).contains(&instance) && aliases(&back).contains(&instance),
        "{networks}"
    );
    // The secrets are the container's, as written in their files.
    let env = container["Config"]["Env"].to_string();
    for variable in [
        format!("API_KEY={ENV_FILE_SECRET}"),
        format!("DB_PASSWORD={FILE_SECRET}"),
        "APP_MODE=production".to_string(),
    ] {
        assert!(env.contains(&variable), "{variable} not in {env}");
    }
    // The service answers as the unprivileged user on its read-only root.
    let port = published_port(LOCAL_DOCKER, &instance);
    assert_eq!(fetch("127.0.0.1", port).as_deref(), Some("v1\n"));

    // Nothing gantry says or stores shows them.
    let mut seen = vec![
        (
            "run output".to_string(),
            format!("{}\n{}", stdout(&run), stderr(&run)),
        ),
        (
            "status".to_string(),
            stdout(&config.gantry(&["status", name, "--json"])),
        ),
        (
            "runs".to_string(),
            stdout(&config.gantry(&["runs", name, "--json"])),
        ),
        (
            "log".to_string(),
            stdout(&config.gantry(&["logs", &format!("{name}#1")])),
        ),
        (
            "validate".to_string(),
            stdout(&config.gantry(&["validate", "--json"])),
        ),
        (
            "labels".to_string(),
            format!(
                "{}\n{}",
                container["Config"]["Labels"],
                run_docker(&[
                    "image",
                    "inspect",
                    "--format",
                    "{{json .Config.Labels}}",
                    container["Image"].as_str().unwrap()
                ])
            ),
        ),
    ];
    let mut daemon = Daemon::start_with(config, &[("GANTRY_LOG", "debug")]);
    let auth = format!("Authorization: Bearer {READ_TOKEN}");
    for path in [
        "/api/v1/runs".to_string(),
        "/api/v1/pipelines".to_string(),
        format!("/api/v1/pipelines/{name}"),
        "/api/v1/instances".to_string(),
        "/api/v1/runs/1/log".to_string(),
    ] {
        seen.push((path.clone(), curl(&["-H", &auth, &daemon.url(&path)]).1));
    }
    let reader = Visitor::new(&daemon);
    let (status, answer) = reader.log_in(READ_TOKEN, "/");
    assert_eq!(status, 303, "{answer}");
    for page in [
        "/".to_string(),
        format!("/pipelines/{name}"),
        "/runs/1".to_string(),
    ] {
        let (status, text) = reader.get(&page);
        assert_eq!(status, 200, "{page}: {text}");
        seen.push((page, text));
    }
    std::thread::sleep(Duration::from_millis(200));
    daemon.terminate();
    seen.push(("daemon log".to_string(), daemon.log()));
    for (what, text) in &seen {
        for secret in [ENV_FILE_SECRET, FILE_SECRET] {
            assert!(!text.contains(secret), "{secret} shows in {what}:\n{text}");
        }
    }
    let _ = run_docker(&["volume", "rm", "-f", &volume]);
}

fn run_docker(arguments: &[&str]) -> String {
    let output = docker(LOCAL_DOCKER).args(arguments).output().unwrap();
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[test]
fn deploy_applies_every_service_setting_and_status_reports_drift() {
    let deployment = Deployment::new("settings", &[]);
    let (first, second) = (deployment.instance("web-1"), deployment.instance("web-2"));
    let network = deployment.instance("net");
    let volume = tempfile::tempdir().unwrap();
    std::fs::write(volume.path().join("data.txt"), "from the host\n").unwrap();
    deployment.pipeline(&format!(
        "  services:\n    web:\n      command: [\"sh\", \"-c\", \"echo started as $ROLE; exec httpd -f -p 8080 -h /www\"]\n      \
         env: {{ ROLE: primary, GREETING: hello }}\n      ports: [\"127.0.0.1::8080\"]\n      \
         volumes: [\"{}:/data:ro\"]\n      restart: on-failure:3\n      network: {network}\n      \
         labels: {{ team: platform }}\n      memory: 64m\n      cpus: 0.5\n      stop_timeout: 2s\n      \
         health:\n        http: {{ port: 8080, path: /, body: \"^v1\" }}\n      \
         instances:\n        {first}: {{}}\n        {second}: {{ env: {{ ROLE: secondary }} }}\n",
        volume.path().display()
    ));
    let report = deployment.succeed(&["run", &deployment.name, "--only", "*-web-1"]);
    assert_eq!(
        instances_by_name(&report),
        vec![(first.clone(), "updated".to_string())]
    );
    let container = inspect(LOCAL_DOCKER, &first);
    let config = &container["Config"];
    let host_config = &container["HostConfig"];
    assert_eq!(
        config["Cmd"],
        serde_json::json!([
            "sh",
            "-c",
            "echo started as $ROLE; exec httpd -f -p 8080 -h /www"
        ])
    );
    let env: Vec<&str> = config["Env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|value| value.as_str().unwrap())
        .collect();
    assert!(
        env.contains(&"ROLE=primary") && env.contains(&"GREETING=hello"),
        "{env:?}"
    );
    assert_eq!(config["Labels"]["team"], "platform");
    assert_eq!(config["StopTimeout"], 2);
    assert_eq!(host_config["RestartPolicy"]["Name"], "on-failure");
    assert_eq!(host_config["RestartPolicy"]["MaximumRetryCount"], 3);
    assert_eq!(host_config["Memory"], 64 * 1024 * 1024);
    assert_eq!(host_config["NanoCpus"], 500_000_000);
    assert_eq!(host_config["NetworkMode"], network.as_str());
    assert_eq!(
        host_config["PortBindings"]["8080/tcp"][0]["HostIp"],
        "127.0.0.1"
    );
    assert!(
        container["NetworkSettings"]["Networks"][&network]["Aliases"]
            .as_array()
            .unwrap()
            .contains(&serde_json::json!("web"))
    );
    let mounted = run(docker(LOCAL_DOCKER).args(["exec", &first, "cat", "/data/data.txt"]));
    assert_eq!(mounted, "from the host\n");
    assert!(run(docker(LOCAL_DOCKER).args(["logs", &first])).contains("started as primary"));

    // The second instance, deployed from an explicit image reference, gets its own env.
    let digest = report["build"]["digest"].as_str().unwrap();
    let by_digest = format!("{}@{digest}", deployment.repository);
    let explicit = deployment.succeed(&["deploy", &deployment.name, "--image", &by_digest]);
    assert_eq!(
        instances_by_name(&explicit),
        vec![
            (first.clone(), "unchanged".to_string()),
            (second.clone(), "updated".to_string())
        ]
    );
    assert!(run(docker(LOCAL_DOCKER).args(["logs", &second])).contains("started as secondary"));
    let tag = format!("{}:{}", deployment.repository, &deployment.head()[..7]);
    let by_tag = deployment.succeed(&["deploy", &deployment.name, "--image", &tag]);
    assert_eq!(by_tag["image"]["digest"], digest, "{by_tag}");
    assert_eq!(
        by_tag["image"]["commit"],
        deployment.head().as_str(),
        "{by_tag}"
    );
    let output = deployment.gantry(&[
        "deploy",
        &deployment.name,
        "--image",
        "127.0.0.1:5115/other/app:v1",
    ]);
    assert_eq!(output.status.code(), Some(1));
    assert!(
        stderr(&output).contains("is not from the pipeline's repository"),
        "{}",
        stderr(&output)
    );

    // Drift: a container replaced by hand, and one removed.
    run(docker(LOCAL_DOCKER).args(["rm", "-f", &first]));
    run(docker(LOCAL_DOCKER).args([
        "run",
        "-d",
        "--name",
        &first,
        "--label",
        &format!("gantry.pipeline={}", deployment.name),
        "gantry-test/busybox:latest",
        "sleep",
        "60",
    ]));
    run(docker(LOCAL_DOCKER).args(["rm", "-f", &second]));
    let (_, status) = deployment.gantry_json(&["status", &deployment.name, "--logs", "5"]);
    let listed = status["pipelines"][0]["instances"].as_array().unwrap();
    let replaced = listed
        .iter()
        .find(|instance| instance["instance"] == first.as_str())
        .unwrap();
    // A container gantry did not create says nothing of the instance: it is named.
    assert_eq!(replaced["state"], "foreign", "{replaced}");
    assert_eq!(
        replaced["drift"],
        serde_json::json!(["the container under its name is not this instance's"]),
        "{replaced}"
    );
    assert!(
        replaced["error"]
            .as_str()
            .unwrap()
            .contains("was not created by gantry"),
        "{replaced}"
    );
    let removed = listed
        .iter()
        .find(|instance| instance["instance"] == second.as_str())
        .unwrap();
    assert_eq!(removed["state"], "missing", "{removed}");
    assert_eq!(
        removed["drift"],
        serde_json::json!(["container missing"]),
        "{removed}"
    );
    let text = stdout(&deployment.gantry(&["status", &deployment.name]));
    assert!(text.contains("container missing"), "{text}");

    // A redeploy leaves the hand-made container alone and says so; once it is gone,
    // a redeploy puts both back.
    let refused = deployment.gantry(&["deploy", &deployment.name]);
    assert_eq!(refused.status.code(), Some(1));
    assert!(
        stderr(&refused).contains("was not created by gantry"),
        "{}",
        stderr(&refused)
    );
    run(docker(LOCAL_DOCKER).args(["rm", "-f", &first]));
    let repaired = deployment.succeed(&["deploy", &deployment.name]);
    assert!(
        instances_by_name(&repaired)
            .iter()
            .all(|(_, action)| action == "updated"),
        "{repaired}"
    );
}
