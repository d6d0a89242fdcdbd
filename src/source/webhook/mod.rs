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
/// The longest delivery id taken: forges send UUIDs (36 characters), and the id is
/// stored with the delivery's answer.
const MAX_DELIVERY_ID: usize = 128;

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
        let refs = pushed.join(", ");
        let what = if pushed
            .iter()
            .all(|git_ref| git_ref.starts_with("refs/tags/"))
        {
            format!("a tag push ({refs})")
        } else {
            format!("a push to {refs}")
        };
        return Decision::Ignore(format!("{what}; `{pipeline}` follows {branch_ref}"));
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
/// reads the delivery id (at most `MAX_DELIVERY_ID` long) and parses the push.
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
    if id.as_ref().is_some_and(|id| id.len() > MAX_DELIVERY_ID) {
        return Err(malformed(format!(
            "the delivery id is longer than {MAX_DELIVERY_ID} characters"
        )));
    }
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
        .and_then(|content_type| content_type.split(';').next())
        .is_some_and(|media_type| {
            media_type
                .trim()
                .eq_ignore_ascii_case("application/x-www-form-urlencoded")
        });
    if is_form {
        let payload = form_urlencoded::parse(body)
            .find(|(key, _)| key == "payload")
            .map(|(_, value)| value.into_owned())
            .ok_or("a form post without a `payload` field")?;
        return serde_json::from_str(&payload).map_err(|error| error.to_string());
    }
    serde_json::from_slice(body).map_err(|error| error.to_string())
}

/// The text at `pointer`: `None` when it is absent or `null`, an error naming `field`
/// when it is there but not a string (a number where a commit id belongs is a malformed
/// delivery, not a deletion).
fn string_at<'v>(json: &'v Value, pointer: &str, field: &str) -> Result<Option<&'v str>, String> {
    match json.pointer(pointer) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(text)) => Ok(Some(text)),
        Some(_) => Err(format!("`{field}` is not a string")),
    }
}

/// What a delivery's commit field says: `None` for a deletion (all zeros, or nothing),
/// else a commit id; anything else is malformed, so that no text from outside is
/// queued as a commit.
fn commit_id(field: &str, text: Option<&str>) -> Result<Option<String>, String> {
    match text {
        None | Some("") => Ok(None),
        // All zeros: the ref was deleted (or, as `before`, created).
        Some(id) if crate::source::is_commit_id(id) => {
            Ok((!id.bytes().all(|byte| byte == b'0')).then(|| id.to_ascii_lowercase()))
        }
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
    let git_ref = ref_name("ref", string_at(json, "/ref", "ref")?)?;
    let deleted = json.get("deleted").and_then(Value::as_bool) == Some(true);
    // An annotated tag's `after` is the tag object; `head_commit.id` is the commit.
    let (field, after) = match string_at(json, "/head_commit/id", "head_commit.id")? {
        Some(head) if git_ref.starts_with("refs/tags/") => ("head_commit.id", Some(head)),
        _ => ("after", string_at(json, "/after", "after")?),
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
    let git_ref = ref_name("ref", string_at(json, "/ref", "ref")?)?;
    let after = commit_id(
        "after",
        Some(string_at(json, "/after", "after")?.ok_or("no `after`")?),
    )?;
    // `after` of zeros is a deletion; otherwise the commit is `checkout_sha`, if sent.
    let commit = match (after, string_at(json, "/checkout_sha", "checkout_sha")?) {
        (None, _) => None,
        (Some(_), Some(checkout)) => commit_id("checkout_sha", Some(checkout))?,
        (Some(after), None) => Some(after),
    };
    Ok(Push { git_ref, commit })
}

/// The array at `pointer`, or why a delivery lacks it.
fn changes<'v>(json: &'v Value, pointer: &str, name: &str) -> Result<&'v Vec<Value>, String> {
    json.pointer(pointer)
        .and_then(Value::as_array)
        .ok_or_else(|| format!("no `{name}`"))
}

fn bitbucket_pushes(json: &Value) -> Result<Vec<Push>, String> {
    let mut pushes = Vec::new();
    for change in changes(json, "/push/changes", "push.changes")? {
        let Some(new) = change.get("new").filter(|new| !new.is_null()) else {
            // `new: null`: the ref was deleted; the old one says which.
            if let Some(name) = string_at(change, "/old/name", "old.name")? {
                let prefix = ref_prefix(string_at(change, "/old/type", "old.type")?);
                pushes.push(Push {
                    git_ref: ref_name("old.name", Some(&format!("{prefix}{name}")))?,
                    commit: None,
                });
            }
            continue;
        };
        let name = string_at(new, "/name", "new.name")?.ok_or("a change without `new.name`")?;
        let prefix = ref_prefix(string_at(new, "/type", "new.type")?);
        // A ref that is not deleted points at a commit: no hash is a malformed change.
        let hash = string_at(new, "/target/hash", "new.target.hash")?
            .ok_or("a change without `new.target.hash`")?;
        pushes.push(Push {
            git_ref: ref_name("new.name", Some(&format!("{prefix}{name}")))?,
            commit: commit_id("new.target.hash", Some(hash))?,
        });
    }
    Ok(pushes)
}

/// Bitbucket Server's `repo:refs_changed`: `changes[].refId` and `toHash`; a deleted
/// ref has `type: DELETE` and `toHash` all zeros.
fn bitbucket_server_pushes(json: &Value) -> Result<Vec<Push>, String> {
    let mut pushes = Vec::new();
    for change in changes(json, "/changes", "changes")? {
        let ref_id = match string_at(change, "/refId", "changes[].refId")? {
            Some(ref_id) => Some(ref_id),
            None => string_at(change, "/ref/id", "changes[].ref.id")?,
        };
        let git_ref = ref_name("changes[].refId", ref_id)?;
        let deleted = string_at(change, "/type", "changes[].type")? == Some("DELETE");
        let commit = if deleted {
            None
        } else {
            let hash = string_at(change, "/toHash", "changes[].toHash")?
                .ok_or("a change without `changes[].toHash`")?;
            commit_id("changes[].toHash", Some(hash))?
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
mod fuzz_tests;
#[cfg(test)]
mod tests;
