//! `gantry.yaml`: the state directory, the server, hosts, registries and notifications.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use secrecy::{ExposeSecret, SecretString};

use super::decode::{self, Decoder, Environment};
use super::service::parse_bytes;
use super::yaml::{self, Position};
use super::*;

/// Tokens shorter than this load, with a warning.
pub(super) const MIN_TOKEN_LEN: usize = 16;
/// The longest `server.read_timeout`: a client slower than that is not one to wait for.
const MAX_READ_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(3600);

/// What `gantry.yaml` holds, with defaults filled in.
pub(super) struct Global {
    pub(super) state_dir: PathBuf,
    pub(super) state_database: Option<SecretString>,
    pub(super) server: Server,
    pub(super) hosts: BTreeMap<String, Host>,
    pub(super) registries: BTreeMap<String, Registry>,
    pub(super) notifications: BTreeMap<String, Notification>,
    pub(super) proxy: ProxySettings,
    /// Problems that do not stop the config from loading.
    pub(super) warnings: Vec<Diagnostic>,
}

pub(super) fn read_global(
    dir: &Path,
    file: &Path,
    text: &str,
    environment: Environment,
    diagnostics: &mut Vec<Diagnostic>,
) -> Global {
    let mut global = Global {
        state_dir: dir.join(".gantry"),
        state_database: None,
        server: Server {
            listen: DEFAULT_LISTEN
                .parse()
                .unwrap_or_else(|_| SocketAddr::from(([127, 0, 0, 1], 8700))),
            token: None,
            read_token: None,
            public_read: false,
            public_url: None,
            max_body: DEFAULT_MAX_BODY,
            keep_runs: DEFAULT_KEEP_RUNS,
            max_builds: DEFAULT_MAX_BUILDS,
            read_timeout: DEFAULT_READ_TIMEOUT,
        },
        hosts: BTreeMap::from([(LOCAL_HOST.to_string(), local_host(environment))]),
        registries: BTreeMap::new(),
        notifications: BTreeMap::new(),
        proxy: ProxySettings::default(),
        warnings: Vec::new(),
    };
    let Some(root) = parse_file(file, text, diagnostics) else {
        return global;
    };
    let mut decoder = Decoder {
        file: file.to_path_buf(),
        dir: dir.to_path_buf(),
        diagnostics,
        environment,
    };
    let Some(fields) = decoder.mapping(
        &root,
        "",
        &[
            "state",
            "server",
            "hosts",
            "registries",
            "notifications",
            "proxy",
        ],
    ) else {
        return global;
    };
    if let Some(node) = fields.get("state")
        && let Some(state) = decoder.string(node, "state")
    {
        match state_location(dir, &state) {
            Ok(StateLocation::Directory(path)) => global.state_dir = path,
            Ok(StateLocation::Database(url)) => global.state_database = Some(url),
            Err(message) => decoder.error(node.position, message),
        }
    }
    if let Some(server_node) = fields.get("server")
        && let Some(server) = decoder.mapping(
            server_node,
            "server",
            &[
                "listen",
                "token",
                "read_token",
                "public_read",
                "public_url",
                "max_body",
                "keep_runs",
                "max_builds",
                "read_timeout",
            ],
        )
    {
        if let Some(timeout) = decoder.optional_duration(&server, "read_timeout") {
            if timeout.is_zero() || timeout > MAX_READ_TIMEOUT {
                decoder.error(
                    server.key_position("read_timeout"),
                    "`server.read_timeout` must be longer than 0s and at most 1h",
                );
            } else {
                global.server.read_timeout = timeout;
            }
        }
        if let Some(max_body_node) = server.get("max_body")
            && let Some(text) = decoder.string(max_body_node, "server.max_body")
        {
            match parse_bytes(&text) {
                Some(bytes) if bytes > 0 => global.server.max_body = bytes,
                _ => decoder.error(
                    max_body_node.position,
                    format!("`server.max_body`: `{text}` is not a size (like 25m)"),
                ),
            }
        }
        if let Some(keep) = decoder.optional_number::<u32>(&server, "keep_runs", "a number of runs")
        {
            global.server.keep_runs = keep.max(1);
        }
        if let Some(builds) =
            decoder.optional_number::<u32>(&server, "max_builds", "a number of builds")
        {
            global.server.max_builds = builds.max(1);
        }
        if let Some(listen_node) = server.get("listen")
            && let Some(listen) = decoder.string(listen_node, "server.listen")
        {
            match listen.parse() {
                Ok(address) => global.server.listen = address,
                Err(_) => decoder.error(
                    listen_node.position,
                    format!("`server.listen`: `{listen}` is not an address like 127.0.0.1:8700"),
                ),
            }
        }
        global.server.token = decoder.optional_secret(&server, "token");
        global.server.read_token = decoder.optional_secret(&server, "read_token");
        for (key, token) in [
            ("token", &global.server.token),
            ("read_token", &global.server.read_token),
        ] {
            if let Some(token) = token
                && token.expose_secret().chars().count() < MIN_TOKEN_LEN
            {
                let position = server.key_position(key);
                global.warnings.push(Diagnostic {
                    file: file.to_path_buf(),
                    line: position.line,
                    column: position.column,
                    message: format!(
                        "`server.{key}` is shorter than {MIN_TOKEN_LEN} characters; a long random token (`openssl rand -hex 32`) is much harder to guess"
                    ),
                });
            }
        }
        global.server.public_url = decoder.optional_string(&server, "public_url");
        global.server.public_read = decoder
            .optional_bool(&server, "public_read")
            .unwrap_or(false);
    }
    let mut local_defined = false;
    if let Some(hosts_node) = fields.get("hosts") {
        for (name, key, node) in decoder.entries(hosts_node, "hosts").unwrap_or_default() {
            local_defined |= name == LOCAL_HOST;
            if let Some(host) = read_host(&mut decoder, dir, name, key.position, node) {
                global.hosts.insert(name.to_string(), host);
            }
        }
    }
    // `local` comes from DOCKER_HOST unless the file defines it: a value gantry cannot
    // read must not quietly mean the engine on /var/run/docker.sock.
    if !local_defined
        && let Some(url) = environment("DOCKER_HOST").filter(|url| !url.is_empty())
        && let Err(reason) = parse_docker_url(&url)
    {
        decoder.error(
            fields.position(),
            format!(
                "the environment's DOCKER_HOST `{}` is not a Docker URL ({reason}); fix it, or define `hosts.local` here",
                redact_urls(&url)
            ),
        );
    }
    if let Some(notifications_node) = fields.get("notifications") {
        for (name, _, node) in decoder
            .entries(notifications_node, "notifications")
            .unwrap_or_default()
        {
            if let Some(notification) = read_notification(&mut decoder, name, node) {
                global.notifications.insert(name.to_string(), notification);
            }
        }
    }
    if let Some(proxy_node) = fields.get("proxy")
        && let Some(proxy) = decoder.mapping(proxy_node, "proxy", &["image", "email"])
    {
        global.proxy.image = decoder.optional_string(&proxy, "image");
        if let Some(image) = &global.proxy.image
            && let Err(message) = ImageRepository::of_reference(image)
        {
            decoder.error(
                proxy.key_position("image"),
                format!("`proxy.image`: {message}"),
            );
        }
        global.proxy.email = decoder.optional_string(&proxy, "email");
        if let Some(email) = &global.proxy.email
            && !email.contains('@')
        {
            decoder.error(
                proxy.key_position("email"),
                format!("`proxy.email`: `{email}` is not an email address"),
            );
        }
    }
    if let Some(registries_node) = fields.get("registries") {
        global.registries = registries::read_registries(&mut decoder, registries_node);
    }
    global
}

/// Where `state:` puts the state database.
pub enum StateLocation {
    /// `state.db` (SQLite) in this directory, with the caches.
    Directory(PathBuf),
    /// A PostgreSQL database; caches stay in the default directory.
    Database(SecretString),
}

/// Whether `state:` names a database rather than a directory.
pub fn is_database_url(state: &str) -> bool {
    state.starts_with("postgres://") || state.starts_with("postgresql://")
}

/// Reads `state:` (already interpolated): a directory, relative to the config
/// directory, or a `postgres://` URL. Other URLs are refused rather than taken for a
/// directory named `mysql:`.
fn state_location(dir: &Path, state: &str) -> Result<StateLocation, String> {
    if is_database_url(state) {
        return match url::Url::parse(state) {
            Ok(url) if url.host_str().is_some_and(|host| !host.is_empty()) => Ok(
                StateLocation::Database(SecretString::from(state.to_string())),
            ),
            // The URL may hold a password: the message never quotes it.
            _ => Err("`state`: not a valid postgres:// URL \
                      (postgres://USER:PASSWORD@HOST:PORT/DATABASE)"
                .to_string()),
        };
    }
    if let Some((scheme, _)) = state.split_once("://") {
        return Err(format!(
            "`state`: `{scheme}://` is not a state store gantry knows; give a directory \
             (SQLite, the default) or a postgres:// URL"
        ));
    }
    if state.trim().is_empty() {
        return Err("`state` is empty; give a directory or a postgres:// URL".to_string());
    }
    Ok(StateLocation::Directory(dir.join(state)))
}

/// Where the state a config directory names lives, read leniently: for commands that
/// only read history and must work while a pipeline file is broken. `state:` in
/// gantry.yaml is honoured, its `${VAR}` and `${file:PATH}` filled in from this
/// process's environment; without gantry.yaml or `state:`, the default directory. A
/// gantry.yaml that cannot be read, or a `state:` that is not valid, is an error: the
/// state may be elsewhere, and the default directory would be the wrong history.
pub fn state_of(dir: &Path) -> Result<StateLocation, String> {
    let default = || Ok(StateLocation::Directory(dir.join(".gantry")));
    let mut diagnostics = Vec::new();
    let unreadable = |why: String| format!("{GLOBAL_FILE}: cannot tell where the state is: {why}");
    let text = match super::read_file(
        &dir.join(GLOBAL_FILE),
        Path::new(GLOBAL_FILE),
        &mut diagnostics,
    ) {
        Ok(Some(text)) => text,
        Ok(None) => match diagnostics.first() {
            Some(diagnostic) => return Err(unreadable(diagnostic.message.clone())),
            None => return default(),
        },
        Err(error) => return Err(unreadable(error.to_string())),
    };
    let root = yaml::parse(&text).map_err(|error| {
        unreadable(format!(
            "{}:{}: {}",
            error.position.line, error.position.column, error.message
        ))
    })?;
    let yaml::NodeKind::Mapping(entries) = &root.kind else {
        return Err(unreadable("it is not a mapping".to_string()));
    };
    let state = entries.iter().find_map(|(key, value)| match &key.kind {
        yaml::NodeKind::Scalar { value: key, .. } if key == "state" => Some(value),
        _ => None,
    });
    let Some(state) = state else {
        return default();
    };
    let environment = |name: &str| std::env::var(name).ok();
    let mut decoder = Decoder {
        file: dir.join(GLOBAL_FILE),
        dir: dir.to_path_buf(),
        diagnostics: &mut diagnostics,
        environment: &environment,
    };
    let position = state.position;
    let located = decoder
        .string(state, "state")
        .ok_or_else(|| "`state` is not a string".to_string())
        .and_then(|state| state_location(dir, &state));
    located.map_err(|message| {
        let message = diagnostics
            .first()
            .map_or(message, |diagnostic| diagnostic.message.clone());
        format!(
            "{GLOBAL_FILE}:{}:{}: {message}",
            position.line, position.column
        )
    })
}

/// The `local` host, as the Docker CLI finds its engine: `DOCKER_HOST` when set, else
/// the default socket. A `tcp://` `DOCKER_HOST` with `DOCKER_TLS_VERIFY` set (to
/// anything, as for the CLI) takes `ca.pem`, `cert.pem` and `key.pem` from
/// `DOCKER_CERT_PATH`, default `~/.docker`, as a host's `tls:` would.
fn local_host(environment: Environment) -> Host {
    let set = |name: &str| environment(name).filter(|value| !value.is_empty());
    let docker = set("DOCKER_HOST")
        .and_then(|url| parse_docker_url(&url).ok())
        .unwrap_or_else(|| DockerEndpoint::Unix(PathBuf::from("/var/run/docker.sock")));
    let tls = match &docker {
        DockerEndpoint::Tcp(_) if set("DOCKER_TLS_VERIFY").is_some() => {
            let directory = set("DOCKER_CERT_PATH")
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from(set("HOME").unwrap_or_default()).join(".docker"));
            Some(TlsFiles {
                ca: directory.join("ca.pem"),
                cert: directory.join("cert.pem"),
                key: directory.join("key.pem"),
            })
        }
        _ => None,
    };
    Host {
        name: LOCAL_HOST.to_string(),
        address: default_address(&docker),
        docker,
        tls,
        timeout: DEFAULT_HOST_TIMEOUT,
        ssh_key: None,
        swarm: false,
    }
}

fn default_address(docker: &DockerEndpoint) -> String {
    match docker {
        DockerEndpoint::Unix(_) => "127.0.0.1".to_string(),
        DockerEndpoint::Tcp(authority) => match authority.rsplit_once(':') {
            Some((host, _port)) => host.to_string(),
            None => authority.clone(),
        },
        DockerEndpoint::Ssh(destination) => destination
            .rsplit_once('@')
            .map_or(destination.as_str(), |(_user, host)| host)
            .to_string(),
    }
}

pub(super) fn parse_docker_url(url: &str) -> Result<DockerEndpoint, String> {
    if let Some(path) = url.strip_prefix("unix://") {
        if path.is_empty() {
            return Err("a unix:// URL needs a socket path".to_string());
        }
        return Ok(DockerEndpoint::Unix(PathBuf::from(path)));
    }
    if let Some(authority) = url.strip_prefix("tcp://") {
        let authority = authority.trim_end_matches('/');
        let valid = authority
            .rsplit_once(':')
            .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
        if !valid {
            return Err(format!(
                "`{url}` needs a host and a port, like tcp://10.0.0.11:2376"
            ));
        }
        return Ok(DockerEndpoint::Tcp(authority.to_string()));
    }
    if let Some(destination) = url.strip_prefix("ssh://") {
        let destination = destination.trim_end_matches('/');
        let host = destination
            .rsplit_once('@')
            .map_or(destination, |(_user, host)| host);
        if host.is_empty() || host.contains('/') {
            return Err(format!("`{url}` needs a host, like ssh://deploy@10.0.0.11"));
        }
        if host.contains(':') {
            return Err(format!(
                "`{url}`: ssh:// hosts take no port in the URL; set `Port` for that host in ~/.ssh/config"
            ));
        }
        return Ok(DockerEndpoint::Ssh(destination.to_string()));
    }
    Err(format!(
        "`{url}` is not a Docker URL (unix:///path, tcp://host:port or ssh://user@host)"
    ))
}

fn read_host(
    decoder: &mut Decoder,
    dir: &Path,
    name: &str,
    name_position: Position,
    node: &yaml::Node,
) -> Option<Host> {
    let path = decode::join_path("hosts", name);
    if !is_simple_name(name) {
        decoder.error(
            name_position,
            format!("host name `{name}` may hold only letters, digits, `-`, `_` and `.`"),
        );
    }
    let fields = decoder.mapping(
        node,
        &path,
        &["docker", "tls", "address", "timeout", "ssh_key", "swarm"],
    )?;
    let docker_node = fields.get("docker");
    let url = decoder.required_string(&fields, "docker")?;
    let docker = match parse_docker_url(&url) {
        Ok(docker) => docker,
        Err(message) => {
            let position = docker_node.map_or(fields.position(), |node| node.position);
            decoder.error(position, format!("`{path}.docker`: {message}"));
            return None;
        }
    };
    let tls = match fields.get("tls") {
        Some(tls_node) => {
            let tls_path = format!("{path}.tls");
            let tls_fields = decoder.mapping(tls_node, &tls_path, &["ca", "cert", "key"])?;
            let ca = decoder.required_string(&tls_fields, "ca");
            let cert = decoder.required_string(&tls_fields, "cert");
            let key = decoder.required_string(&tls_fields, "key");
            if !matches!(docker, DockerEndpoint::Tcp(_)) {
                decoder.error(
                    tls_node.position,
                    format!("`{tls_path}` applies to tcp:// hosts only"),
                );
            }
            Some(TlsFiles {
                ca: dir.join(ca?),
                cert: dir.join(cert?),
                key: dir.join(key?),
            })
        }
        None => None,
    };
    let ssh_key = decoder
        .optional_string(&fields, "ssh_key")
        .map(|key| dir.join(key));
    if ssh_key.is_some() && !matches!(docker, DockerEndpoint::Ssh(_)) {
        decoder.error(
            fields.key_position("ssh_key"),
            format!("`{path}.ssh_key` applies to ssh:// hosts only"),
        );
    }
    Some(Host {
        name: name.to_string(),
        ssh_key,
        swarm: decoder.optional_bool(&fields, "swarm").unwrap_or(false),
        address: decoder
            .optional_string(&fields, "address")
            .unwrap_or_else(|| default_address(&docker)),
        timeout: decoder
            .optional_duration(&fields, "timeout")
            .unwrap_or(DEFAULT_HOST_TIMEOUT),
        docker,
        tls,
    })
}

fn read_notification(decoder: &mut Decoder, name: &str, node: &yaml::Node) -> Option<Notification> {
    let path = decode::join_path("notifications", name);
    let fields = decoder.mapping(node, &path, &["url", "format", "on", "pipelines"])?;
    let url = decoder.required_string(&fields, "url")?;
    if !(url.starts_with("http://") || url.starts_with("https://")) {
        decoder.error(
            fields.key_position("url"),
            format!("`{path}.url` must be an http:// or https:// URL"),
        );
    }
    let format = match decoder.optional_string(&fields, "format").as_deref() {
        None | Some("json") => NotificationFormat::Json,
        Some("slack") => NotificationFormat::Slack,
        Some(other) => {
            decoder.error(
                fields.key_position("format"),
                format!("`{path}.format` is json or slack, not `{other}`"),
            );
            NotificationFormat::Json
        }
    };
    let mut on = Vec::new();
    for (event, position) in decoder.positioned_list(&fields, "on") {
        match event.as_str() {
            "success" | "failure" | "rollback" => on.push(event),
            other => decoder.error(
                position,
                format!("`{path}.on`: `{other}` is not success, failure or rollback"),
            ),
        }
    }
    if fields.get("on").is_none() {
        on = vec!["success".into(), "failure".into(), "rollback".into()];
    }
    let pipelines = fields
        .get("pipelines")
        .map(|node| decoder.string_list(node, &fields.path("pipelines")));
    Some(Notification {
        name: name.to_string(),
        url: SecretString::from(url),
        format,
        on,
        pipelines,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The `local` host's endpoint and TLS files for this environment.
    fn check(variables: &[(&str, &str)], expected_docker: &str, expected_tls: Option<&str>) {
        let environment = |name: &str| {
            variables
                .iter()
                .find(|(key, _)| *key == name)
                .map(|(_, value)| value.to_string())
        };
        let host = local_host(&environment);
        assert_eq!(host.docker.to_string(), expected_docker, "{variables:?}");
        let tls = host.tls.map(|tls| {
            let directory = tls.ca.parent().unwrap().to_path_buf();
            assert_eq!(tls.cert, directory.join("cert.pem"));
            assert_eq!(tls.key, directory.join("key.pem"));
            assert_eq!(tls.ca.file_name().unwrap(), "ca.pem");
            directory.display().to_string()
        });
        assert_eq!(tls.as_deref(), expected_tls, "{variables:?}");
    }

    #[test]
    fn the_local_host_follows_the_docker_cli_environment() {
        check(&[], "unix:///var/run/docker.sock", None);
        check(
            &[("DOCKER_HOST", "unix:///run/user/1000/docker.sock")],
            "unix:///run/user/1000/docker.sock",
            None,
        );
        check(
            &[("DOCKER_HOST", "tcp://10.0.0.5:2375")],
            "tcp://10.0.0.5:2375",
            None,
        );
        let tls = [
            ("DOCKER_HOST", "tcp://10.0.0.5:2376"),
            ("DOCKER_TLS_VERIFY", "1"),
            ("DOCKER_CERT_PATH", "/etc/docker-certs"),
            ("HOME", "/home/ci"),
        ];
        check(&tls, "tcp://10.0.0.5:2376", Some("/etc/docker-certs"));
        // Without DOCKER_CERT_PATH (or with it empty), ~/.docker as for the CLI.
        check(
            &[tls[0], tls[1], ("DOCKER_CERT_PATH", ""), tls[3]],
            "tcp://10.0.0.5:2376",
            Some("/home/ci/.docker"),
        );
        // An empty DOCKER_TLS_VERIFY is unset, as for the CLI; a unix socket takes no TLS.
        check(
            &[tls[0], ("DOCKER_TLS_VERIFY", ""), tls[2]],
            "tcp://10.0.0.5:2376",
            None,
        );
        check(
            &[
                ("DOCKER_HOST", "unix:///var/run/docker.sock"),
                tls[1],
                tls[2],
            ],
            "unix:///var/run/docker.sock",
            None,
        );
    }
}

#[cfg(test)]
mod docker_host_tests {
    use super::super::Config;

    /// The messages of loading a config dir with `gantry_yaml` and this DOCKER_HOST.
    fn load(gantry_yaml: &str, docker_host: &str) -> Vec<String> {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("gantry.yaml"), gantry_yaml).unwrap();
        let environment = |name: &str| (name == "DOCKER_HOST").then(|| docker_host.to_string());
        match Config::load_with(dir.path(), &environment) {
            Ok(_) => Vec::new(),
            Err(super::super::ConfigError::Invalid(diagnostics)) => diagnostics
                .iter()
                .map(|diagnostic| diagnostic.message.clone())
                .collect(),
            Err(other) => panic!("{other}"),
        }
    }

    #[test]
    fn a_docker_host_gantry_cannot_read_is_an_error_not_the_default_socket() {
        let messages = load("", "htp://deploy:pw@engine.example.com:2376");
        assert_eq!(messages.len(), 1, "{messages:?}");
        assert!(
            messages[0].starts_with(
                "the environment's DOCKER_HOST `htp://engine.example.com:2376` is not a Docker URL"
            ),
            "{messages:?}"
        );
        // Defined in the file, `local` does not come from the environment.
        assert_eq!(
            load(
                "hosts:\n  local: { docker: \"unix:///var/run/docker.sock\" }\n",
                "htp://x"
            ),
            Vec::<String>::new()
        );
        assert_eq!(load("", "tcp://127.0.0.1:2375"), Vec::<String>::new());
    }
}

#[cfg(test)]
mod state_tests {
    use secrecy::ExposeSecret;

    use super::super::tests::{check, load_files};

    #[test]
    fn state_is_a_directory_or_a_postgres_url_whose_password_may_come_from_the_environment() {
        let variables = |name: &str| (name == "PG_PASSWORD").then(|| "s3cret".to_string());
        let text = "state: postgres://gantry:${PG_PASSWORD}@db.internal:5432/gantry\n";
        let config = load_files(&[("gantry.yaml", text)], &variables).unwrap();
        let url = config.state_database.as_ref().unwrap();
        assert_eq!(
            url.expose_secret(),
            "postgres://gantry:s3cret@db.internal:5432/gantry"
        );
        // The caches stay in the default directory.
        assert!(config.state_dir.ends_with(".gantry"));
        let config = load_files(&[("gantry.yaml", "state: var/state\n")], &variables).unwrap();
        assert!(config.state_database.is_none());
        assert!(config.state_dir.ends_with("var/state"));
        check(
            &[("gantry.yaml", "state: \"mysql://root:pw@db/gantry\"\n")],
            &[
                "gantry.yaml:1:8: `state`: `mysql://` is not a state store gantry knows; give a directory (SQLite, the default) or a postgres:// URL",
            ],
        );
        // A broken URL is refused without quoting it: it may hold a password.
        check(
            &[("gantry.yaml", "state: \"postgres://gantry:pw@/gantry\"\n")],
            &[
                "gantry.yaml:1:8: `state`: not a valid postgres:// URL (postgres://USER:PASSWORD@HOST:PORT/DATABASE)",
            ],
        );
    }
}
