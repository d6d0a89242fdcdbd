//! The queue: runs waiting for the daemon, taken newest first with older ones
//! coalesced, and webhook deliveries remembered with their first answer.

use sqlx::Row;

use super::replicas::Interrupted;
use super::{Store, StoreError, now_millis, word};
use crate::run::{RunId, RunKind, Trigger};

/// A webhook delivery's first answer, replayed when the forge delivers it again.
#[derive(Debug, Clone)]
pub struct DeliveryAnswer {
    pub status: u16,
    pub response: String,
}

/// A run waiting in the queue.
#[derive(Debug, Clone)]
pub struct QueuedRun {
    pub run: RunId,
    pub pipeline: String,
    pub kind: RunKind,
    pub trigger: Trigger,
    /// The commit (or ref) to build.
    pub requested: Option<String>,
}

/// A webhook delivery as the queue knows it: a redelivery carries the same id and the
/// same body. The id alone is not enough: it is an unsigned header anybody can choose.
#[derive(Debug, Clone, Copy)]
pub struct DeliveryKey<'a> {
    pub forge: &'a str,
    /// The forge's delivery id.
    pub id: &'a str,
    /// Hex SHA-256 of the raw body.
    pub body_sha256: &'a str,
}

/// What queueing did: a new run, or the first answer to a delivery seen before.
pub type Queued = Result<RunId, DeliveryAnswer>;

/// Makes a delivery's JSON answer from the id of the run it queued.
pub type Answer = std::sync::Arc<dyn Fn(RunId) -> String + Send + Sync>;

/// The answer of a run queued without a delivery: nothing remembers it.
pub fn no_answer() -> Answer {
    std::sync::Arc::new(|_| String::new())
}

/// A run to queue, owned, so that one writer can queue several at once.
pub(super) struct QueueJob {
    pub pipeline: String,
    pub kind: RunKind,
    pub trigger: Trigger,
    pub requested: Option<String>,
    /// (forge, id, body digest)
    pub delivery: Option<(String, String, String)>,
    pub answer: Answer,
}

impl Store {
    /// Queues a run for `requested` (a commit id or ref) and, for a webhook, remembers
    /// the delivery and its answer, in one transaction: once this returns `Ok`, the
    /// trigger survives a crash. `answer` makes the JSON answer from the run's id.
    pub async fn queue_run(
        &self,
        pipeline: &str,
        kind: RunKind,
        trigger: &Trigger,
        requested: Option<&str>,
        delivery: Option<DeliveryKey<'_>>,
        answer: Answer,
    ) -> Result<Queued, StoreError> {
        let job = QueueJob {
            pipeline: pipeline.to_string(),
            kind,
            trigger: trigger.clone(),
            requested: requested.map(str::to_string),
            delivery: delivery.map(|delivery| {
                let DeliveryKey {
                    forge,
                    id,
                    body_sha256,
                } = delivery;
                (forge.to_string(), id.to_string(), body_sha256.to_string())
            }),
            answer,
        };
        // Deliveries that arrive together are committed together: by intake's own
        // thread on SQLite (`store::writer`), by whoever writes first on PostgreSQL
        // (`store::group`).
        match &self.file {
            Some(file) => self.wrote(self.writer.queue(file, job).await),
            None => self.queue_together(job).await,
        }
    }

    /// Remembers `answer` to a delivery that queues nothing (a ping, another branch)
    /// and prunes the pipeline's deliveries that point at no run down to the newest
    /// `keep`, in one transaction. A delivery seen before (same id, same body) keeps
    /// its first answer, which is returned; `None` when `answer` is the first.
    pub async fn answer_delivery(
        &self,
        pipeline: &str,
        delivery: &DeliveryKey<'_>,
        answer: &DeliveryAnswer,
        keep: u32,
    ) -> Result<Option<DeliveryAnswer>, StoreError> {
        self.intake_transaction(async |connection| {
            if let Some(first) = delivery_answer(connection, pipeline, delivery).await? {
                return Ok(Some(first));
            }
            insert_delivery(connection, pipeline, delivery, answer, None).await?;
            // Deliveries that queue nothing end no run, so they are pruned as they come.
            delete_old_deliveries(&mut *connection, pipeline, keep).await?;
            Ok(None)
        })
        .await
    }

    /// Keeps the newest `keep` deliveries of a pipeline that no longer point at a run
    /// (pings, other branches, runs pruned since) and deletes the older ones, so the
    /// table lives as long as the runs it answered for.
    pub async fn prune_deliveries(&self, pipeline: &str, keep: u32) -> Result<u64, StoreError> {
        let result = delete_old_deliveries(&self.pool, pipeline, keep).await;
        self.wrote(result.map_err(StoreError::from))
    }

    /// The pipelines that have queued runs.
    pub async fn queued_pipelines(&self) -> Result<Vec<String>, StoreError> {
        let rows = sqlx::query("SELECT DISTINCT pipeline FROM runs WHERE state = 'queued'")
            .fetch_all(&self.pool)
            .await?;
        Ok(rows.into_iter().map(|row| row.get("pipeline")).collect())
    }

    /// The pipelines with a build (`run` or `build`) queued.
    pub async fn queued_build_pipelines(&self) -> Result<Vec<String>, StoreError> {
        let rows = sqlx::query(
            "SELECT DISTINCT pipeline FROM runs WHERE state = 'queued' AND kind IN ('build', 'run')",
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.into_iter().map(|row| row.get("pipeline")).collect())
    }

    /// Takes the newest queued build (`run` or `build`) of a pipeline for `replica` and
    /// marks it running; every older queued build is coalesced into it. A queued
    /// `deploy` or `rollback` is never coalesced: builds queued after the oldest of them
    /// wait until it is taken, in its turn. Nothing is taken
    /// while another daemon (another replica) runs the pipeline: runs of a pipeline
    /// never overlap. The write lock makes the look and the claim one step, so one
    /// replica only takes a run.
    ///
    /// A flood of pushes can leave thousands queued; they are coalesced `COALESCE_AT_ONCE`
    /// to a transaction, so that no transaction holds the write lock long (deliveries
    /// wait for it), and between two transactions the deliveries waiting are queued
    /// first. Each points at the newest queued run, which the last transaction takes: a
    /// crash in between leaves that run queued, and what points at it true.
    pub async fn take_queued(
        &self,
        pipeline: &str,
        replica: &str,
    ) -> Result<Option<QueuedRun>, StoreError> {
        let _writer = self.queue_writer.lock().await;
        loop {
            let step = self
                .transaction(async |transaction| take_step(transaction, pipeline, replica).await)
                .await?;
            match step {
                Take::Coalesced => self.writer.let_waiting_in().await,
                Take::Taken(taken) => return Ok(taken),
            }
        }
    }

    /// Marks runs a daemon left `running` as `interrupted` (which: see `Interrupted`),
    /// and returns them so their commits can be queued again. Each run is returned to
    /// one caller only, however many replicas recover at once.
    pub async fn interrupt_running(
        &self,
        which: Interrupted<'_>,
    ) -> Result<Vec<QueuedRun>, StoreError> {
        self.transaction(async |transaction| interrupt(transaction, which).await)
            .await
    }

    /// `interrupt_running`, waiting for the write lock no longer than intake does
    /// (`INTAKE_WAIT`): for a daemon that is stopping, which leaves what it cannot
    /// record to the next start.
    pub async fn interrupt_running_briefly(
        &self,
        which: Interrupted<'_>,
    ) -> Result<Vec<QueuedRun>, StoreError> {
        self.intake_transaction(async |transaction| interrupt(transaction, which).await)
            .await
    }

    /// Queued runs per pipeline (zero for pipelines with none queued).
    pub async fn queue_depths(&self) -> Result<Vec<(String, i64)>, StoreError> {
        let rows = sqlx::query(
            "SELECT pipeline, SUM(CASE WHEN state = 'queued' THEN 1 ELSE 0 END) AS depth
             FROM runs GROUP BY pipeline",
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|row| (row.get("pipeline"), row.get("depth")))
            .collect())
    }
}

async fn delivery_answer(
    connection: &mut sqlx::AnyConnection,
    pipeline: &str,
    delivery: &DeliveryKey<'_>,
) -> Result<Option<DeliveryAnswer>, sqlx::Error> {
    let row = sqlx::query(
        "SELECT status, response FROM deliveries
         WHERE pipeline = $1 AND forge = $2 AND delivery_id = $3 AND body_sha256 = $4",
    )
    .bind(pipeline)
    .bind(delivery.forge)
    .bind(delivery.id)
    .bind(delivery.body_sha256)
    .fetch_optional(&mut *connection)
    .await?;
    Ok(row.map(|row| DeliveryAnswer {
        status: row.get::<i64, _>("status") as u16,
        response: row.get("response"),
    }))
}

async fn insert_delivery(
    connection: &mut sqlx::AnyConnection,
    pipeline: &str,
    delivery: &DeliveryKey<'_>,
    answer: &DeliveryAnswer,
    run: Option<i64>,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO deliveries (pipeline, forge, body_sha256, delivery_id, status, response,
                                 run_id, received_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT DO NOTHING",
    )
    .bind(pipeline)
    .bind(delivery.forge)
    .bind(delivery.body_sha256)
    .bind(delivery.id)
    .bind(i64::from(answer.status))
    .bind(&answer.response)
    .bind(run)
    .bind(now_millis())
    .execute(&mut *connection)
    .await?;
    Ok(())
}

/// A run as the queue hands it out, from a row with its `id`, `number`, `pipeline`,
/// `kind`, `trigger` and `requested`.
fn queued_run(row: &sqlx::any::AnyRow) -> Result<QueuedRun, StoreError> {
    Ok(QueuedRun {
        run: RunId {
            id: row.try_get("id")?,
            number: row.try_get("number")?,
        },
        pipeline: row.try_get("pipeline")?,
        kind: word(row, "kind")?,
        trigger: word(row, "trigger")?,
        requested: row.try_get("requested")?,
    })
}

/// Deletes a pipeline's deliveries that point at no run, but for the newest `keep`.
async fn delete_old_deliveries(
    executor: impl sqlx::Executor<'_, Database = sqlx::Any>,
    pipeline: &str,
    keep: u32,
) -> Result<u64, sqlx::Error> {
    let result = sqlx::query(
        "DELETE FROM deliveries WHERE pipeline = $1 AND run_id IS NULL AND received_at <
           (SELECT received_at FROM deliveries WHERE pipeline = $1 AND run_id IS NULL
            ORDER BY received_at DESC LIMIT 1 OFFSET $2)",
    )
    .bind(pipeline)
    // Older than the keep-th newest (same-millisecond ties stay).
    .bind(i64::from(keep.max(1)) - 1)
    .execute(executor)
    .await?;
    Ok(result.rows_affected())
}

async fn interrupt(
    transaction: &mut sqlx::AnyConnection,
    which: Interrupted<'_>,
) -> Result<Vec<QueuedRun>, StoreError> {
    let (all, replica) = match which {
        Interrupted::All => (true, None),
        Interrupted::Of(replica) => (false, Some(replica)),
        Interrupted::OfDeadReplicas => (false, None),
    };
    let now = now_millis();
    let rows = sqlx::query(
        "UPDATE runs SET state = 'interrupted', finished_at = $1,
                         message = 'gantry stopped while this run was going'
         WHERE state = 'running' AND runner = 'daemon'
           AND ($2 OR CASE WHEN $3 IS NULL
                          THEN replica IS NULL OR NOT EXISTS (
                              SELECT 1 FROM replicas
                              WHERE replicas.id = runs.replica AND replicas.expires_at >= $1)
                          ELSE replica = $3 END)
         RETURNING id, number, pipeline, kind, trigger,
                   CASE WHEN kind = 'run' THEN COALESCE(commit_sha, requested) ELSE requested END
                       AS requested",
    )
    .bind(now)
    .bind(all)
    .bind(replica)
    .fetch_all(&mut *transaction)
    .await?;
    rows.iter().map(queued_run).collect()
}

/// The most older queued runs one transaction of `Store::take_queued` coalesces.
const COALESCE_AT_ONCE: i64 = 256;

/// What one transaction of `Store::take_queued` did.
enum Take {
    /// Coalesced `COALESCE_AT_ONCE` older runs; there may be more.
    Coalesced,
    /// Coalesced the rest and took the newest run, or found nothing to take.
    Taken(Option<QueuedRun>),
}

async fn take_step(
    transaction: &mut sqlx::AnyConnection,
    pipeline: &str,
    replica: &str,
) -> Result<Take, StoreError> {
    let running: Option<i64> = sqlx::query_scalar(
        "SELECT id FROM runs
         WHERE pipeline = $1 AND state = 'running' AND runner = 'daemon' LIMIT 1",
    )
    .bind(pipeline)
    .fetch_optional(&mut *transaction)
    .await?;
    if running.is_some() {
        return Ok(Take::Taken(None));
    }
    // An operator's deploy or rollback is never coalesced: the pushes queued before the
    // oldest of them go first (coalesced into the newest), then it does.
    let operators: Option<i64> = sqlx::query_scalar(
        "SELECT id FROM runs
         WHERE pipeline = $1 AND state = 'queued' AND kind IN ('deploy', 'rollback')
         ORDER BY id LIMIT 1",
    )
    .bind(pipeline)
    .fetch_optional(&mut *transaction)
    .await?;
    let push = sqlx::query(
        "SELECT id, number, pipeline, kind, trigger, requested FROM runs
         WHERE pipeline = $1 AND state = 'queued' AND kind IN ('build', 'run') AND id < $2
         ORDER BY id DESC LIMIT 1",
    )
    .bind(pipeline)
    .bind(operators.unwrap_or(i64::MAX))
    .fetch_optional(&mut *transaction)
    .await?;
    let row = match (push, operators) {
        (Some(push), _) => push,
        (None, Some(id)) => {
            sqlx::query(
                "SELECT id, number, pipeline, kind, trigger, requested FROM runs WHERE id = $1",
            )
            .bind(id)
            .fetch_one(&mut *transaction)
            .await?
        }
        (None, None) => return Ok(Take::Taken(None)),
    };
    let queued = queued_run(&row)?;
    let coalesced = if matches!(queued.kind, RunKind::Build | RunKind::Run) {
        sqlx::query(
            "UPDATE runs SET state = 'coalesced', superseded_by = $1, finished_at = $2, message = $3
             WHERE id IN (SELECT id FROM runs WHERE pipeline = $4 AND state = 'queued' AND id < $1
                          AND kind IN ('build', 'run')
                          ORDER BY id LIMIT $5)",
        )
        .bind(queued.run.id)
        .bind(now_millis())
        .bind(format!("run #{}, queued after it, superseded it", queued.run.number))
        .bind(pipeline)
        .bind(COALESCE_AT_ONCE)
        .execute(&mut *transaction)
        .await?
        .rows_affected()
    } else {
        0
    };
    if coalesced >= COALESCE_AT_ONCE as u64 {
        return Ok(Take::Coalesced);
    }
    sqlx::query(
        "UPDATE runs SET state = 'running', runner = 'daemon', replica = $1, started_at = $2
         WHERE id = $3",
    )
    .bind(replica)
    .bind(now_millis())
    .bind(queued.run.id)
    .execute(&mut *transaction)
    .await?;
    Ok(Take::Taken(Some(queued)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Backend;

    crate::on_both_back_ends!(
        a_flood_of_queued_runs_is_coalesced_a_bounded_number_at_a_time,
        an_operators_deploy_or_rollback_is_never_coalesced_by_a_push,
    );

    /// 600 queued runs: the first transaction coalesces `COALESCE_AT_ONCE` of them and
    /// takes nothing; `take_queued` goes on until all 599 older ones point at the
    /// newest, which it takes.
    async fn a_flood_of_queued_runs_is_coalesced_a_bounded_number_at_a_time(backend: Backend) {
        let (_state, store) = Store::temporary_on(backend).await;
        let queue = (0..600)
            .map(|_| store.queue_run("p", RunKind::Run, &Trigger::Api, None, None, no_answer()));
        let queued = futures_util::future::try_join_all(queue).await.unwrap();
        let newest = queued
            .iter()
            .map(|queued| queued.as_ref().unwrap().id)
            .max()
            .unwrap();
        let count = async |state: &str| -> i64 {
            sqlx::query_scalar("SELECT COUNT(*) FROM runs WHERE state = $1")
                .bind(state)
                .fetch_one(&store.pool)
                .await
                .unwrap()
        };

        let step = store
            .transaction(async |transaction| take_step(transaction, "p", "r").await)
            .await
            .unwrap();
        assert!(matches!(step, Take::Coalesced));
        assert_eq!(count("coalesced").await, COALESCE_AT_ONCE);
        assert_eq!(count("running").await, 0);

        let taken = store.take_queued("p", "r").await.unwrap().unwrap();
        assert_eq!(taken.run.id, newest);
        assert_eq!(count("coalesced").await, 599);
        assert_eq!(count("queued").await, 0);
        let elsewhere: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM runs WHERE state = 'coalesced' AND superseded_by <> $1",
        )
        .bind(newest)
        .fetch_one(&store.pool)
        .await
        .unwrap();
        assert_eq!(elsewhere, 0, "every coalesced run points at the one taken");
    }

    /// Pushes coalesce among themselves, but a queued `deploy` or `rollback` is an
    /// operator's decision: it runs, in its turn, and the pushes on either side of it
    /// coalesce only with their own neighbours.
    async fn an_operators_deploy_or_rollback_is_never_coalesced_by_a_push(backend: Backend) {
        let (_state, store) = Store::temporary_on(backend).await;
        let push = Trigger::Webhook {
            forge: "github".to_string(),
            delivery: None,
        };
        let order = [
            (RunKind::Run, &push, None),
            (RunKind::Run, &push, None),
            (RunKind::Rollback, &Trigger::Api, Some("#1")),
            (RunKind::Run, &push, None),
            (RunKind::Deploy, &Trigger::Api, Some("app:v1")),
            (RunKind::Deploy, &Trigger::Api, Some("app:v2")),
            (RunKind::Run, &Trigger::Api, None),
            (RunKind::Run, &push, None),
        ];
        let mut ids = Vec::new();
        for (kind, trigger, requested) in order {
            let queued = store
                .queue_run("p", kind, trigger, requested, None, no_answer())
                .await
                .unwrap();
            ids.push(queued.unwrap().id);
        }
        let mut taken = Vec::new();
        while let Some(run) = store.take_queued("p", "r").await.unwrap() {
            taken.push((run.run.id, run.kind));
            store
                .end_run(run.run, crate::run::RunState::Skipped, "done")
                .await
                .unwrap();
        }
        let expected = [
            (ids[1], RunKind::Run),
            (ids[2], RunKind::Rollback),
            (ids[3], RunKind::Run),
            (ids[4], RunKind::Deploy),
            (ids[5], RunKind::Deploy),
            (ids[7], RunKind::Run),
        ];
        assert_eq!(taken, expected);
        let coalesced: Vec<(i64, i64, String)> = sqlx::query_as(
            "SELECT id, superseded_by, message FROM runs WHERE state = 'coalesced' ORDER BY id",
        )
        .fetch_all(&store.pool)
        .await
        .unwrap();
        assert_eq!(
            coalesced,
            [
                (
                    ids[0],
                    ids[1],
                    "run #2, queued after it, superseded it".to_string()
                ),
                (
                    ids[6],
                    ids[7],
                    "run #8, queued after it, superseded it".to_string()
                ),
            ]
        );
    }

    /// Coalescing a flood takes one transaction per `COALESCE_AT_ONCE` runs; intake's
    /// writer gets the lock between them, so a delivery waits for one step at most, not
    /// for all of them (on SQLite, where there is one write lock).
    #[tokio::test]
    async fn a_delivery_waits_for_one_step_of_coalescing_a_flood_not_for_all() {
        let (_state, store) = Store::temporary_on(Backend::Sqlite).await;
        let steps = 16;
        let flood = (0..COALESCE_AT_ONCE * steps)
            .map(|_| store.queue_run("p", RunKind::Run, &Trigger::Api, None, None, no_answer()));
        futures_util::future::try_join_all(flood).await.unwrap();
        // Readers do not wait for the lock (WAL): how far the coalescing has come.
        let coalesced = async || -> i64 {
            sqlx::query_scalar("SELECT COUNT(*) FROM runs WHERE state = 'coalesced'")
                .fetch_one(&store.pool)
                .await
                .unwrap()
        };

        let taken = std::sync::atomic::AtomicBool::new(false);
        let take = async {
            let run = store.take_queued("p", "r").await.unwrap();
            taken.store(true, std::sync::atomic::Ordering::SeqCst);
            run
        };
        // Deliveries of another pipeline, one after another, until the run is taken:
        // the most steps that committed while one of them waited for the writer.
        let deliveries = async {
            let mut most = 0;
            while !taken.load(std::sync::atomic::Ordering::SeqCst) {
                let before = coalesced().await;
                let queued = store
                    .queue_run("q", RunKind::Run, &Trigger::Api, None, None, no_answer())
                    .await
                    .unwrap();
                assert!(queued.is_ok(), "a delivery without a key is a new run");
                let steps = (coalesced().await - before + COALESCE_AT_ONCE - 1) / COALESCE_AT_ONCE;
                most = most.max(steps);
            }
            most
        };
        let (run, most) = tokio::join!(take, deliveries);
        assert!(run.is_some());
        assert!(
            most <= 2,
            "a delivery waited while {most} steps of coalescing committed"
        );
    }

    #[tokio::test]
    async fn a_delivery_that_queues_nothing_keeps_its_first_answer_and_only_the_newest_stay() {
        let (_dir, store) = Store::temporary().await;
        fn key<'a>(id: &'a str, body_sha256: &'a str) -> DeliveryKey<'a> {
            DeliveryKey {
                forge: "github",
                id,
                body_sha256,
            }
        }
        let answer = |response: &str| DeliveryAnswer {
            status: 200,
            response: response.to_string(),
        };
        let first = store
            .answer_delivery("p", &key("d-1", "ab"), &answer("first"), 10)
            .await
            .unwrap();
        assert!(first.is_none());
        let again = store
            .answer_delivery("p", &key("d-1", "ab"), &answer("second"), 10)
            .await
            .unwrap();
        assert_eq!(again.map(|first| first.response).as_deref(), Some("first"));
        // The same id with another body is another delivery.
        let other_body = store
            .answer_delivery("p", &key("d-1", "cd"), &answer("other"), 10)
            .await
            .unwrap();
        assert!(other_body.is_none());

        for index in 0..5 {
            // Deliveries are ordered by the millisecond they came in, and ties are all
            // kept: each gets a millisecond of its own.
            tokio::time::sleep(std::time::Duration::from_millis(2)).await;
            let id = format!("p-{index}");
            store
                .answer_delivery("p", &key(&id, "ab"), &answer("pong"), 3)
                .await
                .unwrap();
        }
        let kept: Vec<String> = sqlx::query_scalar(
            "SELECT delivery_id FROM deliveries WHERE pipeline = 'p' ORDER BY received_at",
        )
        .fetch_all(&store.pool)
        .await
        .unwrap();
        assert_eq!(kept, ["p-2", "p-3", "p-4"]);
    }
}
