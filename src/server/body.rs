//! Request bodies: read whole, within a size and a time, before any handler; and the
//! JSON bodies of API actions.
//!
//! Every body is read by `read_body` first: refused up front (`413`) when its
//! `Content-Length` is over the limit (`server.max_body` for webhooks; 64 KiB for the
//! API and the dashboard), cut
//! off when it grows past it, and answered `408` when it has not all arrived within
//! `server.read_timeout`.
//!
//! An action's body may be empty, meaning every field's default. Anything else must
//! say it is JSON (`Content-Type: application/json`, in any case, with any parameters)
//! and hold only the action's fields, each of its kind: a misspelt field is refused,
//! not ignored.

use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{FromRequest, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;
use serde::de::DeserializeOwned;

use super::ApiError;

/// What `read_body` allows.
#[derive(Debug, Clone, Copy)]
pub struct BodyLimits {
    /// `server.max_body`: webhooks.
    pub max_body: usize,
    /// `server.read_timeout`.
    pub read_timeout: Duration,
}

/// Reads the request's body whole within its limits (see the module's comment), then
/// hands the request on with the body in memory.
pub async fn read_body(State(limits): State<BodyLimits>, request: Request, next: Next) -> Response {
    let (limit, name) = if request.uri().path().starts_with("/hooks/") {
        (limits.max_body, "server.max_body")
    } else {
        (
            super::api::MAX_BODY,
            "the limit for API and dashboard requests",
        )
    };
    let too_large = || {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("the body is larger than {name} ({limit} bytes)"),
        )
        .into_response()
    };
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse::<u64>().ok());
    if declared.is_some_and(|length| length > limit as u64) {
        return too_large();
    }
    let (parts, body) = request.into_parts();
    let read = async {
        let mut stream = body.into_data_stream();
        let mut whole = Vec::new();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|_| None)?;
            if whole.len() + chunk.len() > limit {
                return Err(Some(()));
            }
            whole.extend_from_slice(&chunk);
        }
        Ok(whole)
    };
    let whole = match tokio::time::timeout(limits.read_timeout, read).await {
        Ok(Ok(whole)) => whole,
        Ok(Err(Some(()))) => return too_large(),
        Ok(Err(None)) => {
            return ApiError::new(StatusCode::BAD_REQUEST, "the body could not be read whole")
                .into_response();
        }
        Err(_) => {
            return ApiError::new(
                StatusCode::REQUEST_TIMEOUT,
                format!(
                    "the body did not arrive within server.read_timeout ({})",
                    humantime::format_duration(limits.read_timeout)
                ),
            )
            .into_response();
        }
    };
    next.run(Request::from_parts(parts, Body::from(whole)))
        .await
}

/// An action's body, read whole (up to the API's limit) and decoded as `T`.
pub struct ActionBody<T>(pub T);

impl<T, S> FromRequest<S> for ActionBody<T>
where
    T: DeserializeOwned + Default,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<ActionBody<T>, ApiError> {
        let json = request
            .headers()
            .get(header::CONTENT_TYPE)
            .is_some_and(is_json);
        let bytes = Bytes::from_request(request, state)
            .await
            .map_err(|rejection| ApiError::new(rejection.status(), rejection.body_text()))?;
        if bytes.is_empty() {
            return Ok(ActionBody(T::default()));
        }
        if !json {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "send the body as JSON, with Content-Type: application/json",
            ));
        }
        serde_json::from_slice(&bytes)
            .map(ActionBody)
            .map_err(|error| {
                ApiError::new(
                    StatusCode::BAD_REQUEST,
                    format!("the body is not this action's JSON: {error}"),
                )
            })
    }
}

/// Whether a `Content-Type` names JSON (`application/json` or `application/*+json`).
pub fn is_json(value: &HeaderValue) -> bool {
    let Ok(value) = value.to_str() else {
        return false;
    };
    let media_type = value.split(';').next().unwrap_or_default().trim();
    let Some((kind, subtype)) = media_type.split_once('/') else {
        return false;
    };
    let subtype = subtype.to_ascii_lowercase();
    kind.eq_ignore_ascii_case("application") && (subtype == "json" || subtype.ends_with("+json"))
}
