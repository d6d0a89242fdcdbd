//! The one way in for work and holds: a run queued (from a webhook, the poller, the
//! API, the dashboard or `gantry trigger`), a webhook delivery that queues nothing
//! answered, a pin set, a pin lifted.
//!
//! `server` and `cli` call these and write nothing of runs themselves. What a request
//! names from outside (a ref, an image, a rollback target) is checked here, once,
//! before anything is stored.

use tokio::sync::mpsc;

use super::scheduler::Event;
use crate::config::is_sha256_digest;
use crate::run::{RunKind, Trigger};
use crate::source;
use crate::store::{DeliveryAnswer, DeliveryKey, Pin, Queued, Store, StoreError};

/// The longest ref, image or rollback target a request from outside may name.
pub const MAX_REQUESTED_LEN: usize = 256;

#[derive(Debug, thiserror::Error)]
pub enum IntakeError {
    /// What the request names is not something gantry queues; nothing was stored.
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A run to queue.
#[derive(Debug, Clone)]
pub struct Request<'a> {
    pub pipeline: &'a str,
    pub kind: RunKind,
    pub trigger: Trigger,
    /// A commit or ref (`run`), an image (`deploy`), a deployment, digest or commit
    /// (`rollback`); `None` for the branch head, the latest build, the previous image.
    pub requested: Option<&'a str>,
    /// A webhook delivery, remembered with its answer in the same transaction.
    pub delivery: Option<DeliveryKey<'a>>,
}

/// Checks and queues a run, and wakes the scheduler when one is listening. `answer`
/// makes a webhook's answer from the run's id; a delivery seen before gets its first
/// answer back instead of a new run. Once this returns `Ok`, the run survives a crash.
pub async fn queue(
    store: &Store,
    wake: Option<&mpsc::Sender<Event>>,
    request: &Request<'_>,
    answer: crate::store::Answer,
) -> Result<Queued, IntakeError> {
    if let Some(requested) = request.requested {
        check_requested(request.kind, requested).map_err(IntakeError::Invalid)?;
    }
    let queued = store
        .queue_run(
            request.pipeline,
            request.kind,
            &request.trigger,
            request.requested,
            request.delivery,
            answer,
        )
        .await?;
    if queued.is_ok()
        && let Some(wake) = wake
    {
        // When the channel is full the scheduler's periodic scan finds the run.
        let _ = wake.try_send(Event::Queued {
            pipeline: request.pipeline.to_string(),
        });
    }
    Ok(queued)
}

/// Answers a webhook delivery that queues nothing (a ping, a push to another branch):
/// the answer is remembered, so that a redelivery gets it again, and the pipeline's
/// deliveries without a run are pruned to the newest `keep`, in one transaction. A
/// delivery seen before gets its first answer back instead (`Some`).
pub async fn answer(
    store: &Store,
    pipeline: &str,
    delivery: &DeliveryKey<'_>,
    answer: &DeliveryAnswer,
    keep: u32,
) -> Result<Option<DeliveryAnswer>, StoreError> {
    store
        .answer_delivery(pipeline, delivery, answer, keep)
        .await
}

/// Holds automatic deploys of a pipeline; the pin names what runs now (the newest
/// deployment's digest, if any). Returns the pin as stored.
pub async fn pin(store: &Store, pipeline: &str, reason: &str) -> Result<Option<Pin>, StoreError> {
    let digest = store
        .deployments(pipeline, 1)
        .await?
        .into_iter()
        .next()
        .map(|deployment| deployment.digest)
        .unwrap_or_default();
    store.pin(pipeline, &digest, reason).await?;
    store.pin_of(pipeline).await
}

/// Lets automatic deploys of a pipeline go ahead again; whether it was pinned.
pub async fn unpin(store: &Store, pipeline: &str) -> Result<bool, StoreError> {
    store.unpin(pipeline).await
}

/// Why what a run request names (a commit or ref for `run`, an image for `deploy`, a
/// deployment, digest or commit for `rollback`) is refused before it is queued. Text
/// from outside is checked here, once, so that no module shows or stores anything else.
pub fn check_requested(kind: RunKind, requested: &str) -> Result<(), String> {
    if requested.is_empty() || requested.len() > MAX_REQUESTED_LEN {
        return Err(format!(
            "`{}` must be 1 to {MAX_REQUESTED_LEN} characters",
            source::prefix(requested, 40)
        ));
    }
    let plain = |extra: &str| {
        requested
            .chars()
            .all(|character| character.is_ascii_alphanumeric() || extra.contains(character))
    };
    let valid = match kind {
        RunKind::Run | RunKind::Build => {
            source::is_commit_id(requested) || crate::config::is_valid_branch(requested)
        }
        RunKind::Deploy => is_image_request(requested),
        RunKind::Rollback => plain("#:"),
    };
    if valid {
        return Ok(());
    }
    let what = match kind {
        RunKind::Run | RunKind::Build => "a commit id, branch or tag",
        RunKind::Deploy => "an image reference (repo:tag, repo@digest, a tag or a digest)",
        RunKind::Rollback => "a deployment number, digest or commit",
    };
    // An image may have been written with credentials in it: never quoted back.
    let quoted = match kind {
        RunKind::Deploy => crate::config::shown_reference(requested),
        _ => requested.to_string(),
    };
    Err(format!(
        "`{}` is not {what}",
        source::prefix(&quoted, 80).escape_debug()
    ))
}

/// Whether `text` names an image the way `deploy --image` takes it: `[NAME=]REF`, where
/// REF is a bare tag, a digest (`sha256:…`, `@sha256:…`), or a reference with a tag or a
/// digest (`repo:tag`, `repo@sha256:…`).
fn is_image_request(text: &str) -> bool {
    let reference = match text.split_once('=') {
        Some((name, reference)) => {
            if !crate::config::is_container_name(name) {
                return false;
            }
            reference
        }
        None => text,
    };
    if let Some(digest) = reference.strip_prefix('@') {
        return is_sha256_digest(digest);
    }
    if reference.starts_with("sha256:") {
        return is_sha256_digest(reference);
    }
    if crate::config::is_valid_tag(reference) {
        return true;
    }
    let name = reference
        .split_once('@')
        .map_or(reference, |(name, _)| name);
    let tagged = name
        .rsplit('/')
        .next()
        .is_some_and(|last| last.contains(':'));
    (tagged || reference.contains('@'))
        && crate::config::ImageRepository::of_reference(reference).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_name_refs_images_and_deployments_only() {
        let check = |kind: RunKind, text: &str, ok: bool| {
            assert_eq!(check_requested(kind, text).is_ok(), ok, "{kind} {text:?}");
        };
        check(RunKind::Run, "main", true);
        check(RunKind::Run, "release/1.2", true);
        check(
            RunKind::Run,
            "0123456789abcdef0123456789abcdef01234567",
            true,
        );
        check(RunKind::Run, "main~1", false);
        check(RunKind::Run, "a b", false);
        check(RunKind::Run, "", false);
        check(RunKind::Run, &"a".repeat(MAX_REQUESTED_LEN + 1), false);
        check(RunKind::Deploy, "127.0.0.1:5115/team/app:v1", true);
        check(RunKind::Deploy, "app:v1; rm -rf /", false);
        let digest = format!("sha256:{}", "ab".repeat(32));
        for image in [
            "v1",
            "127.0.0.1:5115/team/app:v1",
            &format!("127.0.0.1:5115/team/app@{digest}"),
            &format!("app:v1@{digest}"),
            &digest,
            &format!("@{digest}"),
            "web=v1",
            &format!("web=@{digest}"),
            "web_2=reg.example.com/team/web:v1",
        ] {
            check(RunKind::Deploy, image, true);
        }
        for image in [
            "sha256:",
            "sha256:zz",
            &format!("sha256:{}", "AB".repeat(32)),
            "app@sha256:ab",
            "::::",
            "@",
            "-rf",
            "App:v1",
            "app:",
            "app:v1@",
            "=v1",
            "web=",
            "a b=v1",
            "web=x=v1",
            "reg.example.com/team/web",
        ] {
            check(RunKind::Deploy, image, false);
        }
        check(RunKind::Rollback, "#3", true);
        check(RunKind::Rollback, "sha256:ab", true);
        check(RunKind::Rollback, "../x", false);
    }
}
