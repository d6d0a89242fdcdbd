//! Pulls through a registry's mirror and pulls bounded per registry, against real
//! registries: a pull-through cache of the test registry (`docker-registry` with
//! `proxy.remoteurl`) started by the test, a mirror nobody answers on, an empty
//! registry that lacks the image, and the shared test registry's access log read for
//! how many pulls of one image's layer ran at once on six engines.

use std::io::{Read, Seek, SeekFrom};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, SystemTime};

use crate::common::*;

/// A `docker-registry` of the test's own on a free loopback port, logging every
/// request to a file; a pull-through cache of `remote` when given.
struct OwnRegistry {
    dir: tempfile::TempDir,
    port: u16,
    process: Child,
}

impl OwnRegistry {
    fn start(remote: Option<&str>) -> OwnRegistry {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let proxy = remote.map_or_else(String::new, |remote| {
            format!("proxy: {{ remoteurl: \"http://{remote}\" }}\n")
        });
        std::fs::write(
            dir.path().join("config.yml"),
            format!(
                "version: 0.1\nlog: {{ level: info }}\nstorage:\n  filesystem: {{ rootdirectory: {} }}\n\
                 http: {{ addr: \"127.0.0.1:{port}\", secret: mirror-test }}\n{proxy}",
                dir.path().join("data").display()
            ),
        )
        .unwrap();
        let log = std::fs::File::create(dir.path().join("registry.log")).unwrap();
        let mut process = Command::new("docker-registry")
            .arg("serve")
            .arg(dir.path().join("config.yml"))
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        wait_for_port(port, &mut process);
        OwnRegistry { dir, port, process }
    }

    fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("registry.log")).unwrap_or_default()
    }
}

impl Drop for OwnRegistry {
    fn drop(&mut self) {
        let _ = self.process.kill();
        let _ = self.process.wait();
    }
}

/// Removes every image of `repository` from the main engine: the build left the image
/// there, and a host that holds it is not asked to pull.
fn forget_images(repository: &str) {
    drop(RemoveImages(vec![repository.to_string()]));
    let left = run(docker(LOCAL_DOCKER).args(["images", "-q", repository]));
    assert_eq!(left.trim(), "", "{repository} is still on the engine");
}

/// A deployment of one instance on `local` (and `tasks`, a `deploy.tasks` section or
/// nothing) whose registry has `registry_entry` in gantry.yaml; built (the image then
/// removed from the engine): (deployment, instance, the built image's digest).
fn built(prefix: &str, registry_entry: &str, tasks: &str) -> (Deployment, String, String) {
    let deployment = Deployment::new(prefix, &[]);
    let web = deployment.instance("web");
    deployment.pipeline(&format!("{}{tasks}", one_instance(&web)));
    deployment.config.append(
        "gantry.yaml",
        &format!("registries:\n  \"{}\": {registry_entry}\n", registry()),
    );
    let report = deployment.succeed(&["build", &deployment.name, "--json"]);
    let digest = report["digest"].as_str().unwrap().to_string();
    forget_images(&deployment.repository);
    (deployment, web, digest)
}

/// The instance's container: the image it was created from, its labels.
fn created_from(instance: &str) -> (String, serde_json::Value) {
    let inspect = inspect(LOCAL_DOCKER, instance);
    (
        inspect["Config"]["Image"].as_str().unwrap().to_string(),
        inspect["Config"]["Labels"].clone(),
    )
}

#[test]
fn a_deploy_pulls_through_the_mirror_and_keeps_the_registrys_name_for_the_image() {
    let mirror = OwnRegistry::start(Some(&registry()));
    let (deployment, web, digest) = built(
        "mirror",
        &format!("{{ mirror: \"{}\" }}", mirror.address()),
        "  tasks:\n    show: { service: web, when: after, command: [\"cat\", \"/www/index.html\"] }\n",
    );
    let name = &deployment.name;
    let path = format!("gantry-it/{name}");
    let _mirrored = RemoveImages(vec![format!("{}/{path}", mirror.address())]);
    let reference = format!("{}@{digest}", deployment.repository);
    let through_mirror = format!("{}/{path}@{digest}", mirror.address());

    let (output, report) = deployment.gantry_json(&["deploy", name, "--json"]);
    let log = stderr(&output);
    assert!(output.status.success(), "{report}\n{log}");
    assert!(
        log.contains(&format!(
            "pulling {reference} on local through mirror {}",
            mirror.address()
        )),
        "{log}"
    );
    assert!(
        log.contains(&format!(
            "local: pulled {reference} through mirror {}",
            mirror.address()
        )),
        "{log}"
    );
    // The release task's container is created from the mirror's name too.
    assert!(log.contains("task show: v1"), "{log}");
    // The mirror served the manifest by digest (fetching it from the registry).
    let served = mirror.log();
    assert!(
        served
            .lines()
            .any(|line| line.contains("response completed")
                && line.contains(&format!("/v2/{path}/manifests/{digest}"))
                && line.contains("http.response.status=200")),
        "{served}"
    );
    assert_eq!(
        fetch("127.0.0.1", published_port(LOCAL_DOCKER, &web)).as_deref(),
        Some("v1\n")
    );
    // The engine knows the image under the mirror's name only; the container is
    // created from that name, and labelled with the registry's repository and digest.
    assert!(
        !docker(LOCAL_DOCKER)
            .args(["image", "inspect", &reference])
            .output()
            .unwrap()
            .status
            .success()
    );
    let (image, labels) = created_from(&web);
    assert_eq!(image, through_mirror);
    assert_eq!(labels["gantry.image"], deployment.repository.as_str());
    assert_eq!(labels["gantry.digest"], digest.as_str());
    let (_, status) = deployment.gantry_json(&["status", name, "--json"]);
    let instance = &status["pipelines"][0]["instances"][0];
    assert_eq!(instance["digest"], digest.as_str(), "{status}");
    assert_eq!(
        instance["image"],
        deployment.repository.as_str(),
        "{status}"
    );
    assert_eq!(instance["drift"], serde_json::json!([]), "{status}");

    // Forced again: the engine holds the image (under the mirror's name), so nothing
    // is pulled, the log says so, and the new container is created from that name again.
    let (output, report) = deployment.gantry_json(&["deploy", name, "--force", "--json"]);
    let log = stderr(&output);
    assert!(output.status.success(), "{report}\n{log}");
    assert!(!log.contains("pulled") && !log.contains("pulling"), "{log}");
    assert!(
        log.contains(&format!("{reference} is on local already")),
        "{log}"
    );
    assert_eq!(created_from(&web).0, through_mirror);

    // A task run by hand on an engine without the image pulls it through the mirror.
    run(docker(LOCAL_DOCKER).args(["rm", "-f", &web]));
    forget_images(&format!("{}/{path}", mirror.address()));
    let output = deployment.gantry(&["task", name, "show"]);
    let log = stderr(&output);
    assert!(output.status.success(), "{log}");
    assert!(
        log.contains(&format!(
            "local: pulled {reference} through mirror {}",
            mirror.address()
        )) && log.contains("task show: v1"),
        "{log}"
    );
}

#[test]
fn a_dead_mirror_or_one_without_the_image_falls_back_to_the_registry_and_says_why() {
    // Nothing listens on this port: it was free a moment ago and nothing takes it.
    let dead = format!("127.0.0.1:{}", free_port());
    let (deployment, web, digest) = built("mirror-dead", &format!("{{ mirror: \"{dead}\" }}"), "");
    let name = &deployment.name;
    let reference = format!("{}@{digest}", deployment.repository);
    let (output, report) = deployment.gantry_json(&["deploy", name, "--json"]);
    let log = stderr(&output);
    assert!(output.status.success(), "{report}\n{log}");
    let fell_back = log
        .lines()
        .find(|line| line.contains(&format!("local: mirror {dead} failed (")))
        .unwrap_or_else(|| panic!("no fallback line: {log}"));
    assert!(
        fell_back.contains("connection refused")
            && fell_back.ends_with(&format!(
                "; pulling {reference} from {} instead",
                registry()
            )),
        "{fell_back}"
    );
    assert_eq!(
        fetch("127.0.0.1", published_port(LOCAL_DOCKER, &web)).as_deref(),
        Some("v1\n")
    );
    assert_eq!(created_from(&web).0, reference);
    let stored = stdout(&deployment.gantry(&["logs", &format!("{name}#2")]));
    assert!(
        stored.contains(fell_back.trim_start_matches("[deploy] ")),
        "{stored}"
    );

    // A mirror that answers but lacks the image (a registry of its own, empty). The
    // engine must lack the image again: without the instance's container it can go.
    let empty = OwnRegistry::start(None);
    run(docker(LOCAL_DOCKER).args(["rm", "-f", &web]));
    deployment.config.write(
        "gantry.yaml",
        &std::fs::read_to_string(deployment.config.path().join("gantry.yaml"))
            .unwrap()
            .replace(&dead, &empty.address()),
    );
    forget_images(&deployment.repository);
    let (output, report) = deployment.gantry_json(&["deploy", name, "--json"]);
    let log = stderr(&output);
    assert!(output.status.success(), "{report}\n{log}");
    let fell_back = log
        .lines()
        .find(|line| line.contains(&format!("local: mirror {} failed (", empty.address())))
        .unwrap_or_else(|| panic!("no fallback line: {log}"));
    assert!(fell_back.contains("manifest unknown"), "{fell_back}");
    assert!(
        empty
            .log()
            .contains(&format!("/v2/gantry-it/{name}/manifests/{digest}")),
        "the empty mirror was asked"
    );
    assert_eq!(created_from(&web).0, reference);
}

/// The bytes of random data in the image's own layer of the bounded-pulls test: enough
/// that one engine's download of it takes a measurable while, so pulls that run at the
/// same time overlap in the registry's log.
const LAYER_BYTES: u64 = 48 << 20;

/// The engines the bounded-pulls test deploys to besides `local`.
const EXTRA_ENGINES: usize = 5;

/// Extra engines 1..=`count`: when one does not answer, brought up by
/// `scripts/test-env.sh` (which keeps any others running as they are). The script
/// waits for the environment's lock, so it is not run when every engine answers.
fn ensure_engines(count: usize) {
    let answers = |index: usize| {
        docker(&host_docker(index))
            .arg("version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|status| status.success())
    };
    if (1..=count).all(answers) {
        return;
    }
    let root = env!("CARGO_MANIFEST_DIR");
    run(Command::new("bash")
        .arg(format!("{root}/scripts/test-env.sh"))
        .args(["hosts", &count.to_string()])
        .stdout(Stdio::null()));
}

/// The shared test registry's log (`docker-registry` started by `scripts/test-env.sh`).
fn registry_log() -> std::path::PathBuf {
    let state = std::env::var("GANTRY_TEST_ENV_DIR")
        .unwrap_or_else(|_| "/var/lib/gantry-test-env".to_string());
    std::path::Path::new(&state).join("registry.log")
}

/// The value of `key=` in a logfmt line (quoted or not).
fn field<'l>(line: &'l str, key: &str) -> Option<&'l str> {
    let start = match line.strip_prefix(&format!("{key}=")) {
        Some(_) => key.len() + 1,
        None => line.find(&format!(" {key}="))? + key.len() + 2,
    };
    let rest = &line[start..];
    match rest.strip_prefix('"') {
        Some(quoted) => quoted.split('"').next(),
        None => rest.split(' ').next(),
    }
}

/// A Go duration as the registry logs it: `852.041µs`, `12.5ms`, `1.2s`, `1m2.5s`.
fn go_duration(text: &str) -> Duration {
    let mut total = 0.0;
    let mut number = String::new();
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c.is_ascii_digit() || c == '.' {
            number.push(c);
            continue;
        }
        let mut unit = c.to_string();
        while let Some(next) = chars.peek().filter(|next| next.is_alphabetic()) {
            unit.push(*next);
            chars.next();
        }
        let seconds = match unit.as_str() {
            "h" => 3600.0,
            "m" => 60.0,
            "s" => 1.0,
            "ms" => 1e-3,
            "µs" | "us" => 1e-6,
            "ns" => 1e-9,
            other => panic!("unit {other} in {text}"),
        };
        total += number.parse::<f64>().unwrap() * seconds;
        number.clear();
    }
    Duration::from_secs_f64(total)
}

/// The GETs of `repository`'s blobs of at least `bytes` the registry answered, after
/// `offset` in its log: each as (began, ended), from the line it logs when a response
/// is complete (its time, less the response's duration).
fn layer_downloads(
    offset: u64,
    repository_path: &str,
    bytes: u64,
) -> Vec<(SystemTime, SystemTime)> {
    let mut file = std::fs::File::open(registry_log()).unwrap();
    file.seek(SeekFrom::Start(offset)).unwrap();
    let mut text = String::new();
    file.read_to_string(&mut text).unwrap();
    text.lines()
        .filter(|line| line.contains("msg=\"response completed\""))
        .filter(|line| field(line, "http.request.method") == Some("GET"))
        .filter(|line| {
            field(line, "http.request.uri")
                .is_some_and(|uri| uri.starts_with(&format!("/v2/{repository_path}/blobs/")))
        })
        .filter(|line| {
            field(line, "http.response.written")
                .and_then(|written| written.parse::<u64>().ok())
                .is_some_and(|written| written >= bytes)
        })
        .map(|line| {
            let ended = humantime::parse_rfc3339_weak(field(line, "time").unwrap()).unwrap();
            let took = go_duration(field(line, "http.response.duration").unwrap());
            (ended - took, ended)
        })
        .collect()
}

/// The most intervals that cover one instant.
fn most_at_once(intervals: &[(SystemTime, SystemTime)]) -> usize {
    // Ends sort before begins at the same instant: touching intervals do not overlap.
    let mut events: Vec<(SystemTime, i32)> = intervals
        .iter()
        .flat_map(|(began, ended)| [(*began, 1), (*ended, -1)])
        .collect();
    events.sort();
    let (mut now, mut most) = (0, 0);
    for (_, change) in events {
        now += change;
        most = most.max(now);
    }
    most as usize
}

#[test]
fn max_pulls_bounds_the_pulls_of_six_engines_at_the_registry() {
    ensure_engines(EXTRA_ENGINES);
    let extra: Vec<usize> = (1..=EXTRA_ENGINES).collect();
    let deployment = Deployment::new("max-pulls", &extra);
    let name = &deployment.name;
    // The layer's step names the test, so no earlier build's layer is reused; the
    // classic builder keeps it only in the image's own untagged parents, which go
    // with the image (BuildKit would keep it in its cache, and the engine that built
    // the image would not download the layer again).
    deployment.repo.write(
        "Dockerfile",
        &format!(
            "FROM gantry-test/busybox:latest\nRUN head -c {LAYER_BYTES} /dev/urandom >/payload && echo {name}\n\
             COPY www /www\nEXPOSE 8080\nCMD [\"httpd\", \"-f\", \"-p\", \"8080\", \"-h\", \"/www\"]\n"
        ),
    );
    deployment.repo.commit("a big layer");
    let mut deploy = String::from(
        "  batch: 6\n  services:\n    web:\n      ports: [\"8080\"]\n      stop_timeout: 1s\n      \
         health: { http: { port: 8080, path: /healthz }, interval: 100ms }\n      instances:\n",
    );
    let mut instances = vec![(
        LOCAL_DOCKER.to_string(),
        "127.0.0.1".to_string(),
        deployment.instance("local"),
    )];
    deploy.push_str(&format!("        {}: {{}}\n", instances[0].2));
    for index in &extra {
        let instance = deployment.instance(&format!("h{index}"));
        deploy.push_str(&format!("        {instance}: {{ host: h{index} }}\n"));
        instances.push((host_docker(*index), host_address(*index), instance));
    }
    deployment.config.write(
        &format!("pipelines/{name}.yaml"),
        &format!(
            "source: {{ repo: \"{}\", branch: main }}\nbuild: {{ builder: classic }}\n\
             image: {{ repository: \"{}\" }}\ndeploy:\n{deploy}",
            deployment.repo.url(),
            deployment.repository
        ),
    );
    deployment.config.append(
        "gantry.yaml",
        &format!("registries:\n  \"{}\": {{ max_pulls: 2 }}\n", registry()),
    );
    let report = deployment.succeed(&["build", name, "--json"]);
    let digest = report["digest"].as_str().unwrap().to_string();
    // The image and its untagged parents: the big layer leaves the main engine.
    let ids = run(docker(LOCAL_DOCKER).args(["images", "-q", &deployment.repository]));
    run(docker(LOCAL_DOCKER)
        .args(["rmi", "-f"])
        .args(ids.split_whitespace()));

    let offset = std::fs::metadata(registry_log()).unwrap().len();
    let report = deployment.succeed(&["deploy", name, "--json"]);
    for (engine, address, instance) in &instances {
        assert_eq!(
            fetch(address, published_port(engine, instance)).as_deref(),
            Some("v1\n"),
            "{instance}: {report}"
        );
        assert_eq!(
            inspect(engine, instance)["Config"]["Labels"]["gantry.digest"],
            digest.as_str()
        );
    }
    let bounded = layer_downloads(offset, &format!("gantry-it/{name}"), LAYER_BYTES);
    assert_eq!(
        bounded.len(),
        6,
        "one download of the layer per engine: {:#?}",
        shown(&bounded)
    );
    assert_eq!(
        most_at_once(&bounded),
        2,
        "two pulls at once, never more: {:#?}",
        shown(&bounded)
    );

    // The same six pulls without the bound overlap beyond two: what the log shows
    // above is the bound's doing, not the pulls' own pace.
    for (engine, _, instance) in &instances {
        run(docker(engine).args(["rm", "-f", instance]));
        let ids = run(docker(engine).args(["images", "-q", &deployment.repository]));
        run(docker(engine)
            .args(["rmi", "-f"])
            .args(ids.split_whitespace()));
    }
    deployment.config.write(
        "gantry.yaml",
        &std::fs::read_to_string(deployment.config.path().join("gantry.yaml"))
            .unwrap()
            .replace("{ max_pulls: 2 }", "{}"),
    );
    let offset = std::fs::metadata(registry_log()).unwrap().len();
    deployment.succeed(&["deploy", name, "--json"]);
    let unbounded = layer_downloads(offset, &format!("gantry-it/{name}"), LAYER_BYTES);
    assert_eq!(unbounded.len(), 6, "{:#?}", shown(&unbounded));
    assert!(
        most_at_once(&unbounded) > 2,
        "unbounded, more than two at once: {:#?}",
        shown(&unbounded)
    );
    eprintln!(
        "max_pulls 2: at most {} of 6 downloads at once, {:?} from the first to the last byte; \
         unbounded: at most {}, {:?}",
        most_at_once(&bounded),
        span(&bounded),
        most_at_once(&unbounded),
        span(&unbounded)
    );
}

/// Each download as its start and how long it took, for a failure's message.
fn shown(downloads: &[(SystemTime, SystemTime)]) -> Vec<String> {
    downloads
        .iter()
        .map(|(began, ended)| {
            format!(
                "{} +{:?}",
                humantime::format_rfc3339_millis(*began),
                ended.duration_since(*began).unwrap_or_default()
            )
        })
        .collect()
}

/// From the first download's start to the last one's end.
fn span(downloads: &[(SystemTime, SystemTime)]) -> Duration {
    let first = downloads.iter().map(|(began, _)| *began).min();
    let last = downloads.iter().map(|(_, ended)| *ended).max();
    match (first, last) {
        (Some(first), Some(last)) => last.duration_since(first).unwrap_or_default(),
        _ => Duration::ZERO,
    }
}

#[test]
fn intervals_and_go_durations_read_from_the_registry_log() {
    assert_eq!(go_duration("852.041µs"), Duration::from_nanos(852_041));
    assert_eq!(go_duration("12.5ms"), Duration::from_micros(12_500));
    assert_eq!(go_duration("1m2.5s"), Duration::from_millis(62_500));
    let at = |millis: u64| SystemTime::UNIX_EPOCH + Duration::from_millis(millis);
    assert_eq!(most_at_once(&[(at(0), at(10)), (at(10), at(20))]), 1);
    assert_eq!(
        most_at_once(&[
            (at(0), at(10)),
            (at(5), at(20)),
            (at(6), at(7)),
            (at(12), at(30))
        ]),
        3
    );
    let line = r#"time="2026-12-01T22:32:56.925363289Z" level=info msg="response completed" http.request.method=GET http.request.uri="/v2/a/b/blobs/sha256:1" http.response.duration="1.5s" http.response.written=52428800"#;
    assert_eq!(field(line, "http.request.method"), Some("GET"));
    assert_eq!(field(line, "http.response.duration"), Some("1.5s"));
    assert_eq!(field(line, "http.response.written"), Some("52428800"));
    assert_eq!(field(line, "time"), Some("2026-12-01T22:32:56.925363289Z"));
    assert_eq!(field(line, "method"), None);
}
