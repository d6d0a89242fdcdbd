//! What runs where, per pipeline, with what the state store says about it: the
//! document `gantry status` prints and `GET /api/v1/instances` serves.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::reload::LiveConfig;
use crate::config::{Config, Pipeline};
use crate::deploy::status::{InstanceStatus, Recorded, status};
use crate::store::{LeaseHolder, Pin, Store, StoreError, now_millis};

/// How often the daemon reads every instance on every host again.
pub const STATUS_EVERY: Duration = Duration::from_secs(5);
/// A reading that takes longer than this is logged: what was shown meanwhile was older
/// than `STATUS_EVERY` promises (a host's engine slow to answer, a store that waits).
const SLOW_READING: Duration = Duration::from_secs(10);

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
    // Four queries, whatever the number of pipelines: one pipeline's records, or all.
    let only = match pipelines {
        [one] => Some(one.name.as_str()),
        _ => None,
    };
    let mut digests = store.recorded_digests_by_pipeline(only).await?;
    let mut tags = store.tags_by_pipeline(only).await?;
    let mut pins = store.pins().await?;
    let mut leases = store.leases().await?;
    let mut recorded = BTreeMap::new();
    let mut documents = Vec::new();
    for pipeline in pipelines {
        let name = &pipeline.name;
        recorded.insert(
            name.clone(),
            Recorded {
                digests: digests.remove(name).unwrap_or_default(),
                tags: tags.remove(name).unwrap_or_default(),
            },
        );
        documents.push(PipelineStatus {
            pipeline: name.clone(),
            pinned: pins.remove(name),
            deploying: leases.remove(name),
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
/// it was taken, the next one (waiting at most `wait`): a client that saw a deploy end
/// then sees what it did.
pub async fn fresh_snapshot(
    status: &watch::Receiver<Arc<StatusSnapshot>>,
    store: &Store,
    pipeline: Option<&str>,
    wait: Duration,
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
    let newer = tokio::time::timeout(wait, status.wait_for(|snapshot| snapshot.taken_at >= ended))
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
            // Stamped when the reading starts: a reading begun during a deploy is older
            // than that deploy's end, however late it finishes.
            let started = now_millis();
            let reading = collect(&config, &self.store, &pipelines, 0).await;
            let took = Duration::from_millis(now_millis().saturating_sub(started).max(0) as u64);
            if took > SLOW_READING {
                tracing::warn!(
                    took = %humantime::format_duration(Duration::from_secs(took.as_secs())),
                    "reading the instances' status was slow: the dashboard and the API showed an older one meanwhile"
                );
            }
            match reading {
                Ok(pipelines) => {
                    self.snapshot.send_replace(Arc::new(StatusSnapshot {
                        taken_at: started,
                        pipelines,
                    }));
                }
                Err(error) => tracing::warn!(%error, "reading the instances' status"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;
    use crate::run::{RunKind, RunState};

    fn reading(taken_at: i64) -> Arc<StatusSnapshot> {
        Arc::new(StatusSnapshot {
            taken_at,
            pipelines: Vec::new(),
        })
    }

    #[tokio::test]
    async fn a_reading_older_than_the_last_run_waits_for_the_next_one() {
        let (_dir, store) = Store::temporary().await;
        let run = store.manual_run("web", RunKind::Run).await;
        store.end_run(run, RunState::Succeeded, "").await.unwrap();
        let ended = store.last_finished_at(Some("web")).await.unwrap().unwrap();
        let (sender, receiver) = watch::channel(reading(ended - 1));

        // No newer reading comes: the old one, after the wait.
        let started = Instant::now();
        let got = fresh_snapshot(&receiver, &store, Some("web"), Duration::from_millis(200)).await;
        assert_eq!(got.taken_at, ended - 1);
        assert!(started.elapsed() >= Duration::from_millis(200));

        // A newer reading that comes while waiting is the answer, at once.
        let publisher = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(50)).await;
            sender.send_replace(reading(ended + 5));
            sender
        });
        let started = Instant::now();
        let got = fresh_snapshot(&receiver, &store, Some("web"), Duration::from_secs(10)).await;
        assert_eq!(got.taken_at, ended + 5);
        assert!(started.elapsed() < Duration::from_secs(5));
        let sender = publisher.await.unwrap();

        // A reading newer than every run, or a pipeline with no run, needs no wait.
        let started = Instant::now();
        fresh_snapshot(&receiver, &store, None, Duration::from_secs(10)).await;
        sender.send_replace(reading(1));
        fresh_snapshot(&receiver, &store, Some("db"), Duration::from_secs(10)).await;
        assert!(started.elapsed() < Duration::from_secs(1));

        // Runs that did nothing (coalesced) do not count.
        let idle = store.manual_run("db", RunKind::Run).await;
        store.end_run(idle, RunState::Coalesced, "").await.unwrap();
        assert_eq!(store.last_finished_at(Some("db")).await.unwrap(), None);
    }
}
