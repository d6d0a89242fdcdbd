//! Engines reached over the network: TCP with TLS client certificates to the
//! `tlsverify` engine `scripts/test-env.sh` runs in a namespace of its own (which refuses
//! a self-signed pair), and the engine's API through an ssh channel to a private sshd on
//! loopback.

use std::process::Command;

use crate::common::*;
use crate::deploy::instances_by_name;

/// A client key and certificate signed by the test CA, made by this test, plus a
/// self-signed pair the engine must refuse.
fn make_client_certificates(dir: &std::path::Path) {
    let ca = certs();
    let openssl =
        |arguments: &[&str]| run(Command::new("openssl").args(arguments).current_dir(dir));
    std::fs::write(
        dir.join("client.cnf"),
        "[req]\ndistinguished_name = dn\nprompt = no\n[dn]\nCN = gantry-deploy-test\n\
         [client]\nbasicConstraints = critical, CA:FALSE\nkeyUsage = critical, digitalSignature, keyEncipherment\n\
         extendedKeyUsage = clientAuth\n",
    )
    .unwrap();
    for name in ["key.pem", "wrong-key.pem"] {
        openssl(&[
            "genpkey",
            "-algorithm",
            "RSA",
            "-pkeyopt",
            "rsa_keygen_bits:2048",
            "-out",
            name,
        ]);
    }
    openssl(&[
        "req",
        "-config",
        "client.cnf",
        "-new",
        "-key",
        "key.pem",
        "-out",
        "client.csr",
    ]);
    openssl(&[
        "x509",
        "-req",
        "-sha256",
        "-days",
        "1",
        "-in",
        "client.csr",
        "-CA",
        ca.join("ca.pem").to_str().unwrap(),
        "-CAkey",
        ca.join("ca-key.pem").to_str().unwrap(),
        "-set_serial",
        "0x1d2c3b4a",
        "-extfile",
        "client.cnf",
        "-extensions",
        "client",
        "-out",
        "cert.pem",
    ]);
    openssl(&[
        "req",
        "-config",
        "client.cnf",
        "-new",
        "-x509",
        "-days",
        "1",
        "-key",
        "wrong-key.pem",
        "-extensions",
        "client",
        "-out",
        "wrong-cert.pem",
    ]);
    std::fs::copy(ca.join("ca.pem"), dir.join("ca.pem")).unwrap();
}

#[test]
fn deploy_over_tcp_with_tls_client_certificates_reaches_a_tlsverify_engine() {
    let deployment = Deployment::new("tls", &[1]);
    let tls_url = std::env::var("GANTRY_TEST_HOST_TLS").unwrap_or("tcp://10.77.1.2:2376".into());
    let certificates = tempfile::tempdir().unwrap();
    make_client_certificates(certificates.path());
    let dir = certificates.path().display();
    deployment.config.append("gantry.yaml", &format!(
        "  secure: {{ docker: \"{tls_url}\", tls: {{ ca: {dir}/ca.pem, cert: {dir}/cert.pem, key: {dir}/key.pem }} }}\n\
         \x20 impostor: {{ docker: \"{tls_url}\", timeout: 3s, tls: {{ ca: {dir}/ca.pem, cert: {dir}/wrong-cert.pem, key: {dir}/wrong-key.pem }} }}\n"
    ));
    let instance = deployment.instance("web-1");
    deployment.pipeline(&format!(
        "  services:\n    web:\n      ports: [\"8080\"]\n      stop_timeout: 1s\n      \
         health:\n        http: {{ port: 8080, path: /healthz }}\n      instances:\n        {instance}: {{ host: secure }}\n"
    ));
    let report = deployment.succeed(&["run", &deployment.name]);
    assert_eq!(
        instances_by_name(&report),
        vec![(instance.clone(), "updated".to_string())]
    );
    // The address defaults to the docker URL's host: the engine in the namespace.
    let port = published_port(&host_docker(1), &instance);
    assert_eq!(fetch(&host_address(1), port).as_deref(), Some("v1\n"));
    let (_, status) = deployment.gantry_json(&["status", &deployment.name]);
    assert_eq!(
        status["pipelines"][0]["instances"][0]["state"], "running",
        "{status}"
    );

    // A certificate the engine's CA did not sign is refused, naming the host.
    deployment.pipeline(&format!(
        "  services:\n    web:\n      instances:\n        {instance}: {{ host: impostor }}\n"
    ));
    let output = deployment.gantry(&["deploy", &deployment.name]);
    let errors = stderr(&output);
    assert_eq!(output.status.code(), Some(1), "{errors}");
    assert!(errors.contains("host `impostor`"), "{errors}");
    assert!(errors.contains("no container was touched"), "{errors}");
}

#[test]
fn deploy_over_ssh_runs_the_engine_api_through_the_ssh_channel() {
    let deployment = Deployment::new("ssh", &[]);
    let ssh = crate::transports::Ssh::start();
    // ssh reads its config from the user's real home, not $HOME: a wrapper first in
    // PATH points it at this test's config (port, user and known host) instead.
    let tools = tempfile::tempdir().unwrap();
    let ssh_config = tools.path().join("ssh_config");
    std::fs::write(
        &ssh_config,
        format!(
            "Host gantry-ssh-test\n  HostName 127.0.0.1\n  Port {}\n  User root\n  \
             UserKnownHostsFile {}/.ssh/known_hosts\n  StrictHostKeyChecking yes\n",
            ssh.port,
            ssh.home()
        ),
    )
    .unwrap();
    let wrapper = tools.path().join("ssh");
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\nexec /usr/bin/ssh -F {} \"$@\"\n",
            ssh_config.display()
        ),
    )
    .unwrap();
    run(Command::new("chmod").arg("+x").arg(&wrapper));
    let path = format!(
        "{}:{}",
        tools.path().display(),
        std::env::var("PATH").unwrap_or_default()
    );

    deployment.config.append("gantry.yaml", &format!(
        "  remote: {{ docker: \"ssh://gantry-ssh-test\", ssh_key: {}, address: 127.0.0.1, timeout: 20s }}\n",
        ssh.key("client_key")
    ));
    let instance = deployment.instance("web-1");
    deployment.pipeline(&format!(
        "  services:\n    web:\n      ports: [\"8080\"]\n      stop_timeout: 1s\n      \
         health:\n        http: {{ port: 8080, path: /healthz }}\n      instances:\n        {instance}: {{ host: remote }}\n"
    ));
    let environment = [("PATH", path.as_str())];
    let hosts = deployment
        .config
        .gantry_with(&["--json", "hosts"], &environment);
    let reports: serde_json::Value = serde_json::from_slice(&hosts.stdout).unwrap();
    let remote = reports
        .as_array()
        .unwrap()
        .iter()
        .find(|report| report["name"] == "remote")
        .unwrap();
    assert_eq!(remote["reachable"], true, "{remote}");
    assert_eq!(remote["endpoint"], "ssh://gantry-ssh-test");

    let output = deployment
        .config
        .gantry_with(&["--json", "run", &deployment.name], &environment);
    assert!(output.status.success(), "{}", stderr(&output));
    let port = published_port(LOCAL_DOCKER, &instance);
    assert_eq!(fetch("127.0.0.1", port).as_deref(), Some("v1\n"));

    // A key the server does not know is refused, naming the host.
    let mut gantry_yaml =
        std::fs::read_to_string(deployment.config.path().join("gantry.yaml")).unwrap();
    gantry_yaml = gantry_yaml.replace(&ssh.key("client_key"), &ssh.key("wrong_key"));
    deployment.config.write("gantry.yaml", &gantry_yaml);
    let output = deployment
        .config
        .gantry_with(&["deploy", &deployment.name, "--force"], &environment);
    let errors = stderr(&output);
    assert_eq!(output.status.code(), Some(1), "{errors}");
    assert!(errors.contains("host `remote`"), "{errors}");
}
