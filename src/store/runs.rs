//! Runs and their stages: numbered per pipeline, recorded from their first moment to
//! their outcome, listed a page at a time.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use serde::Serialize;
use sqlx::Row;

use super::{Store, StoreError, now_millis, word};
use crate::run::{Outcome, RunId, RunKind, RunState, Stage, Trigger};

/// Runs whose stages are read in one query (each id one bound value; SQLite takes
/// 32,766, PostgreSQL 65,535).
const STAGES_AT_ONCE: usize = 500;

/// How a finished run ended: what it produced, or why it failed.
#[derive(Debug, Clone)]
pub enum RunResult {
    /// A build succeeded: its first image and digest, every tag it pushed (full
    /// references), and every image, name → `repository@digest`.
    Succeeded {
        image: String,
        tags: Vec<String>,
        digest: String,
        images: BTreeMap<String, String>,
    },
    /// A deploy succeeded: what it rolled out; a build's tags in the same run stay.
    Deployed {
        image: String,
        digest: String,
        images: BTreeMap<String, String>,
    },
    Failed {
        stage: Stage,
        message: String,
    },
}

/// A stage that has just ended, to be recorded.
#[derive(Debug, Clone)]
pub struct FinishedStage<'a> {
    /// Order within the run, from 0.
    pub position: i64,
    pub name: Stage,
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
         state, failed_stage, message, image, tags, digest, started_at, finished_at, images,
         replica"
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
    pub kind: RunKind,
    pub trigger: Trigger,
    pub requested: Option<String>,
    pub commit: Option<String>,
    /// The commit's first line.
    pub commit_message: Option<String>,
    pub author: Option<String>,
    pub state: RunState,
    pub failed_stage: Option<Stage>,
    pub message: Option<String>,
    pub image: Option<String>,
    pub tags: Vec<String>,
    pub digest: Option<String>,
    /// Every image the run built or rolled out, name → `repository@digest` (empty when
    /// it has one, or was stored before runs kept several).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub images: BTreeMap<String, String>,
    pub started_at: i64,
    pub finished_at: Option<i64>,
    pub stages: Vec<StageRecord>,
    /// The `gantry serve` replica that took the run from the queue (none for a run a
    /// command did in the foreground).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replica: Option<String>,
}

#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct StageRecord {
    pub name: Stage,
    pub state: Outcome,
    pub started_at: i64,
    pub duration_ms: i64,
    pub message: Option<String>,
}

impl Store {
    /// Records a new run as running and gives it the pipeline's next number.
    pub async fn start_run(
        &self,
        pipeline: &str,
        kind: RunKind,
        trigger: &Trigger,
        requested: Option<&str>,
    ) -> Result<RunId, StoreError> {
        let mut connection = self.pool.acquire().await?;
        let new = NewRun {
            pipeline,
            kind,
            trigger,
            requested,
            state: RunState::Running,
        };
        Ok(insert_run(&mut connection, &new).await?)
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
                    "UPDATE runs SET commit_sha = $1, commit_message = $2, commit_author = $3
                     WHERE id = $4",
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
                    "UPDATE runs SET commit_sha = $1,
                       commit_message = (SELECT commit_message FROM runs AS built
                                         WHERE built.pipeline = runs.pipeline AND built.commit_sha = $1
                                           AND built.commit_message IS NOT NULL
                                         ORDER BY built.id DESC LIMIT 1),
                       commit_author = (SELECT commit_author FROM runs AS built
                                        WHERE built.pipeline = runs.pipeline AND built.commit_sha = $1
                                          AND built.commit_author IS NOT NULL
                                        ORDER BY built.id DESC LIMIT 1)
                     WHERE id = $2",
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
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(run.id)
        .bind(stage.position)
        .bind(stage.name.as_str())
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
                images,
            } => sqlx::query(
                "UPDATE runs SET state = 'succeeded', image = $1, tags = $2, digest = $3, images = $4,
                                 finished_at = $5
                 WHERE id = $6",
            )
            .bind(image)
            .bind(serde_json::to_string(tags).unwrap_or_default())
            .bind(digest)
            .bind(serde_json::to_string(images).unwrap_or_default()),
            RunResult::Deployed {
                image,
                digest,
                images,
            } => sqlx::query(
                "UPDATE runs SET state = 'succeeded', image = $1, tags = COALESCE(tags, $2),
                                 digest = $3, images = $4, finished_at = $5
                 WHERE id = $6",
            )
            .bind(image)
            .bind("[]")
            .bind(digest)
            .bind(serde_json::to_string(images).unwrap_or_default()),
            RunResult::Failed { stage, message } => sqlx::query(
                "UPDATE runs SET state = 'failed', failed_stage = $1, message = $2, finished_at = $5
                 WHERE id = $6",
            )
            .bind(stage.as_str())
            .bind(message)
            .bind(Option::<String>::None)
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
            images,
        } = result
        {
            sqlx::query(
                "UPDATE runs SET image = $1, tags = $2, digest = $3, images = $4 WHERE id = $5",
            )
            .bind(image)
            .bind(serde_json::to_string(tags).unwrap_or_default())
            .bind(digest)
            .bind(serde_json::to_string(images).unwrap_or_default())
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
        state: Option<RunState>,
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
                 WHERE pipeline = $1 AND ($2 IS NULL OR state = $2)
                   AND id < COALESCE($3, 9223372036854775807)
                 ORDER BY id DESC LIMIT $4"
            )),
            None => sqlx::query(concat!(
                "SELECT ",
                run_columns!(),
                " FROM runs
                 WHERE $1 IS NULL AND ($2 IS NULL OR state = $2)
                   AND id < COALESCE($3, 9223372036854775807)
                 ORDER BY id DESC LIMIT $4"
            )),
        };
        let rows = query
            .bind(pipeline)
            .bind(state.map(RunState::as_str))
            .bind(before)
            .bind(limit)
            .fetch_all(&self.pool)
            .await?;
        self.with_stages(rows).await
    }

    /// Run rows made records, each with its stages.
    async fn with_stages(
        &self,
        rows: Vec<sqlx::any::AnyRow>,
    ) -> Result<Vec<RunRecord>, StoreError> {
        let ids: Vec<i64> = rows.iter().map(|row| row.get("id")).collect();
        let mut stages = self.stages_of(&ids).await?;
        let mut runs = Vec::with_capacity(rows.len());
        for row in rows {
            let id: i64 = row.get("id");
            let stages = stages.remove(&id).unwrap_or_default();
            let tags: Option<String> = row.get("tags");
            runs.push(RunRecord {
                id,
                pipeline: row.get("pipeline"),
                number: row.get("number"),
                kind: word(&row, "kind")?,
                trigger: word(&row, "trigger")?,
                requested: row.get("requested"),
                commit: row.get("commit_sha"),
                commit_message: row.get("commit_message"),
                author: row.get("commit_author"),
                state: word(&row, "state")?,
                failed_stage: row
                    .get::<Option<String>, _>("failed_stage")
                    .map(|stage| stage.parse())
                    .transpose()
                    .map_err(StoreError::Unreadable)?,
                message: row.get("message"),
                image: row.get("image"),
                tags: tags
                    .and_then(|text| serde_json::from_str(&text).ok())
                    .unwrap_or_default(),
                digest: row.get("digest"),
                images: super::deployments::images_of(&row),
                started_at: row.get("started_at"),
                finished_at: row.get("finished_at"),
                stages,
                replica: row.get("replica"),
            });
        }
        Ok(runs)
    }

    /// The stages of these runs, each run's in order: one query for `STAGES_AT_ONCE`
    /// runs, not one a run (a list of 10,000 runs was 10,000 queries).
    async fn stages_of(&self, ids: &[i64]) -> Result<HashMap<i64, Vec<StageRecord>>, StoreError> {
        let mut stages: HashMap<i64, Vec<StageRecord>> = HashMap::new();
        for chunk in ids.chunks(STAGES_AT_ONCE) {
            // Only placeholders go into the text (one row of them: `($1, $2, ...)`);
            // every id is bound.
            let sql = format!(
                "SELECT run_id, name, state, started_at, duration_ms, message FROM stages
                 WHERE run_id IN {} ORDER BY run_id, position",
                super::batch::placeholders(1, chunk.len())
            );
            let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
            for id in chunk {
                query = query.bind(*id);
            }
            for stage in query.fetch_all(&self.pool).await? {
                stages
                    .entry(stage.get("run_id"))
                    .or_default()
                    .push(StageRecord {
                        name: word(&stage, "name")?,
                        state: word(&stage, "state")?,
                        started_at: stage.get("started_at"),
                        duration_ms: stage.get("duration_ms"),
                        message: stage.get("message"),
                    });
            }
        }
        Ok(stages)
    }

    /// Ends a run that did no work, with a state (`held`, `skipped`) and why.
    pub async fn end_run(
        &self,
        run: RunId,
        state: RunState,
        message: &str,
    ) -> Result<(), StoreError> {
        sqlx::query("UPDATE runs SET state = $1, message = $2, finished_at = $3 WHERE id = $4")
            .bind(state.as_str())
            .bind(message)
            .bind(now_millis())
            .bind(run.id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// When the last run that did any work (of one pipeline, or of any) ended; runs
    /// that were coalesced, skipped or held did nothing to the instances.
    pub async fn last_finished_at(
        &self,
        pipeline: Option<&str>,
    ) -> Result<Option<i64>, StoreError> {
        Ok(sqlx::query_scalar(
            "SELECT finished_at FROM runs
             WHERE finished_at IS NOT NULL AND ($1 IS NULL OR pipeline = $1)
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
            " FROM runs WHERE id = $1"
        ))
        .bind(id)
        .fetch_all(&self.pool)
        .await?;
        Ok(self.with_stages(rows).await?.into_iter().next())
    }

    /// The row id of a pipeline's run number.
    pub async fn run_id(&self, pipeline: &str, number: i64) -> Result<Option<i64>, StoreError> {
        Ok(
            sqlx::query_scalar("SELECT id FROM runs WHERE pipeline = $1 AND number = $2")
                .bind(pipeline)
                .bind(number)
                .fetch_optional(&self.pool)
                .await?,
        )
    }

    /// Deletes all but the newest `keep` finished runs of a pipeline (stages and logs go with them).
    ///
    /// The newest run beyond `keep` is found by a read first (along the pipeline's id
    /// index, without the write lock), and the delete is a range below it: a run's end
    /// prunes while intake writes, and a delete that scanned the pipeline's runs held
    /// SQLite's one write lock for as long as the scan, even with nothing to delete.
    pub async fn prune_runs(&self, pipeline: &str, keep: u32) -> Result<u64, StoreError> {
        let newest_beyond: Option<i64> = sqlx::query_scalar(
            "SELECT id FROM runs WHERE pipeline = $1 ORDER BY id DESC LIMIT 1 OFFSET $2",
        )
        .bind(pipeline)
        .bind(i64::from(keep))
        .fetch_optional(&self.pool)
        .await?;
        let Some(newest_beyond) = newest_beyond else {
            return Ok(0);
        };
        // Runs are only ever added with higher ids, so none below it joined the newest.
        let result = sqlx::query(
            "DELETE FROM runs WHERE pipeline = $1 AND id <= $2 AND state NOT IN ('queued', 'running')",
        )
        .bind(pipeline)
        .bind(newest_beyond)
        .execute(&self.pool)
        .await?;
        Ok(result.rows_affected())
    }

    /// Marks a queued or running run as started now (a queued run taken by the CLI).
    pub async fn begin_run(&self, run: RunId) -> Result<(), StoreError> {
        sqlx::query("UPDATE runs SET state = 'running', started_at = $1 WHERE id = $2")
            .bind(now_millis())
            .bind(run.id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}

/// A run about to be recorded.
pub(super) struct NewRun<'a> {
    pub pipeline: &'a str,
    pub kind: RunKind,
    pub trigger: &'a Trigger,
    pub requested: Option<&'a str>,
    /// `running` for a run that starts now, `queued` for one that waits.
    pub state: RunState,
}

/// Records a run and gives it the pipeline's next number, in one statement, so two
/// processes never share a number.
pub(super) async fn insert_run(
    connection: &mut sqlx::AnyConnection,
    run: &NewRun<'_>,
) -> Result<RunId, sqlx::Error> {
    let row = sqlx::query(
        "INSERT INTO runs (pipeline, number, kind, trigger, requested, state, started_at)
         VALUES ($1, (SELECT COALESCE(MAX(number), 0) + 1 FROM runs WHERE pipeline = $1),
                 $2, $3, $4, $5, $6)
         RETURNING id, number",
    )
    .bind(run.pipeline)
    .bind(run.kind.as_str())
    .bind(run.trigger.to_string())
    .bind(run.requested)
    .bind(run.state.as_str())
    .bind(now_millis())
    .fetch_one(&mut *connection)
    .await?;
    Ok(RunId {
        id: row.get("id"),
        number: row.get("number"),
    })
}
