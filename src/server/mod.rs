//! HTTP: forge webhooks at `POST /hooks/PIPELINE` and `GET /healthz`.
//!
//! A handler reads the raw body (up to `server.max_body`), verifies it the forge's
//! way, and answers only after the trigger is stored: `202` with the run's id once
//! the queued run is committed, so an answered delivery is never lost. Handlers
//! never call Docker or git; the scheduler does the work. 4xx answers say why; a
//! 5xx answer says nothing of the cause, which goes to the log.

pub mod api;
mod dashboard;

#[cfg(test)]
mod tests;

use std::net::SocketAddr;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use secrecy::ExposeSecret;
use serde_json::json;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use crate::engine::daemon::{Event, LiveConfig};
use crate::engine::metrics::{DeliveryLabels, Metrics};
use crate::source::webhook::{self, WebhookEvent};
use crate::store::{DeliveryAnswer, Store};

/// What every handler shares.
#[derive(Clone)]
pub struct AppState {
    pub config: watch::Receiver<LiveConfig>,
    pub store: Store,
    /// Tells the scheduler a run was queued; when full, its periodic scan finds it.
    pub events: mpsc::Sender<Event>,
    pub metrics: Metrics,
    /// The latest reading of every instance, kept fresh by `engine::status::StatusWatcher`.
    pub status: watch::Receiver<std::sync::Arc<crate::engine::status::StatusSnapshot>>,
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
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, axum::Json(json!({ "error": self.message }))).into_response()
    }
}

/// The routes, with the webhook body limit from the config the server starts with.
pub fn router(state: AppState) -> Router {
    let max_body = state.config.borrow().config.server.max_body as usize;
    Router::new()
        .route("/hooks/{pipeline}", post(hook))
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .merge(api::routes())
        .merge(dashboard::routes())
        .layer(DefaultBodyLimit::max(max_body))
        .with_state(state)
}

/// Serves until `shutdown`; in-flight requests are finished first.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: AppState,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    axum::serve(
        listener,
        router(state).into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(async move { shutdown.cancelled().await })
    .await
}

async fn healthz(State(state): State<AppState>) -> Response {
    let live = state.config.borrow().clone();
    let body = json!({
        "status": if live.errors.is_empty() { "ok" } else { "config_errors" },
        "pipelines": live.config.pipelines.keys().collect::<Vec<_>>(),
        "config_errors": live.errors,
    });
    (StatusCode::OK, axum::Json(body)).into_response()
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

fn answer(status: StatusCode, body: serde_json::Value) -> Response {
    (status, axum::Json(body)).into_response()
}

fn replay(first: DeliveryAnswer) -> Response {
    let status = StatusCode::from_u16(first.status).unwrap_or(StatusCode::ACCEPTED);
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        first.response,
    )
        .into_response()
}

/// Counts each delivery by forge and what became of it.
async fn hook(
    State(state): State<AppState>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let forge = detect_forge_name(&headers);
    let result = receive_hook(&state, name, &headers, &body).await;
    let outcome = match &result {
        Ok(response) => match response.status().as_u16() {
            200 => "ping",
            202 if response.headers().contains_key("x-gantry-queued") => "queued",
            _ => "ignored",
        },
        Err(error) => match error.status.as_u16() {
            401 => "unauthorized",
            400 => "malformed",
            403 | 404 => "refused",
            _ => "error",
        },
    };
    state
        .metrics
        .deliveries
        .get_or_create(&DeliveryLabels {
            forge: forge.to_string(),
            result: outcome.to_string(),
        })
        .inc();
    result.map(|mut response| {
        response.headers_mut().remove("x-gantry-queued");
        response
    })
}

/// The forge by its headers, for counting; `unknown` when none matches.
fn detect_forge_name(headers: &HeaderMap) -> &'static str {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|value| value.to_str().ok())
            .map(str::to_string)
    };
    webhook::receive(None, &header, None, b"")
        .map(|delivery| delivery.forge.as_str())
        .or_else(|error| match error {
            webhook::WebhookError::Malformed { forge, .. } => Ok(forge),
            _ => Err(()),
        })
        .unwrap_or("unknown")
}

async fn receive_hook(
    state: &AppState,
    name: String,
    headers: &HeaderMap,
    body: &Bytes,
) -> Result<Response, ApiError> {
    let live = state.config.borrow().config.clone();
    let pipeline = live
        .pipelines
        .get(&name)
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, format!("no pipeline `{name}`")))?;
    let webhook_config = pipeline.source.webhook.as_ref();
    let secret = webhook_config.and_then(|webhook| webhook.secret.as_ref());
    let unsigned = webhook_config.is_some_and(|webhook| webhook.unsigned);
    if secret.is_none() && !unsigned {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            format!(
                "pipeline `{name}` takes no webhooks: set source.webhook.secret (or `unsigned: true` to accept unsigned deliveries)"
            ),
        ));
    }
    let header_value = |name: &str| {
        headers
            .get(name)
            .and_then(|value| value.to_str().ok())
            .map(str::to_string)
    };
    let content_type = header_value("content-type");
    let delivery = webhook::receive(
        secret.map(|secret| secret.expose_secret().as_bytes()),
        &header_value,
        content_type.as_deref(),
        body,
    )
    .map_err(|error| {
        let status = if error.is_unauthorized() {
            StatusCode::UNAUTHORIZED
        } else {
            StatusCode::BAD_REQUEST
        };
        ApiError::new(status, error.to_string())
    })?;
    let forge = delivery.forge.as_str();
    if let Some(id) = &delivery.id
        && let Some(first) = state
            .store
            .delivery(&name, forge, id)
            .await
            .map_err(ApiError::internal)?
    {
        return Ok(replay(first));
    }
    let branch_ref = format!("refs/heads/{}", pipeline.source.branch);
    // An answer that queues nothing, remembered so a redelivery gets it again.
    let nothing = async |status: StatusCode, body: serde_json::Value| {
        if let Some(id) = &delivery.id {
            let remembered = DeliveryAnswer {
                status: status.as_u16(),
                response: body.to_string(),
            };
            if let Err(error) = state
                .store
                .remember_delivery(&name, forge, id, &remembered)
                .await
            {
                tracing::warn!(%error, "remembering a delivery");
            }
        }
        Ok(answer(status, body))
    };
    let pushes = match delivery.event {
        WebhookEvent::Ping => {
            return nothing(StatusCode::OK, json!({ "pong": true, "forge": forge })).await;
        }
        WebhookEvent::Other(event) => {
            return nothing(
                StatusCode::ACCEPTED,
                json!({ "queued": false, "reason": format!("`{event}` is not a push event") }),
            )
            .await;
        }
        WebhookEvent::Push(pushes) => pushes,
    };
    let Some(push) = pushes.iter().find(|push| push.git_ref == branch_ref) else {
        let pushed: Vec<&str> = pushes.iter().map(|push| push.git_ref.as_str()).collect();
        let reason = if pushed
            .iter()
            .all(|git_ref| git_ref.starts_with("refs/tags/"))
        {
            format!(
                "a tag push ({}); `{name}` follows {branch_ref}",
                pushed.join(", ")
            )
        } else {
            format!(
                "a push to {}; `{name}` follows {branch_ref}",
                pushed.join(", ")
            )
        };
        return nothing(
            StatusCode::ACCEPTED,
            json!({ "queued": false, "reason": reason }),
        )
        .await;
    };
    let Some(commit) = &push.commit else {
        return nothing(
            StatusCode::ACCEPTED,
            json!({ "queued": false, "reason": format!("{branch_ref} was deleted") }),
        )
        .await;
    };
    let trigger = match &delivery.id {
        Some(id) => format!("webhook {forge} {id}"),
        None => format!("webhook {forge}"),
    };
    let make_answer = |run: crate::store::RunId| {
        json!({
            "queued": true,
            "pipeline": name,
            "run": run.number,
            "run_id": run.id,
            "commit": commit,
        })
        .to_string()
    };
    let queued = state
        .store
        .queue_run(
            &name,
            "run",
            &trigger,
            Some(commit),
            delivery.id.as_deref().map(|id| (forge, id)),
            &make_answer,
        )
        .await
        .map_err(ApiError::internal)?;
    match queued {
        Ok(run) => {
            tracing::info!(
                pipeline = name,
                run = run.number,
                forge,
                commit,
                "push queued"
            );
            let _ = state.events.try_send(Event::Queued {
                pipeline: name.clone(),
            });
            Ok((
                StatusCode::ACCEPTED,
                [
                    (header::CONTENT_TYPE, "application/json"),
                    // Read (and removed) by `hook` to count the delivery as queued.
                    (header::HeaderName::from_static("x-gantry-queued"), "1"),
                ],
                make_answer(run),
            )
                .into_response())
        }
        // The same delivery arrived twice at once; the first one queued the run.
        Err(first) => Ok(replay(first)),
    }
}
