//! `proxy:` in gantry.yaml and a service's `proxy:`: what each needs, TLS, and services
//! sharing a proxy port, each error with the place it points at.

use super::tests::{GOOD_PIPELINE, check};

/// A pipeline whose `web` service on `local` has this `proxy:` and an http check on 8080.
fn proxied_pipeline(proxy: &str, health: &str) -> String {
    format!(
        "{GOOD_PIPELINE}deploy:\n  services:\n    web:\n      proxy: {proxy}\n      \
         health: {health}\n      instances: {{ web-1: {{}} }}\n"
    )
}

const PROXY_IMAGE: &str = "proxy:\n  image: \"caddy:2.8.4\"\n";

#[test]
fn a_proxied_service_needs_a_port_a_container_port_and_the_proxy_image() {
    let http = "{ http: { port: 8080, path: /healthz } }";
    // The check's port need not be published: the check goes through the proxy.
    check(
        &[
            ("gantry.yaml", PROXY_IMAGE),
            (
                "pipelines/hello.yaml",
                &proxied_pipeline("{ port: 80 }", http),
            ),
        ],
        &[],
    );
    check(
        &[(
            "pipelines/hello.yaml",
            &proxied_pipeline("{ port: 80 }", http),
        )],
        &[
            "pipelines/hello.yaml:13:14: `deploy.services.web.proxy`: gantry.yaml names no proxy image; set `proxy: { image: ... }` there (a Caddy 2 image, pinned: `caddy:2.8.4`)",
        ],
    );
    check(
        &[
            ("gantry.yaml", PROXY_IMAGE),
            (
                "pipelines/hello.yaml",
                &proxied_pipeline("{ drain: 5s }", "{ exec: [\"true\"] }"),
            ),
        ],
        &[
            "pipelines/hello.yaml:13:14: `deploy.services.web.proxy` needs `container_port` (or an `http` health check, whose port it defaults to)",
            "pipelines/hello.yaml:13:14: missing key `port` in `deploy.services.web.proxy`",
        ],
    );
    check(
        &[
            ("gantry.yaml", PROXY_IMAGE),
            (
                "pipelines/hello.yaml",
                &proxied_pipeline("{ port: 80 }", "{ tcp: { port: 8080 } }"),
            ),
        ],
        &[
            "pipelines/hello.yaml:14:17: `deploy.services.web.health.tcp`: a proxied service is checked through the proxy; use an `http`, `exec` or `docker` check",
        ],
    );
}

#[test]
fn proxy_tls_hosts_and_image_are_checked() {
    let http = "{ http: { port: 8080 } }";
    check(
        &[
            (
                "gantry.yaml",
                "proxy:\n  image: \"caddy:2.8:x\"\n  email: nobody\n",
            ),
            (
                "pipelines/hello.yaml",
                &proxied_pipeline("{ port: 443, tls: internal, hosts: [\"bad host\"] }", http),
            ),
        ],
        &[
            "gantry.yaml:2:3: `proxy.image`: `caddy:2.8` carries a tag; put tags in `image.tags`, not in the repository",
            "gantry.yaml:3:3: `proxy.email`: `nobody` is not an email address",
            "pipelines/hello.yaml:13:50: `deploy.services.web.proxy.hosts`: `bad host` is not a host name like app.example.com",
        ],
    );
    check(
        &[
            ("gantry.yaml", PROXY_IMAGE),
            (
                "pipelines/hello.yaml",
                &proxied_pipeline("{ port: 443, tls: acme, hosts: [shop.test] }", http),
            ),
        ],
        &[
            "pipelines/hello.yaml:13:27: `deploy.services.web.proxy.tls: acme` needs `proxy.email` in gantry.yaml for the ACME account",
        ],
    );
}

#[test]
fn services_sharing_a_proxy_port_must_be_told_apart_by_host_name() {
    let service = |name: &str, proxy: &str| {
        format!(
            "    {name}:\n      proxy: {proxy}\n      health: {{ http: {{ port: 8080 }} }}\n      \
             instances: {{ {name}-1: {{}} }}\n"
        )
    };
    let pipeline = |a: &str, b: &str| {
        format!(
            "{GOOD_PIPELINE}deploy:\n  services:\n{}{}",
            service("a", a),
            service("b", b)
        )
    };
    check(
        &[
            ("gantry.yaml", PROXY_IMAGE),
            (
                "pipelines/hello.yaml",
                &pipeline(
                    "{ port: 80, hosts: [a.test] }",
                    "{ port: 80, hosts: [b.test] }",
                ),
            ),
        ],
        &[],
    );
    check(
        &[
            ("gantry.yaml", PROXY_IMAGE),
            (
                "pipelines/hello.yaml",
                &pipeline("{ port: 80, hosts: [a.test] }", "{ port: 80 }"),
            ),
        ],
        &[
            "pipelines/hello.yaml:15:20: service `a` shares proxy port 80 on host `local` with pipeline `hello`'s service `b` (pipelines/hello.yaml:19:20), but both need `hosts` to share it",
            "pipelines/hello.yaml:19:20: service `b` shares proxy port 80 on host `local` with pipeline `hello`'s service `a` (pipelines/hello.yaml:15:20), but both need `hosts` to share it",
        ],
    );
}
