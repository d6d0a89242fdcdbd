//! What gantry's proxy on one host routes where, and that as Caddy's JSON config.
//!
//! `Routes` is gantry's record, kept in the proxy container beside the config it was
//! rendered to: one site per proxied service (its port, host names, TLS and the
//! container each instance is reached at), and the secret of the probe route. `render`
//! is a pure function of it, so the whole config is loaded at once (Caddy's `/load`:
//! atomic) and every change is a new `Routes` value.
//!
//! The probe route comes first on every port and is taken only by a request that
//! carries the secret: it goes to the container its `X-Gantry-Upstream` header names
//! (`<short id>:<port>`, checked by a pattern, so it reaches containers by their id
//! alias and nothing else). Checking a container on trial then needs no config load.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::config::{ProxyTls, ServiceProxy};

/// The header that selects the probe route; its value is the proxy's probe secret.
pub const PROBE_HEADER: &str = "X-Gantry-Probe";
/// The header naming the container a probe goes to: `<short id>:<port>`.
pub const UPSTREAM_HEADER: &str = "X-Gantry-Upstream";
/// What `UPSTREAM_HEADER` may hold.
const UPSTREAM_PATTERN: &str = "^[0-9a-f]{12}:[0-9]{1,5}$";
/// How long the proxy retries reaching an upstream (one restarting, or just switched to).
const TRY_DURATION: &str = "5s";
const TRY_INTERVAL: &str = "250ms";
/// How long, and how often, the probe route retries reaching a container that does not
/// listen yet: a health probe sent while the new container starts is answered as soon
/// as it listens, instead of failing and waiting a whole `interval` for the next one.
const PROBE_TRY_DURATION: &str = "1s";
const PROBE_TRY_INTERVAL: &str = "10ms";

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Routes {
    /// By `pipeline/service`.
    #[serde(default)]
    pub sites: BTreeMap<String, Site>,
    /// The value of `PROBE_HEADER` that opens the probe route (made once per proxy;
    /// never shown).
    #[serde(default)]
    pub probe_secret: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Site {
    pub port: u16,
    #[serde(default)]
    pub hosts: Vec<String>,
    #[serde(default)]
    pub tls: Option<ProxyTls>,
    /// The container each instance is reached at, by instance name.
    #[serde(default)]
    pub upstreams: BTreeMap<String, Upstream>,
}

/// A container on a network the proxy shares, by its short id (Docker's DNS alias for it,
/// which a rename does not change), or a Swarm service's tasks (`tasks.NAME`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Upstream {
    pub container: String,
    pub port: u16,
}

impl Upstream {
    pub fn dial(&self) -> String {
        format!("{}:{}", self.container, self.port)
    }
}

/// The key of a service's site.
pub fn site_key(pipeline: &str, service: &str) -> String {
    format!("{pipeline}/{service}")
}

impl Site {
    pub fn new(proxy: &ServiceProxy) -> Site {
        Site {
            port: proxy.port,
            hosts: proxy.hosts.clone(),
            tls: proxy.tls,
            upstreams: BTreeMap::new(),
        }
    }
}

impl Routes {
    /// The ports the proxy must listen on.
    pub fn ports(&self) -> BTreeSet<u16> {
        self.sites.values().map(|site| site.port).collect()
    }
}

/// Caddy's JSON config for these routes; `email` is the ACME account's.
pub fn render(routes: &Routes, email: Option<&str>) -> Value {
    let mut servers = serde_json::Map::new();
    let mut policies = Vec::new();
    for port in routes.ports() {
        let sites: Vec<(&String, &Site)> = routes
            .sites
            .iter()
            .filter(|(_, site)| site.port == port)
            .collect();
        let mut handlers: Vec<Value> = Vec::new();
        if let Some(secret) = &routes.probe_secret {
            handlers.push(json!({
                "match": [{
                    "header": { PROBE_HEADER: [secret] },
                    "header_regexp": { UPSTREAM_HEADER: { "pattern": UPSTREAM_PATTERN } },
                }],
                "handle": [{
                    "handler": "reverse_proxy",
                    "upstreams": [{ "dial": format!("{{http.request.header.{UPSTREAM_HEADER}}}") }],
                    "load_balancing": {
                        "try_duration": PROBE_TRY_DURATION,
                        "try_interval": PROBE_TRY_INTERVAL,
                    },
                }],
                "terminal": true,
            }));
        }
        // Sites with host names first: a catch-all must not shadow them.
        let mut ordered = sites.clone();
        ordered.sort_by_key(|(_, site)| site.hosts.is_empty());
        for (_, site) in ordered {
            let upstreams: Vec<&Upstream> = site.upstreams.values().collect();
            let handle = if upstreams.is_empty() {
                json!({
                    "handler": "static_response",
                    "status_code": 503,
                    "body": "no container of this service is running\n",
                })
            } else {
                reverse_proxy(upstreams)
            };
            let mut route = json!({ "handle": [handle], "terminal": true });
            if !site.hosts.is_empty() {
                route["match"] = json!([{ "host": site.hosts }]);
            }
            handlers.push(route);
            if let Some(tls) = site.tls
                && !site.hosts.is_empty()
            {
                let issuer = match (tls, email) {
                    (ProxyTls::Internal, _) => json!({ "module": "internal" }),
                    (ProxyTls::Acme, Some(email)) => json!({ "module": "acme", "email": email }),
                    (ProxyTls::Acme, None) => json!({ "module": "acme" }),
                };
                policies.push(json!({ "subjects": site.hosts, "issuers": [issuer] }));
            }
        }
        handlers.push(json!({
            "handle": [{
                "handler": "static_response",
                "status_code": 404,
                "body": "no service is routed for this host\n",
            }],
        }));
        let tls = sites.iter().any(|(_, site)| site.tls.is_some());
        let mut server = json!({
            "listen": [format!(":{port}")],
            "routes": handlers,
        });
        if tls {
            server["tls_connection_policies"] = json!([{}]);
            server["automatic_https"] = json!({ "disable_redirects": true });
        } else {
            server["automatic_https"] = json!({ "disable": true });
        }
        servers.insert(format!("port-{port}"), server);
    }
    let mut apps = json!({ "http": { "servers": servers } });
    if !policies.is_empty() {
        apps["tls"] = json!({ "automation": { "policies": policies } });
        apps["pki"] = json!({ "certificate_authorities": { "local": { "install_trust": false } } });
    }
    json!({
        "admin": { "listen": "localhost:2019" },
        "apps": apps,
    })
}

fn reverse_proxy<'a>(upstreams: impl IntoIterator<Item = &'a Upstream>) -> Value {
    let upstreams: Vec<Value> = upstreams
        .into_iter()
        .map(|upstream| json!({ "dial": upstream.dial() }))
        .collect();
    json!({
        "handler": "reverse_proxy",
        "upstreams": upstreams,
        "load_balancing": {
            "selection_policy": { "policy": "round_robin" },
            "try_duration": TRY_DURATION,
            "try_interval": TRY_INTERVAL,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn upstream(container: &str) -> Upstream {
        Upstream {
            container: container.to_string(),
            port: 8080,
        }
    }

    fn routes() -> Routes {
        let mut routes = Routes::default();
        routes.sites.insert(
            site_key("shop", "catchall"),
            Site {
                port: 80,
                hosts: Vec::new(),
                tls: None,
                upstreams: BTreeMap::from([("c-1".to_string(), upstream("cccccccccccc"))]),
            },
        );
        routes.sites.insert(
            site_key("shop", "api"),
            Site {
                port: 80,
                hosts: vec!["api.example.com".to_string()],
                tls: None,
                upstreams: BTreeMap::from([
                    ("api-1".to_string(), upstream("aaaaaaaaaaaa")),
                    ("api-2".to_string(), upstream("bbbbbbbbbbbb")),
                ]),
            },
        );
        routes
    }

    #[test]
    fn host_routes_come_before_the_catch_all_and_every_instance_is_an_upstream() {
        let config = render(&routes(), None);
        let server = &config["apps"]["http"]["servers"]["port-80"];
        assert_eq!(server["listen"], json!([":80"]));
        let routes = server["routes"].as_array().unwrap();
        assert_eq!(routes.len(), 3, "{routes:?}");
        assert_eq!(routes[0]["match"], json!([{ "host": ["api.example.com"] }]));
        assert_eq!(
            routes[0]["handle"][0]["upstreams"],
            json!([{ "dial": "aaaaaaaaaaaa:8080" }, { "dial": "bbbbbbbbbbbb:8080" }])
        );
        assert!(routes[1].get("match").is_none());
        assert_eq!(routes[2]["handle"][0]["status_code"], 404);
        assert_eq!(server["automatic_https"], json!({ "disable": true }));
        assert!(config["apps"].get("tls").is_none());
    }

    #[test]
    fn the_probe_route_comes_first_and_takes_only_its_secret_and_a_container_id() {
        let mut routes = routes();
        routes.probe_secret = Some("0123456789abcdef".to_string());
        let config = render(&routes, None);
        let first = &config["apps"]["http"]["servers"]["port-80"]["routes"][0];
        assert_eq!(
            first["match"],
            json!([{
                "header": { PROBE_HEADER: ["0123456789abcdef"] },
                "header_regexp": { UPSTREAM_HEADER: { "pattern": "^[0-9a-f]{12}:[0-9]{1,5}$" } },
            }])
        );
        assert_eq!(
            first["handle"][0]["upstreams"],
            json!([{ "dial": "{http.request.header.X-Gantry-Upstream}" }])
        );
        // A probe of a container that does not listen yet waits for it, briefly.
        assert_eq!(
            first["handle"][0]["load_balancing"],
            json!({ "try_duration": "1s", "try_interval": "10ms" })
        );
        let pattern = regex::Regex::new(UPSTREAM_PATTERN).unwrap();
        assert!(pattern.is_match("0123456789ab:8080"));
        for refused in [
            "example.com:80",
            "0123456789ab:8080/x",
            "169.254.169.254:80",
        ] {
            assert!(!pattern.is_match(refused), "{refused}");
        }
    }

    #[test]
    fn tls_sites_get_certificates_from_their_issuer() {
        let mut routes = Routes::default();
        routes.sites.insert(
            site_key("shop", "web"),
            Site {
                port: 443,
                hosts: vec!["shop.test".to_string()],
                tls: Some(ProxyTls::Internal),
                upstreams: BTreeMap::new(),
            },
        );
        let config = render(&routes, None);
        let server = &config["apps"]["http"]["servers"]["port-443"];
        assert_eq!(server["tls_connection_policies"], json!([{}]));
        assert_eq!(
            config["apps"]["tls"]["automation"]["policies"],
            json!([{ "subjects": ["shop.test"], "issuers": [{ "module": "internal" }] }])
        );
        // No container yet: the site answers 503 rather than nothing.
        assert_eq!(server["routes"][0]["handle"][0]["status_code"], 503);
    }

    #[test]
    fn routes_survive_their_record() {
        let routes = routes();
        let text = serde_json::to_string(&routes).unwrap();
        assert_eq!(serde_json::from_str::<Routes>(&text).unwrap(), routes);
    }
}
