//! The deploy lease: one deploy per pipeline at a time, across processes. A deploy
//! takes it (or waits, or refuses naming the holder), renews it while it works, and
//! stops when it is lost; a holder that dies stops renewing and loses it after
//! `LEASE_TTL`.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::{Failure, Progress};
use crate::run::Stage;
use crate::store::{LeaseHolder, Store, now_millis};

/// How long a deploy lease lasts without renewal: the longest a crashed deploy blocks the next.
pub const LEASE_TTL: Duration = Duration::from_secs(15);
/// How often a running deploy renews its lease.
const LEASE_RENEW_EVERY: Duration = Duration::from_secs(5);
/// How often `--wait` asks for a held lease again.
const LEASE_POLL: Duration = Duration::from_millis(500);

/// A deploy lease this process took, renewed in the background until `release`.
pub(super) struct HeldLease {
    store: Store,
    pipeline: String,
    owner: String,
    lost: Arc<Mutex<Option<String>>>,
    renewal: tokio::task::JoinHandle<()>,
}

impl HeldLease {
    /// Starts renewing a lease `acquire_lease` gave `owner`.
    pub(super) fn keep(store: &Store, pipeline: &str, owner: &str) -> HeldLease {
        let lost: Arc<Mutex<Option<String>>> = Arc::default();
        let renewal = tokio::spawn(keep_lease(
            store.clone(),
            pipeline.to_string(),
            owner.to_string(),
            lost.clone(),
        ));
        HeldLease {
            store: store.clone(),
            pipeline: pipeline.to_string(),
            owner: owner.to_string(),
            lost,
            renewal,
        }
    }

    /// Why the lease was lost (taken over, or not renewed before it expired), once it was.
    pub(super) fn lost(&self) -> Option<String> {
        self.lost
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    /// Stops renewing and gives the lease back.
    pub(super) async fn release(self) -> Result<(), crate::store::StoreError> {
        self.renewal.abort();
        self.store.release_lease(&self.pipeline, &self.owner).await
    }
}

/// Renews the deploy lease every `LEASE_RENEW_EVERY` until it is lost; then says why in
/// `lost`. A failed renewal is tried again while the lease has time left.
async fn keep_lease(
    store: Store,
    pipeline: String,
    owner: String,
    lost: Arc<Mutex<Option<String>>>,
) {
    let mut renewed = Instant::now();
    loop {
        tokio::time::sleep(LEASE_RENEW_EVERY).await;
        let reason = match store.renew_lease(&pipeline, &owner, LEASE_TTL).await {
            Ok(true) => {
                renewed = Instant::now();
                continue;
            }
            Ok(false) => {
                let holder = store
                    .lease_of(&pipeline)
                    .await
                    .ok()
                    .flatten()
                    .map(|holder| format!(" (now held by {})", holder.owner))
                    .unwrap_or_default();
                format!("the deploy lease was taken over{holder}")
            }
            Err(error) if renewed.elapsed() < LEASE_TTL => {
                tracing::warn!(pipeline, %error, "renewing the deploy lease; trying again");
                continue;
            }
            Err(error) => format!("the deploy lease expired: it could not be renewed ({error})"),
        };
        tracing::error!(pipeline, reason, "deploy lease lost");
        *lost.lock().unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(reason);
        return;
    }
}

/// Who holds a lease, as other processes will see it.
pub(super) fn lease_owner(kind: crate::run::RunKind) -> String {
    lease_owner_doing(kind.as_str())
}

/// Who holds a lease for `what` (`deploy`, `task migrate`), as other processes will see it.
pub(super) fn lease_owner_doing(what: &str) -> String {
    let hostname = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|name| name.trim().to_string())
        .unwrap_or_else(|_| "this machine".to_string());
    format!(
        "gantry {what} (pid {} on {hostname}, since {})",
        std::process::id(),
        humantime::format_rfc3339_seconds(std::time::SystemTime::now())
    )
}

pub(super) async fn acquire_lease(
    store: &Store,
    pipeline: &str,
    owner: &str,
    wait: bool,
    progress: &mut dyn Progress,
) -> Result<(), Failure> {
    let mut told = false;
    loop {
        let holder = store
            .acquire_lease(pipeline, owner, LEASE_TTL)
            .await
            .map_err(|error| Failure::new(Stage::Lease, error.to_string()))?;
        let Some(holder) = holder else {
            return Ok(());
        };
        if !wait {
            return Err(Failure::new(
                Stage::Lease,
                format!(
                    "another deploy of `{pipeline}` is running: {} (hint: --wait to wait for it)",
                    describe_holder(&holder)
                ),
            ));
        }
        if !told {
            progress.line(&format!(
                "waiting for another deploy of `{pipeline}`: {}",
                describe_holder(&holder)
            ));
            told = true;
        }
        tokio::time::sleep(LEASE_POLL).await;
    }
}

fn describe_holder(holder: &LeaseHolder) -> String {
    let remaining = (holder.expires_at - now_millis()).max(0) as u64;
    format!(
        "{}; its lease expires in {} unless renewed",
        holder.owner,
        humantime::format_duration(Duration::from_secs(remaining.div_ceil(1000)))
    )
}
