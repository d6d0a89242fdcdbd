//! `gantry hosts`: every host is reached over its own transport, and one that is down
//! is reported within its timeout while the others still print.

use std::time::{Duration, Instant};

use crate::common::*;

#[test]
fn reachable_hosts_print_versions_and_a_dead_one_is_reported_in_time() {
    require_docker();
    // A listener that accepts connections and never answers: the slowest kind of dead host.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let silent_port = silent.local_addr().unwrap().port();
    let certs = certs();
    let config = ConfigDir::new();
    config.write(
        "gantry.yaml",
        &format!(
            "hosts:\n\
             \x20 plain: {{ docker: {tcp} }}\n\
             \x20 secure:\n\
             \x20   docker: {tls}\n\
             \x20   tls: {{ ca: {certs}/ca.pem, cert: {certs}/cert.pem, key: {certs}/key.pem }}\n\
             \x20 silent: {{ docker: tcp://127.0.0.1:{silent_port}, timeout: 1s }}\n\
             \x20 refused: {{ docker: tcp://127.0.0.1:9, timeout: 1s }}\n\
             \x20 nosocket: {{ docker: unix:///nonexistent/docker.sock }}\n",
            tcp = docker_tcp(),
            tls = docker_tls(),
            certs = certs.display(),
        ),
    );

    let started = Instant::now();
    let (output, reports) = config.gantry_json(&["hosts"]);
    let elapsed = started.elapsed();
    assert_eq!(
        output.status.code(),
        Some(1),
        "an unreachable host is a failure"
    );
    // Hosts are asked in parallel: the silent one costs its own 1s timeout, not a sum.
    assert!(elapsed < Duration::from_secs(8), "took {elapsed:?}");

    for name in ["local", "plain", "secure"] {
        let report = report_named(&reports, name);
        assert_eq!(report["reachable"], true, "{report}");
        assert!(
            report["engine_version"]
                .as_str()
                .unwrap()
                .starts_with("20."),
            "{report}"
        );
        assert_eq!(report["api_version"], "1.41", "{report}");
    }
    let silent_report = report_named(&reports, "silent");
    assert_eq!(silent_report["reachable"], false);
    assert_eq!(
        silent_report["error"],
        format!("host `silent` (tcp://127.0.0.1:{silent_port}) did not answer within 1s")
    );
    assert!(
        silent_report["elapsed_ms"].as_u64().unwrap() < 3000,
        "{silent_report}"
    );
    let refused = report_named(&reports, "refused");
    assert_eq!(refused["reachable"], false);
    assert!(
        refused["error"]
            .as_str()
            .unwrap()
            .to_lowercase()
            .contains("refused"),
        "{refused}"
    );
    let nosocket = report_named(&reports, "nosocket");
    assert!(
        nosocket["error"]
            .as_str()
            .unwrap()
            .contains("/nonexistent/docker.sock"),
        "{nosocket}"
    );

    // The text form prints every host, reachable or not.
    let output = config.gantry(&["hosts"]);
    let text = stdout(&output);
    for line in [
        "local ",
        "plain ",
        "secure ",
        "silent ",
        "refused ",
        "nosocket ",
    ] {
        assert!(
            text.lines().any(|printed| printed.starts_with(line)),
            "{line} missing:\n{text}"
        );
    }
    assert!(text.contains("unreachable  host `refused`"), "{text}");
    drop(silent);
}

#[test]
fn a_tls_host_without_the_right_client_certificate_is_refused() {
    require_docker();
    let certs = certs();
    let config = ConfigDir::new();
    // A client key file that does not exist is named before anything is sent.
    config.write(
        "gantry.yaml",
        &format!(
            "hosts:\n  secure:\n    docker: {}\n    tls: {{ ca: {c}/ca.pem, cert: {c}/cert.pem, key: {c}/missing-key.pem }}\n",
            docker_tls(),
            c = certs.display()
        ),
    );
    let (output, reports) = config.gantry_json(&["hosts"]);
    assert_eq!(output.status.code(), Some(1));
    let secure = report_named(&reports, "secure");
    assert!(
        secure["error"]
            .as_str()
            .unwrap()
            .contains("missing-key.pem does not exist"),
        "{secure}"
    );

    // Plain HTTP to the TLS port is not mistaken for an engine.
    config.write(
        "gantry.yaml",
        &format!(
            "hosts:\n  secure: {{ docker: {}, timeout: 2s }}\n",
            docker_tls()
        ),
    );
    let (_, reports) = config.gantry_json(&["hosts"]);
    let secure = report_named(&reports, "secure");
    assert_eq!(secure["reachable"], false, "{secure}");
}

/// The report of one host in `gantry --json hosts` output.
fn report_named(reports: &serde_json::Value, name: &str) -> serde_json::Value {
    reports
        .as_array()
        .unwrap()
        .iter()
        .find(|report| report["name"] == name)
        .unwrap_or_else(|| panic!("{name} missing: {reports}"))
        .clone()
}
