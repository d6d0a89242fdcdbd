//! The container settings a team sets reach the engine as written, and secrets from an
//! `env_file` or a `${file:PATH}` reach the container and no message of gantry's.

use std::time::Duration;

use crate::common::*;

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
