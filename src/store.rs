//! The state store: `state.db` in the state directory, SQLite through sqlx.
//!
//! All SQL of gantry lives here, behind methods named for what they record.
//! Migrations are embedded in the binary and run on open, so a new gantry
//! upgrades an old state directory by itself. Queries are checked at run time,
//! not at compile time, so building gantry needs no database; they stay in
//! plain SQL that Postgres also accepts, to keep that door open.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::{Row, migrate::Migrator};

/// The database file inside the state directory.
pub const DATABASE_FILE: &str = "state.db";
/// How long a writer waits for another process's write to finish before failing.
const BUSY_TIMEOUT: Duration = Duration::from_secs(30);
/// Connections per process: the CLI needs one, the daemon a few.
const MAX_CONNECTIONS: u32 = 4;

static MIGRATOR: Migrator = sqlx::migrate!("./migrations");

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("state directory {path}: {source}")]
    Directory {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("state database {path}: {source}")]
    Open { path: PathBuf, source: sqlx::Error },
    #[error("state database {path}: migration failed: {source}")]
    Migrate {
        path: PathBuf,
        source: sqlx::migrate::MigrateError,
    },
    #[error("state database: {0}")]
    Query(#[from] sqlx::Error),
}

/// A handle on the state database; cheap to clone.
#[derive(Debug, Clone)]
pub struct Store {
    pool: SqlitePool,
    /// Queue writers of this process wait here, in order, instead of in SQLite's busy
    /// handler, whose growing sleeps (1, 2, 5, 10 ms...) would make the slow tail.
    queue_writer: std::sync::Arc<tokio::sync::Mutex<()>>,
}

/// A run's identity: the row id and the per-pipeline number users see.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct RunId {
    pub id: i64,
    pub number: i64,
}

/// How a stage or run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Succeeded,
    Failed,
}

impl Outcome {
    fn as_str(self) -> &'static str {
        match self {
            Outcome::Succeeded => "succeeded",
            Outcome::Failed => "failed",
        }
    }
}

/// How a finished run ended: what it produced, or why it failed.
#[derive(Debug, Clone)]
pub enum RunResult {
    Succeeded {
        image: String,
        tags: Vec<String>,
        digest: String,
    },
    /// A deploy succeeded: the digest it rolled out; a build's image and tags in the same run stay.
    Deployed {
        image: String,
        digest: String,
    },
    Failed {
        stage: String,
        message: String,
    },
}

/// A stage that has just ended, to be recorded.
#[derive(Debug, Clone)]
pub struct FinishedStage<'a> {
    /// Order within the run, from 0.
    pub position: i64,
    pub name: &'a str,
    pub outcome: Outcome,
    /// Milliseconds since the epoch.
    pub started_at: i64,
    pub duration: Duration,
    pub message: Option<&'a str>,
}

/// The columns a `RunRecord` is read from.
macro_rules! run_columns {
    () => {
        "id, pipeline, number, kind, trigger, requested, commit_sha, commit_message, commit_author,
         state, failed_stage, message, image, tags, digest, started_at, finished_at"
    };
}

/// What a run shows of its commit besides the id.
#[derive(Debug, Clone, Copy)]
pub struct CommitDetails<'a> {
    /// The message's first line.
    pub subject: &'a str,
    pub author: &'a str,
}

/// One stored run, as listed.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct RunRecord {
    pub id: i64,
    pub pipeline: String,
    pub number: i64,
    pub kind: String,
    pub trigger: String,
    pub requested: Option<String>,
    pub commit: Option<String>,
    /// The commit's first line.
    pub commit_message: Option<String>,
    pub author: Option<String>,
    pub state: String,
    pub failed_stage: Option<String>,
    pub message: Option<String>,
    pub image: Option<String>,
    pub tags: Vec<String>,
    pub digest: Option<String>,
    pub started_at: i64,
    pub finished_at: Option<i64>,
    pub stages: Vec<StageRecord>,
}

#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct StageRecord {
    pub name: String,
    pub state: String,
    pub started_at: i64,
    pub duration_ms: i64,
    pub message: Option<String>,
}

/// Milliseconds since the epoch, the store's one time format.
pub fn now_millis() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_millis() as i64)
}

impl Store {
    /// Opens (creating if needed) the database in `state_dir` and brings its schema up to date.
    pub async fn open(state_dir: &Path) -> Result<Store, StoreError> {
        std::fs::create_dir_all(state_dir).map_err(|source| StoreError::Directory {
            path: state_dir.to_path_buf(),
            source,
        })?;
        let path = state_dir.join(DATABASE_FILE);
        let options = SqliteConnectOptions::from_str("sqlite:")
            .map_err(|source| StoreError::Open {
                path: path.clone(),
                source,
            })?
            .filename(&path)
            .create_if_missing(true)
            // WAL lets the CLI read while the daemon writes.
            .journal_mode(SqliteJournalMode::Wal)
            // With WAL, NORMAL writes every commit to the log before it returns (so a
            // killed process loses nothing it committed) and syncs at checkpoints.
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(BUSY_TIMEOUT)
            .foreign_keys(true);
        let pool = SqlitePoolOptions::new()
            .max_connections(MAX_CONNECTIONS)
            .connect_with(options)
            .await
            .map_err(|source| StoreError::Open {
                path: path.clone(),
                source,
            })?;
        MIGRATOR
            .run(&pool)
            .await
            .map_err(|source| StoreError::Migrate { path, source })?;
        Ok(Store {
            pool,
            queue_writer: std::sync::Arc::new(tokio::sync::Mutex::new(())),
        })
    }

    /// Closes every connection, folding the write-ahead log back into the database.
    pub async fn close(self) {
        self.pool.close().await;
    }

    /// Records a new run as running and gives it the pipeline's next number.
    pub async fn start_run(
        &self,
        pipeline: &str,
        kind: &str,
        trigger: &str,
        requested: Option<&str>,
    ) -> Result<RunId, StoreError> {
        // One statement picks the number and inserts, so two processes never share a number.
        let row = sqlx::query(
            "INSERT INTO runs (pipeline, number, kind, trigger, requested, state, started_at)
             VALUES (?1, (SELECT COALESCE(MAX(number), 0) + 1 FROM runs WHERE pipeline = ?1),
                     ?2, ?3, ?4, 'running', ?5)
             RETURNING id, number",
        )
        .bind(pipeline)
        .bind(kind)
        .bind(trigger)
        .bind(requested)
        .bind(now_millis())
        .fetch_one(&self.pool)
        .await?;
        Ok(RunId {
            id: row.get("id"),
            number: row.get("number"),
        })
    }

    /// Records the run's commit. Without `details` (a deploy of an image built
    /// earlier), the subject and author come from a run that checked out that commit.
    pub async fn set_commit(
        &self,
        run: RunId,
        commit: &str,
        details: Option<CommitDetails<'_>>,
    ) -> Result<(), StoreError> {
        match details {
            Some(details) => {
                sqlx::query(
                    "UPDATE runs SET commit_sha = ?1, commit_message = ?2, commit_author = ?3
                     WHERE id = ?4",
                )
                .bind(commit)
                .bind(details.subject)
                .bind(details.author)
                .bind(run.id)
                .execute(&self.pool)
                .await?;
            }
            None => {
                sqlx::query(
                    "UPDATE runs SET commit_sha = ?1,
                       commit_message = (SELECT commit_message FROM runs AS built
                                         WHERE built.pipeline = runs.pipeline AND built.commit_sha = ?1
                                           AND built.commit_message IS NOT NULL
                                         ORDER BY built.id DESC LIMIT 1),
                       commit_author = (SELECT commit_author FROM runs AS built
                                        WHERE built.pipeline = runs.pipeline AND built.commit_sha = ?1
                                          AND built.commit_author IS NOT NULL
                                        ORDER BY built.id DESC LIMIT 1)
                     WHERE id = ?2",
                )
                .bind(commit)
                .bind(run.id)
                .execute(&self.pool)
                .await?;
            }
        }
        Ok(())
    }

    /// Records one finished stage.
    pub async fn record_stage(
        &self,
        run: RunId,
        stage: &FinishedStage<'_>,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO stages (run_id, position, name, state, started_at, duration_ms, message)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        )
        .bind(run.id)
        .bind(stage.position)
        .bind(stage.name)
        .bind(stage.outcome.as_str())
        .bind(stage.started_at)
        .bind(stage.duration.as_millis() as i64)
        .bind(stage.message)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn finish_run(&self, run: RunId, result: &RunResult) -> Result<(), StoreError> {
        let query = match result {
            RunResult::Succeeded {
                image,
                tags,
                digest,
            } => sqlx::query(
                "UPDATE runs SET state = 'succeeded', image = ?1, tags = ?2, digest = ?3, finished_at = ?4
                 WHERE id = ?5",
            )
            .bind(image)
            .bind(serde_json::to_string(tags).unwrap_or_default())
            .bind(digest),
            RunResult::Deployed { image, digest } => sqlx::query(
                "UPDATE runs SET state = 'succeeded', image = ?1, tags = COALESCE(tags, ?2),
                                 digest = ?3, finished_at = ?4
                 WHERE id = ?5",
            )
            .bind(image)
            .bind("[]")
            .bind(digest),
            RunResult::Failed { stage, message } => sqlx::query(
                "UPDATE runs SET state = 'failed', failed_stage = ?1, message = ?2, finished_at = ?4
                 WHERE id = ?5",
            )
            .bind(stage)
            .bind(message)
            .bind(Option::<String>::None),
        };
        query
            .bind(now_millis())
            .bind(run.id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Records what a run's build pushed, leaving the run going (a deploy follows).
    pub async fn record_build(&self, run: RunId, result: &RunResult) -> Result<(), StoreError> {
        if let RunResult::Succeeded {
            image,
            tags,
            digest,
        } = result
        {
            sqlx::query("UPDATE runs SET image = ?1, tags = ?2, digest = ?3 WHERE id = ?4")
                .bind(image)
                .bind(serde_json::to_string(tags).unwrap_or_default())
                .bind(digest)
                .bind(run.id)
                .execute(&self.pool)
                .await?;
        }
        Ok(())
    }

    /// The newest runs, of one pipeline or all, newest first, with their stages.
    pub async fn runs(
        &self,
        pipeline: Option<&str>,
        limit: i64,
    ) -> Result<Vec<RunRecord>, StoreError> {
        self.runs_page(pipeline, None, None, limit).await
    }

    /// A page of runs, newest first: of one pipeline and in one state when given,
    /// with ids below `before` (the last id of the previous page).
    pub async fn runs_page(
        &self,
        pipeline: Option<&str>,
        state: Option<&str>,
        before: Option<i64>,
        limit: i64,
    ) -> Result<Vec<RunRecord>, StoreError> {
        // One statement per case, with plain comparisons, so SQLite walks the
        // `runs_by_pipeline_id` index (or the table) backwards from `before`.
        let query = match pipeline {
            Some(_) => sqlx::query(concat!(
                "SELECT ",
                run_columns!(),
                " FROM runs
                 WHERE pipeline = ?1 AND (?2 IS NULL OR state = ?2)
                   AND id < COALESCE(?3, 9223372036854775807)
                 ORDER BY id DESC LIMIT ?4"
            )),
            None => sqlx::query(concat!(
                "SELECT ",
                run_columns!(),
                " FROM runs
                 WHERE ?1 IS NULL AND (?2 IS NULL OR state = ?2)
                   AND id < COALESCE(?3, 9223372036854775807)
                 ORDER BY id DESC LIMIT ?4"
            )),
        };
        let rows = query
            .bind(pipeline)
            .bind(state)
            .bind(before)
            .bind(limit)
            .fetch_all(&self.pool)
            .await?;
        self.with_stages(rows).await
    }

    /// Run rows made records, each with its stages.
    async fn with_stages(
        &self,
        rows: Vec<sqlx::sqlite::SqliteRow>,
    ) -> Result<Vec<RunRecord>, StoreError> {
        let mut runs = Vec::with_capacity(rows.len());
        for row in rows {
            let id: i64 = row.get("id");
            let stages = sqlx::query(
                "SELECT name, state, started_at, duration_ms, message FROM stages
                 WHERE run_id = ?1 ORDER BY position",
            )
            .bind(id)
            .fetch_all(&self.pool)
            .await?
            .into_iter()
            .map(|stage| StageRecord {
                name: stage.get("name"),
                state: stage.get("state"),
                started_at: stage.get("started_at"),
                duration_ms: stage.get("duration_ms"),
                message: stage.get("message"),
            })
            .collect();
            let tags: Option<String> = row.get("tags");
            runs.push(RunRecord {
                id,
                pipeline: row.get("pipeline"),
                number: row.get("number"),
                kind: row.get("kind"),
                trigger: row.get("trigger"),
                requested: row.get("requested"),
                commit: row.get("commit_sha"),
                commit_message: row.get("commit_message"),
                author: row.get("commit_author"),
                state: row.get("state"),
                failed_stage: row.get("failed_stage"),
                message: row.get("message"),
                image: row.get("image"),
                tags: tags
                    .and_then(|text| serde_json::from_str(&text).ok())
                    .unwrap_or_default(),
                digest: row.get("digest"),
                started_at: row.get("started_at"),
                finished_at: row.get("finished_at"),
                stages,
            });
        }
        Ok(runs)
    }
}

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
    /// `run` (build and deploy), `deploy` (an image) or `rollback`.
    pub kind: String,
    pub trigger: String,
    /// The commit (or ref) to build.
    pub requested: Option<String>,
}

/// One line of a run's log.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct LogLine {
    pub seq: i64,
    /// Milliseconds since the epoch.
    pub at: i64,
    pub line: String,
}

impl Store {
    /// Queues a run for `requested` (a commit id or ref) and, for a webhook, remembers
    /// the delivery and its answer, in one transaction: once this returns, the
    /// trigger survives a crash. `answer` makes the JSON answer from the run's id.
    pub async fn queue_run(
        &self,
        pipeline: &str,
        kind: &str,
        trigger: &str,
        requested: Option<&str>,
        delivery: Option<(&str, &str)>,
        answer: &(dyn Fn(RunId) -> String + Sync),
    ) -> Result<Result<RunId, DeliveryAnswer>, StoreError> {
        let _writer = self.queue_writer.lock().await;
        let mut transaction = self.pool.begin().await?;
        let now = now_millis();
        let row = sqlx::query(
            "INSERT INTO runs (pipeline, number, kind, trigger, requested, state, started_at)
             VALUES (?1, (SELECT COALESCE(MAX(number), 0) + 1 FROM runs WHERE pipeline = ?1),
                     ?5, ?2, ?3, 'queued', ?4)
             RETURNING id, number",
        )
        .bind(pipeline)
        .bind(trigger)
        .bind(requested)
        .bind(now)
        .bind(kind)
        .fetch_one(&mut *transaction)
        .await?;
        let run = RunId {
            id: row.get("id"),
            number: row.get("number"),
        };
        if let Some((forge, id)) = delivery {
            let inserted = sqlx::query(
                "INSERT INTO deliveries (pipeline, forge, delivery_id, status, response, run_id, received_at)
                 VALUES (?1, ?2, ?3, 202, ?4, ?5, ?6)
                 ON CONFLICT DO NOTHING",
            )
            .bind(pipeline)
            .bind(forge)
            .bind(id)
            .bind(answer(run))
            .bind(run.id)
            .bind(now)
            .execute(&mut *transaction)
            .await?
            .rows_affected();
            if inserted == 0 {
                // Delivered before (or at the same moment by another request): the
                // first answer stands and this run is not queued.
                transaction.rollback().await?;
                let first = self.delivery(pipeline, forge, id).await?;
                return Ok(Err(first.unwrap_or(DeliveryAnswer {
                    status: 202,
                    response: "{}".to_string(),
                })));
            }
        }
        transaction.commit().await?;
        Ok(Ok(run))
    }

    /// The first answer to a delivery, if it was seen before.
    pub async fn delivery(
        &self,
        pipeline: &str,
        forge: &str,
        id: &str,
    ) -> Result<Option<DeliveryAnswer>, StoreError> {
        let row = sqlx::query(
            "SELECT status, response FROM deliveries
             WHERE pipeline = ?1 AND forge = ?2 AND delivery_id = ?3",
        )
        .bind(pipeline)
        .bind(forge)
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(|row| DeliveryAnswer {
            status: row.get::<i64, _>("status") as u16,
            response: row.get("response"),
        }))
    }

    /// Remembers the answer to a delivery that queued nothing (a ping, another branch).
    pub async fn remember_delivery(
        &self,
        pipeline: &str,
        forge: &str,
        id: &str,
        answer: &DeliveryAnswer,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO deliveries (pipeline, forge, delivery_id, status, response, received_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT DO NOTHING",
        )
        .bind(pipeline)
        .bind(forge)
        .bind(id)
        .bind(answer.status as i64)
        .bind(&answer.response)
        .bind(now_millis())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The pipelines that have queued runs.
    pub async fn queued_pipelines(&self) -> Result<Vec<String>, StoreError> {
        let rows = sqlx::query("SELECT DISTINCT pipeline FROM runs WHERE state = 'queued'")
            .fetch_all(&self.pool)
            .await?;
        Ok(rows.into_iter().map(|row| row.get("pipeline")).collect())
    }

    /// Takes the newest queued run of a pipeline and marks it running; every older
    /// queued run of the pipeline is coalesced into it.
    pub async fn take_queued(&self, pipeline: &str) -> Result<Option<QueuedRun>, StoreError> {
        let _writer = self.queue_writer.lock().await;
        let mut transaction = self.pool.begin().await?;
        let row = sqlx::query(
            "SELECT id, number, kind, trigger, requested FROM runs
             WHERE pipeline = ?1 AND state = 'queued' ORDER BY id DESC LIMIT 1",
        )
        .bind(pipeline)
        .fetch_optional(&mut *transaction)
        .await?;
        let Some(row) = row else {
            return Ok(None);
        };
        let id: i64 = row.get("id");
        sqlx::query(
            "UPDATE runs SET state = 'coalesced', superseded_by = ?1, finished_at = ?2,
                             message = 'a newer push superseded it'
             WHERE pipeline = ?3 AND state = 'queued' AND id < ?1",
        )
        .bind(id)
        .bind(now_millis())
        .bind(pipeline)
        .execute(&mut *transaction)
        .await?;
        sqlx::query(
            "UPDATE runs SET state = 'running', runner = 'daemon', started_at = ?1 WHERE id = ?2",
        )
        .bind(now_millis())
        .bind(id)
        .execute(&mut *transaction)
        .await?;
        transaction.commit().await?;
        Ok(Some(QueuedRun {
            run: RunId {
                id,
                number: row.get("number"),
            },
            pipeline: pipeline.to_string(),
            kind: row.get("kind"),
            trigger: row.get("trigger"),
            requested: row.get("requested"),
        }))
    }

    /// Marks runs left `running` by a process that died as `interrupted`, and returns
    /// them so their commits can be queued again.
    pub async fn interrupt_running(&self) -> Result<Vec<QueuedRun>, StoreError> {
        let rows = sqlx::query(
            "UPDATE runs SET state = 'interrupted', finished_at = ?1,
                             message = 'gantry stopped while this run was going'
             WHERE state = 'running' AND runner = 'daemon'
             RETURNING id, number, pipeline, kind, trigger,
                       CASE WHEN kind = 'run' THEN COALESCE(commit_sha, requested) ELSE requested END
                           AS requested",
        )
        .bind(now_millis())
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|row| QueuedRun {
                run: RunId {
                    id: row.get("id"),
                    number: row.get("number"),
                },
                pipeline: row.get("pipeline"),
                kind: row.get("kind"),
                trigger: row.get("trigger"),
                requested: row.get("requested"),
            })
            .collect())
    }

    /// Ends a run that did no work, with a state (`held`, `skipped`) and why.
    pub async fn end_run(&self, run: RunId, state: &str, message: &str) -> Result<(), StoreError> {
        sqlx::query("UPDATE runs SET state = ?1, message = ?2, finished_at = ?3 WHERE id = ?4")
            .bind(state)
            .bind(message)
            .bind(now_millis())
            .bind(run.id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Appends a line to a run's log (one writer per run at a time).
    pub async fn append_log(&self, run: i64, line: &str) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO run_logs (run_id, seq, at, line)
             VALUES (?1, (SELECT COALESCE(MAX(seq), -1) + 1 FROM run_logs WHERE run_id = ?1), ?2, ?3)",
        )
            .bind(run)
            .bind(now_millis())
            .bind(line)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// A run's log lines after `after` (a sequence number; -1 for all).
    pub async fn log_lines(&self, run: i64, after: i64) -> Result<Vec<LogLine>, StoreError> {
        let rows = sqlx::query(
            "SELECT seq, at, line FROM run_logs WHERE run_id = ?1 AND seq > ?2 ORDER BY seq",
        )
        .bind(run)
        .bind(after)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|row| LogLine {
                seq: row.get("seq"),
                at: row.get("at"),
                line: row.get("line"),
            })
            .collect())
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

    /// Deployments per pipeline, kind and outcome, with the newest success's end time.
    #[allow(clippy::type_complexity)]
    pub async fn deployment_counts(
        &self,
    ) -> Result<Vec<(String, String, String, i64, Option<i64>)>, StoreError> {
        let rows = sqlx::query(
            "SELECT pipeline, kind, state, COUNT(*) AS count,
                    MAX(CASE WHEN state = 'succeeded' THEN finished_at END) AS last_success
             FROM deployments GROUP BY pipeline, kind, state",
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|row| {
                (
                    row.get("pipeline"),
                    row.get("kind"),
                    row.get("state"),
                    row.get("count"),
                    row.get("last_success"),
                )
            })
            .collect())
    }

    /// When the last run that did any work (of one pipeline, or of any) ended; runs
    /// that were coalesced, skipped or held did nothing to the instances.
    pub async fn last_finished_at(
        &self,
        pipeline: Option<&str>,
    ) -> Result<Option<i64>, StoreError> {
        Ok(sqlx::query_scalar(
            "SELECT finished_at FROM runs
             WHERE finished_at IS NOT NULL AND (?1 IS NULL OR pipeline = ?1)
               AND state NOT IN ('coalesced', 'skipped', 'held')
             ORDER BY finished_at DESC LIMIT 1",
        )
        .bind(pipeline)
        .fetch_optional(&self.pool)
        .await?
        .flatten())
    }

    /// One run by its row id.
    pub async fn run(&self, id: i64) -> Result<Option<RunRecord>, StoreError> {
        let rows = sqlx::query(concat!(
            "SELECT ",
            run_columns!(),
            " FROM runs WHERE id = ?1"
        ))
        .bind(id)
        .fetch_all(&self.pool)
        .await?;
        Ok(self.with_stages(rows).await?.into_iter().next())
    }

    /// The row id of a pipeline's run number.
    pub async fn run_id(&self, pipeline: &str, number: i64) -> Result<Option<i64>, StoreError> {
        Ok(
            sqlx::query_scalar("SELECT id FROM runs WHERE pipeline = ?1 AND number = ?2")
                .bind(pipeline)
                .bind(number)
                .fetch_optional(&self.pool)
                .await?,
        )
    }

    /// Deletes all but the newest `keep` finished runs of a pipeline (stages and logs go with them).
    pub async fn prune_runs(&self, pipeline: &str, keep: u32) -> Result<u64, StoreError> {
        let result = sqlx::query(
            "DELETE FROM runs WHERE pipeline = ?1 AND state NOT IN ('queued', 'running')
               AND id NOT IN (SELECT id FROM runs WHERE pipeline = ?1 ORDER BY id DESC LIMIT ?2)",
        )
        .bind(pipeline)
        .bind(keep as i64)
        .execute(&self.pool)
        .await?;
        Ok(result.rows_affected())
    }

    /// Marks a queued or running run as started now (a queued run taken by the CLI).
    pub async fn begin_run(&self, run: RunId) -> Result<(), StoreError> {
        sqlx::query("UPDATE runs SET state = 'running', started_at = ?1 WHERE id = ?2")
            .bind(now_millis())
            .bind(run.id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}

/// A deployment's identity: the row id and the per-pipeline number users see.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct DeploymentId {
    pub id: i64,
    pub number: i64,
}

/// An image a build run pushed.
#[derive(Debug, Clone, Serialize)]
pub struct BuiltImage {
    pub run: i64,
    pub image: String,
    pub digest: String,
    pub commit: Option<String>,
}

/// A deployment about to start.
#[derive(Debug, Clone)]
pub struct NewDeployment<'a> {
    pub pipeline: &'a str,
    pub run: Option<RunId>,
    /// `deploy`, `rollback` or `run`.
    pub kind: &'a str,
    /// repository@digest.
    pub image: &'a str,
    pub digest: &'a str,
    pub commit: Option<&'a str>,
}

/// What a deployment did to one instance.
#[derive(Debug, Clone, Serialize)]
pub struct InstanceRecord {
    pub service: String,
    pub instance: String,
    pub host: String,
    pub action: String,
    /// The digest the instance runs afterwards, when known.
    pub digest: Option<String>,
    pub previous_digest: Option<String>,
    pub message: Option<String>,
}

/// One stored deployment with its instances.
#[derive(Debug, Clone, Serialize)]
pub struct DeploymentRecord {
    pub id: i64,
    pub pipeline: String,
    pub number: i64,
    pub run: Option<i64>,
    pub kind: String,
    pub image: String,
    pub digest: String,
    pub commit: Option<String>,
    pub state: String,
    pub message: Option<String>,
    pub started_at: i64,
    pub finished_at: Option<i64>,
    pub instances: Vec<InstanceRecord>,
}

/// Why a pipeline takes no automatic deploys.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct Pin {
    pub pipeline: String,
    pub digest: String,
    pub reason: String,
    pub pinned_at: i64,
}

/// Who holds a pipeline's deploy lease, and until when.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct LeaseHolder {
    pub owner: String,
    pub acquired_at: i64,
    pub expires_at: i64,
}

impl Store {
    /// The newest image a build of the pipeline pushed (a digest is stored only once the push is confirmed).
    pub async fn latest_built(&self, pipeline: &str) -> Result<Option<BuiltImage>, StoreError> {
        let row = sqlx::query(
            "SELECT id, image, digest, commit_sha FROM runs
             WHERE pipeline = ?1 AND digest IS NOT NULL AND kind IN ('build', 'run')
             ORDER BY id DESC LIMIT 1",
        )
        .bind(pipeline)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(|row| BuiltImage {
            run: row.get("id"),
            image: row.get("image"),
            digest: row.get("digest"),
            commit: row.get("commit_sha"),
        }))
    }

    /// The tags (full references) each digest a build of the pipeline pushed was given.
    pub async fn tags_by_digest(
        &self,
        pipeline: &str,
    ) -> Result<BTreeMap<String, Vec<String>>, StoreError> {
        let rows = sqlx::query(
            "SELECT digest, tags FROM runs
             WHERE pipeline = ?1 AND digest IS NOT NULL AND kind IN ('build', 'run')
             ORDER BY id",
        )
        .bind(pipeline)
        .fetch_all(&self.pool)
        .await?;
        let mut tags: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for row in rows {
            let pushed: Vec<String> = row
                .get::<Option<String>, _>("tags")
                .and_then(|text| serde_json::from_str(&text).ok())
                .unwrap_or_default();
            let known = tags.entry(row.get("digest")).or_default();
            for tag in pushed {
                if !known.contains(&tag) {
                    known.push(tag);
                }
            }
        }
        Ok(tags)
    }

    /// The commit a build of the pipeline made `digest` from, if gantry built it.
    pub async fn commit_of_digest(
        &self,
        pipeline: &str,
        digest: &str,
    ) -> Result<Option<String>, StoreError> {
        let commit: Option<Option<String>> = sqlx::query_scalar(
            "SELECT commit_sha FROM runs
             WHERE pipeline = ?1 AND digest = ?2 AND commit_sha IS NOT NULL AND kind IN ('build', 'run')
             ORDER BY id DESC LIMIT 1",
        )
        .bind(pipeline)
        .bind(digest)
        .fetch_optional(&self.pool)
        .await?;
        Ok(commit.flatten())
    }

    /// Records a deployment as running and gives it the pipeline's next deployment number.
    pub async fn start_deployment(
        &self,
        deployment: &NewDeployment<'_>,
    ) -> Result<DeploymentId, StoreError> {
        let row = sqlx::query(
            "INSERT INTO deployments (pipeline, number, run_id, kind, image, digest, commit_sha,
                                      state, started_at)
             VALUES (?1, (SELECT COALESCE(MAX(number), 0) + 1 FROM deployments WHERE pipeline = ?1),
                     ?2, ?3, ?4, ?5, ?6, 'running', ?7)
             RETURNING id, number",
        )
        .bind(deployment.pipeline)
        .bind(deployment.run.map(|run| run.id))
        .bind(deployment.kind)
        .bind(deployment.image)
        .bind(deployment.digest)
        .bind(deployment.commit)
        .bind(now_millis())
        .fetch_one(&self.pool)
        .await?;
        Ok(DeploymentId {
            id: row.get("id"),
            number: row.get("number"),
        })
    }

    /// Records (or replaces) what a deployment did to one instance.
    pub async fn record_instance(
        &self,
        deployment: DeploymentId,
        record: &InstanceRecord,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO deployment_instances (deployment_id, service, instance, host, action,
                                               digest, previous_digest, message, finished_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)
             ON CONFLICT (deployment_id, instance) DO UPDATE SET
                 action = excluded.action, digest = excluded.digest,
                 previous_digest = excluded.previous_digest, message = excluded.message,
                 finished_at = excluded.finished_at",
        )
        .bind(deployment.id)
        .bind(&record.service)
        .bind(&record.instance)
        .bind(&record.host)
        .bind(&record.action)
        .bind(&record.digest)
        .bind(&record.previous_digest)
        .bind(&record.message)
        .bind(now_millis())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn finish_deployment(
        &self,
        deployment: DeploymentId,
        outcome: Outcome,
        message: Option<&str>,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE deployments SET state = ?1, message = ?2, finished_at = ?3 WHERE id = ?4",
        )
        .bind(outcome.as_str())
        .bind(message)
        .bind(now_millis())
        .bind(deployment.id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The newest deployments of a pipeline, newest first, with their instances.
    pub async fn deployments(
        &self,
        pipeline: &str,
        limit: i64,
    ) -> Result<Vec<DeploymentRecord>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, pipeline, number, run_id, kind, image, digest, commit_sha, state, message,
                    started_at, finished_at
             FROM deployments WHERE pipeline = ?1 ORDER BY id DESC LIMIT ?2",
        )
        .bind(pipeline)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        let mut deployments = Vec::with_capacity(rows.len());
        for row in rows {
            let id: i64 = row.get("id");
            let instances = sqlx::query(
                "SELECT service, instance, host, action, digest, previous_digest, message
                 FROM deployment_instances WHERE deployment_id = ?1 ORDER BY instance",
            )
            .bind(id)
            .fetch_all(&self.pool)
            .await?
            .into_iter()
            .map(|instance| InstanceRecord {
                service: instance.get("service"),
                instance: instance.get("instance"),
                host: instance.get("host"),
                action: instance.get("action"),
                digest: instance.get("digest"),
                previous_digest: instance.get("previous_digest"),
                message: instance.get("message"),
            })
            .collect();
            deployments.push(DeploymentRecord {
                id,
                pipeline: row.get("pipeline"),
                number: row.get("number"),
                run: row.get("run_id"),
                kind: row.get("kind"),
                image: row.get("image"),
                digest: row.get("digest"),
                commit: row.get("commit_sha"),
                state: row.get("state"),
                message: row.get("message"),
                started_at: row.get("started_at"),
                finished_at: row.get("finished_at"),
                instances,
            });
        }
        Ok(deployments)
    }

    /// The digest each instance of a pipeline should run, by the newest record that knows it.
    pub async fn recorded_digests(
        &self,
        pipeline: &str,
    ) -> Result<BTreeMap<String, String>, StoreError> {
        let rows = sqlx::query(
            "SELECT i.instance, i.digest FROM deployment_instances i
             JOIN deployments d ON d.id = i.deployment_id
             WHERE d.pipeline = ?1 AND i.digest IS NOT NULL
             ORDER BY d.id DESC",
        )
        .bind(pipeline)
        .fetch_all(&self.pool)
        .await?;
        let mut digests = BTreeMap::new();
        for row in rows {
            // Newest first: the first row seen for an instance wins.
            digests
                .entry(row.get::<String, _>("instance"))
                .or_insert_with(|| row.get::<String, _>("digest"));
        }
        Ok(digests)
    }

    pub async fn pin(&self, pipeline: &str, digest: &str, reason: &str) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO pins (pipeline, digest, reason, pinned_at) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (pipeline) DO UPDATE SET
                 digest = excluded.digest, reason = excluded.reason, pinned_at = excluded.pinned_at",
        )
        .bind(pipeline)
        .bind(digest)
        .bind(reason)
        .bind(now_millis())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Lifts a pin; returns whether there was one.
    pub async fn unpin(&self, pipeline: &str) -> Result<bool, StoreError> {
        let result = sqlx::query("DELETE FROM pins WHERE pipeline = ?1")
            .bind(pipeline)
            .execute(&self.pool)
            .await?;
        Ok(result.rows_affected() > 0)
    }

    pub async fn pin_of(&self, pipeline: &str) -> Result<Option<Pin>, StoreError> {
        let row =
            sqlx::query("SELECT pipeline, digest, reason, pinned_at FROM pins WHERE pipeline = ?1")
                .bind(pipeline)
                .fetch_optional(&self.pool)
                .await?;
        Ok(row.map(|row| Pin {
            pipeline: row.get("pipeline"),
            digest: row.get("digest"),
            reason: row.get("reason"),
            pinned_at: row.get("pinned_at"),
        }))
    }

    /// Takes the pipeline's deploy lease for `ttl` unless a live holder has it;
    /// returns that holder when it does. An expired lease is taken over.
    pub async fn acquire_lease(
        &self,
        pipeline: &str,
        owner: &str,
        ttl: Duration,
    ) -> Result<Option<LeaseHolder>, StoreError> {
        let now = now_millis();
        // One statement, so two processes racing for a free or expired lease
        // cannot both win: SQLite serialises the writes, and the loser's
        // conflict clause sees the winner's fresh expiry.
        let taken = sqlx::query(
            "INSERT INTO leases (pipeline, owner, acquired_at, expires_at) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (pipeline) DO UPDATE SET
                 owner = excluded.owner, acquired_at = excluded.acquired_at,
                 expires_at = excluded.expires_at
             WHERE leases.expires_at < ?3 OR leases.owner = ?2",
        )
        .bind(pipeline)
        .bind(owner)
        .bind(now)
        .bind(now + ttl.as_millis() as i64)
        .execute(&self.pool)
        .await?
        .rows_affected();
        if taken > 0 {
            return Ok(None);
        }
        let holder =
            sqlx::query("SELECT owner, acquired_at, expires_at FROM leases WHERE pipeline = ?1")
                .bind(pipeline)
                .fetch_optional(&self.pool)
                .await?;
        Ok(Some(holder.map_or_else(
            // Released between the two statements: report it as about to be free.
            || LeaseHolder {
                owner: "a deploy that just finished".to_string(),
                acquired_at: now,
                expires_at: now,
            },
            |row| LeaseHolder {
                owner: row.get("owner"),
                acquired_at: row.get("acquired_at"),
                expires_at: row.get("expires_at"),
            },
        )))
    }

    /// Who holds the pipeline's deploy lease now, if anyone (expired leases are nobody's).
    pub async fn lease_of(&self, pipeline: &str) -> Result<Option<LeaseHolder>, StoreError> {
        let row = sqlx::query(
            "SELECT owner, acquired_at, expires_at FROM leases WHERE pipeline = ?1 AND expires_at >= ?2",
        )
        .bind(pipeline)
        .bind(now_millis())
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(|row| LeaseHolder {
            owner: row.get("owner"),
            acquired_at: row.get("acquired_at"),
            expires_at: row.get("expires_at"),
        }))
    }

    /// Pushes the lease's expiry out by `ttl`; false when `owner` no longer holds it.
    pub async fn renew_lease(
        &self,
        pipeline: &str,
        owner: &str,
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        let result =
            sqlx::query("UPDATE leases SET expires_at = ?1 WHERE pipeline = ?2 AND owner = ?3")
                .bind(now_millis() + ttl.as_millis() as i64)
                .bind(pipeline)
                .bind(owner)
                .execute(&self.pool)
                .await?;
        Ok(result.rows_affected() > 0)
    }

    pub async fn release_lease(&self, pipeline: &str, owner: &str) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM leases WHERE pipeline = ?1 AND owner = ?2")
            .bind(pipeline)
            .bind(owner)
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn runs_are_numbered_per_pipeline_and_recorded() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).await.unwrap();
        let first = store.start_run("a", "build", "manual", None).await.unwrap();
        let other = store.start_run("b", "build", "manual", None).await.unwrap();
        let second = store
            .start_run("a", "build", "manual", Some("v1"))
            .await
            .unwrap();
        assert_eq!((first.number, other.number, second.number), (1, 1, 2));

        store.set_commit(first, "abc", None).await.unwrap();
        store
            .record_stage(
                first,
                &FinishedStage {
                    position: 0,
                    name: "checkout",
                    outcome: Outcome::Succeeded,
                    started_at: 1,
                    duration: Duration::from_millis(5),
                    message: None,
                },
            )
            .await
            .unwrap();
        store
            .finish_run(
                first,
                &RunResult::Succeeded {
                    image: "r/x".to_string(),
                    tags: vec!["r/x:1".to_string()],
                    digest: "sha256:1".to_string(),
                },
            )
            .await
            .unwrap();
        store
            .finish_run(
                second,
                &RunResult::Failed {
                    stage: "build".to_string(),
                    message: "boom".to_string(),
                },
            )
            .await
            .unwrap();

        // Reopening runs no migration twice and sees the same rows.
        drop(store);
        let store = Store::open(dir.path()).await.unwrap();
        let runs = store.runs(Some("a"), 10).await.unwrap();
        assert_eq!(runs.len(), 2);
        assert_eq!(runs[0].state, "failed");
        assert_eq!(runs[0].failed_stage.as_deref(), Some("build"));
        assert_eq!(runs[1].state, "succeeded");
        assert_eq!(runs[1].commit.as_deref(), Some("abc"));
        assert_eq!(runs[1].tags, vec!["r/x:1".to_string()]);
        assert_eq!(runs[1].stages[0].duration_ms, 5);
    }

    #[tokio::test]
    async fn a_lease_has_one_holder_until_it_expires_or_is_released() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).await.unwrap();
        let ttl = Duration::from_secs(60);
        assert!(
            store
                .acquire_lease("p", "one", ttl)
                .await
                .unwrap()
                .is_none()
        );
        // The holder may take it again (renewal by acquiring); another may not.
        assert!(
            store
                .acquire_lease("p", "one", ttl)
                .await
                .unwrap()
                .is_none()
        );
        let holder = store.acquire_lease("p", "two", ttl).await.unwrap().unwrap();
        assert_eq!(holder.owner, "one");
        // Other pipelines have their own lease.
        assert!(
            store
                .acquire_lease("q", "two", ttl)
                .await
                .unwrap()
                .is_none()
        );
        assert!(store.renew_lease("p", "one", ttl).await.unwrap());
        assert!(!store.renew_lease("p", "two", ttl).await.unwrap());
        store.release_lease("p", "one").await.unwrap();
        assert!(
            store
                .acquire_lease("p", "two", ttl)
                .await
                .unwrap()
                .is_none()
        );

        // A lease whose holder stopped renewing is taken over once it expires.
        assert!(
            store
                .acquire_lease("r", "dead", Duration::ZERO)
                .await
                .unwrap()
                .is_none()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
        assert!(
            store
                .acquire_lease("r", "alive", ttl)
                .await
                .unwrap()
                .is_none()
        );
        assert!(!store.renew_lease("r", "dead", ttl).await.unwrap());
    }

    #[tokio::test]
    async fn deployments_record_instance_digests_and_pins() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).await.unwrap();
        let record = |instance: &str, digest: Option<&str>| InstanceRecord {
            service: "web".to_string(),
            instance: instance.to_string(),
            host: "local".to_string(),
            action: "updated".to_string(),
            digest: digest.map(str::to_string),
            previous_digest: None,
            message: None,
        };
        let first = store
            .start_deployment(&NewDeployment {
                pipeline: "p",
                run: None,
                kind: "deploy",
                image: "r/x@sha256:1",
                digest: "sha256:1",
                commit: Some("c1"),
            })
            .await
            .unwrap();
        store
            .record_instance(first, &record("a", Some("sha256:1")))
            .await
            .unwrap();
        store
            .record_instance(first, &record("b", Some("sha256:1")))
            .await
            .unwrap();
        store
            .finish_deployment(first, Outcome::Succeeded, None)
            .await
            .unwrap();
        let second = store
            .start_deployment(&NewDeployment {
                pipeline: "p",
                run: None,
                kind: "deploy",
                image: "r/x@sha256:2",
                digest: "sha256:2",
                commit: None,
            })
            .await
            .unwrap();
        assert_eq!((first.number, second.number), (1, 2));
        store
            .record_instance(second, &record("a", Some("sha256:2")))
            .await
            .unwrap();
        // Unknown afterwards: the older record still says what b should run.
        store
            .record_instance(second, &record("b", None))
            .await
            .unwrap();
        store
            .finish_deployment(second, Outcome::Failed, Some("b failed"))
            .await
            .unwrap();

        let digests = store.recorded_digests("p").await.unwrap();
        assert_eq!(digests["a"], "sha256:2");
        assert_eq!(digests["b"], "sha256:1");
        let history = store.deployments("p", 10).await.unwrap();
        assert_eq!(history.len(), 2);
        assert_eq!(history[0].state, "failed");
        assert_eq!(history[0].message.as_deref(), Some("b failed"));
        assert_eq!(history[1].instances.len(), 2);

        assert!(store.pin_of("p").await.unwrap().is_none());
        store.pin("p", "sha256:1", "rolled back").await.unwrap();
        assert_eq!(store.pin_of("p").await.unwrap().unwrap().digest, "sha256:1");
        assert!(store.unpin("p").await.unwrap());
        assert!(!store.unpin("p").await.unwrap());
    }

    #[tokio::test]
    async fn only_runs_the_daemon_took_are_recovered_after_a_crash() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).await.unwrap();
        // A `gantry run` in the foreground of another process.
        let foreground = store.start_run("p", "run", "manual", None).await.unwrap();
        let queued = store
            .queue_run("p", "deploy", "api", Some("r/x:1"), None, &|_| {
                String::new()
            })
            .await
            .unwrap()
            .unwrap();
        let taken = store.take_queued("p").await.unwrap().unwrap();
        assert_eq!((taken.run, taken.kind.as_str()), (queued, "deploy"));
        let recovered = store.interrupt_running().await.unwrap();
        assert_eq!(recovered.len(), 1);
        assert_eq!(recovered[0].run, queued);
        assert_eq!(recovered[0].kind, "deploy");
        assert_eq!(recovered[0].requested.as_deref(), Some("r/x:1"));
        let runs = store.runs(Some("p"), 10).await.unwrap();
        let state_of = |id: i64| runs.iter().find(|run| run.id == id).unwrap().state.clone();
        assert_eq!(state_of(foreground.id), "running");
        assert_eq!(state_of(queued.id), "interrupted");
    }

    #[tokio::test]
    async fn runs_page_by_pipeline_and_state_from_before() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).await.unwrap();
        let mut web = Vec::new();
        for index in 0..7 {
            let run = store.start_run("web", "run", "manual", None).await.unwrap();
            store.start_run("db", "run", "manual", None).await.unwrap();
            if index % 2 == 0 {
                store.end_run(run, "skipped", "").await.unwrap();
            }
            web.push(run.id);
        }
        let ids = |runs: Vec<RunRecord>| runs.iter().map(|run| run.id).collect::<Vec<_>>();
        let first = store.runs_page(Some("web"), None, None, 3).await.unwrap();
        assert_eq!(ids(first.clone()), [web[6], web[5], web[4]]);
        let next = store
            .runs_page(Some("web"), None, Some(first[2].id), 3)
            .await
            .unwrap();
        assert_eq!(ids(next), [web[3], web[2], web[1]]);
        let skipped = store
            .runs_page(Some("web"), Some("skipped"), Some(web[6]), 10)
            .await
            .unwrap();
        assert_eq!(ids(skipped), [web[4], web[2], web[0]]);
        let all = store.runs_page(None, None, None, 100).await.unwrap();
        assert_eq!(all.len(), 14);
        assert!(all.windows(2).all(|pair| pair[0].id > pair[1].id));
        let before = store
            .runs_page(None, None, Some(web[1]), 100)
            .await
            .unwrap();
        assert_eq!(ids(before).len(), 2, "web[0] and db's first");
        assert_eq!(store.last_finished_at(Some("db")).await.unwrap(), None);
    }
}
