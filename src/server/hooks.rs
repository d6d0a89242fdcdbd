//! `POST /hooks/PIPELINE`: a forge's push, verified, decided, recorded, answered.
//!
//! The body is read raw (up to `server.max_body`) and verified the forge's way; what
//! the delivery means is `webhook::decide`'s pure answer; this handler records it
//! through `engine::intake` (a queued run, or the answer to a delivery that queues
//! nothing) and maps it to a status. `202` is sent only once the queued run is
//! committed, so an answered delivery is never lost. A redelivery (the same id with the
//! same body) gets its first answer again; the same id with another body is another
//! delivery. When the store cannot write, the answer is `503`, which forges retry.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use secrecy::ExposeSecret;
use serde_json::json;
use sha2::{Digest, Sha256};

use super::{ApiError, AppState};
use crate::config::Pipeline;
use crate::engine::intake;
use crate::engine::metrics::DeliveryLabels;
use crate::run::{RunId, RunKind, Trigger};
use crate::source::webhook::{self, Decision, Delivery};
use crate::store::{DeliveryAnswer, DeliveryKey};

/// What became of a delivery, as counted in `/metrics` and answered.
enum Received {
    Queued {
        run: RunId,
        answer: String,
    },
    /// Seen before: its first answer, again.
    Duplicate(DeliveryAnswer),
    Ping(DeliveryAnswer),
    Ignored(DeliveryAnswer),
    Refused(ApiError),
}

impl Received {
    fn label(&self) -> &'static str {
        match self {
            Received::Queued { .. } => "queued",
            Received::Duplicate(_) => "duplicate",
            Received::Ping(_) => "ping",
            Received::Ignored(_) => "ignored",
            Received::Refused(error) => match error.status().as_u16() {
                401 => "unauthorized",
                400 | 413 => "malformed",
                403 | 404 => "refused",
                503 => "unavailable",
                _ => "error",
            },
        }
    }

    fn into_response(self) -> Response {
        let json = |answer: DeliveryAnswer| {
            let status = StatusCode::from_u16(answer.status).unwrap_or(StatusCode::ACCEPTED);
            (
                status,
                [(header::CONTENT_TYPE, "application/json")],
                answer.response,
            )
                .into_response()
        };
        match self {
            Received::Queued { answer, .. } => json(DeliveryAnswer {
                status: 202,
                response: answer,
            }),
            Received::Duplicate(answer) | Received::Ping(answer) | Received::Ignored(answer) => {
                json(answer)
            }
            Received::Refused(error) => {
                let unavailable = error.status() == StatusCode::SERVICE_UNAVAILABLE;
                let mut response = error.into_response();
                if unavailable {
                    // Forges redeliver a failed delivery; a hint for those that read it.
                    response
                        .headers_mut()
                        .insert(header::RETRY_AFTER, header::HeaderValue::from_static("30"));
                }
                response
            }
        }
    }
}

/// Receives a delivery and counts it by forge and outcome.
pub(super) async fn hook(
    State(state): State<AppState>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let (forge, outcome) = match body {
        Ok(body) => receive(&state, &name, &headers, &body).await,
        Err(rejection) => (
            None,
            Received::Refused(ApiError::new(rejection.status(), rejection.body_text())),
        ),
    };
    state
        .metrics
        .deliveries
        .get_or_create(&DeliveryLabels {
            forge: forge.unwrap_or("unknown").to_string(),
            result: outcome.label().to_string(),
        })
        .inc();
    if let Received::Queued { run, .. } = &outcome {
        tracing::info!(pipeline = name, run = run.number, forge, "push queued");
    }
    outcome.into_response()
}

/// Verifies, decides and records one delivery; the forge it came from, when known.
async fn receive(
    state: &AppState,
    name: &str,
    headers: &HeaderMap,
    body: &[u8],
) -> (Option<&'static str>, Received) {
    let live = state.config.borrow().config.clone();
    let Some(pipeline) = live.pipelines.get(name) else {
        return (None, Received::Refused(ApiError::no_pipeline(name)));
    };
    let delivery = match verify(pipeline, headers, body) {
        Ok(delivery) => delivery,
        Err((forge, error)) => return (forge, Received::Refused(error)),
    };
    let forge = delivery.forge.as_str();
    (Some(forge), record(state, pipeline, &delivery, body).await)
}

/// The pipeline's verified delivery, or why it is refused (and the forge, when known).
fn verify(
    pipeline: &Pipeline,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Delivery, (Option<&'static str>, ApiError)> {
    let webhook_config = pipeline.source.webhook.as_ref();
    let secret = webhook_config.and_then(|webhook| webhook.secret.as_ref());
    let unsigned = webhook_config.is_some_and(|webhook| webhook.unsigned);
    if secret.is_none() && !unsigned {
        return Err((
            None,
            ApiError::new(
                StatusCode::FORBIDDEN,
                format!(
                    "pipeline `{}` takes no webhooks: set source.webhook.secret (or `unsigned: true` to accept unsigned deliveries)",
                    pipeline.name
                ),
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
    webhook::receive(
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
        (error.forge(), ApiError::new(status, error.to_string()))
    })
}

/// Records what the delivery means: a queued run, or the answer to one that queues
/// nothing; a delivery with a body seen before gets its first answer.
async fn record(
    state: &AppState,
    pipeline: &Pipeline,
    delivery: &Delivery,
    body: &[u8],
) -> Received {
    let name = pipeline.name.as_str();
    let body_sha256 = hex::encode(Sha256::digest(body));
    // Only deliveries with an id are remembered: without one, a redelivery cannot be told.
    let key = delivery.id.as_deref().map(|id| DeliveryKey {
        forge: delivery.forge.as_str(),
        id,
        body_sha256: &body_sha256,
    });
    let forge = delivery.forge.as_str();
    let commit = match webhook::decide(delivery, name, &pipeline.source.branch) {
        Decision::Queue { commit } => commit,
        Decision::Ping => {
            let body = json!({ "pong": true, "forge": forge });
            return remember(state, name, key, StatusCode::OK, body, Received::Ping).await;
        }
        Decision::Ignore(reason) => {
            let body = json!({ "queued": false, "reason": reason });
            return remember(
                state,
                name,
                key,
                StatusCode::ACCEPTED,
                body,
                Received::Ignored,
            )
            .await;
        }
    };
    let trigger = Trigger::Webhook {
        forge: forge.to_string(),
        delivery: delivery.id.clone(),
    };
    let make_answer: crate::store::Answer = {
        let (pipeline, commit) = (name.to_string(), commit.clone());
        std::sync::Arc::new(move |run: RunId| {
            json!({
                "queued": true,
                "pipeline": pipeline,
                "run": run.number,
                "run_id": run.id,
                "commit": commit,
            })
            .to_string()
        })
    };
    let request = intake::Request {
        pipeline: name,
        kind: RunKind::Run,
        trigger,
        requested: Some(&commit),
        delivery: key,
    };
    match intake::queue(
        &state.store,
        Some(&state.events),
        &request,
        make_answer.clone(),
    )
    .await
    {
        Ok(Ok(run)) => Received::Queued {
            run,
            answer: make_answer(run),
        },
        Ok(Err(first)) => Received::Duplicate(first),
        Err(error) => Received::Refused(error.into()),
    }
}

/// Answers a delivery that queues nothing, remembering the answer so a redelivery gets
/// it again (the first one, if this delivery was seen before).
async fn remember(
    state: &AppState,
    name: &str,
    key: Option<DeliveryKey<'_>>,
    status: StatusCode,
    body: serde_json::Value,
    outcome: fn(DeliveryAnswer) -> Received,
) -> Received {
    let answer = DeliveryAnswer {
        status: status.as_u16(),
        response: body.to_string(),
    };
    let Some(key) = key else {
        return outcome(answer);
    };
    let keep = state.config.borrow().config.server.keep_runs;
    match intake::answer(&state.store, name, &key, &answer, keep).await {
        Ok(None) => outcome(answer),
        Ok(Some(first)) => Received::Duplicate(first),
        Err(error) => {
            // Answering matters more than remembering: a redelivery is answered the same.
            tracing::warn!(%error, "remembering a delivery");
            outcome(answer)
        }
    }
}
