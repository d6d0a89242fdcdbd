//! The dashboard at `/`: server-rendered pages that read well without JavaScript and
//! come alive with it (a page refreshes its live part in place; a run's log follows
//! as server-sent events). Templates and assets are compiled into the binary.
//!
//! Access follows the API's rules: a browser logs in with `server.token` (may act) or
//! `server.read_token` (may only look), or reads anonymously when `server.public_read`
//! is set. The session cookie holds its level, its issue time and an HMAC of both under
//! the token, never the token: the server checks the HMAC and the age (30 days), and
//! changing the token ends every session. Every action is a confirmation page, then a
//! `POST` that carries a form key derived from the session.

mod actions;
mod auth;
mod pages;
#[cfg(test)]
mod tests;
mod views;

use std::time::{Duration, UNIX_EPOCH};

use askama::Template;
use axum::Router;
use axum::extract::{DefaultBodyLimit, Form, Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use hmac::{KeyInit, Mac};
use rust_embed::RustEmbed;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use subtle::ConstantTimeEq;

use super::AppState;
use super::access::{Access, anonymous_access, granted, token_access};
use super::api;
use crate::deploy::status::InstanceStatus;
use crate::run::{RunKind, RunState, Trigger};
use crate::source::display_url;
use crate::store::{RunRecord, now_millis};

use actions::*;
use auth::*;
use pages::*;
use views::*;

/// The browser's session cookie.
const SESSION_COOKIE: &str = "gantry_session";
/// How long a login lasts.
const SESSION_DAYS: u64 = 30;
/// The most a dashboard form may send.
const MAX_FORM: usize = 64 * 1024;
/// Runs on one page of a pipeline's history.
const RUNS_PER_PAGE: i64 = 25;
/// Runs of every pipeline on the home page.
const RECENT_RUNS: i64 = 15;
/// Lines `/runs/ID/log.txt` reads from the store at a time.
const LOG_TEXT_PAGE: i64 = 1_000;
/// The most log lines a run page shows (the last ones); `/runs/ID/log.txt` has them all.
const PAGE_LOG_LINES: usize = 5_000;

#[derive(RustEmbed)]
#[folder = "assets/"]
struct Assets;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/", get(home))
        .route("/pipelines/{name}", get(pipeline_page))
        .route("/pipelines/{name}/{action}", get(confirm_page).post(act))
        .route("/runs/{id}", get(run_page))
        .route("/runs/{id}/events", get(run_events))
        .route("/runs/{id}/log.txt", get(run_log_text))
        .route("/login", get(login_page).post(login))
        .route("/logout", post(logout))
        .route("/assets/{*file}", get(asset))
        .layer(DefaultBodyLimit::max(MAX_FORM))
}

fn page(template: &impl Template) -> Response {
    match template.render() {
        Ok(html) => (
            [(header::CACHE_CONTROL, HeaderValue::from_static("no-store"))],
            Html(html),
        )
            .into_response(),
        Err(error) => {
            tracing::error!(%error, "dashboard page failed to render");
            (StatusCode::INTERNAL_SERVER_ERROR, "internal error").into_response()
        }
    }
}

fn problem(viewer: &Viewer, status: StatusCode, heading: &str, detail: &str) -> Response {
    let mut response = page(&ProblemPage {
        layout: Layout::new(heading, viewer, 0),
        heading: heading.to_string(),
        detail: detail.to_string(),
    });
    *response.status_mut() = status;
    response
}

fn internal(viewer: &Viewer, error: impl std::fmt::Display) -> Response {
    tracing::error!(%error, "dashboard request failed");
    problem(
        viewer,
        StatusCode::INTERNAL_SERVER_ERROR,
        "Something went wrong",
        "The daemon's log says what.",
    )
}

// ---------------------------------------------------------------- assets

async fn asset(Path(file): Path<String>) -> Response {
    let Some(content) = Assets::get(&file) else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let kind = match file.rsplit_once('.').map(|(_, extension)| extension) {
        Some("css") => "text/css; charset=utf-8",
        Some("js") => "text/javascript; charset=utf-8",
        Some("svg") => "image/svg+xml",
        _ => "application/octet-stream",
    };
    (
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(kind)),
            (
                header::CACHE_CONTROL,
                HeaderValue::from_static("public, max-age=3600"),
            ),
        ],
        content.data.into_owned(),
    )
        .into_response()
}
