//! Checkpoints of SQLite's write-ahead log, off the commit path. Every commit syncs
//! the log (`synchronous = FULL`, `store::connect`); a checkpoint copies the log back
//! into the database file and syncs that. Left to SQLite, it runs inside whichever
//! commit first finds the log past its threshold, and that commit (a webhook's 202,
//! say) waits for the copy and the sync. The daemon checkpoints on its own every
//! `CHECKPOINT_EVERY` instead, beside the writers (a passive checkpoint blocks no
//! one), so commits only append to the log; `AUTO_CHECKPOINT_PAGES` stays as SQLite's
//! own fallback, for the CLI alone and for a flood that outruns the daemon's
//! checkpoints. (PostgreSQL checkpoints itself.)

use std::time::Duration;

use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;

use super::{DATABASE_FILE, Location, Store};

/// How often the daemon checkpoints the log.
const CHECKPOINT_EVERY: Duration = Duration::from_millis(500);
/// The log's length, in pages, at which a commit checkpoints by itself (SQLite's
/// default is 1,000; 4,000 pages of 4 KiB is 16 MiB).
pub(super) const AUTO_CHECKPOINT_PAGES: u32 = 4000;

impl Store {
    /// Checkpoints the write-ahead log of the SQLite state at `location` every
    /// `CHECKPOINT_EVERY` in which it changed, until `shutdown`; on PostgreSQL, returns
    /// at once. An idle daemon only looks at the log file's time.
    pub async fn checkpoint_until(self, location: Location, shutdown: CancellationToken) {
        let Location::Directory(dir) = location else {
            return;
        };
        let log_file = dir.join(format!("{DATABASE_FILE}-wal"));
        let changed_at = || {
            std::fs::metadata(&log_file)
                .and_then(|metadata| metadata.modified())
                .ok()
        };
        let mut checkpointed = None;
        let mut tick = tokio::time::interval(CHECKPOINT_EVERY);
        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tick.tick() => {}
            }
            let seen = changed_at();
            if seen.is_none() || seen == checkpointed {
                continue;
            }
            match self.checkpoint().await {
                Ok(_) => checkpointed = seen,
                Err(error) => tracing::debug!(%error, "checkpointing the state's write-ahead log"),
            }
        }
    }

    /// One passive checkpoint: what the log holds that no reader still needs is copied
    /// into the database file. Returns the log's frames and how many are copied.
    pub async fn checkpoint(&self) -> Result<(i64, i64), sqlx::Error> {
        use sqlx::Row;
        let row = sqlx::query("PRAGMA wal_checkpoint(PASSIVE)")
            .fetch_one(&self.pool)
            .await?;
        Ok((row.try_get(1)?, row.try_get(2)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::run::RunKind;
    use crate::store::Backend;

    /// With the daemon's checkpoints, commits leave the log to them; a checkpoint then
    /// copies every frame back.
    #[tokio::test]
    async fn a_checkpoint_copies_every_committed_frame_back_into_the_database() {
        let (_state, store) = Store::temporary_on(Backend::Sqlite).await;
        for _ in 0..20 {
            store.manual_run("p", RunKind::Build).await;
        }
        let threshold: i64 = sqlx::query_scalar("PRAGMA wal_autocheckpoint")
            .fetch_one(&store.pool)
            .await
            .unwrap();
        assert_eq!(threshold, i64::from(AUTO_CHECKPOINT_PAGES));
        let (frames, copied) = store.checkpoint().await.unwrap();
        assert!(frames > 0, "the runs are in the log");
        assert_eq!(copied, frames);
    }

    /// A 202 means stored on disk: every connection of the SQLite state, intake's and
    /// the timers' too, syncs the log at each commit (`synchronous` 2 is FULL).
    #[tokio::test]
    async fn every_connection_syncs_the_log_at_each_commit() {
        let (_state, store) = Store::temporary_on(Backend::Sqlite).await;
        let timers = store.on_timers();
        for pool in [&store.pool, &store.intake_pool, &timers.pool] {
            let level: i64 = sqlx::query_scalar("PRAGMA synchronous")
                .fetch_one(pool)
                .await
                .unwrap();
            assert_eq!(level, 2, "synchronous = FULL");
        }
    }
}
