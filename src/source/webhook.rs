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

/// The longest ref name taken from a delivery (git allows long names; forges cap
/// them near this).
const MAX_REF_LEN: usize = 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Forge {
    GitHub,
    GitLab,
    Gitea,
    Forgejo,
    BitbucketCloud,
    /// Bitbucket Server (Data Center): `repo:refs_changed`, signed like Bitbucket Cloud.
    BitbucketServer,
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
            Forge::BitbucketServer => "bitbucket-server",
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
    /// The forge the delivery came from, when its headers named one.
    pub fn forge(&self) -> Option<&'static str> {
        match self {
            WebhookError::UnknownForge => None,
            WebhookError::Unsigned { forge, .. }
            | WebhookError::BadSignature { forge }
            | WebhookError::Malformed { forge, .. } => Some(forge),
        }
    }

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

/// What a verified delivery means for a pipeline that follows one branch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// The forge checking that the hook works.
    Ping,
    /// Nothing to build, and why (another event, another ref, a deletion).
    Ignore(String),
    /// Build and deploy this commit, pushed to the pipeline's branch.
    Queue { commit: String },
}

/// Decides what `delivery` means for pipeline `pipeline`, which follows `branch`.
pub fn decide(delivery: &Delivery, pipeline: &str, branch: &str) -> Decision {
    let branch_ref = format!("refs/heads/{branch}");
    let pushes = match &delivery.event {
        WebhookEvent::Ping => return Decision::Ping,
        WebhookEvent::Other(event) => {
            return Decision::Ignore(format!("`{event}` is not a push event"));
        }
        WebhookEvent::Push(pushes) => pushes,
    };
    let Some(push) = pushes.iter().find(|push| push.git_ref == branch_ref) else {
        let pushed: Vec<&str> = pushes.iter().map(|push| push.git_ref.as_str()).collect();
        let what = if pushed
            .iter()
            .all(|git_ref| git_ref.starts_with("refs/tags/"))
        {
            "a tag push"
        } else {
            "a push to"
        };
        let separator = if what == "a tag push" { " (" } else { " " };
        let close = if what == "a tag push" { ")" } else { "" };
        return Decision::Ignore(format!(
            "{what}{separator}{}{close}; `{pipeline}` follows {branch_ref}",
            pushed.join(", ")
        ));
    };
    match &push.commit {
        Some(commit) => Decision::Queue {
            commit: commit.clone(),
        },
        None => Decision::Ignore(format!("{branch_ref} was deleted")),
    }
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
        Forge::BitbucketCloud | Forge::BitbucketServer => header("x-event-key"),
        Forge::Generic => Some("push".to_string()),
    }
    .unwrap_or_default();
    let id = match forge {
        Forge::GitHub => header("x-github-delivery"),
        Forge::GitLab => header("idempotency-key").or_else(|| header("x-gitlab-event-uuid")),
        Forge::Gitea => header("x-gitea-delivery"),
        Forge::Forgejo => header("x-forgejo-delivery"),
        Forge::BitbucketCloud => header("x-request-uuid"),
        Forge::BitbucketServer => header("x-request-id"),
        Forge::Generic => header("x-gantry-delivery"),
    };
    let is_push = match forge {
        Forge::GitHub | Forge::Gitea | Forge::Forgejo | Forge::Generic => event_name == "push",
        Forge::GitLab => event_name == "Push Hook" || event_name == "Tag Push Hook",
        Forge::BitbucketCloud => event_name == "repo:push",
        Forge::BitbucketServer => event_name == "repo:refs_changed",
    };
    let is_ping = match forge {
        Forge::GitHub => event_name == "ping",
        Forge::BitbucketCloud | Forge::BitbucketServer => event_name == "diagnostics:ping",
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
        Forge::BitbucketServer => bitbucket_server_pushes(&json).map_err(malformed)?,
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
        // Bitbucket Cloud sends `X-Request-UUID` and `X-Hook-UUID`; Bitbucket Server
        // sends `X-Request-Id` and its own event names.
        let server = header("x-request-uuid").is_none()
            && header("x-hook-uuid").is_none()
            && (header("x-request-id").is_some()
                || header("x-event-key")
                    .is_some_and(|key| key == "repo:refs_changed" || key.starts_with("pr:")));
        Some(if server {
            Forge::BitbucketServer
        } else {
            Forge::BitbucketCloud
        })
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
        Forge::BitbucketCloud | Forge::BitbucketServer => ("x-hub-signature", true),
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

/// What a delivery's commit field says: `None` for a deletion (all zeros, or nothing),
/// else a commit id; anything else is malformed, so that no text from outside is
/// queued as a commit.
fn commit_id(field: &str, text: Option<&str>) -> Result<Option<String>, String> {
    match text {
        None | Some("") => Ok(None),
        Some(id) if !id.is_empty() && id.bytes().all(|byte| byte == b'0') => Ok(None),
        Some(id) if crate::source::is_commit_id(id) => Ok(Some(id.to_ascii_lowercase())),
        Some(_) => Err(format!("`{field}` is not a commit id")),
    }
}

/// A ref name from a delivery: `refs/...`, of bounded length, without control characters.
fn ref_name(field: &str, text: Option<&str>) -> Result<String, String> {
    let text = text.ok_or_else(|| format!("no `{field}`"))?;
    let valid = text.starts_with("refs/")
        && text.len() <= MAX_REF_LEN
        && !text
            .chars()
            .any(|character| character.is_control() || character == ' ');
    if valid {
        Ok(text.to_string())
    } else {
        Err(format!("`{field}` is not a ref name"))
    }
}

fn github_style_push(json: &Value) -> Result<Push, String> {
    let git_ref = ref_name("ref", string_at(json, "/ref"))?;
    let deleted = json.get("deleted").and_then(Value::as_bool) == Some(true);
    // An annotated tag's `after` is the tag object; `head_commit.id` is the commit.
    let (field, after) = match string_at(json, "/head_commit/id") {
        Some(head) if git_ref.starts_with("refs/tags/") => ("head_commit.id", Some(head)),
        _ => ("after", string_at(json, "/after")),
    };
    if !deleted && after.is_none() {
        return Err("no `after`".to_string());
    }
    Ok(Push {
        git_ref,
        commit: if deleted {
            None
        } else {
            commit_id(field, after)?
        },
    })
}

/// GitLab: the commit is `checkout_sha` (what the ref points at, also for an annotated
/// tag), or `after` where `checkout_sha` is absent (older GitLab). A deletion has `after`
/// all zeros (and `checkout_sha: null`).
fn gitlab_push(json: &Value) -> Result<Push, String> {
    let git_ref = ref_name("ref", string_at(json, "/ref"))?;
    let after = string_at(json, "/after").ok_or("no `after`")?;
    if commit_id("after", Some(after))?.is_none() {
        return Ok(Push {
            git_ref,
            commit: None,
        });
    }
    let commit = match string_at(json, "/checkout_sha") {
        Some(checkout) => commit_id("checkout_sha", Some(checkout))?,
        None => commit_id("after", Some(after))?,
    };
    Ok(Push { git_ref, commit })
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
                    git_ref: ref_name("old.name", Some(&format!("{prefix}{name}")))?,
                    commit: None,
                });
            }
            continue;
        };
        let name = string_at(new, "/name").ok_or("a change without `new.name`")?;
        let prefix = ref_prefix(string_at(new, "/type"));
        pushes.push(Push {
            git_ref: ref_name("new.name", Some(&format!("{prefix}{name}")))?,
            commit: commit_id("new.target.hash", string_at(new, "/target/hash"))?,
        });
    }
    Ok(pushes)
}

/// Bitbucket Server's `repo:refs_changed`: `changes[].refId` and `toHash`; a deleted
/// ref has `type: DELETE` and `toHash` all zeros.
fn bitbucket_server_pushes(json: &Value) -> Result<Vec<Push>, String> {
    let changes = json
        .get("changes")
        .and_then(Value::as_array)
        .ok_or("no `changes`")?;
    let mut pushes = Vec::new();
    for change in changes {
        let git_ref = ref_name(
            "changes[].refId",
            string_at(change, "/refId").or_else(|| string_at(change, "/ref/id")),
        )?;
        let deleted = string_at(change, "/type") == Some("DELETE");
        let commit = if deleted {
            None
        } else {
            commit_id("changes[].toHash", string_at(change, "/toHash"))?
        };
        pushes.push(Push { git_ref, commit });
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
            WebhookEvent::Push(vec![push(
                "refs/heads/main",
                Some("0123456789abcdef0123456789abcdef01234567")
            )])
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
        // GitLab 8.x's documented example: no `checkout_sha` at all.
        let old = br#"{"ref": "refs/heads/master", "before": "95790bf891e76fee5e1747ab589903a6a1f80f22", "after": "da1560886d4f094c3e6c9ef40349f7d38b5d27d7"}"#;
        assert_eq!(
            gitlab(old).unwrap().event,
            WebhookEvent::Push(vec![push(
                "refs/heads/master",
                Some("da1560886d4f094c3e6c9ef40349f7d38b5d27d7")
            )])
        );
        // A tag push: `checkout_sha` is the commit, `after` the tag object.
        let tag = br#"{"ref": "refs/tags/v1", "after": "82b3d5ae55f7080f1e6022629cdb57bfae7cccc7", "checkout_sha": "da1560886d4f094c3e6c9ef40349f7d38b5d27d7"}"#;
        assert_eq!(
            gitlab(tag).unwrap().event,
            WebhookEvent::Push(vec![push(
                "refs/tags/v1",
                Some("da1560886d4f094c3e6c9ef40349f7d38b5d27d7")
            )])
        );
        // A new branch: `before` is zeros, the commit is there.
        let created = br#"{"ref": "refs/heads/new", "before": "0000000000000000000000000000000000000000", "after": "da1560886d4f094c3e6c9ef40349f7d38b5d27d7", "checkout_sha": "da1560886d4f094c3e6c9ef40349f7d38b5d27d7"}"#;
        assert_eq!(
            gitlab(created).unwrap().event,
            WebhookEvent::Push(vec![push(
                "refs/heads/new",
                Some("da1560886d4f094c3e6c9ef40349f7d38b5d27d7")
            )])
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
}
