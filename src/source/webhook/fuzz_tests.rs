//! Property tests of webhook verification and parsing: what any sender may post.
//!
//! - Any headers and body give an answer, never a panic, and an accepted push names
//!   only ref names and commit ids.
//! - With a secret, a delivery is accepted only when its signature is the HMAC of the
//!   body (GitLab: the token is the secret), checked against `sign` independently.
//! - A forge's real payload signed with any secret verifies and parses; the same body
//!   changed by one byte after signing never verifies; random signatures never do.

use proptest::prelude::*;
use proptest::sample::select;

use super::*;
use crate::fuzz;

/// Every header a forge's delivery is read by.
const HEADER_NAMES: &[&str] = &[
    "content-type",
    "x-github-event",
    "x-github-delivery",
    "x-hub-signature-256",
    "x-gitlab-event",
    "x-gitlab-token",
    "idempotency-key",
    "x-gitlab-event-uuid",
    "x-gitea-event",
    "x-gitea-signature",
    "x-gitea-delivery",
    "x-forgejo-event",
    "x-forgejo-signature",
    "x-forgejo-delivery",
    "x-event-key",
    "x-request-uuid",
    "x-hook-uuid",
    "x-request-id",
    "x-hub-signature",
    "x-gantry-signature-256",
    "x-gantry-event",
    "x-gantry-delivery",
];

/// Event names the forges send, and some they could.
const EVENT_NAMES: &[&str] = &[
    "push",
    "ping",
    "Push Hook",
    "Tag Push Hook",
    "repo:push",
    "repo:refs_changed",
    "diagnostics:ping",
    "pr:opened",
    "delete",
    "",
];

/// One forge's real payload and how that forge signs it.
struct Sample {
    forge: Forge,
    file: &'static str,
    /// The event header and its value.
    event: (&'static str, &'static str),
    /// The signature header, and whether its value starts with `sha256=`.
    signature: (&'static str, bool),
    /// The first push the payload reports.
    first_push: (&'static str, Option<&'static str>),
}

const SAMPLES: &[Sample] = &[
    Sample {
        forge: Forge::GitHub,
        file: "github-push-new-branch.json",
        event: ("x-github-event", "push"),
        signature: ("x-hub-signature-256", true),
        first_push: (
            "refs/heads/master",
            Some("6113728f27ae82c7b1a177c8d03f9e96e0adf246"),
        ),
    },
    Sample {
        forge: Forge::GitLab,
        file: "gitlab-push.json",
        event: ("x-gitlab-event", "Push Hook"),
        signature: ("x-gitlab-token", false),
        first_push: (
            "refs/heads/master",
            Some("da1560886d4f094c3e6c9ef40349f7d38b5d27d7"),
        ),
    },
    Sample {
        forge: Forge::Gitea,
        file: "gitea-push.json",
        event: ("x-gitea-event", "push"),
        signature: ("x-gitea-signature", false),
        first_push: (
            "refs/heads/master",
            Some("67b56589a45103f891bdee7c0546e5d40bc02001"),
        ),
    },
    Sample {
        forge: Forge::Forgejo,
        file: "gitea-push.json",
        event: ("x-forgejo-event", "push"),
        signature: ("x-forgejo-signature", false),
        first_push: (
            "refs/heads/master",
            Some("67b56589a45103f891bdee7c0546e5d40bc02001"),
        ),
    },
    Sample {
        forge: Forge::BitbucketCloud,
        file: "bitbucket-cloud-push.json",
        event: ("x-event-key", "repo:push"),
        signature: ("x-hub-signature", true),
        first_push: (
            "refs/heads/name-of-branch",
            Some("709d658dc5b6d6afcd46049c2f332ee3f515a67d"),
        ),
    },
    Sample {
        forge: Forge::BitbucketServer,
        file: "bitbucket-server-refs-changed-delete.json",
        event: ("x-event-key", "repo:refs_changed"),
        signature: ("x-hub-signature", true),
        first_push: ("refs/heads/feature/wip", None),
    },
];

fn sample_body(sample: &Sample) -> Vec<u8> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/webhooks")
        .join(sample.file);
    std::fs::read(&path).unwrap_or_else(|error| panic!("{}: {error}", path.display()))
}

/// The signature header's value for `body` signed with `secret`, the sample's forge's way.
fn signature_for(sample: &Sample, secret: &[u8], body: &[u8]) -> String {
    let prefixed = sign(secret, body);
    match sample.signature {
        // GitLab sends the secret itself; these tests only use text secrets for it.
        ("x-gitlab-token", _) => String::from_utf8_lossy(secret).into_owned(),
        (_, true) => prefixed,
        (_, false) => prefixed.trim_start_matches("sha256=").to_string(),
    }
}

/// Delivers `body` with these headers (names lowercase, as `receive` asks for them).
fn deliver(
    secret: Option<&[u8]>,
    headers: &[(String, String)],
    body: &[u8],
) -> Result<Delivery, WebhookError> {
    let header = |name: &str| {
        headers
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.clone())
    };
    let content_type = header("content-type");
    receive(secret, &header, content_type.as_deref(), body)
}

fn sample_headers(sample: &Sample, signature: String) -> Vec<(String, String)> {
    let mut headers = vec![
        (sample.event.0.to_string(), sample.event.1.to_string()),
        (sample.signature.0.to_string(), signature),
        ("content-type".to_string(), "application/json".to_string()),
    ];
    // Bitbucket Cloud is told from Bitbucket Server by its request header.
    if sample.forge == Forge::BitbucketCloud {
        headers.push(("x-request-uuid".to_string(), "{0}".to_string()));
    }
    headers
}

/// A value a header might carry: a forge's event name, a signature of the right shape,
/// hex, or any text at all.
fn header_value() -> impl Strategy<Value = String> {
    prop_oneof![
        select(EVENT_NAMES).prop_map(str::to_string),
        "[0-9a-f]{64}".prop_map(|hex| format!("sha256={hex}")),
        "(sha256=)?[0-9a-fA-F ]{0,70}",
        ".{0,300}",
        select(&["application/json", "application/x-www-form-urlencoded"][..])
            .prop_map(str::to_string),
    ]
}

fn headers() -> impl Strategy<Value = Vec<(String, String)>> {
    let name = prop_oneof![
        4 => select(HEADER_NAMES).prop_map(str::to_string),
        1 => "[a-z-]{1,24}",
    ];
    proptest::collection::vec((name, header_value()), 0..8)
}

/// A JSON value shaped like the forges' pushes, with any values in the fields read.
fn push_json() -> impl Strategy<Value = serde_json::Value> {
    let leaf = prop_oneof![
        Just(serde_json::Value::Null),
        any::<bool>().prop_map(serde_json::Value::Bool),
        any::<i64>().prop_map(serde_json::Value::from),
        select(
            &[
                "refs/heads/main",
                "refs/tags/v1",
                "main",
                "tag",
                "branch",
                "DELETE",
                "UPDATE",
                "0000000000000000000000000000000000000000",
                "6113728f27ae82c7b1a177c8d03f9e96e0adf246",
                "6113728F27AE82C7B1A177C8D03F9E96E0ADF246",
            ][..]
        )
        .prop_map(serde_json::Value::from),
        "[0-9a-fA-F]{38,66}".prop_map(serde_json::Value::from),
        "refs/.{0,40}".prop_map(serde_json::Value::from),
        ".{0,40}".prop_map(serde_json::Value::from),
    ];
    let key = select(
        &[
            "ref",
            "after",
            "before",
            "deleted",
            "head_commit",
            "id",
            "checkout_sha",
            "push",
            "changes",
            "new",
            "old",
            "name",
            "type",
            "target",
            "hash",
            "refId",
            "toHash",
        ][..],
    )
    .prop_map(str::to_string);
    leaf.prop_recursive(5, 64, 6, move |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(serde_json::Value::Array),
            proptest::collection::btree_map(key.clone(), inner, 0..6)
                .prop_map(|map| serde_json::Value::Object(map.into_iter().collect())),
        ]
    })
}

/// A body: any bytes, a push-shaped document, or a real payload with a byte changed.
fn body() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..512),
        push_json().prop_map(|json| json.to_string().into_bytes()),
        push_json().prop_map(|json| {
            let encoded: String = form_urlencoded::Serializer::new(String::new())
                .append_pair("payload", &json.to_string())
                .finish();
            encoded.into_bytes()
        }),
        (0..SAMPLES.len(), any::<prop::sample::Index>(), any::<u8>()).prop_map(
            |(which, index, byte)| {
                let mut body = sample_body(&SAMPLES[which]);
                let at = index.index(body.len());
                body[at] = byte;
                body
            }
        ),
    ]
}

/// What an accepted delivery may hold: ref names and commit ids, nothing else.
fn assert_well_formed(delivery: &Delivery) {
    if let Some(id) = &delivery.id {
        assert!(id.len() <= MAX_DELIVERY_ID, "{id:?}");
    }
    if let WebhookEvent::Push(pushes) = &delivery.event {
        for push in pushes {
            assert!(push.git_ref.starts_with("refs/"), "{push:?}");
            assert!(push.git_ref.len() <= MAX_REF_LEN, "{push:?}");
            assert!(
                !push.git_ref.chars().any(|c| c.is_control() || c == ' '),
                "{push:?}"
            );
            if let Some(commit) = &push.commit {
                assert!(crate::source::is_commit_id(commit), "{push:?}");
                assert_eq!(*commit, commit.to_ascii_lowercase(), "{push:?}");
                assert!(commit.bytes().any(|byte| byte != b'0'), "{push:?}");
            }
        }
    }
}

/// Whether the headers carry proof of `secret` for `body`, worked out from `sign`
/// rather than from `verify`.
fn carries_proof(forge: Forge, secret: &[u8], headers: &[(String, String)], body: &[u8]) -> bool {
    let first = |name: &str| {
        headers
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    };
    let expected = sign(secret, body);
    let matches_hex = |given: Option<&str>, prefixed: bool| {
        let Some(given) = given else { return false };
        let hex = if prefixed {
            match given.strip_prefix("sha256=") {
                Some(hex) => hex,
                None => return false,
            }
        } else {
            given
        };
        hex.trim()
            .eq_ignore_ascii_case(&expected["sha256=".len()..])
    };
    match forge {
        Forge::GitLab => first("x-gitlab-token").is_some_and(|token| token.as_bytes() == secret),
        Forge::GitHub => matches_hex(first("x-hub-signature-256"), true),
        Forge::Gitea => matches_hex(first("x-gitea-signature"), false),
        Forge::Forgejo => matches_hex(first("x-forgejo-signature"), false),
        Forge::BitbucketCloud | Forge::BitbucketServer => {
            matches_hex(first("x-hub-signature"), true)
        }
        Forge::Generic => matches_hex(first("x-gantry-signature-256"), true),
    }
}

#[test]
fn any_delivery_is_answered_without_a_panic() {
    let secret = prop_oneof![
        Just(None),
        Just(Some(b"It's a Secret to Everybody".to_vec())),
        proptest::collection::vec(any::<u8>(), 0..40).prop_map(Some),
    ];
    fuzz::check(
        "webhook::any_delivery",
        (secret, headers(), body()),
        |(secret, headers, body)| {
            let delivery = deliver(secret.as_deref(), &headers, &body);
            match &delivery {
                Ok(delivery) => {
                    assert_well_formed(delivery);
                    if let Some(secret) = &secret {
                        prop_assert!(!secret.is_empty(), "an empty secret verified");
                        prop_assert!(
                            carries_proof(delivery.forge, secret, &headers, &body),
                            "accepted without a valid signature: {delivery:?}"
                        );
                    }
                    let decision = decide(delivery, "app", "main");
                    if let Decision::Queue { commit } = decision {
                        prop_assert!(crate::source::is_commit_id(&commit));
                    }
                }
                Err(error) => prop_assert!(!error.to_string().is_empty()),
            }
            Ok(())
        },
    );
}

#[test]
fn pushes_with_a_valid_signature_are_parsed_whatever_they_hold() {
    // Signed correctly, so that every body reaches the push parsers.
    let forge_headers = (0..SAMPLES.len(), headers());
    fuzz::check(
        "webhook::signed_any_body",
        (forge_headers, push_json(), "[ -~]{1,40}"),
        |((which, mut headers), json, secret)| {
            let sample = &SAMPLES[which];
            let body = json.to_string().into_bytes();
            let mut signed =
                sample_headers(sample, signature_for(sample, secret.as_bytes(), &body));
            signed.append(&mut headers);
            if let Ok(delivery) = deliver(Some(secret.as_bytes()), &signed, &body) {
                assert_well_formed(&delivery);
            }
            Ok(())
        },
    );
}

#[test]
fn each_forges_real_payload_verifies_with_any_secret() {
    let secret = proptest::collection::vec(any::<u8>(), 1..100);
    fuzz::check(
        "webhook::real_payload_verifies",
        (0..SAMPLES.len(), secret, "[0-9a-f-]{1,128}"),
        |(which, secret, id)| {
            let sample = &SAMPLES[which];
            // GitLab's token travels as a header value: text only.
            let secret = if sample.forge == Forge::GitLab {
                hex::encode(&secret).into_bytes()
            } else {
                secret
            };
            let body = sample_body(sample);
            let mut headers = sample_headers(sample, signature_for(sample, &secret, &body));
            let id_header = match sample.forge {
                Forge::GitHub => "x-github-delivery",
                Forge::GitLab => "idempotency-key",
                Forge::Gitea => "x-gitea-delivery",
                Forge::Forgejo => "x-forgejo-delivery",
                Forge::BitbucketCloud => "x-request-uuid",
                Forge::BitbucketServer => "x-request-id",
                Forge::Generic => "x-gantry-delivery",
            };
            headers.retain(|(name, _)| name != id_header);
            headers.push((id_header.to_string(), id.clone()));
            let delivery = deliver(Some(&secret), &headers, &body)
                .map_err(|error| TestCaseError::fail(format!("{}: {error}", sample.file)))?;
            prop_assert_eq!(delivery.forge, sample.forge);
            prop_assert_eq!(delivery.id.as_deref(), Some(id.as_str()));
            let WebhookEvent::Push(pushes) = &delivery.event else {
                return Err(TestCaseError::fail(format!("not a push: {delivery:?}")));
            };
            let (git_ref, commit) = sample.first_push;
            prop_assert_eq!(&pushes[0].git_ref, git_ref);
            prop_assert_eq!(pushes[0].commit.as_deref(), commit);
            Ok(())
        },
    );
}

/// One change to a body: a byte replaced, inserted or removed, or the body cut short.
#[derive(Debug, Clone)]
enum Change {
    Replace(prop::sample::Index, u8),
    Insert(prop::sample::Index, u8),
    Remove(prop::sample::Index),
    Truncate(prop::sample::Index),
    Append(Vec<u8>),
}

fn change() -> impl Strategy<Value = Change> {
    prop_oneof![
        (any::<prop::sample::Index>(), any::<u8>())
            .prop_map(|(at, byte)| Change::Replace(at, byte)),
        (any::<prop::sample::Index>(), any::<u8>()).prop_map(|(at, byte)| Change::Insert(at, byte)),
        any::<prop::sample::Index>().prop_map(Change::Remove),
        any::<prop::sample::Index>().prop_map(Change::Truncate),
        proptest::collection::vec(any::<u8>(), 1..16).prop_map(Change::Append),
    ]
}

fn apply(change: &Change, body: &mut Vec<u8>) {
    match change {
        Change::Replace(at, byte) => {
            let at = at.index(body.len());
            body[at] = *byte;
        }
        Change::Insert(at, byte) => body.insert(at.index(body.len() + 1), *byte),
        Change::Remove(at) => {
            body.remove(at.index(body.len()));
        }
        Change::Truncate(at) => body.truncate(at.index(body.len())),
        Change::Append(bytes) => body.extend_from_slice(bytes),
    }
}

#[test]
fn a_body_changed_after_signing_never_verifies() {
    // GitLab's token does not depend on the body, so only the HMAC forges are asked.
    let hmac_samples: Vec<usize> = (0..SAMPLES.len())
        .filter(|&which| SAMPLES[which].forge != Forge::GitLab)
        .collect();
    let secret = proptest::collection::vec(any::<u8>(), 1..64);
    fuzz::check(
        "webhook::changed_body_fails",
        (select(hmac_samples), secret, change()),
        |(which, secret, change)| {
            let sample = &SAMPLES[which];
            let original = sample_body(sample);
            let headers = sample_headers(sample, signature_for(sample, &secret, &original));
            let mut body = original.clone();
            apply(&change, &mut body);
            prop_assume!(body != original);
            prop_assert_eq!(
                deliver(Some(&secret), &headers, &body),
                Err(WebhookError::BadSignature {
                    forge: sample.forge.as_str()
                })
            );
            Ok(())
        },
    );
}

#[test]
fn random_signatures_never_verify() {
    let signature = prop_oneof![
        "[0-9a-f]{64}".prop_map(|hex| format!("sha256={hex}")),
        "[0-9a-f]{64}",
        "sha256=[0-9a-fA-F]{0,80}",
        ".{0,100}",
    ];
    let secret = proptest::collection::vec(any::<u8>(), 1..64);
    fuzz::check(
        "webhook::random_signature_fails",
        (0..SAMPLES.len(), secret, signature),
        |(which, secret, signature)| {
            let sample = &SAMPLES[which];
            let body = sample_body(sample);
            prop_assume!(signature != signature_for(sample, &secret, &body));
            let headers = sample_headers(sample, signature.clone());
            match deliver(Some(&secret), &headers, &body) {
                Err(WebhookError::BadSignature { .. } | WebhookError::Unsigned { .. }) => Ok(()),
                other => Err(TestCaseError::fail(format!("{signature:?} gave {other:?}"))),
            }
        },
    );
}

#[test]
fn a_shortened_or_lengthened_signature_never_verifies() {
    // A MAC check that accepted a prefix of the tag would let a sender guess it byte by byte.
    let hmac_samples: Vec<usize> = (0..SAMPLES.len())
        .filter(|&which| SAMPLES[which].forge != Forge::GitLab)
        .collect();
    let secret = proptest::collection::vec(any::<u8>(), 1..64);
    fuzz::check(
        "webhook::shortened_signature_fails",
        (select(hmac_samples), secret, 1..64usize, "[0-9a-f]{0,4}"),
        |(which, secret, keep, extra)| {
            let sample = &SAMPLES[which];
            let body = sample_body(sample);
            let full = signature_for(sample, &secret, &body);
            let hex_start = if sample.signature.1 {
                "sha256=".len()
            } else {
                0
            };
            let changed = format!("{}{extra}", &full[..hex_start + keep]);
            prop_assume!(changed != full);
            let headers = sample_headers(sample, changed);
            prop_assert_eq!(
                deliver(Some(&secret), &headers, &body),
                Err(WebhookError::BadSignature {
                    forge: sample.forge.as_str()
                })
            );
            Ok(())
        },
    );
}
