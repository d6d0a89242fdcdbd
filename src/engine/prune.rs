//! Keeping hosts clean: after a successful deploy, and by hand (`gantry prune`).
//!
//! What stays whatever its age comes from the state store: the digest each instance
//! runs by its newest record, the newest successful deployment's and the pin's, and
//! the image `gantry rollback` would return to. `deploy::prune` decides the rest per
//! host and removes it. Pruning runs only under the pipeline's deploy lease, since a
//! rollout's `.previous` containers are live; after a deploy that lease is still held.
//! A prune after a deploy never fails it: what went wrong is a warning in the run's log.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use super::lease::{HeldLease, acquire_lease, lease_owner_doing};
use super::resolve::{previous_release, rolled_out};
use super::{EngineError, Failure, RunRecorder, Silent};
use crate::config::{Config, Pipeline};
use crate::deploy::Log;
use crate::deploy::prune::{self as pruning, Keep, PruneReport, PruneRequest};
use crate::run::RunState;
use crate::store::{Store, StoreError};

/// How long pruning after a deploy may take before the run ends without it: removals
/// are quick, so this only cuts short a host that stopped answering.
const PRUNE_AFTER_DEPLOY_TIMEOUT: Duration = Duration::from_secs(120);

/// How many deployments are read to find the rollback target (`gantry rollback` reads as many).
const HISTORY: i64 = 1000;

/// The digests that stay on every host, and why: what instances run and the rollback target.
pub async fn protected_digests(
    store: &Store,
    pipeline: &str,
) -> Result<BTreeMap<String, Keep>, StoreError> {
    let mut protected = BTreeMap::new();
    let history = store.deployments(pipeline, HISTORY).await?;
    let succeeded: Vec<_> = history
        .iter()
        .filter(|deployment| deployment.state == RunState::Succeeded)
        .collect();
    if let Some(target) = previous_release(&succeeded) {
        for digest in rolled_out(target).into_values() {
            protected.insert(digest.to_string(), Keep::RollbackTarget);
        }
    }
    let current = succeeded
        .first()
        .map(|current| {
            rolled_out(current)
                .into_values()
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_else(Vec::new);
    let deployed = store
        .recorded_digests(pipeline)
        .await?
        .into_values()
        .chain(current)
        .chain(store.pin_of(pipeline).await?.map(|pin| pin.digest));
    for digest in deployed {
        // An image both deployed and the rollback target is named for the first.
        protected.insert(digest, Keep::Deployed);
    }
    Ok(protected)
}

/// `gantry prune`: takes the deploy lease (or says who holds it), prunes, lets it go.
pub async fn prune(
    config: &Config,
    pipeline: &Pipeline,
    store: &Store,
    dry_run: bool,
    log: Log<'_>,
) -> Result<Result<PruneReport, Failure>, EngineError> {
    let owner = lease_owner_doing("prune");
    if let Err(failure) = acquire_lease(store, &pipeline.name, &owner, false, &mut Silent).await {
        return Ok(Err(failure));
    }
    let held = HeldLease::keep(store, &pipeline.name, &owner);
    let result = match protected_digests(store, &pipeline.name).await {
        Ok(protected) => {
            let request = PruneRequest {
                config,
                pipeline,
                protected: &protected,
                dry_run,
            };
            Ok(pruning::prune(&request, log).await)
        }
        Err(error) => Err(error),
    };
    let released = held.release().await;
    let report = result?;
    released?;
    Ok(Ok(report))
}

/// Prunes after a successful deploy, which still holds the lease; each removal, and
/// anything that went wrong as a warning, goes to the run's log.
pub(super) async fn after_deploy(
    config: &Config,
    pipeline: &Pipeline,
    recorder: &mut RunRecorder<'_>,
) {
    let store = recorder.store();
    let protected = match protected_digests(store, &pipeline.name).await {
        Ok(protected) => protected,
        Err(error) => {
            // Without knowing what runs and what rollback needs, nothing may go.
            recorder.line(&format!(
                "warning: prune skipped: reading deployments: {error}"
            ));
            return;
        }
    };
    let request = PruneRequest {
        config,
        pipeline,
        protected: &protected,
        dry_run: false,
    };
    // The recorder is not shared across hosts; their lines are gathered, then logged.
    let lines: Mutex<Vec<String>> = Mutex::default();
    let log = |line: &str| {
        lines
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .push(line.to_string());
    };
    let report =
        tokio::time::timeout(PRUNE_AFTER_DEPLOY_TIMEOUT, pruning::prune(&request, &log)).await;
    let lines = lines
        .into_inner()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    for line in &lines {
        recorder.line(&format!("prune: {line}"));
    }
    match report {
        Ok(report) => {
            for error in &report.errors {
                tracing::warn!(
                    pipeline = pipeline.name,
                    host = error.host,
                    "prune: {}",
                    error.message
                );
                recorder.line(&format!(
                    "warning: prune: host `{}`: {}",
                    error.host, error.message
                ));
            }
            let images = report
                .removed
                .iter()
                .filter(|item| item.kind == pruning::ItemKind::Image)
                .count();
            let containers = report.removed.len() - images;
            if !report.removed.is_empty() {
                recorder.line(&format!(
                    "prune: removed {images} image(s) and {containers} stopped leftover container(s); \
                     {} image(s) kept per host",
                    report.keep_images
                ));
            }
        }
        Err(_) => {
            tracing::warn!(pipeline = pipeline.name, "prune gave up");
            recorder.line(&format!(
                "warning: prune: gave up after {}; the deploy stands",
                humantime::format_duration(PRUNE_AFTER_DEPLOY_TIMEOUT)
            ));
        }
    }
}
