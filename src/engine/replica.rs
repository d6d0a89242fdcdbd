//! This daemon as one replica among several sharing a PostgreSQL state: it renews its
//! row while it lives, polls only while it holds the poll lease, and recovers the runs
//! of replicas that died (their row expired). On a SQLite state a daemon is alone:
//! it always polls and recovers every interrupted run when it starts.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::intake::{self, Request};
use crate::run::{RunKind, Trigger};
use crate::store::{Backend, Interrupted, Store, StoreError};

/// How long a replica's row, and the poll lease, live without being renewed: how soon
/// the runs of a replica that died are recovered, and polling taken over.
pub const REPLICA_TTL: Duration = Duration::from_secs(10);
/// How often a live replica renews them.
const RENEW_EVERY: Duration = Duration::from_secs(2);
/// The lease the polling replica holds (not a pipeline name: those have no `@`).
const POLL_LEASE: &str = "@poll";

/// This process as a replica.
#[derive(Debug)]
pub struct Replica {
    /// Unique among the replicas: host, process and a random part.
    pub id: String,
    polls: AtomicBool,
}

impl Replica {
    /// Registers a new replica, before it takes any run: a run must never name a
    /// replica that others could take for dead.
    pub async fn join(store: &Store) -> Result<Arc<Replica>, StoreError> {
        let hostname = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|name| name.trim().to_string())
            .unwrap_or_else(|_| "gantry".to_string());
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |elapsed| elapsed.subsec_nanos());
        let replica = Arc::new(Replica {
            id: format!("{hostname}-{}-{:05}", std::process::id(), nanos % 100_000),
            polls: AtomicBool::new(store.backend() == Backend::Sqlite),
        });
        if store.backend() == Backend::Postgres {
            store.renew_replica(&replica.id, REPLICA_TTL).await?;
        }
        Ok(replica)
    }

    /// Whether this replica polls the pipelines' repositories now.
    pub fn polls(&self) -> bool {
        self.polls.load(Ordering::Relaxed)
    }

    /// Renews the replica and the poll lease, and recovers dead replicas' runs, until
    /// `shutdown`; then gives the poll lease up. Nothing to do on SQLite.
    pub async fn keep_alive(self: Arc<Replica>, store: Store, shutdown: CancellationToken) {
        if store.backend() == Backend::Sqlite {
            return;
        }
        let mut tick = tokio::time::interval(RENEW_EVERY);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tick.tick() => {}
            }
            if let Err(error) = store.renew_replica(&self.id, REPLICA_TTL).await {
                tracing::warn!(%error, "renewing this replica");
            }
            let leads = matches!(
                store.acquire_lease(POLL_LEASE, &self.id, REPLICA_TTL).await,
                Ok(None)
            );
            if leads != self.polls.swap(leads, Ordering::Relaxed) {
                tracing::info!(replica = self.id, leads, "polling lease changed hands");
            }
            // Queued again here, taken by any replica's next scan.
            recover(&store, Interrupted::OfDeadReplicas, false).await;
        }
        self.polls.store(false, Ordering::Relaxed);
        if let Err(error) = store.release_lease(POLL_LEASE, &self.id).await {
            tracing::warn!(%error, "giving up the polling lease");
        }
    }
}

/// Records runs left running as interrupted and queues their commits again; how many.
/// `stopping`: this daemon is stopping, and waits for the store no longer than intake
/// does; what it cannot record is left to the next start's recovery.
pub async fn recover(store: &Store, which: Interrupted<'_>, stopping: bool) -> usize {
    let interrupted = if stopping {
        store.interrupt_running_briefly(which).await
    } else {
        store.interrupt_running(which).await
    };
    let interrupted = match interrupted {
        Ok(interrupted) => interrupted,
        Err(error) if stopping => {
            tracing::error!(%error, "recording the runs left going; the next start recovers them");
            return 0;
        }
        Err(error) => {
            tracing::error!(%error, "recovering interrupted runs");
            return 0;
        }
    };
    // A pipeline with a build queued since has newer work waiting, which supersedes an
    // interrupted build anyway: queued again as the newest, the interrupted build's
    // older commit would coalesce that newer work instead. An operator's deploy or
    // rollback is never superseded: it is always queued again.
    let waiting = match store.queued_build_pipelines().await {
        Ok(pipelines) => pipelines,
        Err(error) => {
            tracing::error!(%error, "reading the queue");
            Vec::new()
        }
    };
    for run in &interrupted {
        let a_build = matches!(run.kind, RunKind::Build | RunKind::Run);
        if a_build && waiting.contains(&run.pipeline) {
            tracing::warn!(
                pipeline = run.pipeline,
                run = run.run.number,
                "run was interrupted; a newer run is queued, which supersedes it"
            );
            continue;
        }
        tracing::warn!(
            pipeline = run.pipeline,
            run = run.run.number,
            "run was interrupted; queued again"
        );
        let request = Request {
            pipeline: &run.pipeline,
            kind: run.kind,
            trigger: Trigger::Retry,
            requested: run.requested.as_deref(),
            delivery: None,
        };
        // Taken by the scan that follows; at shutdown, by the next start or another replica.
        if let Err(error) = intake::queue(store, None, &request, crate::store::no_answer()).await {
            tracing::error!(%error, "queueing an interrupted run again");
        }
    }
    interrupted.len()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::no_answer;

    /// An interrupted build gives way to a build queued since; an interrupted rollback
    /// is an operator's decision and is always queued again.
    #[tokio::test]
    async fn an_interrupted_rollback_is_queued_again_even_behind_a_push() {
        let (_dir, store) = Store::temporary().await;
        let queue = async |pipeline: &str, kind: RunKind, requested: Option<&str>| {
            store
                .queue_run(pipeline, kind, &Trigger::Api, requested, None, no_answer())
                .await
                .unwrap()
                .unwrap()
        };
        let rollback = queue("web", RunKind::Rollback, Some("#1")).await;
        let build = queue("db", RunKind::Run, None).await;
        for pipeline in ["web", "db"] {
            store.take_queued(pipeline, "r").await.unwrap().unwrap();
        }
        // Pushes arrive while both go; then the daemon dies.
        queue("web", RunKind::Run, None).await;
        queue("db", RunKind::Run, None).await;

        assert_eq!(recover(&store, Interrupted::All, false).await, 2);
        let runs = store.runs_page(None, None, None, 10).await.unwrap();
        let retries: Vec<(&str, RunKind, Option<&str>)> = runs
            .iter()
            .filter(|run| run.trigger == Trigger::Retry)
            .map(|run| (run.pipeline.as_str(), run.kind, run.requested.as_deref()))
            .collect();
        assert_eq!(
            retries,
            [("web", RunKind::Rollback, Some("#1"))],
            "the rollback ({rollback:?}) comes back; the build ({build:?}) gives way"
        );
    }
}
