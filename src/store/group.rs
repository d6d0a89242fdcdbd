//! Group commit of queued runs on PostgreSQL (on SQLite intake has a thread of its
//! own, `store::writer`). Writers take turns for the one write lock
//! (`Backend::begin_write`), and each commit costs a flush, so deliveries one after the
//! other would wait for each other's commit. Instead a caller leaves its run in
//! `waiting`; whoever holds the queue writer takes every run waiting and queues them in
//! one transaction (`store::batch`), then tells each caller its outcome. A caller is
//! answered only once its run is committed, as alone: a 202 still means stored.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::oneshot;

use super::batch::{MOST_AT_ONCE, queue_many};
use super::queue::{QueueJob, Queued};
use super::{INTAKE_WAIT, Store, StoreError};

/// A caller's run, waiting for a writer.
pub(super) struct Waiting {
    ticket: u64,
    job: QueueJob,
    reply: oneshot::Sender<Result<Queued, Arc<StoreError>>>,
}

impl std::fmt::Debug for Waiting {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            formatter,
            "run of {} waiting (ticket {})",
            self.job.pipeline, self.ticket
        )
    }
}

static TICKETS: AtomicU64 = AtomicU64::new(0);

impl Store {
    /// Queues `job` with whatever else is waiting, in one transaction.
    pub(super) async fn queue_together(&self, job: QueueJob) -> Result<Queued, StoreError> {
        let ticket = TICKETS.fetch_add(1, Ordering::Relaxed);
        let (reply, mut answered) = oneshot::channel();
        self.waiting().push(Waiting { ticket, job, reply });
        let deadline = tokio::time::Instant::now() + INTAKE_WAIT;
        loop {
            tokio::select! {
                biased;
                outcome = &mut answered => {
                    return match outcome {
                        Ok(outcome) => outcome.map_err(StoreError::Shared),
                        // The writer that took it went away without an answer.
                        Err(_) => Err(StoreError::Busy),
                    };
                }
                writer = tokio::time::timeout_at(deadline, self.queue_writer.lock()) => {
                    let Ok(_writer) = writer else {
                        // Not taken yet: withdrawn, and "busy" is true. Taken: the
                        // writer that has it answers soon.
                        let mut waiting = self.waiting();
                        if let Some(at) = waiting.iter().position(|one| one.ticket == ticket) {
                            waiting.remove(at);
                            drop(waiting);
                            return self.wrote(Err(StoreError::Busy));
                        }
                        continue;
                    };
                    let jobs: Vec<Waiting> = {
                        let mut waiting = self.waiting();
                        let count = waiting.len().min(MOST_AT_ONCE);
                        waiting.drain(..count).collect()
                    };
                    if !jobs.is_empty() {
                        self.queue_all(jobs).await;
                    }
                }
            }
        }
    }

    fn waiting(&self) -> std::sync::MutexGuard<'_, Vec<Waiting>> {
        self.waiting
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Queues every job in one transaction and answers each caller.
    async fn queue_all(&self, jobs: Vec<Waiting>) {
        let outcome = self
            .transaction_on(
                &self.intake_pool,
                super::LockWait::Poll,
                async |connection| {
                    let batch: Vec<&QueueJob> = jobs.iter().map(|waiting| &waiting.job).collect();
                    queue_many(connection, &batch).await
                },
            )
            .await;
        match outcome {
            Ok(queued) => {
                for (waiting, queued) in jobs.into_iter().zip(queued) {
                    let _ = waiting.reply.send(Ok(queued));
                }
            }
            Err(error) => {
                let error = Arc::new(error);
                for waiting in jobs {
                    let _ = waiting.reply.send(Err(error.clone()));
                }
            }
        }
    }
}
