//! The state store: `state.db` in the state directory, SQLite through sqlx.
//!
//! All SQL of gantry lives here, behind methods named for what they record.
//! Migrations are embedded in the binary and run on open, so a new gantry
//! upgrades an old state directory by itself. Queries are checked at run time,
//! not at compile time, so building gantry needs no database; they stay in
//! plain SQL that Postgres also accepts, to keep that door open.

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions};
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

/// What a finished build run produced or why it failed.
#[derive(Debug, Clone)]
pub enum RunResult {
    Succeeded {
        image: String,
        tags: Vec<String>,
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

/// One stored run, as listed.
#[derive(Debug, Clone, Serialize)]
pub struct RunRecord {
    pub id: i64,
    pub pipeline: String,
    pub number: i64,
    pub kind: String,
    pub trigger: String,
    pub requested: Option<String>,
    pub commit: Option<String>,
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

#[derive(Debug, Clone, Serialize)]
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
        Ok(Store { pool })
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

    pub async fn set_commit(&self, run: RunId, commit: &str) -> Result<(), StoreError> {
        sqlx::query("UPDATE runs SET commit_sha = ?1 WHERE id = ?2")
            .bind(commit)
            .bind(run.id)
            .execute(&self.pool)
            .await?;
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

    /// The newest runs, of one pipeline or all, newest first, with their stages.
    pub async fn runs(
        &self,
        pipeline: Option<&str>,
        limit: i64,
    ) -> Result<Vec<RunRecord>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, pipeline, number, kind, trigger, requested, commit_sha, state, failed_stage,
                    message, image, tags, digest, started_at, finished_at
             FROM runs WHERE (?1 IS NULL OR pipeline = ?1)
             ORDER BY id DESC LIMIT ?2",
        )
        .bind(pipeline)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
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

        store.set_commit(first, "abc").await.unwrap();
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
}
