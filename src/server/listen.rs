//! The daemon's HTTP connections: accepted one task each and served by hyper's HTTP/1
//! server, with deadlines for what a client sends (`server.read_timeout`): the header
//! fields here, the body in `guard::read_body`. A client that trickles its request
//! (slowloris) is cut off instead of holding a connection and a task for ever.
//!
//! On shutdown nothing new is accepted; requests in flight are answered first, for as
//! long as runs get to finish.

use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

/// How long the requests in flight at shutdown may take to finish: as long as the runs
/// (a followed log ends with its run), and the time to record them.
const FINISH_WITHIN: Duration =
    Duration::from_secs(crate::engine::scheduler::SHUTDOWN_GRACE.as_secs() + 5);

/// How long accepting waits after it failed (out of file descriptors, say) before
/// it tries again.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// Serves `app` on `listener` until `shutdown`, then finishes the requests in flight.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    read_timeout: Duration,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let graceful = GracefulShutdown::new();
    loop {
        let (stream, peer) = tokio::select! {
            () = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    tracing::warn!(%error, "accepting a connection");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                    continue;
                }
            },
        };
        // Answers are written whole; waiting to fill a packet only delays them.
        let _ = stream.set_nodelay(true);
        let service = app
            .clone()
            .map_request(move |mut request: axum::http::Request<Incoming>| {
                request
                    .extensions_mut()
                    .insert(ConnectInfo::<SocketAddr>(peer));
                request
            });
        let connection = http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(read_timeout)
            .serve_connection(TokioIo::new(stream), TowerToHyperService::new(service));
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(%peer, %error, "connection ended");
            }
        });
    }
    drop(listener);
    // A log followed live (server-sent events) ends with its run; a run the store can
    // no longer record as ended would hold the stop for ever.
    if tokio::time::timeout(FINISH_WITHIN, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("connections still open after the grace are closed");
    }
    Ok(())
}
