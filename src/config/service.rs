//! A pipeline's `deploy`: services, their instances and health checks, and the
//! checks that span services (`requires` defined and free of cycles, instance names unique).

use std::collections::{BTreeMap, BTreeSet};

use super::decode::{self, Decoder, Fields, closest};
use super::global::Global;
use super::pipeline::{check_host, empty_mapping};
use super::yaml::{self, Position};
use super::*;

pub(super) fn read_deploy(
    decoder: &mut Decoder,
    node: &yaml::Node,
    global: &Global,
    images: &[String],
) -> Option<Deploy> {
    let fields = decoder.mapping(
        node,
        "deploy",
        &["batch", "on_failure", "services", "tasks", "keep_images"],
    )?;
    let batch = decoder
        .optional_number::<u32>(&fields, "batch", "a whole number of instances")
        .unwrap_or(1);
    if batch == 0 {
        decoder.error(
            fields.key_position("batch"),
            "`deploy.batch` must be at least 1",
        );
    }
    let on_failure = match decoder.optional_string(&fields, "on_failure").as_deref() {
        None | Some("rollback") => OnFailure::Rollback,
        Some("halt") => OnFailure::Halt,
        Some(other) => {
            decoder.error(
                fields
                    .get("on_failure")
                    .map_or(fields.position(), |node| node.position),
                format!("`deploy.on_failure` must be `rollback` or `halt`, not `{other}`"),
            );
            OnFailure::Rollback
        }
    };
    let keep_images = decoder
        .optional_number::<u32>(&fields, "keep_images", "a whole number of images")
        .unwrap_or(DEFAULT_KEEP_IMAGES);
    if keep_images == 0 {
        decoder.error(
            fields.key_position("keep_images"),
            "`deploy.keep_images` must be at least 1: the newest image always stays",
        );
    }
    let mut services = BTreeMap::new();
    let mut requires_positions = Vec::new();
    let mut instance_names: BTreeMap<String, String> = BTreeMap::new();
    if let Some(services_node) = fields.get("services") {
        for (name, key, node) in decoder
            .entries(services_node, "deploy.services")
            .unwrap_or_default()
        {
            if !is_container_name(name) {
                decoder.error(
                    key.position,
                    format!(
                        "service name `{name}` may hold only letters, digits, `-`, `_` and `.`"
                    ),
                );
            }
            if let Some((service, positions)) = read_service(decoder, name, node, global, images) {
                for instance in service.instances.keys() {
                    if let Some(other) = instance_names.insert(instance.clone(), name.to_string()) {
                        decoder.error(
                            key.position,
                            format!(
                                "instance `{instance}` is defined in services `{other}` and `{name}`; \
                                 instance names are container names and must be unique"
                            ),
                        );
                    }
                }
                requires_positions.extend(positions);
                services.insert(name.to_string(), service);
            }
        }
    }
    for (service, required, position) in &requires_positions {
        if !services.contains_key(required) {
            let suggestion = closest(required, services.keys().map(String::as_str))
                .map(|near| format!(" (did you mean `{near}`?)"))
                .unwrap_or_default();
            decoder.error(
                *position,
                format!(
                    "`deploy.services.{service}.requires`: service `{required}` is not defined{suggestion}"
                ),
            );
        }
    }
    // Swarm services are rolled out after the containers (`deploy::rollout`).
    for (service, required, position) in &requires_positions {
        let plain = services.get(service).is_some_and(|s| s.swarm.is_none());
        if plain && services.get(required).is_some_and(|r| r.swarm.is_some()) {
            decoder.error(
                *position,
                format!(
                    "`deploy.services.{service}.requires`: `{required}` runs as a Swarm service, \
                     which is updated after the containers; a container service cannot require it"
                ),
            );
        }
    }
    if let Some(cycle) = find_cycle(&services) {
        let position = requires_positions
            .iter()
            .find(|(service, _, _)| *service == cycle[0])
            .map_or(fields.position(), |(_, _, position)| *position);
        decoder.error(
            position,
            format!("`requires` forms a cycle: {}", cycle.join(" -> ")),
        );
    }
    let tasks = super::task::read_tasks(decoder, fields.get("tasks"), &services, global);
    Some(Deploy {
        batch: batch.max(1),
        on_failure,
        services,
        tasks,
        keep_images: keep_images.max(1),
    })
}

/// A service and the positions of its `requires` entries (service, required, where).
type ServiceWithRequires = (Service, Vec<(String, String, Position)>);

fn read_service(
    decoder: &mut Decoder,
    name: &str,
    node: &yaml::Node,
    global: &Global,
    images: &[String],
) -> Option<ServiceWithRequires> {
    let path = decode::join_path("deploy.services", name);
    let mut known = vec![
        "requires",
        "command",
        "env",
        "ports",
        "volumes",
        "restart",
        "network",
        "labels",
        "memory",
        "cpus",
        "stop_timeout",
        "health",
        "proxy",
        "instances",
        "image",
        "accessory",
        "swarm",
    ];
    known.extend(super::container::KEYS);
    let fields = decoder.mapping(node, &path, &known)?;
    let requires_items = decoder.positioned_list(&fields, "requires");
    let requires_positions = requires_items
        .iter()
        .map(|(required, position)| (name.to_string(), required.clone(), *position))
        .collect();
    let command = fields
        .get("command")
        .map(|node| decoder.string_list(node, &fields.path("command")));
    let ports = read_ports(decoder, &fields, &path);
    let volumes = fields
        .get("volumes")
        .map(|node| decoder.string_list(node, &fields.path("volumes")))
        .unwrap_or_default();
    let restart = decoder
        .optional_string(&fields, "restart")
        .unwrap_or_else(|| "unless-stopped".to_string());
    let restart_valid = matches!(
        restart.as_str(),
        "no" | "always" | "unless-stopped" | "on-failure"
    ) || restart
        .strip_prefix("on-failure:")
        .is_some_and(|count| count.parse::<u32>().is_ok());
    if !restart_valid {
        decoder.error(
            fields.get("restart").map_or(fields.position(), |node| node.position),
            format!("`{path}.restart` must be no, always, unless-stopped or on-failure[:N], not `{restart}`"),
        );
    }
    let memory = fields.get("memory").and_then(|memory_node| {
        let text = decoder.string(memory_node, &fields.path("memory"))?;
        let bytes = parse_bytes(&text);
        if bytes.is_none() {
            decoder.error(
                memory_node.position,
                format!("`{path}.memory`: `{text}` is not a size (like 256m or 1g)"),
            );
        }
        bytes
    });
    let proxied = fields.get("proxy").is_some();
    let health = match fields.get("health") {
        Some(health_node) => read_health(
            decoder,
            &format!("{path}.health"),
            health_node,
            &ports,
            proxied,
        ),
        None => Some(Health {
            check: HealthCheck::None,
            timeout: DEFAULT_HEALTH_TIMEOUT,
            interval: DEFAULT_HEALTH_INTERVAL,
        }),
    };
    let proxy = fields.get("proxy").and_then(|proxy_node| {
        read_proxy(
            decoder,
            &format!("{path}.proxy"),
            proxy_node,
            health.as_ref(),
            &ports,
            global,
        )
    });
    let mut instances = BTreeMap::new();
    match fields.get("instances") {
        Some(instances_node) => {
            let instances_path = format!("{path}.instances");
            for (instance_name, key, instance_node) in decoder
                .entries(instances_node, &instances_path)
                .unwrap_or_default()
            {
                if !is_container_name(instance_name) {
                    decoder.error(
                        key.position,
                        format!(
                            "instance name `{instance_name}` may hold only letters, digits, `-`, `_` and `.`"
                        ),
                    );
                }
                if instance_name.ends_with(super::PREVIOUS_SUFFIX) {
                    decoder.error(
                        key.position,
                        format!(
                            "instance name `{instance_name}`: names ending in `.previous` are the old containers gantry keeps during a swap"
                        ),
                    );
                }
                let instance_path = decode::join_path(&instances_path, instance_name);
                let instance_node = if instance_node.is_null() {
                    empty_mapping(instance_node.position)
                } else {
                    instance_node.clone()
                };
                let Some(instance_fields) = decoder.mapping(
                    &instance_node,
                    &instance_path,
                    &["host", "env", "ports", "volumes"],
                ) else {
                    continue;
                };
                let host = decoder
                    .optional_string(&instance_fields, "host")
                    .unwrap_or_else(|| LOCAL_HOST.to_string());
                check_host(
                    decoder,
                    global,
                    &host,
                    instance_fields.key_position("host"),
                    &format!("{instance_path}.host"),
                );
                let env = decoder.string_map(&instance_fields, "env");
                let instance_ports = read_ports(decoder, &instance_fields, &instance_path);
                let instance_volumes = instance_fields
                    .get("volumes")
                    .map(|node| decoder.string_list(node, &instance_fields.path("volumes")))
                    .unwrap_or_default();
                instances.insert(
                    instance_name.to_string(),
                    Instance {
                        name: instance_name.to_string(),
                        host,
                        env,
                        ports: instance_ports,
                        volumes: instance_volumes,
                        position: key.position,
                    },
                );
            }
        }
        None => decoder.missing(&fields, "instances"),
    }
    let mut network = decoder.optional_string(&fields, "network");
    let options = super::container::read_options(decoder, &fields, &path, &mut network);
    // The env files' variables, then `env` over them.
    let mut env = super::container::read_env_files(decoder, &fields, &path);
    env.extend(decoder.string_map(&fields, "env"));
    let image = read_service_image(decoder, &fields, &path, images);
    let swarm = super::swarm::read_swarm(
        decoder,
        &fields,
        global,
        super::swarm::SwarmContext {
            path: &path,
            ports: &ports,
            health: health.as_ref(),
            proxied,
            network: network.as_deref(),
            instances: &instances,
            options: &options,
            accessory: matches!(image, ServiceImage::Accessory(_)),
        },
    );
    let service = Service {
        name: name.to_string(),
        image,
        requires: requires_items
            .into_iter()
            .map(|(required, _)| required)
            .collect(),
        command,
        env,
        ports,
        volumes,
        restart,
        network,
        labels: decoder.string_map(&fields, "labels"),
        memory,
        cpus: decoder.optional_number(&fields, "cpus", "a number of CPUs like 0.5"),
        stop_timeout: decoder.optional_duration(&fields, "stop_timeout"),
        options,
        health: health?,
        proxy,
        swarm,
        instances,
    };
    Some((service, requires_positions))
}

/// What a service runs: one of the pipeline's `images` by name (the only one when
/// there is one), or an accessory's own image (`accessory: true`), checked as a reference.
fn read_service_image(
    decoder: &mut Decoder,
    fields: &Fields,
    path: &str,
    images: &[String],
) -> ServiceImage {
    let accessory = decoder.optional_bool(fields, "accessory").unwrap_or(false);
    let image = decoder.optional_string(fields, "image");
    let first = || ServiceImage::Built(images.first().cloned().unwrap_or_default());
    let listed = || {
        images
            .iter()
            .map(|name| format!("`{name}`"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    match (accessory, image) {
        (true, Some(image)) => {
            if let Err(message) = ImageRepository::of_reference(&image) {
                decoder.error(
                    fields.key_position("image"),
                    format!("`{path}.image`: {message}"),
                );
            }
            ServiceImage::Accessory(image)
        }
        (true, None) => {
            decoder.error(
                fields.key_position("accessory"),
                format!("`{path}` is an accessory: name its image (`image: postgres:16`)"),
            );
            first()
        }
        (false, Some(image)) if images.contains(&image) => ServiceImage::Built(image),
        (false, Some(image)) => {
            let near = closest(&image, images.iter().map(String::as_str))
                .map(|near| format!(" (did you mean `{near}`?)"))
                .unwrap_or_default();
            decoder.error(
                fields.key_position("image"),
                format!(
                    "`{path}.image`: `{image}` is not one of the pipeline's images ({}){near}; a service with an image of its own is an accessory (`accessory: true`)",
                    listed()
                ),
            );
            first()
        }
        (false, None) if images.len() > 1 => {
            decoder.error(
                fields.position(),
                format!(
                    "`{path}`: the pipeline builds several images ({}); name the one this service runs (`image: {}`)",
                    listed(),
                    images[0]
                ),
            );
            first()
        }
        (false, None) => first(),
    }
}

/// A service's `proxy:`; the health check, when known, gives the default container port.
fn read_proxy(
    decoder: &mut Decoder,
    path: &str,
    node: &yaml::Node,
    health: Option<&Health>,
    ports: &[PortMapping],
    global: &Global,
) -> Option<ServiceProxy> {
    let fields = decoder.mapping(
        node,
        path,
        &["port", "container_port", "hosts", "drain", "tls"],
    )?;
    let port = decoder.optional_number::<u16>(&fields, "port", "a port number");
    if fields.get("port").is_none() {
        decoder.missing(&fields, "port");
    }
    if port == Some(0) {
        decoder.error(
            fields.key_position("port"),
            format!("`{path}.port` must not be 0"),
        );
    }
    if let Some(port) = port
        && ports.iter().any(|mapping| mapping.host_port == Some(port))
    {
        decoder.error(
            fields.key_position("port"),
            format!("`{path}.port`: host port {port} is the proxy's; remove it from `ports`"),
        );
    }
    let health_port = health.and_then(|health| match &health.check {
        HealthCheck::Http { port, .. } => Some(*port),
        _ => None,
    });
    let container_port = decoder.optional_number::<u16>(&fields, "container_port", "a port number");
    // (A health section with errors was reported already.)
    if container_port.is_none()
        && health_port.is_none()
        && health.is_some()
        && fields.get("container_port").is_none()
    {
        decoder.error(
            fields.position(),
            format!("`{path}` needs `container_port` (or an `http` health check, whose port it defaults to)"),
        );
    }
    let hosts: Vec<String> = decoder
        .positioned_list(&fields, "hosts")
        .into_iter()
        .filter_map(|(host, position)| {
            if is_host_name(&host) {
                Some(host.to_ascii_lowercase())
            } else {
                decoder.error(
                    position,
                    format!("`{path}.hosts`: `{host}` is not a host name like app.example.com"),
                );
                None
            }
        })
        .collect();
    let tls = match decoder.optional_string(&fields, "tls").as_deref() {
        None => None,
        Some("internal") => Some(ProxyTls::Internal),
        Some("acme") => Some(ProxyTls::Acme),
        Some(other) => {
            decoder.error(
                fields.key_position("tls"),
                format!("`{path}.tls` must be `internal` or `acme`, not `{other}`"),
            );
            None
        }
    };
    if tls.is_some() && fields.get("hosts").is_none() {
        decoder.error(
            fields.key_position("tls"),
            format!("`{path}.tls` needs `hosts`: certificates are issued for host names"),
        );
    }
    if tls == Some(ProxyTls::Acme) && global.proxy.email.is_none() {
        decoder.error(
            fields.key_position("tls"),
            format!("`{path}.tls: acme` needs `proxy.email` in gantry.yaml for the ACME account"),
        );
    }
    if global.proxy.image.is_none() {
        decoder.error(
            fields.position(),
            format!(
                "`{path}`: gantry.yaml names no proxy image; set `proxy: {{ image: ... }}` there (a Caddy 2 image, pinned: `caddy:2.8.4`)"
            ),
        );
    }
    Some(ServiceProxy {
        port: port.filter(|port| *port != 0)?,
        container_port: container_port.or(health_port)?,
        hosts,
        drain: decoder
            .optional_duration(&fields, "drain")
            .unwrap_or(DEFAULT_DRAIN),
        tls,
    })
}

/// A DNS host name (`app.example.com`, `localhost`); a leading `*.` is a wildcard.
fn is_host_name(text: &str) -> bool {
    let name = text.strip_prefix("*.").unwrap_or(text);
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        })
}

fn read_health(
    decoder: &mut Decoder,
    path: &str,
    node: &yaml::Node,
    ports: &[PortMapping],
    proxied: bool,
) -> Option<Health> {
    let fields = decoder.mapping(
        node,
        path,
        &["http", "tcp", "exec", "docker", "timeout", "interval"],
    )?;
    let kinds: Vec<&str> = ["http", "tcp", "exec", "docker"]
        .into_iter()
        .filter(|kind| fields.get(kind).is_some())
        .collect();
    if kinds.len() > 1 {
        decoder.error(
            fields.position(),
            format!(
                "`{path}` names several checks ({}); choose one",
                kinds.join(", ")
            ),
        );
    }
    let check_port = |decoder: &mut Decoder, check_fields: &Fields, check_path: &str| {
        let port: Option<u16> = decoder.optional_number(check_fields, "port", "a port number");
        if port.is_none() && check_fields.get("port").is_none() {
            decoder.missing(check_fields, "port");
        }
        if let Some(port) = port
            && !proxied
            && !ports.iter().any(|mapping| mapping.container_port == port)
        {
            decoder.error(
                check_fields.key_position("port"),
                format!(
                    "`{check_path}.port`: container port {port} is not published in `ports`; \
                     use an `exec` or `docker` check for an unpublished port"
                ),
            );
        }
        port
    };
    let check = match kinds.first().copied() {
        None => HealthCheck::None,
        Some("http") => {
            let http_path = format!("{path}.http");
            let http = decoder.mapping(
                fields.get("http")?,
                &http_path,
                &["port", "path", "status", "body"],
            )?;
            let port = check_port(decoder, &http, &http_path);
            let request_path = decoder
                .optional_string(&http, "path")
                .unwrap_or_else(|| "/".to_string());
            if !request_path.starts_with('/') {
                decoder.error(
                    http.key_position("path"),
                    format!("`{http_path}.path` must start with `/`"),
                );
            }
            let status = decoder
                .optional_number(&http, "status", "an HTTP status like 200")
                .unwrap_or(200);
            let body = decoder.optional_string(&http, "body");
            if let Some(pattern) = &body
                && let Err(error) = regex::Regex::new(pattern)
            {
                decoder.error(
                    http.key_position("body"),
                    format!("`{http_path}.body` is not a valid regex: {error}"),
                );
            }
            HealthCheck::Http {
                port: port?,
                path: request_path,
                status,
                body,
            }
        }
        Some("tcp") if proxied => {
            decoder.error(
                fields.key_position("tcp"),
                format!(
                    "`{path}.tcp`: a proxied service is checked through the proxy; use an `http`, `exec` or `docker` check"
                ),
            );
            return None;
        }
        Some("tcp") => {
            let tcp_path = format!("{path}.tcp");
            let tcp = decoder.mapping(fields.get("tcp")?, &tcp_path, &["port"])?;
            HealthCheck::Tcp {
                port: check_port(decoder, &tcp, &tcp_path)?,
            }
        }
        Some("exec") => {
            let command = decoder.string_list(fields.get("exec")?, &format!("{path}.exec"));
            if command.is_empty() {
                decoder.error(
                    fields.key_position("exec"),
                    format!("`{path}.exec` needs a command"),
                );
            }
            HealthCheck::Exec { command }
        }
        Some(_) => match decoder.optional_bool(&fields, "docker") {
            Some(true) => HealthCheck::Docker,
            _ => HealthCheck::None,
        },
    };
    Some(Health {
        check,
        timeout: decoder
            .optional_duration(&fields, "timeout")
            .unwrap_or(DEFAULT_HEALTH_TIMEOUT),
        interval: decoder
            .optional_duration(&fields, "interval")
            .unwrap_or(DEFAULT_HEALTH_INTERVAL),
    })
}

/// The `ports` under `fields` (a service's or an instance's).
fn read_ports(decoder: &mut Decoder, fields: &Fields, path: &str) -> Vec<PortMapping> {
    let mut ports = Vec::new();
    for (text, position) in decoder.positioned_list(fields, "ports") {
        match parse_port(&text) {
            Ok(port) => ports.push(port),
            Err(message) => decoder.error(position, format!("`{path}.ports`: {message}")),
        }
    }
    ports
}

/// Parses Docker's short port syntax: `8080`, `80:8080`, `127.0.0.1:80:8080`, `53:53/udp`.
pub(super) fn parse_port(text: &str) -> Result<PortMapping, String> {
    let (mapping, protocol) = match text.split_once('/') {
        Some((mapping, protocol)) => (mapping, protocol),
        None => (text, "tcp"),
    };
    if !matches!(protocol, "tcp" | "udp" | "sctp") {
        return Err(format!("`{text}`: protocol must be tcp, udp or sctp"));
    }
    let parts: Vec<&str> = mapping.rsplitn(3, ':').collect();
    let parse = |part: &str| {
        part.parse::<u16>()
            .ok()
            .filter(|port| *port != 0)
            .ok_or_else(|| {
                format!("`{text}` is not a port mapping like 8080:80 (`{part}` is not a port)")
            })
    };
    let container_port = parse(parts[0])?;
    let host_port = match parts.get(1) {
        Some(part) if !part.is_empty() => Some(parse(part)?),
        _ => None,
    };
    let host_ip = parts.get(2).map(|ip| ip.to_string());
    Ok(PortMapping {
        host_ip,
        host_port,
        container_port,
        protocol: protocol.to_string(),
    })
}

/// Parses a size like `512m`, `1g`, `1048576`.
pub(super) fn parse_bytes(text: &str) -> Option<u64> {
    let lower = text.trim().to_ascii_lowercase();
    let lower = lower.trim_end_matches('b');
    let (number, multiplier) = match lower.chars().last()? {
        'k' => (&lower[..lower.len() - 1], 1024),
        'm' => (&lower[..lower.len() - 1], 1024 * 1024),
        'g' => (&lower[..lower.len() - 1], 1024 * 1024 * 1024),
        _ => (lower, 1),
    };
    number.parse::<u64>().ok()?.checked_mul(multiplier)
}

/// Finds one `requires` cycle, returned as the path that closes it (`a, b, a`).
fn find_cycle(services: &BTreeMap<String, Service>) -> Option<Vec<String>> {
    fn visit(
        name: &str,
        services: &BTreeMap<String, Service>,
        finished: &mut BTreeSet<String>,
        stack: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        if let Some(start) = stack.iter().position(|entry| entry == name) {
            let mut cycle = stack[start..].to_vec();
            cycle.push(name.to_string());
            return Some(cycle);
        }
        if finished.contains(name) {
            return None;
        }
        stack.push(name.to_string());
        if let Some(service) = services.get(name) {
            for required in &service.requires {
                if let Some(cycle) = visit(required, services, finished, stack) {
                    return Some(cycle);
                }
            }
        }
        stack.pop();
        finished.insert(name.to_string());
        None
    }
    let mut finished = BTreeSet::new();
    services
        .keys()
        .find_map(|name| visit(name, services, &mut finished, &mut Vec::new()))
}
