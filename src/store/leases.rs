//! Pins (a pipeline held after a rollback) and deploy leases (one deploy per pipeline
//! across processes).

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Serialize;
use sqlx::Row;
use sqlx::any::AnyRow;

use super::{Store, StoreError, now_millis};

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
    pub async fn pin(&self, pipeline: &str, digest: &str, reason: &str) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO pins (pipeline, digest, reason, pinned_at) VALUES ($1, $2, $3, $4)
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
        let result = sqlx::query("DELETE FROM pins WHERE pipeline = $1")
            .bind(pipeline)
            .execute(&self.pool)
            .await?;
        Ok(result.rows_affected() > 0)
    }

    pub async fn pin_of(&self, pipeline: &str) -> Result<Option<Pin>, StoreError> {
        let row =
            sqlx::query("SELECT pipeline, digest, reason, pinned_at FROM pins WHERE pipeline = $1")
                .bind(pipeline)
                .fetch_optional(&self.pool)
                .await?;
        Ok(row.as_ref().map(pin))
    }

    /// Every pin, by pipeline.
    pub async fn pins(&self) -> Result<BTreeMap<String, Pin>, StoreError> {
        let rows = sqlx::query("SELECT pipeline, digest, reason, pinned_at FROM pins")
            .fetch_all(&self.pool)
            .await?;
        Ok(rows
            .iter()
            .map(|row| (row.get("pipeline"), pin(row)))
            .collect())
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
            "INSERT INTO leases (pipeline, owner, acquired_at, expires_at) VALUES ($1, $2, $3, $4)
             ON CONFLICT (pipeline) DO UPDATE SET
                 owner = excluded.owner, acquired_at = excluded.acquired_at,
                 expires_at = excluded.expires_at
             WHERE leases.expires_at < $3 OR leases.owner = $2",
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
            sqlx::query("SELECT owner, acquired_at, expires_at FROM leases WHERE pipeline = $1")
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
            |row| lease_holder(&row),
        )))
    }

    /// Who holds the pipeline's deploy lease now, if anyone (expired leases are nobody's).
    pub async fn lease_of(&self, pipeline: &str) -> Result<Option<LeaseHolder>, StoreError> {
        let row = sqlx::query(
            "SELECT owner, acquired_at, expires_at FROM leases WHERE pipeline = $1 AND expires_at >= $2",
        )
        .bind(pipeline)
        .bind(now_millis())
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.as_ref().map(lease_holder))
    }

    /// Every live deploy lease, by pipeline.
    pub async fn leases(&self) -> Result<BTreeMap<String, LeaseHolder>, StoreError> {
        let rows = sqlx::query(
            "SELECT pipeline, owner, acquired_at, expires_at FROM leases WHERE expires_at >= $1",
        )
        .bind(now_millis())
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .iter()
            .map(|row| (row.get("pipeline"), lease_holder(row)))
            .collect())
    }

    /// Pushes the lease's expiry out by `ttl`; false when `owner` no longer holds it.
    pub async fn renew_lease(
        &self,
        pipeline: &str,
        owner: &str,
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        let result =
            sqlx::query("UPDATE leases SET expires_at = $1 WHERE pipeline = $2 AND owner = $3")
                .bind(now_millis() + ttl.as_millis() as i64)
                .bind(pipeline)
                .bind(owner)
                .execute(&self.pool)
                .await?;
        Ok(result.rows_affected() > 0)
    }

    pub async fn release_lease(&self, pipeline: &str, owner: &str) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM leases WHERE pipeline = $1 AND owner = $2")
            .bind(pipeline)
            .bind(owner)
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}

fn pin(row: &AnyRow) -> Pin {
    Pin {
        pipeline: row.get("pipeline"),
        digest: row.get("digest"),
        reason: row.get("reason"),
        pinned_at: row.get("pinned_at"),
    }
}

fn lease_holder(row: &AnyRow) -> LeaseHolder {
    LeaseHolder {
        owner: row.get("owner"),
        acquired_at: row.get("acquired_at"),
        expires_at: row.get("expires_at"),
    }
}
