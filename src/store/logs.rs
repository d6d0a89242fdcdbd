//! Run logs, line by line, so that a log can be followed while its run goes on.

use serde::Serialize;
use sqlx::Row;

use super::{Store, StoreError, now_millis};

/// One line of a run's log.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct LogLine {
    pub seq: i64,
    /// Milliseconds since the epoch.
    pub at: i64,
    pub line: String,
}

impl Store {
    /// Appends a line to a run's log (one writer per run at a time).
    pub async fn append_log(&self, run: i64, line: &str) -> Result<(), StoreError> {
        self.append_logs(run, &[line.to_string()]).await
    }

    /// Appends lines to a run's log in one transaction (one writer per run at a time).
    pub async fn append_logs(&self, run: i64, lines: &[String]) -> Result<(), StoreError> {
        let at = now_millis();
        self.transaction(async |connection| {
            for line in lines {
                sqlx::query(
                    "INSERT INTO run_logs (run_id, seq, at, line)
                     VALUES ($1, (SELECT COALESCE(MAX(seq), -1) + 1 FROM run_logs WHERE run_id = $1),
                             $2, $3)",
                )
                .bind(run)
                .bind(at)
                .bind(line)
                .execute(&mut *connection)
                .await?;
            }
            Ok(())
        })
        .await
    }

    /// The last `count` lines of a run's log, in order.
    pub async fn log_tail(&self, run: i64, count: i64) -> Result<Vec<LogLine>, StoreError> {
        let rows = sqlx::query(
            "SELECT seq, at, line FROM
               (SELECT seq, at, line FROM run_logs WHERE run_id = $1 ORDER BY seq DESC LIMIT $2)
             ORDER BY seq",
        )
        .bind(run)
        .bind(count)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.into_iter().map(log_line).collect())
    }

    /// Up to `count` of a run's log lines after `after`, for reading a log a page at a time.
    pub async fn log_page(
        &self,
        run: i64,
        after: i64,
        count: i64,
    ) -> Result<Vec<LogLine>, StoreError> {
        let rows = sqlx::query(
            "SELECT seq, at, line FROM run_logs WHERE run_id = $1 AND seq > $2
             ORDER BY seq LIMIT $3",
        )
        .bind(run)
        .bind(after)
        .bind(count)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.into_iter().map(log_line).collect())
    }

    /// A run's log lines after `after` (a sequence number; -1 for all).
    pub async fn log_lines(&self, run: i64, after: i64) -> Result<Vec<LogLine>, StoreError> {
        let rows = sqlx::query(
            "SELECT seq, at, line FROM run_logs WHERE run_id = $1 AND seq > $2 ORDER BY seq",
        )
        .bind(run)
        .bind(after)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.into_iter().map(log_line).collect())
    }
}

fn log_line(row: sqlx::any::AnyRow) -> LogLine {
    LogLine {
        seq: row.get("seq"),
        at: row.get("at"),
        line: row.get("line"),
    }
}
