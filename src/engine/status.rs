//! What runs where, per pipeline, with what the state store says about it: the
//! document `gantry status` prints and `GET /api/v1/instances` serves.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::daemon::LiveConfig;
use crate::config::{Config, Pipeline};
use crate::deploy::status::{InstanceStatus, Recorded, status};
use crate::store::{LeaseHolder, Pin, Store, StoreError, now_millis};

/// How often the daemon reads every instance on every host again.
pub const STATUS_EVERY: Duration = Duration::from_secs(5);

/// One pipeline's instances, pin and deploy in progress.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PipelineStatus {
    pub pipeline: String,
    pub pinned: Option<Pin>,
    pub deploying: Option<LeaseHolder>,
    pub instances: Vec<InstanceStatus>,
}

/// The daemon's latest reading of every pipeline.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct StatusSnapshot {
    /// Milliseconds since the epoch; 0 before the first reading.
    pub taken_at: i64,
    pub pipelines: Vec<PipelineStatus>,
}

/// Reads the pipelines' instances on their hosts and what the store knows of them.
pub async fn collect(
    config: &Config,
    store: &Store,
    pipelines: &[&Pipeline],
    log_lines: usize,
) -> Result<Vec<PipelineStatus>, StoreError> {
    let mut recorded = BTreeMap::new();
    let mut documents = Vec::new();
    for pipeline in pipelines {
        recorded.insert(
            pipeline.name.clone(),
            Recorded {
                digests: store.recorded_digests(&pipeline.name).await?,
                tags: store.tags_by_digest(&pipeline.name).await?,
            },
        );
        documents.push(PipelineStatus {
            pipeline: pipeline.name.clone(),
            pinned: store.pin_of(&pipeline.name).await?,
            deploying: store.lease_of(&pipeline.name).await?,
            instances: Vec::new(),
        });
    }
    let instances = status(config, pipelines, &recorded, log_lines).await;
    for document in &mut documents {
        document.instances = instances
            .iter()
            .filter(|instance| instance.pipeline == document.pipeline)
            .cloned()
            .collect();
    }
    Ok(documents)
}

/// The newest reading, or, when a run of `pipeline` (any pipeline: `None`) ended after
/// it was taken, the next one (waiting at most `STATUS_EVERY` twice): a client that saw
/// a deploy end then sees what it did.
pub async fn fresh_snapshot(
    status: &watch::Receiver<Arc<StatusSnapshot>>,
    store: &Store,
    pipeline: Option<&str>,
) -> Arc<StatusSnapshot> {
    let mut status = status.clone();
    let current = status.borrow_and_update().clone();
    let ended = match store.last_finished_at(pipeline).await {
        Ok(Some(ended)) => ended,
        _ => return current,
    };
    if current.taken_at >= ended {
        return current;
    }
    let newer = tokio::time::timeout(
        STATUS_EVERY * 2,
        status.wait_for(|snapshot| snapshot.taken_at >= ended),
    )
    .await
    .ok()
    .and_then(|found| found.ok().map(|snapshot| snapshot.clone()));
    newer.unwrap_or_else(|| status.borrow().clone())
}

/// Keeps a reading of every pipeline fresh for the API (whose handlers never call Docker).
pub struct StatusWatcher {
    pub config: watch::Receiver<LiveConfig>,
    pub store: Store,
    pub snapshot: watch::Sender<Arc<StatusSnapshot>>,
    /// Reads again at once when poked (a run ended), besides every `STATUS_EVERY`.
    pub refresh: Arc<tokio::sync::Notify>,
}

impl StatusWatcher {
    pub async fn run(self, shutdown: CancellationToken) {
        let mut tick = tokio::time::interval(STATUS_EVERY);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tick.tick() => {}
                _ = self.refresh.notified() => tick.reset(),
            }
            let config = self.config.borrow().config.clone();
            let pipelines: Vec<&Pipeline> = config.pipelines.values().collect();
            match collect(&config, &self.store, &pipelines, 0).await {
                Ok(pipelines) => {
                    self.snapshot.send_replace(Arc::new(StatusSnapshot {
                        taken_at: now_millis(),
                        pipelines,
                    }));
                }
                Err(error) => tracing::warn!(%error, "reading the instances' status"),
            }
        }
    }
}
