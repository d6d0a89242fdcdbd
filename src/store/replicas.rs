//! `gantry serve` replicas sharing one state database: each renews a row while it
//! lives, and a run a replica takes from the queue names it. A run whose replica's row
//! expired was interrupted (the process died, or its machine did) and is recovered by
//! any live replica.

use std::time::Duration;

use sqlx::Row;

use super::{Store, StoreError, now_millis};

/// Which runs left `running` are recovered.
#[derive(Debug, Clone, Copy)]
pub enum Interrupted<'a> {
    /// Every run a daemon took: a daemon starting on its own SQLite state, where it is
    /// the only one.
    All,
    /// The runs this replica took: at its shutdown.
    Of(&'a str),
    /// The runs of replicas that stopped renewing their row (or from before replicas).
    OfDeadReplicas,
}

impl Store {
    /// Records that `replica` lives for `ttl` more.
    pub async fn renew_replica(&self, replica: &str, ttl: Duration) -> Result<(), StoreError> {
        let now = now_millis();
        let result = sqlx::query(
            "INSERT INTO replicas (id, started_at, expires_at) VALUES ($1, $2, $3)
             ON CONFLICT (id) DO UPDATE SET expires_at = excluded.expires_at",
        )
        .bind(replica)
        .bind(now)
        .bind(now + ttl.as_millis() as i64)
        .execute(&self.pool)
        .await;
        self.wrote(result.map(|_| ()).map_err(StoreError::from))
    }

    /// Forgets `replica` (it stops cleanly); rows of replicas long dead go too.
    pub async fn remove_replica(&self, replica: &str) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM replicas WHERE id = $1 OR expires_at < $2")
            .bind(replica)
            .bind(now_millis() - Duration::from_secs(24 * 3600).as_millis() as i64)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// The replicas alive now, by id.
    pub async fn live_replicas(&self) -> Result<Vec<String>, StoreError> {
        let rows = sqlx::query("SELECT id FROM replicas WHERE expires_at >= $1 ORDER BY id")
            .bind(now_millis())
            .fetch_all(&self.pool)
            .await?;
        Ok(rows.iter().map(|row| row.get("id")).collect())
    }
}
