//! HTTP: forge webhooks at `POST /hooks/PIPELINE` and `GET /healthz`.
//!
//! A handler reads the raw body (up to `server.max_body`), verifies it the forge's
//! way, and answers only after the trigger is stored: `202` with the run's id once
//! the queued run is committed, so an answered delivery is never lost. Handlers
//! never call Docker or git; the scheduler does the work. 4xx answers say why; a
//! 5xx answer says nothing of the cause, which goes to the log.

mod access;
pub mod api;
mod body;
mod dashboard;
pub mod guard;
mod hooks;
mod listen;

#[cfg(test)]
mod fuzz_tests;
#[cfg(test)]
mod tests;

use axum::extract::{DefaultBodyLimit, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Router, middleware};
use serde_json::json;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use crate::engine::intake::IntakeError;
use crate::engine::metrics::Metrics;
use crate::engine::reload::LiveConfig;
use crate::engine::scheduler::Event;
use crate::store::{Store, StoreError};

/// What every handler shares, behind one reference: axum clones the state for each
/// extractor and layer of every request, and a clone of the parts one by one was a
/// dozen atomic counts shared between the cores (1.4 % of the daemon's CPU in a flood
/// of webhooks).
#[derive(Clone)]
pub struct AppState(std::sync::Arc<Shared>);

impl AppState {
    pub fn new(shared: Shared) -> AppState {
        AppState(std::sync::Arc::new(shared))
    }
}

impl std::ops::Deref for AppState {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}

/// The parts of `AppState`.
pub struct Shared {
    pub config: watch::Receiver<LiveConfig>,
    pub store: Store,
    /// Tells the scheduler a run was queued; when full, its periodic scan finds it.
    pub events: mpsc::Sender<Event>,
    pub metrics: Metrics,
    /// The latest reading of every instance, kept fresh by `engine::status::StatusWatcher`.
    pub status: watch::Receiver<std::sync::Arc<crate::engine::status::StatusSnapshot>>,
    /// Failed logins and bearer tokens per client address (`guard`).
    pub failed_auth: std::sync::Arc<guard::FailedAuth>,
}

/// An HTTP answer: a status and a JSON body. 5xx bodies never carry the cause.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            message: message.into(),
        }
    }

    pub fn internal(error: impl std::fmt::Display) -> ApiError {
        tracing::error!(%error, "request failed");
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal error")
    }

    /// A store error: 503 with the reason when the store cannot write now (the request
    /// may be sent again later and nothing was recorded), else an internal error.
    pub fn store(error: StoreError) -> ApiError {
        match error.unwritable() {
            Some(reason) => {
                tracing::error!(%error, "the state store cannot write");
                ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!("{reason}; nothing was recorded, try again later"),
                )
            }
            None => ApiError::internal(error),
        }
    }

    /// `404`: the configuration has no pipeline `name`.
    pub fn no_pipeline(name: &str) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, format!("no pipeline `{name}`"))
    }

    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// What the answer says (for a 5xx, nothing of the cause).
    pub fn message(&self) -> &str {
        &self.message
    }
}

/// A request the intake refused: what it names is not queued (400), or the store failed.
impl From<IntakeError> for ApiError {
    fn from(error: IntakeError) -> ApiError {
        match error {
            IntakeError::Invalid(message) => ApiError::new(StatusCode::BAD_REQUEST, message),
            IntakeError::Store(error) => ApiError::store(error),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, axum::Json(json!({ "error": self.message }))).into_response()
    }
}

/// The routes, with the webhook body limit from the config the server starts with.
pub fn router(state: AppState) -> Router {
    let (max_body, read_timeout) = {
        let server = &state.config.borrow().config.server;
        (server.max_body as usize, server.read_timeout)
    };
    let limits = body::BodyLimits {
        max_body,
        read_timeout,
    };
    // Machines read JSON, errors included; people read pages, framed by nobody.
    // Bodies are read by the routes that take them, after the guard on guessing: a
    // request to no route, or from an address that guessed too often, is answered
    // without waiting for its body.
    let read_body = middleware::from_fn_with_state(limits, body::read_body);
    let machines = Router::new()
        .route("/hooks/{pipeline}", post(hooks::hook))
        .merge(api::routes())
        .layer(read_body.clone())
        .layer(middleware::from_fn(guard::json_errors));
    let pages = dashboard::routes()
        .layer(read_body)
        .layer(middleware::from_fn(guard::page_headers));
    Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .merge(machines)
        .merge(pages)
        .fallback(guard::not_found)
        .layer(DefaultBodyLimit::max(max_body))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            guard::limit_guessing,
        ))
        .layer(middleware::from_fn(guard::limit_headers))
        .with_state(state)
}

/// Serves until `shutdown`; in-flight requests are finished first.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: AppState,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let read_timeout = state.config.borrow().config.server.read_timeout;
    listen::serve(listener, router(state), read_timeout, shutdown).await
}

/// The daemon's health: the config's state, and whether the store takes writes. A
/// store that cannot write makes it `503`, so a load balancer sends webhooks elsewhere.
async fn healthz(State(state): State<AppState>) -> Response {
    let live = state.config.borrow().clone();
    let store_failure = state.store.write_failure();
    let status = match (store_failure, live.errors.is_empty()) {
        (Some(_), _) => "store_unwritable",
        (None, true) => "ok",
        (None, false) => "config_errors",
    };
    let body = json!({
        "status": status,
        "store": store_failure.unwrap_or("ok"),
        "pipelines": live.config.pipelines.keys().collect::<Vec<_>>(),
        "config_errors": live.errors,
    });
    let code = match store_failure {
        Some(_) => StatusCode::SERVICE_UNAVAILABLE,
        None => StatusCode::OK,
    };
    (code, axum::Json(body)).into_response()
}

/// Prometheus text format; open like `/healthz` (it holds pipeline names and counts only).
async fn metrics(State(state): State<AppState>) -> Result<Response, ApiError> {
    let text = state
        .metrics
        .render(&state.store)
        .await
        .map_err(ApiError::internal)?;
    Ok((
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        text,
    )
        .into_response())
}
