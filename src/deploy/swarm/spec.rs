//! The Swarm service gantry asks for: an instance's container spec (image by digest,
//! command, env, mounts, limits, gantry's labels) with its service's Swarm settings
//! (replicas, placement, publishing, update and rollback) and health check.

use std::time::Duration;

use bollard::models::{
    EndpointPortConfig, EndpointPortConfigProtocolEnum, EndpointPortConfigPublishModeEnum,
    EndpointSpec, HealthConfig, Limit, Mount, MountType, NetworkAttachmentConfig, ServiceSpec,
    ServiceSpecMode, ServiceSpecModeReplicated, ServiceSpecRollbackConfig,
    ServiceSpecRollbackConfigFailureActionEnum, ServiceSpecRollbackConfigOrderEnum,
    ServiceSpecUpdateConfig, ServiceSpecUpdateConfigFailureActionEnum,
    ServiceSpecUpdateConfigOrderEnum, TaskSpec, TaskSpecContainerSpec, TaskSpecPlacement,
    TaskSpecResources,
};
use sha2::{Digest, Sha256};

use super::super::container::{ContainerSpec, LABEL_SPEC};
use crate::config::{FailureAction, HealthCheck, PublishMode, Service, SwarmSettings, UpdateOrder};

/// The longest one health probe of a Swarm task may take.
const PROBE_TIMEOUT_CAP: Duration = Duration::from_secs(10);

/// Failed probes in a row, after the start period, that make a Swarm task unhealthy
/// (Docker's own default).
const UNHEALTHY_AFTER_FAILURES: i64 = 3;

/// How often a Swarm task's health is probed, and how long one probe may take.
fn probe_timing(service: &Service) -> (Duration, Duration) {
    let interval = service.health.interval.max(Duration::from_millis(100));
    (
        interval,
        service.health.timeout.clamp(interval, PROBE_TIMEOUT_CAP),
    )
}

/// The longest a task with an `exec` health check takes to be found unhealthy: its
/// start period, then the failed probes in a row.
pub fn unhealthy_within(service: &Service) -> Duration {
    let (interval, probe_timeout) = probe_timing(service);
    service.health.timeout + (interval + probe_timeout) * UNHEALTHY_AFTER_FAILURES as u32
}

/// The Swarm service for an instance's container spec and its service's settings. Its
/// `gantry.spec` label covers the Swarm settings and the health check too.
pub fn service_spec(
    spec: &ContainerSpec,
    service: &Service,
    settings: &SwarmSettings,
) -> ServiceSpec {
    let health_check = match &service.health.check {
        HealthCheck::Exec { command } => {
            // A task has the whole `timeout` to become healthy; after that, three
            // failed probes in a row make it unhealthy. Each probe may take as long
            // as `timeout` (capped), so a slow `exec` on a busy engine is not a
            // failure by itself.
            let (interval, probe_timeout) = probe_timing(service);
            Some(HealthConfig {
                test: Some([vec!["CMD".to_string()], command.clone()].concat()),
                interval: Some(interval.as_nanos() as i64),
                timeout: Some(probe_timeout.as_nanos() as i64),
                retries: Some(UNHEALTHY_AFTER_FAILURES),
                start_period: Some(service.health.timeout.as_nanos() as i64),
                ..HealthConfig::default()
            })
        }
        _ => None,
    };
    let mut labels = spec.all_labels();
    let hashed = serde_json::json!({
        "swarm": settings,
        "health": format!("{:?}", service.health),
    });
    let swarm_hash = hex::encode(&Sha256::digest(hashed.to_string().as_bytes())[..4]);
    labels.insert(
        LABEL_SPEC.to_string(),
        format!("{}.{swarm_hash}", spec.spec_hash),
    );
    let publish_mode = match settings.publish {
        PublishMode::Ingress => EndpointPortConfigPublishModeEnum::INGRESS,
        PublishMode::Host => EndpointPortConfigPublishModeEnum::HOST,
    };
    let ports: Vec<EndpointPortConfig> = spec
        .ports
        .iter()
        .map(|port| EndpointPortConfig {
            protocol: Some(match port.protocol.as_str() {
                "udp" => EndpointPortConfigProtocolEnum::UDP,
                "sctp" => EndpointPortConfigProtocolEnum::SCTP,
                _ => EndpointPortConfigProtocolEnum::TCP,
            }),
            target_port: Some(i64::from(port.container_port)),
            published_port: port.host_port.map(i64::from),
            publish_mode: Some(publish_mode),
            ..EndpointPortConfig::default()
        })
        .collect();
    let mounts: Vec<Mount> = spec.volumes.iter().map(|volume| mount(volume)).collect();
    let (order, rollback_order) = match settings.update.order {
        UpdateOrder::StartFirst => (
            ServiceSpecUpdateConfigOrderEnum::START_FIRST,
            ServiceSpecRollbackConfigOrderEnum::START_FIRST,
        ),
        UpdateOrder::StopFirst => (
            ServiceSpecUpdateConfigOrderEnum::STOP_FIRST,
            ServiceSpecRollbackConfigOrderEnum::STOP_FIRST,
        ),
    };
    ServiceSpec {
        name: Some(spec.instance.clone()),
        labels: Some(labels),
        task_template: Some(TaskSpec {
            container_spec: Some(TaskSpecContainerSpec {
                image: Some(spec.image()),
                args: spec.command.clone(),
                env: Some(
                    spec.env
                        .iter()
                        .map(|(key, value)| format!("{key}={value}"))
                        .collect(),
                ),
                mounts: (!mounts.is_empty()).then_some(mounts),
                stop_grace_period: spec.stop_timeout.map(|timeout| timeout.as_nanos() as i64),
                health_check,
                ..TaskSpecContainerSpec::default()
            }),
            resources: (spec.memory.is_some() || spec.cpus.is_some()).then(|| TaskSpecResources {
                limits: Some(Limit {
                    memory_bytes: spec.memory.map(|bytes| bytes as i64),
                    nano_cpus: spec.cpus.map(|cpus| (cpus * 1e9) as i64),
                    ..Limit::default()
                }),
                ..TaskSpecResources::default()
            }),
            placement: (!settings.placement.is_empty()).then(|| TaskSpecPlacement {
                constraints: Some(settings.placement.clone()),
                ..TaskSpecPlacement::default()
            }),
            networks: spec.network.as_ref().map(|network| {
                vec![NetworkAttachmentConfig {
                    target: Some(network.clone()),
                    aliases: Some(vec![spec.service.clone()]),
                    ..NetworkAttachmentConfig::default()
                }]
            }),
            ..TaskSpec::default()
        }),
        mode: Some(ServiceSpecMode {
            replicated: Some(ServiceSpecModeReplicated {
                replicas: Some(settings.replicas as i64),
            }),
            ..ServiceSpecMode::default()
        }),
        update_config: Some(ServiceSpecUpdateConfig {
            parallelism: Some(settings.update.parallelism as i64),
            delay: Some(settings.update.delay.as_nanos() as i64),
            failure_action: Some(match settings.update.failure_action {
                FailureAction::Rollback => ServiceSpecUpdateConfigFailureActionEnum::ROLLBACK,
                FailureAction::Pause => ServiceSpecUpdateConfigFailureActionEnum::PAUSE,
                FailureAction::Continue => ServiceSpecUpdateConfigFailureActionEnum::CONTINUE,
            }),
            monitor: Some(settings.update.monitor.as_nanos() as i64),
            max_failure_ratio: Some(0.0),
            order: Some(order),
        }),
        // A rollback goes the way the update came, and pauses if it fails too.
        rollback_config: Some(ServiceSpecRollbackConfig {
            parallelism: Some(settings.update.parallelism as i64),
            delay: Some(0),
            failure_action: Some(ServiceSpecRollbackConfigFailureActionEnum::PAUSE),
            monitor: Some(settings.update.monitor.as_nanos() as i64),
            max_failure_ratio: Some(0.0),
            order: Some(rollback_order),
        }),
        endpoint_spec: Some(EndpointSpec {
            ports: (!ports.is_empty()).then_some(ports),
            ..EndpointSpec::default()
        }),
        ..ServiceSpec::default()
    }
}

/// `SOURCE:TARGET[:ro]`: a bind mount for an absolute source, else a named volume.
fn mount(volume: &str) -> Mount {
    let mut parts = volume.splitn(3, ':');
    let source = parts.next().unwrap_or_default().to_string();
    let target = parts.next().unwrap_or_default().to_string();
    let read_only = parts
        .next()
        .is_some_and(|options| options.split(',').any(|o| o == "ro"));
    Mount {
        typ: Some(if source.starts_with('/') {
            MountType::BIND
        } else {
            MountType::VOLUME
        }),
        source: Some(source),
        target: Some(target),
        read_only: read_only.then_some(true),
        ..Mount::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::deploy::DeployImage;
    use crate::deploy::tests::pipeline_with_global;

    const SWARM_HOST: &str = "hosts:\n  prod: { docker: tcp://10.0.0.20:2376, swarm: true }\n";

    fn spec_of(service: &str) -> ServiceSpec {
        let pipeline = pipeline_with_global(
            SWARM_HOST,
            &format!(
                "  services:\n    web:\n{service}      instances: {{ web-1: {{ host: prod }} }}\n"
            ),
        );
        let service = &pipeline.deploy.services["web"];
        let image = DeployImage {
            repository: pipeline.images["app"].repository.clone(),
            digest: format!("sha256:{}", "ab".repeat(32)),
            commit: Some("0123456789abcdef".to_string()),
        };
        let container = ContainerSpec::new(&pipeline, service, &service.instances["web-1"], &image);
        service_spec(&container, service, service.swarm.as_ref().unwrap())
    }

    #[test]
    fn a_swarm_service_runs_the_digest_with_its_settings_and_gantrys_labels() {
        let spec = spec_of(
            "      ports: [\"8080:80\"]\n      env: { A: b }\n      volumes: [\"/srv:/data:ro\", \"cache:/cache\"]\n      \
             health: { exec: [test, -f, /ok], interval: 500ms, timeout: 10s }\n      \
             swarm:\n        replicas: 3\n        placement: [\"node.role==worker\"]\n        publish: host\n        \
             update: { parallelism: 2, order: stop-first, monitor: 3s }\n",
        );
        assert_eq!(spec.name.as_deref(), Some("web-1"));
        let container = spec
            .task_template
            .as_ref()
            .unwrap()
            .container_spec
            .as_ref()
            .unwrap();
        assert_eq!(
            container.image.as_deref(),
            Some(format!("127.0.0.1:5000/app@sha256:{}", "ab".repeat(32)).as_str())
        );
        assert_eq!(container.env.as_deref(), Some(&["A=b".to_string()][..]));
        let health = container.health_check.as_ref().unwrap();
        assert_eq!(
            health.test.as_deref(),
            Some(&["CMD", "test", "-f", "/ok"].map(str::to_string)[..])
        );
        // The whole `timeout` to become healthy, then three failures in a row.
        assert_eq!(health.start_period, Some(10_000_000_000));
        assert_eq!(health.retries, Some(3));
        assert_eq!(health.interval, Some(500_000_000));
        assert_eq!(health.timeout, Some(10_000_000_000));
        let mounts = container.mounts.as_ref().unwrap();
        assert_eq!(mounts[0].typ, Some(MountType::BIND));
        assert_eq!(mounts[0].read_only, Some(true));
        assert_eq!(mounts[1].typ, Some(MountType::VOLUME));
        assert_eq!(
            spec.mode
                .as_ref()
                .unwrap()
                .replicated
                .as_ref()
                .unwrap()
                .replicas,
            Some(3)
        );
        let placement = spec
            .task_template
            .as_ref()
            .unwrap()
            .placement
            .as_ref()
            .unwrap();
        assert_eq!(
            placement.constraints.as_deref(),
            Some(&["node.role==worker".to_string()][..])
        );
        let update = spec.update_config.as_ref().unwrap();
        assert_eq!(update.parallelism, Some(2));
        assert_eq!(
            update.order,
            Some(ServiceSpecUpdateConfigOrderEnum::STOP_FIRST)
        );
        assert_eq!(
            update.failure_action,
            Some(ServiceSpecUpdateConfigFailureActionEnum::ROLLBACK)
        );
        assert_eq!(update.monitor, Some(3_000_000_000));
        let ports = spec.endpoint_spec.as_ref().unwrap().ports.as_ref().unwrap();
        assert_eq!(ports[0].published_port, Some(8080));
        assert_eq!(ports[0].target_port, Some(80));
        assert_eq!(
            ports[0].publish_mode,
            Some(EndpointPortConfigPublishModeEnum::HOST)
        );
        let labels = spec.labels.as_ref().unwrap();
        assert_eq!(labels["gantry.pipeline"], "app");
        assert_eq!(labels["gantry.instance"], "web-1");
        assert_eq!(
            labels["gantry.digest"],
            format!("sha256:{}", "ab".repeat(32))
        );
    }

    #[test]
    fn the_spec_label_changes_with_the_swarm_settings_but_not_with_the_digest() {
        let label = |service: &str| spec_of(service).labels.unwrap()[LABEL_SPEC].clone();
        let three = label("      swarm: { replicas: 3 }\n");
        assert_eq!(three, label("      swarm: { replicas: 3 }\n"));
        assert_ne!(three, label("      swarm: { replicas: 2 }\n"));
        assert_ne!(
            three,
            label("      swarm: { replicas: 3, update: { order: stop-first } }\n")
        );
        assert_ne!(
            three,
            label("      swarm: { replicas: 3 }\n      health: { exec: [\"true\"] }\n")
        );
    }
}
