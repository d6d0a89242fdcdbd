//! What every answer of the daemon gets on its way out, and the limit on guessing.
//!
//! - Failed logins and bearer tokens are counted per client address: after
//!   `MAX_FAILURES` in `FAILURE_WINDOW`, every attempt from that address is answered
//!   `429` until the window ends, so a token cannot be guessed at network speed.
//! - Errors under `/api/` and `/hooks/` are JSON (`{"error": ...}`), axum's own
//!   rejections (bad JSON, wrong content type, a body too large) and paths no route
//!   serves included.
//! - Dashboard pages carry a content security policy and refuse to be framed.
//! - A request whose header fields hold more than `MAX_HEADER_BYTES` is answered `431`.
//!
//! The client address is the connection's peer: behind a reverse proxy every client
//! shares the proxy's, which limits them together (a forwarded-for header is not
//! trusted, since anybody can send one).

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::{ApiError, AppState};

/// Failed attempts an address may make in one window.
pub const MAX_FAILURES: u32 = 10;
/// How long failures are remembered, and how long an address that made too many waits.
pub const FAILURE_WINDOW: Duration = Duration::from_secs(60);
/// Addresses remembered at once; past this, expired entries are dropped, then the oldest.
const MAX_TRACKED: usize = 10_000;
/// The most a request's header fields may hold, names and values together. A forge's
/// delivery sends about 2 KiB of them, a browser its cookies (at most 4 KiB each); 32 KiB
/// is nginx's default too. hyper reads at most about 400 KiB of a request's head and 100
/// fields before it answers `431` itself; this is the tighter bound handlers rely on.
pub const MAX_HEADER_BYTES: usize = 32 * 1024;
/// The longest error text turned into JSON (axum's rejections are one line).
const MAX_ERROR_TEXT: usize = 4096;

/// `Content-Security-Policy` of dashboard pages: only the daemon's own script, styles
/// and images; no inline script, no framing, forms post only to the daemon.
const DASHBOARD_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     img-src 'self' data:; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; \
     base-uri 'none'";

/// Failed authentication attempts per client address.
#[derive(Debug, Default)]
pub struct FailedAuth {
    windows: Mutex<HashMap<IpAddr, Window>>,
}

#[derive(Debug, Clone, Copy)]
struct Window {
    started: Instant,
    failures: u32,
}

impl FailedAuth {
    /// How long `address` must wait, when it made too many failed attempts.
    fn blocked(&self, address: IpAddr, now: Instant) -> Option<Duration> {
        let windows = self
            .windows
            .lock()
            .unwrap_or_else(|error| error.into_inner());
        let window = windows.get(&address)?;
        let ends = window.started + FAILURE_WINDOW;
        (window.failures >= MAX_FAILURES && now < ends).then(|| ends - now)
    }

    fn record(&self, address: IpAddr, now: Instant) {
        let mut windows = self
            .windows
            .lock()
            .unwrap_or_else(|error| error.into_inner());
        if windows.len() >= MAX_TRACKED && !windows.contains_key(&address) {
            windows.retain(|_, window| now < window.started + FAILURE_WINDOW);
            if windows.len() >= MAX_TRACKED
                && let Some(oldest) = windows
                    .iter()
                    .min_by_key(|(_, window)| window.started)
                    .map(|(address, _)| *address)
            {
                windows.remove(&oldest);
            }
        }
        let window = windows.entry(address).or_insert(Window {
            started: now,
            failures: 0,
        });
        if now >= window.started + FAILURE_WINDOW {
            *window = Window {
                started: now,
                failures: 0,
            };
        }
        window.failures += 1;
    }
}

/// Whether a request presents credentials: a bearer token, or the login form.
fn authenticates(request: &Request) -> bool {
    request.headers().contains_key(header::AUTHORIZATION)
        || (request.method() == Method::POST && request.uri().path() == "/login")
}

/// Refuses an address that failed too often; counts each failed attempt.
pub async fn limit_guessing(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    let address = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(peer)| peer.ip());
    let (Some(address), true) = (address, authenticates(&request)) else {
        return next.run(request).await;
    };
    if let Some(wait) = state.failed_auth.blocked(address, Instant::now()) {
        let seconds = wait.as_secs().max(1);
        let mut response = ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            format!("too many failed attempts from this address; try again in {seconds} s"),
        )
        .into_response();
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        return response;
    }
    let response = next.run(request).await;
    if response.status() == StatusCode::UNAUTHORIZED {
        tracing::warn!(%address, "failed authentication");
        state.failed_auth.record(address, Instant::now());
    }
    response
}

/// Refuses a request whose header fields hold more than `MAX_HEADER_BYTES` (`431`).
pub async fn limit_headers(request: Request, next: Next) -> Response {
    let size: usize = request
        .headers()
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len())
        .sum();
    if size > MAX_HEADER_BYTES {
        return ApiError::new(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            format!(
                "the request's header fields hold {size} bytes, more than the {MAX_HEADER_BYTES} allowed"
            ),
        )
        .into_response();
    }
    next.run(request).await
}

/// Turns an error answer that is not JSON (axum's rejections are plain text) into
/// `{"error": TEXT}`.
pub async fn json_errors(request: Request, next: Next) -> Response {
    let response = next.run(request).await;
    let status = response.status();
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|value| value.as_bytes().starts_with(b"application/json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return response;
    }
    let (parts, body) = response.into_parts();
    let text = match axum::body::to_bytes(body, MAX_ERROR_TEXT).await {
        Ok(bytes) if !bytes.is_empty() => String::from_utf8_lossy(&bytes).trim().to_string(),
        _ => status
            .canonical_reason()
            .unwrap_or("request failed")
            .to_string(),
    };
    let mut response = ApiError::new(status, text).into_response();
    for (name, value) in &parts.headers {
        if name != header::CONTENT_TYPE && name != header::CONTENT_LENGTH {
            response.headers_mut().insert(name.clone(), value.clone());
        }
    }
    response
}

/// A path no route serves: `404`, in JSON under `/api/` and `/hooks/` like every other
/// error there, and empty elsewhere.
pub async fn not_found(method: Method, uri: axum::http::Uri) -> Response {
    let path = uri.path();
    if path.starts_with("/api/") || path.starts_with("/hooks/") {
        return ApiError::new(
            StatusCode::NOT_FOUND,
            format!("no endpoint {method} {path}"),
        )
        .into_response();
    }
    StatusCode::NOT_FOUND.into_response()
}

/// Adds the dashboard's security headers to a page.
pub async fn page_headers(request: Request, next: Next) -> Response<Body> {
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(DASHBOARD_POLICY),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_address_that_fails_too_often_waits_out_the_window() {
        let failed = FailedAuth::default();
        let start = Instant::now();
        let address: IpAddr = "127.0.0.7".parse().unwrap();
        let other: IpAddr = "127.0.0.8".parse().unwrap();
        for _ in 0..MAX_FAILURES - 1 {
            failed.record(address, start);
        }
        assert_eq!(failed.blocked(address, start), None);
        failed.record(address, start);
        assert_eq!(failed.blocked(address, start), Some(FAILURE_WINDOW));
        assert_eq!(failed.blocked(other, start), None);
        let later = start + FAILURE_WINDOW;
        assert_eq!(failed.blocked(address, later), None);
        // A new window starts counting from one.
        failed.record(address, later);
        assert_eq!(failed.blocked(address, later), None);
    }

    #[test]
    fn the_number_of_addresses_remembered_is_bounded() {
        let failed = FailedAuth::default();
        let start = Instant::now();
        for index in 0..(MAX_TRACKED as u32 + 10) {
            failed.record(IpAddr::from(index.to_be_bytes()), start);
        }
        let remembered = failed.windows.lock().unwrap().len();
        assert!(remembered <= MAX_TRACKED, "{remembered}");
    }
}
