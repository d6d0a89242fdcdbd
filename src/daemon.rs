//! `gantry serve` as a library entry point: the scheduler, the poller, hot reload, the
//! status watcher and the HTTP server, started together on one listener and stopped
//! together by one token (mini-redis's `server::run(listener, shutdown)`).
//!
//! Shutdown in three parts: the caller detects the signal and cancels `shutdown`;
//! every task gets a child token; `run` waits for them, the HTTP server first (no new
//! work comes in), then the scheduler, which gives running runs
//! `engine::scheduler::SHUTDOWN_GRACE` to finish.

use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::engine::metrics::Metrics;
use crate::engine::poller::Poller;
use crate::engine::reload::{self, LiveConfig};
use crate::engine::replica::Replica;
use crate::engine::scheduler::{self, Scheduler};
use crate::engine::status::{StatusSnapshot, StatusWatcher};
use crate::server::{self, AppState, Shared};
use crate::store::{Store, StoreError};

/// How long closing the state store may take at the end of a stop.
const CLOSE_WITHIN: std::time::Duration = std::time::Duration::from_secs(2);

/// Serves `config` on `listener` until `shutdown` is cancelled, then stops everything
/// it started and closes the state store.
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> Result<(), StoreError> {
    for warning in &config.warnings {
        tracing::warn!("{warning}");
    }
    let location = crate::store::Location::of(&config);
    let store = Store::open(&location).await?;
    let replica = Replica::join(&store).await?;
    tracing::info!(replica = replica.id, backend = ?store.backend(), "state store open");
    if let Ok(address) = listener.local_addr() {
        tracing::info!(%address, "serving");
    }
    let dir = config.dir.clone();
    let (live_sender, live) = watch::channel(LiveConfig {
        config: Arc::new(config),
        errors: Vec::new(),
    });
    let (events_sender, events) = scheduler::events();
    let metrics = Metrics::new();
    let status_refresh = Arc::new(tokio::sync::Notify::new());

    // Work on a timer goes through a connection of its own (`Store::on_timers`).
    let timed = store.on_timers();
    let scheduler = tokio::spawn(
        Scheduler {
            config: live.clone(),
            store: store.clone(),
            timed: timed.clone(),
            metrics: metrics.clone(),
            events,
            sender: events_sender.clone(),
            status_refresh: status_refresh.clone(),
            replica: replica.clone(),
        }
        .run(shutdown.child_token()),
    );
    // Checkpoints follow the writes, beside them on the shared pool.
    let checkpoints = tokio::spawn(
        store
            .clone()
            .checkpoint_until(location, shutdown.child_token()),
    );
    let keep_alive = tokio::spawn(
        replica
            .clone()
            .keep_alive(timed.clone(), shutdown.child_token()),
    );
    let poller = tokio::spawn(
        Poller {
            config: live.clone(),
            store: store.clone(),
            sender: events_sender.clone(),
            replica: replica.clone(),
        }
        .run(shutdown.child_token()),
    );
    // Watching starts here, before anything is served: an edit made as soon as the
    // daemon answers is seen.
    let watcher = match reload::watch_config(dir) {
        Ok(watch) => Some(tokio::spawn(watch.run(live_sender, shutdown.child_token()))),
        Err(error) => {
            tracing::warn!(%error, "watching the config directory failed: edits are not reloaded");
            None
        }
    };
    let (status_sender, status) = watch::channel(Arc::new(StatusSnapshot::default()));
    let status_watcher = tokio::spawn(
        StatusWatcher {
            config: live.clone(),
            store: timed,
            snapshot: status_sender,
            refresh: status_refresh,
        }
        .run(shutdown.child_token()),
    );
    let http = tokio::spawn(server::serve(
        listener,
        AppState::new(Shared {
            config: live,
            store: store.clone(),
            events: events_sender,
            metrics,
            status,
            failed_auth: Arc::default(),
        }),
        shutdown.child_token(),
    ));

    shutdown.cancelled().await;
    // Stop accepting first, then let the scheduler wind down its runs.
    if let Ok(Err(error)) = http.await {
        tracing::warn!(%error, "the HTTP server failed");
    }
    let _ = poller.await;
    let _ = status_watcher.await;
    let _ = scheduler.await;
    let _ = keep_alive.await;
    let _ = checkpoints.await;
    if store.backend() == crate::store::Backend::Postgres
        && let Err(error) = store.remove_replica(&replica.id).await
    {
        tracing::warn!(%error, "removing this replica's row");
    }
    if let Some(watcher) = watcher {
        let _ = watcher.await;
    }
    // Closing waits for every connection to come back; one an abandoned run left
    // waiting for a lock another process holds would hold the exit until its busy
    // timeout. Such a connection is only waiting, not writing: the process may end.
    if tokio::time::timeout(CLOSE_WITHIN, store.close())
        .await
        .is_err()
    {
        tracing::warn!("the state store's connections did not all close; stopping anyway");
    }
    Ok(())
}
