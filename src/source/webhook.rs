//! Forge push webhooks: which forge sent a delivery, whether its signature holds,
//! and what was pushed.
//!
//! Each forge signs its own way, always over the raw body: GitHub, Bitbucket and
//! gantry's generic hook send `sha256=<hex HMAC-SHA256>`, Gitea and Forgejo the bare
//! hex, GitLab the secret itself. HMACs are checked with `Mac::verify_slice` and the
//! GitLab token with a constant-time comparison. Gitea and Forgejo also send GitHub's
//! headers, so their own headers are looked at first. This module parses and
//! verifies; it stores nothing and knows no HTTP framework.

use hmac::{KeyInit, Mac};
use serde::Serialize;
use serde_json::Value;
use sha2::Sha256;
use subtle::ConstantTimeEq;

type HmacSha256 = hmac::Hmac<Sha256>;

/// A commit id of all zeros: what forges send as `after` when a ref is deleted.
const ZERO_COMMIT: &str = "0000000000000000000000000000000000000000";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Forge {
    GitHub,
    GitLab,
    Gitea,
    Forgejo,
    BitbucketCloud,
    /// `X-Gantry-Signature-256` over `{ "ref": ..., "after": ... }`, for scripts
    /// (`X-Gantry-Event: push` names it when a pipeline takes unsigned deliveries).
    Generic,
}

impl Forge {
    pub fn as_str(self) -> &'static str {
        match self {
            Forge::GitHub => "github",
            Forge::GitLab => "gitlab",
            Forge::Gitea => "gitea",
            Forge::Forgejo => "forgejo",
            Forge::BitbucketCloud => "bitbucket",
            Forge::Generic => "generic",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WebhookError {
    #[error(
        "no forge's webhook headers (X-GitHub-Event, X-Gitlab-Event, X-Gitea-Event, X-Forgejo-Event, X-Event-Key, X-Gantry-Signature-256 or X-Gantry-Event)"
    )]
    UnknownForge,
    #[error("the {forge} delivery carries no signature ({header})")]
    Unsigned {
        forge: &'static str,
        header: &'static str,
    },
    #[error("the {forge} delivery's signature does not match the pipeline's secret")]
    BadSignature { forge: &'static str },
    #[error("malformed {forge} delivery: {reason}")]
    Malformed { forge: &'static str, reason: String },
}

impl WebhookError {
    /// Whether the sender failed to prove it knows the secret (401), rather than sent nonsense (400).
    pub fn is_unauthorized(&self) -> bool {
        matches!(
            self,
            WebhookError::Unsigned { .. } | WebhookError::BadSignature { .. }
        )
    }
}

/// One ref a delivery reports as pushed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Push {
    /// The full ref: `refs/heads/main`, `refs/tags/v1`.
    pub git_ref: String,
    /// The commit to build; `None` when the ref was deleted.
    pub commit: Option<String>,
}

/// What a verified delivery says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WebhookEvent {
    /// The forge checking that the hook works.
    Ping,
    Push(Vec<Push>),
    /// An event gantry does not act on, by its name.
    Other(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    pub forge: Forge,
    /// The forge's id of this delivery, the same when it is redelivered.
    pub id: Option<String>,
    pub event: WebhookEvent,
}

/// Detects the forge, verifies the signature against `secret` (skipped only when
/// `secret` is `None`, which the caller allows only for pipelines that opted out),
/// and parses the push.
pub fn receive(
    secret: Option<&[u8]>,
    header: &dyn Fn(&str) -> Option<String>,
    content_type: Option<&str>,
    body: &[u8],
) -> Result<Delivery, WebhookError> {
    let forge = detect(header).ok_or(WebhookError::UnknownForge)?;
    if let Some(secret) = secret {
        verify(forge, secret, header, body)?;
    }
    let malformed = |reason: String| WebhookError::Malformed {
        forge: forge.as_str(),
        reason,
    };
    let event_name = match forge {
        Forge::GitHub => header("x-github-event"),
        Forge::GitLab => header("x-gitlab-event"),
        Forge::Gitea => header("x-gitea-event"),
        Forge::Forgejo => header("x-forgejo-event"),
        Forge::BitbucketCloud => header("x-event-key"),
        Forge::Generic => Some("push".to_string()),
    }
    .unwrap_or_default();
    let id = match forge {
        Forge::GitHub => header("x-github-delivery"),
        Forge::GitLab => header("idempotency-key").or_else(|| header("x-gitlab-event-uuid")),
        Forge::Gitea => header("x-gitea-delivery"),
        Forge::Forgejo => header("x-forgejo-delivery"),
        Forge::BitbucketCloud => header("x-request-uuid"),
        Forge::Generic => header("x-gantry-delivery"),
    };
    let is_push = match forge {
        Forge::GitHub | Forge::Gitea | Forge::Forgejo | Forge::Generic => event_name == "push",
        Forge::GitLab => event_name == "Push Hook" || event_name == "Tag Push Hook",
        Forge::BitbucketCloud => event_name == "repo:push",
    };
    let is_ping = match forge {
        Forge::GitHub => event_name == "ping",
        Forge::BitbucketCloud => event_name == "diagnostics:ping",
        _ => false,
    };
    if is_ping {
        return Ok(Delivery {
            forge,
            id,
            event: WebhookEvent::Ping,
        });
    }
    if !is_push {
        return Ok(Delivery {
            forge,
            id,
            event: WebhookEvent::Other(event_name),
        });
    }
    // GitHub, Gitea and Forgejo can post forms (`payload=`); the others send JSON only.
    let form_allowed = matches!(forge, Forge::GitHub | Forge::Gitea | Forge::Forgejo);
    let json = json_body(content_type.filter(|_| form_allowed), body).map_err(malformed)?;
    let pushes = match forge {
        Forge::GitHub | Forge::Gitea | Forge::Forgejo | Forge::Generic => {
            vec![github_style_push(&json).map_err(malformed)?]
        }
        Forge::GitLab => vec![gitlab_push(&json).map_err(malformed)?],
        Forge::BitbucketCloud => bitbucket_pushes(&json).map_err(malformed)?,
    };
    Ok(Delivery {
        forge,
        id,
        event: WebhookEvent::Push(pushes),
    })
}

fn detect(header: &dyn Fn(&str) -> Option<String>) -> Option<Forge> {
    // Gitea and Forgejo send GitHub's headers too: theirs decide.
    if header("x-forgejo-event").is_some() {
        Some(Forge::Forgejo)
    } else if header("x-gitea-event").is_some() {
        Some(Forge::Gitea)
    } else if header("x-gitlab-event").is_some() {
        Some(Forge::GitLab)
    } else if header("x-event-key").is_some() {
        Some(Forge::BitbucketCloud)
    } else if header("x-github-event").is_some() {
        Some(Forge::GitHub)
    } else if header("x-gantry-signature-256").is_some() || header("x-gantry-event").is_some() {
        Some(Forge::Generic)
    } else {
        None
    }
}

fn verify(
    forge: Forge,
    secret: &[u8],
    header: &dyn Fn(&str) -> Option<String>,
    body: &[u8],
) -> Result<(), WebhookError> {
    // An empty secret proves nothing: anybody can sign with it (the config refuses one).
    if secret.is_empty() {
        return Err(WebhookError::BadSignature {
            forge: forge.as_str(),
        });
    }
    let (name, prefixed) = match forge {
        Forge::GitHub => ("x-hub-signature-256", true),
        Forge::Gitea => ("x-gitea-signature", false),
        Forge::Forgejo => ("x-forgejo-signature", false),
        Forge::BitbucketCloud => ("x-hub-signature", true),
        Forge::Generic => ("x-gantry-signature-256", true),
        Forge::GitLab => {
            let token = header("x-gitlab-token").ok_or(WebhookError::Unsigned {
                forge: forge.as_str(),
                header: "X-Gitlab-Token",
            })?;
            return if bool::from(token.as_bytes().ct_eq(secret)) {
                Ok(())
            } else {
                Err(WebhookError::BadSignature {
                    forge: forge.as_str(),
                })
            };
        }
    };
    let display_name = match name {
        "x-hub-signature-256" => "X-Hub-Signature-256",
        "x-gitea-signature" => "X-Gitea-Signature",
        "x-forgejo-signature" => "X-Forgejo-Signature",
        "x-hub-signature" => "X-Hub-Signature",
        _ => "X-Gantry-Signature-256",
    };
    let value = header(name)
        .filter(|value| !value.is_empty())
        .ok_or(WebhookError::Unsigned {
            forge: forge.as_str(),
            header: display_name,
        })?;
    let bad = || WebhookError::BadSignature {
        forge: forge.as_str(),
    };
    let hex_text = if prefixed {
        value.strip_prefix("sha256=").ok_or_else(bad)?
    } else {
        value.as_str()
    };
    let signature = hex::decode(hex_text.trim()).map_err(|_| bad())?;
    // A key of any length is valid for HMAC.
    let mut mac = HmacSha256::new_from_slice(secret).map_err(|_| bad())?;
    mac.update(body);
    mac.verify_slice(&signature).map_err(|_| bad())
}

/// The JSON document of a delivery: the body, or GitHub's form post `payload=`.
fn json_body(content_type: Option<&str>, body: &[u8]) -> Result<Value, String> {
    let is_form = content_type
        .is_some_and(|content_type| content_type.starts_with("application/x-www-form-urlencoded"));
    if is_form {
        let payload = form_urlencoded::parse(body)
            .find(|(key, _)| key == "payload")
            .map(|(_, value)| value.into_owned())
            .ok_or("a form post without a `payload` field")?;
        return serde_json::from_str(&payload).map_err(|error| error.to_string());
    }
    serde_json::from_slice(body).map_err(|error| error.to_string())
}

fn string_at<'v>(json: &'v Value, pointer: &str) -> Option<&'v str> {
    json.pointer(pointer).and_then(Value::as_str)
}

/// A commit id, or `None` for the all-zeros id of a deletion.
fn commit_id(text: Option<&str>) -> Option<String> {
    text.filter(|id| !id.is_empty() && *id != ZERO_COMMIT)
        .map(str::to_string)
}

fn github_style_push(json: &Value) -> Result<Push, String> {
    let git_ref = string_at(json, "/ref").ok_or("no `ref`")?.to_string();
    let deleted = json.get("deleted").and_then(Value::as_bool) == Some(true);
    // An annotated tag's `after` is the tag object; `head_commit.id` is the commit.
    let after = if git_ref.starts_with("refs/tags/") {
        string_at(json, "/head_commit/id").or_else(|| string_at(json, "/after"))
    } else {
        string_at(json, "/after")
    };
    if !deleted && after.is_none() {
        return Err("no `after`".to_string());
    }
    Ok(Push {
        git_ref,
        commit: if deleted { None } else { commit_id(after) },
    })
}

fn gitlab_push(json: &Value) -> Result<Push, String> {
    let git_ref = string_at(json, "/ref").ok_or("no `ref`")?.to_string();
    Ok(Push {
        git_ref,
        // `checkout_sha` is null when the ref was deleted.
        commit: commit_id(string_at(json, "/checkout_sha")),
    })
}

fn bitbucket_pushes(json: &Value) -> Result<Vec<Push>, String> {
    let changes = json
        .pointer("/push/changes")
        .and_then(Value::as_array)
        .ok_or("no `push.changes`")?;
    let mut pushes = Vec::new();
    for change in changes {
        let Some(new) = change.get("new").filter(|new| !new.is_null()) else {
            // `new: null`: the ref was deleted; the old one says which.
            if let Some(name) = string_at(change, "/old/name") {
                let prefix = ref_prefix(string_at(change, "/old/type"));
                pushes.push(Push {
                    git_ref: format!("{prefix}{name}"),
                    commit: None,
                });
            }
            continue;
        };
        let name = string_at(new, "/name").ok_or("a change without `new.name`")?;
        let prefix = ref_prefix(string_at(new, "/type"));
        pushes.push(Push {
            git_ref: format!("{prefix}{name}"),
            commit: commit_id(string_at(new, "/target/hash")),
        });
    }
    Ok(pushes)
}

fn ref_prefix(kind: Option<&str>) -> &'static str {
    match kind {
        Some("tag") | Some("annotated_tag") => "refs/tags/",
        _ => "refs/heads/",
    }
}

/// `sha256=<hex>` of the HMAC-SHA256 of `body`: what senders put in the signature header.
pub fn sign(secret: &[u8], body: &[u8]) -> String {
    // A key of any length is valid for HMAC.
    let mut mac = HmacSha256::new_from_slice(secret).expect("HMAC takes keys of any length");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

#[cfg(test)]
mod tests {
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
        let generic = br#"{"ref": "refs/heads/main", "after": "abc123"}"#;
        check_push(
            &[("X-Gantry-Signature-256", &sign(SECRET, generic))],
            generic,
            Forge::Generic,
            &[push("refs/heads/main", Some("abc123"))],
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
        let form = b"payload=%7B%22ref%22%3A%22refs%2Fheads%2Fmain%22%2C%22after%22%3A%22abc%22%7D";
        let delivery = deliver(
            &[
                ("X-GitHub-Event", "push"),
                ("X-Hub-Signature-256", &sign(SECRET, form)),
            ],
            Some("application/x-www-form-urlencoded"),
            form,
        )
        .unwrap();
        assert_eq!(
            delivery.event,
            WebhookEvent::Push(vec![push("refs/heads/main", Some("abc"))])
        );
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
        let malformed = b"{not json";
        let result = deliver(
            &[
                ("X-GitHub-Event", "push"),
                ("X-Hub-Signature-256", &sign(SECRET, malformed)),
            ],
            None,
            malformed,
        );
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
        let issue = b"{}";
        let delivery = deliver(
            &[
                ("X-GitHub-Event", "issues"),
                ("X-Hub-Signature-256", &sign(SECRET, issue)),
            ],
            None,
            issue,
        )
        .unwrap();
        assert_eq!(delivery.event, WebhookEvent::Other("issues".to_string()));
    }
}
