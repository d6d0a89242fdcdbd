//! `hosts.NAME.swarm` and a service's `swarm:`: the settings read, their defaults, and
//! what a Swarm service cannot do, each error with the place it points at.

use std::time::Duration;

use super::tests::{GOOD_PIPELINE, check, load_files};
use super::*;

const SWARM_HOSTS: &str = "hosts:\n  prod: { docker: tcp://10.0.0.20:2376, swarm: true }\n  \
                           web1: { docker: tcp://10.0.0.11:2376 }\n";

/// A pipeline whose `web` service has these extra lines (indented under it) and one
/// instance on `host`.
fn pipeline(service: &str, host: &str) -> String {
    format!(
        "{GOOD_PIPELINE}deploy:\n  services:\n    web:\n{service}      \
         instances: {{ web: {{ host: {host} }} }}\n"
    )
}

fn swarm_of(service: &str, host: &str) -> Option<SwarmSettings> {
    let config = load_files(
        &[
            ("gantry.yaml", SWARM_HOSTS),
            ("pipelines/hello.yaml", &pipeline(service, host)),
        ],
        &|_: &str| None,
    )
    .unwrap_or_else(|errors| panic!("{errors:#?}"));
    config.pipelines["hello"].deploy.services["web"]
        .swarm
        .clone()
}

fn check_service(service: &str, host: &str, expected: &[&str]) {
    check(
        &[
            ("gantry.yaml", SWARM_HOSTS),
            ("pipelines/hello.yaml", &pipeline(service, host)),
        ],
        expected,
    );
}

#[test]
fn a_service_on_a_swarm_manager_gets_swarm_settings_and_defaults() {
    assert!(swarm_of("", "web1").is_none());
    assert_eq!(
        swarm_of("", "prod"),
        Some(SwarmSettings {
            replicas: 1,
            placement: vec![],
            publish: PublishMode::Ingress,
            update: SwarmUpdate {
                parallelism: 1,
                order: UpdateOrder::StartFirst,
                failure_action: FailureAction::Rollback,
                monitor: Duration::from_secs(5),
                delay: Duration::ZERO,
            },
        })
    );
    let settings = swarm_of(
        "      ports: [\"8080:8080\"]\n      swarm:\n        replicas: 3\n        \
         placement: [\"node.role==worker\", \"node.labels.zone != b\"]\n        publish: host\n        \
         update: { parallelism: 2, order: stop-first, failure_action: pause, monitor: 2s, delay: 1s }\n",
        "prod",
    )
    .unwrap();
    assert_eq!(settings.replicas, 3);
    assert_eq!(
        settings.placement,
        ["node.role==worker", "node.labels.zone != b"]
    );
    assert_eq!(settings.publish, PublishMode::Host);
    assert_eq!(
        settings.update,
        SwarmUpdate {
            parallelism: 2,
            order: UpdateOrder::StopFirst,
            failure_action: FailureAction::Pause,
            monitor: Duration::from_secs(2),
            delay: Duration::from_secs(1),
        }
    );
    // A fixed host-mode port: stop-first unless told otherwise (which is an error).
    let settings = swarm_of(
        "      ports: [\"8080:8080\"]\n      swarm: { publish: host }\n",
        "prod",
    )
    .unwrap();
    assert_eq!(settings.update.order, UpdateOrder::StopFirst);
    // A host-mode port Docker chooses per task does not hold the node's port.
    let settings = swarm_of(
        "      ports: [\"8080\"]\n      swarm: { publish: host }\n",
        "prod",
    )
    .unwrap();
    assert_eq!(settings.update.order, UpdateOrder::StartFirst);
}

#[test]
fn swarm_settings_are_checked() {
    check_service(
        "      swarm:\n        replicas: 0\n        placement: [\"role=worker\", \"node.id==\"]\n        \
         publish: mesh\n        update: { parallelism: 0, order: first, failure_action: retry, monitr: 1s }\n",
        "prod",
        &[
            "pipelines/hello.yaml:14:9: `deploy.services.web.swarm.replicas` must be 1 to 1000, not 0",
            "pipelines/hello.yaml:15:21: `deploy.services.web.swarm.placement`: `role=worker` is not a constraint like `node.role==worker` or `node.labels.zone!=b`",
            "pipelines/hello.yaml:15:36: `deploy.services.web.swarm.placement`: `node.id==` is not a constraint like `node.role==worker` or `node.labels.zone!=b`",
            "pipelines/hello.yaml:16:9: `deploy.services.web.swarm.publish` must be `ingress` or `host`, not `mesh`",
            "pipelines/hello.yaml:17:19: `deploy.services.web.swarm.update.parallelism` must be at least 1",
            "pipelines/hello.yaml:17:35: `deploy.services.web.swarm.update.order` must be `start-first` or `stop-first`, not `first`",
            "pipelines/hello.yaml:17:49: `deploy.services.web.swarm.update.failure_action` must be `rollback`, `pause` or `continue`, not `retry`",
            "pipelines/hello.yaml:17:72: unknown key `monitr` in `deploy.services.web.swarm.update` (did you mean `monitor`?)",
        ],
    );
    check_service(
        "      swarm: { replicas: 1001 }\n",
        "prod",
        &[
            "pipelines/hello.yaml:13:16: `deploy.services.web.swarm.replicas` must be 1 to 1000, not 1001",
        ],
    );
}

#[test]
fn start_first_cannot_wait_for_a_fixed_host_mode_port() {
    check_service(
        "      ports: [\"8080:8080\"]\n      swarm: { publish: host, update: { order: start-first } }\n",
        "prod",
        &[
            "pipelines/hello.yaml:14:41: `deploy.services.web.swarm.update.order: start-first` cannot work with a fixed port published in `host` mode: a node's port is held by its old task, so Swarm would never place the new one; use `stop-first`, `publish: ingress`, or let Docker choose the host port",
        ],
    );
    // Through the routing mesh it can.
    check_service(
        "      ports: [\"8080:8080\"]\n      swarm: { update: { order: start-first } }\n",
        "prod",
        &[],
    );
}

#[test]
fn what_a_swarm_service_cannot_have() {
    check_service(
        "      swarm: { replicas: 2 }\n",
        "web1",
        &[
            "pipelines/hello.yaml:13:7: `deploy.services.web.swarm`: none of its instances is on a Swarm manager (a host with `swarm: true` in gantry.yaml)",
        ],
    );
    check_service(
        "      ports: [\"8080:8080\"]\n      health: { http: { port: 8080 } }\n",
        "prod",
        &[
            "pipelines/hello.yaml:14:7: `deploy.services.web.health`: Swarm gates its own tasks, which gantry does not reach; use an `exec` check (it runs in each task) or the image's HEALTHCHECK (`docker: true`)",
        ],
    );
    check_service(
        "      cap_add: [NET_ADMIN]\n",
        "prod",
        &[
            "pipelines/hello.yaml:13:7: `deploy.services.web`: a Swarm service takes command, env, env_file, ports, volumes, network, labels, memory, cpus, stop_timeout and health; remove the other container settings",
        ],
    );
    check(
        &[
            ("gantry.yaml", SWARM_HOSTS),
            (
                "pipelines/hello.yaml",
                &format!(
                    "{GOOD_PIPELINE}deploy:\n  services:\n    web:\n      instances:\n        \
                     web: {{ host: prod, ports: [\"9000:9000\"] }}\n        web-2: {{ host: web1 }}\n"
                ),
            ),
        ],
        &[
            "pipelines/hello.yaml:14:9: `deploy.services.web.instances.web.ports`: a Swarm service publishes the service's `ports`; an instance has none of its own",
            "pipelines/hello.yaml:15:9: `deploy.services.web.instances.web-2`: host `web1` is not a Swarm manager, but other instances of this service are; a service runs either as Swarm services or as containers",
        ],
    );
}

#[test]
fn a_container_service_cannot_require_a_swarm_service() {
    check(
        &[
            ("gantry.yaml", SWARM_HOSTS),
            (
                "pipelines/hello.yaml",
                &format!(
                    "{GOOD_PIPELINE}deploy:\n  services:\n    api:\n      instances: {{ api: {{ host: prod }} }}\n    \
                     web:\n      requires: [api]\n      instances: {{ web: {{ host: web1 }} }}\n"
                ),
            ),
        ],
        &[
            "pipelines/hello.yaml:15:18: `deploy.services.web.requires`: `api` runs as a Swarm service, which is updated after the containers; a container service cannot require it",
        ],
    );
}

#[test]
fn swarm_on_a_host_must_be_a_boolean() {
    check(
        &[(
            "gantry.yaml",
            "hosts:\n  prod: { docker: tcp://10.0.0.20:2376, swarm: yes please }\n",
        )],
        &["gantry.yaml:2:48: `hosts.prod.swarm` must be true or false, not `yes please`"],
    );
}

#[test]
fn a_swarm_service_behind_the_proxy_names_its_overlay_network() {
    let hosts = format!("{SWARM_HOSTS}proxy:\n  image: \"caddy:2.8.4\"\n");
    check(
        &[
            ("gantry.yaml", &hosts),
            (
                "pipelines/hello.yaml",
                &pipeline("      proxy: { port: 80, container_port: 8080 }\n", "prod"),
            ),
        ],
        &[
            "pipelines/hello.yaml:13:7: `deploy.services.web.proxy`: a Swarm service behind gantry's proxy needs `network:`, the overlay network the manager's proxy joins to reach its tasks",
        ],
    );
    let config = load_files(
        &[
            ("gantry.yaml", &hosts),
            (
                "pipelines/hello.yaml",
                &pipeline(
                    "      network: web-net\n      proxy: { port: 80, container_port: 8080 }\n",
                    "prod",
                ),
            ),
        ],
        &|_: &str| None,
    )
    .unwrap_or_else(|errors| panic!("{errors:#?}"));
    let web = &config.pipelines["hello"].deploy.services["web"];
    assert!(web.swarm.is_some() && web.proxy.is_some());
}
