//! The dashboard's pure parts: sessions, safe redirects, formatting, grouping.

use super::*;
use crate::server::access::is_token;

#[test]
fn only_a_path_on_this_server_may_follow_a_login() {
    assert_eq!(safe_next(Some("/runs/4")), "/runs/4");
    assert_eq!(
        safe_next(Some("/pipelines/web?before=9")),
        "/pipelines/web?before=9"
    );
    for outside in [
        "//evil.example",
        "https://evil.example/",
        "/\\evil.example",
        "/\t/evil.example",
        "/\n/evil.example",
        "/ /evil.example",
        "/caf\u{e9}",
        "runs/4",
        "",
    ] {
        assert_eq!(safe_next(Some(outside)), "/", "{outside}");
    }
    assert_eq!(safe_next(None), "/");
}

#[test]
fn a_session_is_an_hmac_of_the_token_that_expires_and_ends_when_the_token_changes() {
    let token = SecretString::from("operator-token");
    let now = 1_800_000_000;
    let session = session_value(&token, OPERATE, now);
    assert!(!session.contains("operator-token"));
    assert!(is_session(&session, &token, OPERATE, now));
    assert!(is_session(&session, &token, OPERATE, now + 29 * 86_400));
    assert!(
        !is_session(&session, &token, OPERATE, now + 31 * 86_400),
        "expired"
    );
    assert!(!is_session(&session, &token, READ, now), "another level");
    let other = SecretString::from("new-token");
    assert!(!is_session(&session, &other, OPERATE, now), "token changed");
    // Editing the level or the time breaks the MAC.
    let forged = session.replacen(&now.to_string(), &(now + 86_400).to_string(), 1);
    assert!(!is_session(&forged, &token, OPERATE, now + 86_400));
    let promoted = session_value(&token, READ, now).replacen("read", "operate", 1);
    assert!(!is_session(&promoted, &token, OPERATE, now));
    for junk in ["", "operate", "operate.x.y", "operate..", &"0".repeat(64)] {
        assert!(!is_session(junk, &token, OPERATE, now), "{junk}");
    }
    assert!(is_token("operator-token", &token));
    assert!(!is_token("operator-toke", &token));
}

#[test]
fn cookies_are_found_by_name_among_others() {
    let mut headers = HeaderMap::new();
    headers.insert(
        header::COOKIE,
        HeaderValue::from_static("theme=dark; gantry_session=abc123; other=1"),
    );
    assert_eq!(cookie(&headers, SESSION_COOKIE), Some("abc123"));
    assert_eq!(cookie(&headers, "missing"), None);
}

#[test]
fn ages_and_durations_read_as_a_person_says_them() {
    assert_eq!(age(1_200), "just now");
    assert_eq!(age(42_000), "42 s ago");
    assert_eq!(age(5 * 60_000 + 10), "5 min ago");
    assert_eq!(age(3 * 3_600_000), "3 h ago");
    assert_eq!(age(30 * 3_600_000), "1 day ago");
    assert_eq!(age(5 * 86_400_000), "5 days ago");
    assert_eq!(age(-5), "just now");
    assert_eq!(duration(850), "850 ms");
    assert_eq!(duration(12_400), "12.4 s");
    assert_eq!(duration(185_000), "3 min 5 s");
    assert_eq!(duration(7_800_000), "2 h 10 min");
    assert_eq!(timestamp(0), "1970-01-01T00:00:00Z");
}

#[test]
fn instances_are_grouped_by_host_in_reading_order() {
    let instance = |name: &str, host: &str| InstanceStatus {
        pipeline: "web".to_string(),
        service: "app".to_string(),
        instance: name.to_string(),
        host: host.to_string(),
        container: None,
        image: None,
        tags: Vec::new(),
        digest: Some(format!("sha256:{}", "ab".repeat(32))),
        commit: Some("0123456789abcdef".to_string()),
        state: "running".to_string(),
        health: None,
        uptime_seconds: Some(65),
        tasks: Vec::new(),
        recorded_digest: None,
        drift: vec!["digest differs".to_string(), "stopped".to_string()],
        error: None,
        logs: None,
        proxy: None,
    };
    let groups = host_groups(&[
        instance("app-1", "h1"),
        instance("app-2", "h2"),
        instance("app-3", "h1"),
    ]);
    let hosts: Vec<_> = groups.iter().map(|group| group.host.as_str()).collect();
    assert_eq!(hosts, ["h1", "h2"]);
    assert_eq!(groups[0].instances.len(), 2);
    let first = &groups[0].instances[0];
    assert_eq!(first.commit_short, "01234567");
    assert_eq!(first.digest_short, "abababababab");
    assert_eq!(first.uptime, "1 min 5 s");
    assert_eq!(first.drift, "digest differs; stopped");
}
