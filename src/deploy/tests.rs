//! The pure parts of a rollout: the order of services, the selection of
//! instances, and what makes two container specs the same.

use super::container::ContainerSpec;
use super::*;
use crate::config::Config;

/// A pipeline whose deploy section is `deploy` (indented by two spaces).
pub(super) fn pipeline(deploy: &str) -> Pipeline {
    pipeline_with_global("", deploy)
}

/// The same, with this gantry.yaml.
pub(super) fn pipeline_with_global(global: &str, deploy: &str) -> Pipeline {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("pipelines")).unwrap();
    std::fs::write(dir.path().join("gantry.yaml"), global).unwrap();
    std::fs::write(
        dir.path().join("pipelines/app.yaml"),
        format!(
            "source: {{ repo: https://git.example.com/app.git, branch: main }}\n\
             image: {{ repository: 127.0.0.1:5000/app, tags: [latest] }}\ndeploy:\n{deploy}"
        ),
    )
    .unwrap();
    let config = Config::load_with(dir.path(), &|_: &str| None).unwrap();
    config.pipelines["app"].clone()
}

const FOUR_SERVICES: &str = "  services:
    web: { requires: [api, cache], instances: { web-1: {}, web-2: {} } }
    api: { requires: [db], instances: { api-1: {} } }
    cache: { instances: { cache-1: {} } }
    db: { instances: { db-1: {} } }
";

fn check_order(only: Option<&str>, expected: &[&str]) {
    let pipeline = pipeline(FOUR_SERVICES);
    let pattern = only.map(|only| glob::Pattern::new(only).unwrap());
    let names: Vec<&str> = targets(&pipeline, pattern.as_ref())
        .iter()
        .map(|target| target.instance.name.as_str())
        .collect();
    assert_eq!(names, expected, "--only {only:?}");
}

#[test]
fn instances_come_after_everything_their_service_requires() {
    check_order(None, &["db-1", "api-1", "cache-1", "web-1", "web-2"]);
    check_order(Some("web-*"), &["web-1", "web-2"]);
    check_order(Some("api"), &["api-1"]);
    check_order(Some("*-1"), &["db-1", "api-1", "cache-1", "web-1"]);
    check_order(Some("nothing"), &[]);
}

fn spec(deploy: &str, instance: &str, digest: &str) -> ContainerSpec {
    spec_of(&pipeline(deploy), instance, digest)
}

/// The container spec of one instance of `pipeline` for an image `digest`.
pub(super) fn spec_of(pipeline: &Pipeline, instance: &str, digest: &str) -> ContainerSpec {
    let service = pipeline
        .deploy
        .services
        .values()
        .find(|service| service.instances.contains_key(instance))
        .unwrap();
    ContainerSpec::new(
        pipeline,
        service,
        &service.instances[instance],
        super::swap_tests::release_of(pipeline, digest).image_for(service),
    )
}

#[test]
fn the_spec_hash_changes_with_the_spec_and_not_with_the_image() {
    let base = "  services:\n    web:\n      ports: [\"8080\"]\n      env: { A: \"1\" }\n      instances: { w: {} }\n";
    let hash = spec(base, "w", "sha256:1").spec_hash;
    assert_eq!(hash.len(), 16);
    assert_eq!(spec(base, "w", "sha256:2").spec_hash, hash);
    for changed in [
        base.replace("A: \"1\"", "A: \"2\""),
        base.replace("\"8080\"", "\"8081\""),
        base.replace(
            "instances: { w: {} }",
            "instances: { w: { env: { B: x } } }",
        ),
        base.replace("      instances", "      memory: 64m\n      instances"),
        base.replace("      instances", "      restart: always\n      instances"),
    ] {
        assert_ne!(spec(&changed, "w", "sha256:1").spec_hash, hash, "{changed}");
    }
}

#[test]
fn instance_env_overrides_the_service_env_and_fixed_ports_mean_stop_first() {
    let deploy = "  services:\n    web:\n      ports: [\"8080:80\", \"9090\"]\n      env: { ROLE: a, KEEP: k }\n      \
                  instances: { w: { env: { ROLE: b } } }\n    worker:\n      ports: [\"9090\"]\n      instances: { x: {} }\n";
    let web = spec(deploy, "w", "sha256:1");
    assert_eq!(web.env["ROLE"], "b");
    assert_eq!(web.env["KEEP"], "k");
    assert!(web.binds_fixed_host_port());
    assert!(!spec(deploy, "x", "sha256:1").binds_fixed_host_port());
    assert_eq!(web.image(), "127.0.0.1:5000/app@sha256:1");
}
