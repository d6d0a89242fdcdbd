//! Each forge's deliveries, verified and parsed, from their own documented payloads.

use super::*;

const SECRET: &[u8] = b"It's a Secret to Everybody";

fn deliver(
    headers: &[(&str, &str)],
    content_type: Option<&str>,
    body: &[u8],
) -> Result<Delivery, WebhookError> {
    let headers: Vec<(String, String)> = headers
        .iter()
        .map(|(name, value)| (name.to_ascii_lowercase(), value.to_string()))
        .collect();
    let header = move |name: &str| {
        headers
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.clone())
    };
    receive(Some(SECRET), &header, content_type, body)
}

/// A GitHub delivery of `event` with `body`, signed with the test's secret.
fn github(event: &str, body: &[u8]) -> Result<Delivery, WebhookError> {
    let signature = sign(SECRET, body);
    deliver(
        &[
            ("X-GitHub-Event", event),
            ("X-Hub-Signature-256", &signature),
        ],
        None,
        body,
    )
}

fn sample(name: &str) -> Vec<u8> {
    std::fs::read(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/webhooks")
            .join(name),
    )
    .unwrap()
}

#[test]
fn githubs_documented_test_vector_verifies() {
    let signature = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";
    assert_eq!(sign(SECRET, b"Hello, World!"), signature);
    let delivery = deliver(
        &[
            ("X-GitHub-Event", "ping"),
            ("X-Hub-Signature-256", signature),
        ],
        None,
        b"Hello, World!",
    )
    .unwrap();
    assert_eq!(delivery.event, WebhookEvent::Ping);
    let tampered = deliver(
        &[
            ("X-GitHub-Event", "ping"),
            ("X-Hub-Signature-256", signature),
        ],
        None,
        b"Hello, World?",
    );
    assert_eq!(
        tampered,
        Err(WebhookError::BadSignature { forge: "github" })
    );
}

fn check_push(headers: &[(&str, &str)], body: &[u8], forge: Forge, expected: &[Push]) {
    let delivery = deliver(headers, Some("application/json"), body).unwrap();
    assert_eq!(delivery.forge, forge);
    assert_eq!(delivery.event, WebhookEvent::Push(expected.to_vec()));
}

fn push(git_ref: &str, commit: Option<&str>) -> Push {
    Push {
        git_ref: git_ref.to_string(),
        commit: commit.map(str::to_string),
    }
}

#[test]
fn each_forges_push_is_verified_and_parsed() {
    let github = sample("github-push-new-branch.json");
    check_push(
        &[
            ("X-GitHub-Event", "push"),
            ("X-GitHub-Delivery", "d1"),
            ("X-Hub-Signature-256", &sign(SECRET, &github)),
        ],
        &github,
        Forge::GitHub,
        &[push(
            "refs/heads/master",
            Some("6113728f27ae82c7b1a177c8d03f9e96e0adf246"),
        )],
    );
    let gitlab = sample("gitlab-push.json");
    check_push(
        &[
            ("X-Gitlab-Event", "Push Hook"),
            ("X-Gitlab-Token", "It's a Secret to Everybody"),
        ],
        &gitlab,
        Forge::GitLab,
        &[push(
            "refs/heads/master",
            Some("da1560886d4f094c3e6c9ef40349f7d38b5d27d7"),
        )],
    );
    let gitea = sample("gitea-push.json");
    let bare = sign(SECRET, &gitea)
        .trim_start_matches("sha256=")
        .to_string();
    // Gitea also sends GitHub's headers; its own decide.
    check_push(
        &[
            ("X-GitHub-Event", "push"),
            ("X-Gitea-Event", "push"),
            ("X-Gitea-Signature", &bare),
        ],
        &gitea,
        Forge::Gitea,
        &[push(
            "refs/heads/master",
            Some("67b56589a45103f891bdee7c0546e5d40bc02001"),
        )],
    );
    check_push(
        &[
            ("X-GitHub-Event", "push"),
            ("X-Gitea-Event", "push"),
            ("X-Forgejo-Event", "push"),
            ("X-Forgejo-Signature", &bare),
        ],
        &gitea,
        Forge::Forgejo,
        &[push(
            "refs/heads/master",
            Some("67b56589a45103f891bdee7c0546e5d40bc02001"),
        )],
    );
    let bitbucket = sample("bitbucket-cloud-push.json");
    check_push(
        &[
            ("X-Event-Key", "repo:push"),
            ("X-Hub-Signature", &sign(SECRET, &bitbucket)),
        ],
        &bitbucket,
        Forge::BitbucketCloud,
        &[push(
            "refs/heads/name-of-branch",
            Some("709d658dc5b6d6afcd46049c2f332ee3f515a67d"),
        )],
    );
    let generic =
        br#"{"ref": "refs/heads/main", "after": "0123456789abcdef0123456789abcdef01234567"}"#;
    check_push(
        &[("X-Gantry-Signature-256", &sign(SECRET, generic))],
        generic,
        Forge::Generic,
        &[push(
            "refs/heads/main",
            Some("0123456789abcdef0123456789abcdef01234567"),
        )],
    );
}

#[test]
fn deletions_have_no_commit_and_form_posts_are_read() {
    let deleted = br#"{"ref": "refs/heads/gone", "after": "0000000000000000000000000000000000000000", "deleted": true}"#;
    check_push(
        &[
            ("X-GitHub-Event", "push"),
            ("X-Hub-Signature-256", &sign(SECRET, deleted)),
        ],
        deleted,
        Forge::GitHub,
        &[push("refs/heads/gone", None)],
    );
    let gitlab = br#"{"ref": "refs/heads/gone", "after": "0000000000000000000000000000000000000000", "checkout_sha": null}"#;
    check_push(
        &[
            ("X-Gitlab-Event", "Push Hook"),
            ("X-Gitlab-Token", "It's a Secret to Everybody"),
        ],
        gitlab,
        Forge::GitLab,
        &[push("refs/heads/gone", None)],
    );
    let form = b"payload=%7B%22ref%22%3A%22refs%2Fheads%2Fmain%22%2C%22after%22%3A%220123456789abcdef0123456789abcdef01234567%22%7D";
    let pushed = WebhookEvent::Push(vec![push(
        "refs/heads/main",
        Some("0123456789abcdef0123456789abcdef01234567"),
    )]);
    // Media types are matched without regard to case, with any parameters.
    for content_type in [
        "application/x-www-form-urlencoded",
        "Application/X-WWW-Form-Urlencoded; charset=utf-8",
    ] {
        let delivery = deliver(
            &[
                ("X-GitHub-Event", "push"),
                ("X-Hub-Signature-256", &sign(SECRET, form)),
            ],
            Some(content_type),
            form,
        )
        .unwrap();
        assert_eq!(delivery.event, pushed, "{content_type}");
    }
}

#[test]
fn bad_deliveries_say_why() {
    let body = b"{}";
    let check = |headers: &[(&str, &str)], body: &[u8], expected: WebhookError| {
        assert_eq!(deliver(headers, None, body), Err(expected));
    };
    check(&[], body, WebhookError::UnknownForge);
    check(
        &[("X-GitHub-Event", "push")],
        body,
        WebhookError::Unsigned {
            forge: "github",
            header: "X-Hub-Signature-256",
        },
    );
    check(
        &[
            ("X-GitHub-Event", "push"),
            ("X-Hub-Signature-256", "sha256=zz"),
        ],
        body,
        WebhookError::BadSignature { forge: "github" },
    );
    check(
        &[("X-Gitlab-Event", "Push Hook"), ("X-Gitlab-Token", "wrong")],
        body,
        WebhookError::BadSignature { forge: "gitlab" },
    );
    let result = github("push", b"{not json");
    assert!(
        matches!(
            result,
            Err(WebhookError::Malformed {
                forge: "github",
                ..
            })
        ),
        "{result:?}"
    );
    // Signed but not a push: reported by name, not refused.
    let delivery = github("issues", b"{}").unwrap();
    assert_eq!(delivery.event, WebhookEvent::Other("issues".to_string()));
}

#[test]
fn a_delivery_id_longer_than_any_forges_is_malformed() {
    let body = br#"{"zen": "ping"}"#;
    let signature = sign(SECRET, body);
    let ping = |id: &str| {
        deliver(
            &[
                ("X-GitHub-Event", "ping"),
                ("X-GitHub-Delivery", id),
                ("X-Hub-Signature-256", &signature),
            ],
            None,
            body,
        )
    };
    let longest = "x".repeat(MAX_DELIVERY_ID);
    assert_eq!(
        ping(&longest).unwrap().id.as_deref(),
        Some(longest.as_str())
    );
    let error = ping(&format!("{longest}x")).unwrap_err();
    assert_eq!(
        error,
        WebhookError::Malformed {
            forge: "github",
            reason: format!("the delivery id is longer than {MAX_DELIVERY_ID} characters"),
        }
    );
    assert!(!error.is_unauthorized());
    // The signature is checked first: an unsigned sender learns nothing of the id.
    let unsigned = deliver(
        &[
            ("X-GitHub-Event", "ping"),
            ("X-GitHub-Delivery", &format!("{longest}x")),
        ],
        None,
        body,
    );
    assert!(matches!(unsigned, Err(WebhookError::Unsigned { .. })));
}

fn gitlab(body: &[u8]) -> Result<Delivery, WebhookError> {
    deliver(
        &[
            ("X-Gitlab-Event", "Push Hook"),
            ("X-Gitlab-Token", "It's a Secret to Everybody"),
        ],
        Some("application/json"),
        body,
    )
}

#[test]
fn gitlab_takes_checkout_sha_else_after_and_a_deletion_is_after_all_zeros() {
    let commit = "da1560886d4f094c3e6c9ef40349f7d38b5d27d7";
    let pushes = |body: &[u8], reference: &str| {
        assert_eq!(
            gitlab(body).unwrap().event,
            WebhookEvent::Push(vec![push(reference, Some(commit))]),
            "{}",
            String::from_utf8_lossy(body)
        )
    };
    // GitLab 8.x's documented example: no `checkout_sha` at all.
    pushes(
        br#"{"ref": "refs/heads/master", "before": "95790bf891e76fee5e1747ab589903a6a1f80f22", "after": "da1560886d4f094c3e6c9ef40349f7d38b5d27d7"}"#,
        "refs/heads/master",
    );
    // A tag push: `checkout_sha` is the commit, `after` the tag object.
    pushes(
        br#"{"ref": "refs/tags/v1", "after": "82b3d5ae55f7080f1e6022629cdb57bfae7cccc7", "checkout_sha": "da1560886d4f094c3e6c9ef40349f7d38b5d27d7"}"#,
        "refs/tags/v1",
    );
    // A new branch: `before` is zeros, the commit is there.
    pushes(
        br#"{"ref": "refs/heads/new", "before": "0000000000000000000000000000000000000000", "after": "da1560886d4f094c3e6c9ef40349f7d38b5d27d7", "checkout_sha": "da1560886d4f094c3e6c9ef40349f7d38b5d27d7"}"#,
        "refs/heads/new",
    );
}

#[test]
fn bitbucket_server_refs_changed_is_a_push_and_delete_has_no_commit() {
    let deleted = sample("bitbucket-server-refs-changed-delete.json");
    let headers = |body: &[u8]| {
        vec![
            ("X-Event-Key".to_string(), "repo:refs_changed".to_string()),
            ("X-Request-Id".to_string(), "r1".to_string()),
            ("X-Hub-Signature".to_string(), sign(SECRET, body)),
        ]
    };
    let sent = headers(&deleted);
    let pairs: Vec<(&str, &str)> = sent
        .iter()
        .map(|(name, value)| (name.as_str(), value.as_str()))
        .collect();
    let delivery = deliver(&pairs, Some("application/json"), &deleted).unwrap();
    assert_eq!(delivery.forge, Forge::BitbucketServer);
    assert_eq!(delivery.id.as_deref(), Some("r1"));
    assert_eq!(
        delivery.event,
        WebhookEvent::Push(vec![push("refs/heads/feature/wip", None)])
    );
    let pushed = br#"{"eventKey": "repo:refs_changed", "changes": [{"refId": "refs/heads/main", "fromHash": "32a0b8a740c2963c6f56bd8baf3dc05683d299e0", "toHash": "da1560886d4f094c3e6c9ef40349f7d38b5d27d7", "type": "UPDATE"}]}"#;
    let sent = headers(pushed);
    let pairs: Vec<(&str, &str)> = sent
        .iter()
        .map(|(name, value)| (name.as_str(), value.as_str()))
        .collect();
    assert_eq!(
        deliver(&pairs, Some("application/json"), pushed)
            .unwrap()
            .event,
        WebhookEvent::Push(vec![push(
            "refs/heads/main",
            Some("da1560886d4f094c3e6c9ef40349f7d38b5d27d7")
        )])
    );
}

#[test]
fn a_commit_that_is_not_a_commit_id_is_malformed() {
    for after in [
        "abc",
        "ünïcødé-and-more-than-seven",
        "0123456789abcdef0123456789abcdef0123456z",
    ] {
        let body = format!(r#"{{"ref": "refs/heads/main", "after": "{after}"}}"#);
        let result = deliver(
            &[("X-Gantry-Signature-256", &sign(SECRET, body.as_bytes()))],
            Some("application/json"),
            body.as_bytes(),
        );
        assert_eq!(
            result,
            Err(WebhookError::Malformed {
                forge: "generic",
                reason: "`after` is not a commit id".to_string()
            }),
            "{after}"
        );
    }
    let bad_ref = br#"{"ref": "main
X", "after": "0123456789abcdef0123456789abcdef01234567"}"#;
    assert!(matches!(
        deliver(
            &[("X-Gantry-Signature-256", &sign(SECRET, bad_ref))],
            Some("application/json"),
            bad_ref
        ),
        Err(WebhookError::Malformed { .. })
    ));
}

#[test]
fn decisions_name_what_was_pushed_and_why_nothing_is_queued() {
    let delivery = |event: WebhookEvent| Delivery {
        forge: Forge::GitHub,
        id: None,
        event,
    };
    let check = |event: WebhookEvent, expected: Decision| {
        assert_eq!(decide(&delivery(event), "app", "main"), expected);
    };
    let commit = "0123456789abcdef0123456789abcdef01234567";
    check(WebhookEvent::Ping, Decision::Ping);
    check(
        WebhookEvent::Other("issues".into()),
        Decision::Ignore("`issues` is not a push event".into()),
    );
    check(
        WebhookEvent::Push(vec![push("refs/heads/main", Some(commit))]),
        Decision::Queue {
            commit: commit.into(),
        },
    );
    check(
        WebhookEvent::Push(vec![push("refs/heads/main", None)]),
        Decision::Ignore("refs/heads/main was deleted".into()),
    );
    check(
        WebhookEvent::Push(vec![push("refs/heads/dev", Some(commit))]),
        Decision::Ignore("a push to refs/heads/dev; `app` follows refs/heads/main".into()),
    );
    check(
        WebhookEvent::Push(vec![push("refs/tags/v1", Some(commit))]),
        Decision::Ignore("a tag push (refs/tags/v1); `app` follows refs/heads/main".into()),
    );
    // Bitbucket sends several changes at once: the branch's is found among them.
    check(
        WebhookEvent::Push(vec![
            push("refs/heads/dev", Some(commit)),
            push("refs/heads/main", Some(commit)),
        ]),
        Decision::Queue {
            commit: commit.into(),
        },
    );
}

#[test]
fn a_field_of_the_wrong_kind_is_malformed_and_named() {
    let commit = "0123456789abcdef0123456789abcdef01234567";
    let generic = |body: &str| {
        let body = body.as_bytes();
        deliver(
            &[("X-Gantry-Signature-256", &sign(SECRET, body))],
            Some("application/json"),
            body,
        )
    };
    let bitbucket = |body: &str| {
        let body = body.as_bytes();
        deliver(
            &[
                ("X-Event-Key", "repo:push"),
                ("X-Hook-UUID", "h1"),
                ("X-Hub-Signature", &sign(SECRET, body)),
            ],
            Some("application/json"),
            body,
        )
    };
    let cases: Vec<(Result<Delivery, WebhookError>, &str)> = vec![
        (
            generic(r#"{"ref": 5, "after": "x"}"#),
            "`ref` is not a string",
        ),
        (
            generic(&format!(
                r#"{{"ref": "refs/heads/main", "after": ["{commit}"]}}"#
            )),
            "`after` is not a string",
        ),
        (
            gitlab(
                format!(r#"{{"ref": "refs/heads/main", "after": "{commit}", "checkout_sha": 5}}"#)
                    .as_bytes(),
            ),
            "`checkout_sha` is not a string",
        ),
        (
            bitbucket(
                r#"{"push": {"changes": [{"new": {"name": "main", "type": "branch", "target": {"hash": 1}}}]}}"#,
            ),
            "`new.target.hash` is not a string",
        ),
        (
            bitbucket(r#"{"push": {"changes": [{"new": {"name": "main", "type": "branch"}}]}}"#),
            "a change without `new.target.hash`",
        ),
        (
            bitbucket(r#"{"push": {"changes": [{"new": {"name": 7}}]}}"#),
            "`new.name` is not a string",
        ),
    ];
    for (result, reason) in cases {
        match result {
            Err(WebhookError::Malformed { reason: said, .. }) => assert_eq!(said, reason),
            other => panic!("{reason}: {other:?}"),
        }
    }
    // `null` is as good as absent: a GitLab deletion sends `checkout_sha: null`.
    let deleted = gitlab(
        br#"{"ref": "refs/heads/gone", "after": "0000000000000000000000000000000000000000", "checkout_sha": null}"#,
    );
    assert!(deleted.is_ok(), "{deleted:?}");
}
