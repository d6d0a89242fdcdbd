//! The JSON bodies of API actions: small objects of known fields, or nothing.
//!
//! An empty body means every field's default. Anything else must say it is JSON
//! (`Content-Type: application/json`, in any case, with any parameters) and hold only
//! the action's fields, each of its kind: a misspelt field is refused, not ignored.

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::{HeaderValue, StatusCode, header};
use serde::de::DeserializeOwned;

use super::ApiError;

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
            .map_err(|rejection| too_large_or(rejection.status(), super::api::MAX_BODY))?;
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

/// The answer to a body that could not be read: `413` naming the limit when it was too
/// large, else the status the reading failed with.
pub fn too_large_or(status: StatusCode, limit: usize) -> ApiError {
    if status == StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::new(
            status,
            format!("the body is larger than the limit of {limit} bytes"),
        )
    } else {
        ApiError::new(status, "the body could not be read whole")
    }
}
