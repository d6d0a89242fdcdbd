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
use super::api::{self, Access};
use crate::deploy::status::InstanceStatus;
use crate::run::{RunKind, RunState, Trigger};
use crate::source::display_url;
use crate::store::{RunRecord, now_millis};

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

// ---------------------------------------------------------------- sessions

type HmacSha256 = hmac::Hmac<sha2::Sha256>;

/// An HMAC of `purpose` under the token: what a cookie or a form carries instead of it.
fn derived(token: &SecretString, purpose: &str) -> String {
    let mut mac = HmacSha256::new_from_slice(token.expose_secret().as_bytes())
        .expect("HMAC takes a key of any length");
    mac.update(b"gantry dashboard ");
    mac.update(purpose.as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

fn same(given: &str, expected: &str) -> bool {
    bool::from(given.as_bytes().ct_eq(expected.as_bytes()))
}

/// True when `given` is `token`; both are hashed first, so the time taken says
/// nothing of the token's length.
fn is_token(given: &str, token: &SecretString) -> bool {
    // An empty token never logs anybody in, whatever the config says.
    !given.is_empty()
        && !token.expose_secret().is_empty()
        && same(
            &derived(&SecretString::from(given.to_string()), "login"),
            &derived(token, "login"),
        )
}

/// What a session may do, as its cookie names it.
const OPERATE: &str = "operate";
const READ: &str = "read";

/// A session cookie's value: `LEVEL.ISSUED.MAC`, the MAC an HMAC under the token of the
/// level and the issue time (seconds since the epoch).
fn session_value(token: &SecretString, level: &str, issued: u64) -> String {
    let mac = derived(token, &format!("session {level} {issued}"));
    format!("{level}.{issued}.{mac}")
}

/// True when `value` is a session of `level` under `token` that has not expired.
fn is_session(value: &str, token: &SecretString, level: &str, now: u64) -> bool {
    let mut parts = value.splitn(3, '.');
    let (Some(given_level), Some(issued), Some(_)) = (parts.next(), parts.next(), parts.next())
    else {
        return false;
    };
    let Ok(issued) = issued.parse::<u64>() else {
        return false;
    };
    let fresh = issued <= now + 60 && now.saturating_sub(issued) <= SESSION_DAYS * 86_400;
    given_level == level && fresh && same(value, &session_value(token, level, issued))
}

fn now_seconds() -> u64 {
    u64::try_from(now_millis() / 1000).unwrap_or_default()
}

/// Who is looking, and what they may do.
#[derive(Debug, Clone)]
struct Viewer {
    access: Access,
    /// True for a login; false for an anonymous reader (`server.public_read`).
    logged_in: bool,
    /// The form key an action must carry; only an operator has one.
    form_key: Option<String>,
}

impl Viewer {
    fn may_operate(&self) -> bool {
        self.access == Access::Operate
    }
}

fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(key, _)| *key == name)
        .map(|(_, value)| value)
}

/// The viewer the request's session cookie (or the public-read setting) makes.
fn viewer(state: &AppState, headers: &HeaderMap) -> Option<Viewer> {
    let server = state.config.borrow().config.server.clone();
    let now = now_seconds();
    if let Some(session) = cookie(headers, SESSION_COOKIE) {
        if let Some(token) = &server.token
            && is_session(session, token, OPERATE, now)
        {
            return Some(Viewer {
                access: Access::Operate,
                logged_in: true,
                form_key: Some(derived(token, &format!("form {session}"))),
            });
        }
        if let Some(token) = &server.read_token
            && is_session(session, token, READ, now)
        {
            return Some(Viewer {
                access: Access::Read,
                logged_in: true,
                form_key: None,
            });
        }
    }
    server.public_read.then_some(Viewer {
        access: Access::Read,
        logged_in: false,
        form_key: None,
    })
}

/// A page's answer when nobody may read it: off to the login page, then back.
fn to_login(path: &str) -> Response {
    let next: String = form_urlencoded::byte_serialize(path.as_bytes()).collect();
    Redirect::to(&format!("/login?next={next}")).into_response()
}

/// Only a path on this server may follow a login: it starts with one `/`, and holds
/// no space, control character (browsers drop tabs, so `/\t/host` is `//host`) or
/// backslash.
fn safe_next(next: Option<&str>) -> &str {
    match next {
        Some(next)
            if next.starts_with('/')
                && !next.starts_with("//")
                && !next.contains('\\')
                && next.bytes().all(|byte| byte.is_ascii_graphic()) =>
        {
            next
        }
        _ => "/",
    }
}

// ---------------------------------------------------------------- views

/// What every page's frame shows.
struct Layout {
    title: String,
    /// `Operator`, `Reader` or empty (anonymous).
    who: String,
    logged_in: bool,
    /// Seconds between refreshes of the page's live part; 0 for none.
    refresh: u32,
    version: &'static str,
}

impl Layout {
    fn new(title: impl Into<String>, viewer: &Viewer, refresh: u32) -> Layout {
        Layout {
            title: title.into(),
            who: match (viewer.logged_in, viewer.access) {
                (false, _) => String::new(),
                (true, Access::Operate) => "operator".to_string(),
                (true, Access::Read) => "reader".to_string(),
            },
            logged_in: viewer.logged_in,
            refresh,
            version: env!("CARGO_PKG_VERSION"),
        }
    }
}

/// A run as a row or a page header shows it.
struct RunView {
    id: i64,
    number: i64,
    pipeline: String,
    kind: String,
    trigger: String,
    requested: String,
    state: String,
    finished: bool,
    commit: String,
    commit_short: String,
    commit_message: String,
    author: String,
    age: String,
    started: String,
    duration: String,
    failed_stage: String,
    message: String,
    image: String,
    digest_short: String,
    tags: Vec<String>,
}

impl RunView {
    fn new(run: &RunRecord, now: i64) -> RunView {
        let finished = run.state.is_finished();
        let commit = run.commit.clone().unwrap_or_default();
        RunView {
            id: run.id,
            number: run.number,
            pipeline: run.pipeline.clone(),
            kind: run.kind.to_string(),
            trigger: run.trigger.to_string(),
            requested: run.requested.clone().unwrap_or_default(),
            state: run.state.to_string(),
            finished,
            commit_short: commit.chars().take(8).collect(),
            commit,
            commit_message: run.commit_message.clone().unwrap_or_default(),
            author: run.author.clone().unwrap_or_default(),
            age: age(now - run.started_at),
            started: timestamp(run.started_at),
            duration: match (run.state, run.finished_at) {
                (RunState::Queued, _) => String::new(),
                (_, Some(end)) => duration(end - run.started_at),
                (_, None) => duration(now - run.started_at),
            },
            failed_stage: run
                .failed_stage
                .map(|stage| stage.to_string())
                .unwrap_or_default(),
            message: run.message.clone().unwrap_or_default(),
            image: run.image.clone().unwrap_or_default(),
            digest_short: short_digest(run.digest.as_deref()),
            tags: run.tags.clone(),
        }
    }
}

struct PipelineRow {
    name: String,
    branch: String,
    last: Option<RunView>,
    pinned: String,
    deploying: bool,
}

struct StageView {
    name: String,
    state: String,
    duration: String,
    message: String,
}

struct InstanceView {
    service: String,
    instance: String,
    state: String,
    health: String,
    drift: String,
    commit_short: String,
    digest_short: String,
    uptime: String,
    error: String,
}

struct HostGroup {
    host: String,
    instances: Vec<InstanceView>,
}

struct LineView {
    seq: i64,
    text: String,
}

fn short_digest(digest: Option<&str>) -> String {
    digest
        .map(|digest| {
            let hex = digest.strip_prefix("sha256:").unwrap_or(digest);
            hex.chars().take(12).collect()
        })
        .unwrap_or_default()
}

/// `just now`, `42 s ago`, `5 min ago`, `3 h ago`, `2 days ago`.
fn age(millis: i64) -> String {
    let seconds = millis.max(0) / 1000;
    match seconds {
        0..5 => "just now".to_string(),
        5..60 => format!("{seconds} s ago"),
        60..3600 => format!("{} min ago", seconds / 60),
        3600..86_400 => format!("{} h ago", seconds / 3600),
        86_400..172_800 => "1 day ago".to_string(),
        _ => format!("{} days ago", seconds / 86_400),
    }
}

/// `850 ms`, `12.4 s`, `3 min 5 s`, `2 h 10 min`.
fn duration(millis: i64) -> String {
    let millis = millis.max(0);
    let seconds = millis / 1000;
    match millis {
        0..1000 => format!("{millis} ms"),
        1000..60_000 => format!("{:.1} s", millis as f64 / 1000.0),
        60_000..3_600_000 => format!("{} min {} s", seconds / 60, seconds % 60),
        _ => format!("{} h {} min", seconds / 3600, seconds / 60 % 60),
    }
}

/// RFC 3339 in UTC, to the second.
fn timestamp(millis: i64) -> String {
    let at = UNIX_EPOCH + Duration::from_millis(millis.max(0) as u64);
    humantime::format_rfc3339_seconds(at).to_string()
}

fn host_groups(instances: &[InstanceStatus]) -> Vec<HostGroup> {
    let mut groups: Vec<HostGroup> = Vec::new();
    for instance in instances {
        let view = InstanceView {
            service: instance.service.clone(),
            instance: instance.instance.clone(),
            state: instance.state.clone(),
            health: instance.health.clone().unwrap_or_default(),
            drift: instance.drift.join("; "),
            commit_short: instance
                .commit
                .as_deref()
                .unwrap_or_default()
                .chars()
                .take(8)
                .collect(),
            digest_short: short_digest(instance.digest.as_deref()),
            uptime: instance
                .uptime_seconds
                .map(|seconds| duration(seconds as i64 * 1000))
                .unwrap_or_default(),
            error: instance.error.clone().unwrap_or_default(),
        };
        match groups.iter_mut().find(|group| group.host == instance.host) {
            Some(group) => group.instances.push(view),
            None => groups.push(HostGroup {
                host: instance.host.clone(),
                instances: vec![view],
            }),
        }
    }
    groups
}

// ---------------------------------------------------------------- templates

#[derive(Template)]
#[template(path = "home.html")]
struct HomePage {
    layout: Layout,
    config_errors: Vec<String>,
    pipelines: Vec<PipelineRow>,
    recent: Vec<RunView>,
}

#[derive(Template)]
#[template(path = "pipeline.html")]
struct PipelinePage {
    layout: Layout,
    name: String,
    repo: String,
    branch: String,
    image: String,
    pinned: String,
    deploying: String,
    may_operate: bool,
    read_at: String,
    hosts: Vec<HostGroup>,
    runs: Vec<RunView>,
    older: Option<i64>,
}

#[derive(Template)]
#[template(path = "run.html")]
struct RunPage {
    layout: Layout,
    run: RunView,
    stages: Vec<StageView>,
    lines: Vec<LineView>,
    /// Earlier lines left off the page.
    hidden_lines: usize,
    last_seq: i64,
}

#[derive(Template)]
#[template(path = "confirm.html")]
struct ConfirmPage {
    layout: Layout,
    pipeline: String,
    action: String,
    question: String,
    detail: String,
    /// The optional field the action takes (`commit`, `image`, `to`), or empty.
    field: String,
    field_label: String,
    field_hint: String,
    button: String,
    form_key: String,
}

#[derive(Template)]
#[template(path = "login.html")]
struct LoginPage {
    layout: Layout,
    next: String,
    problem: String,
    no_token: bool,
}

#[derive(Template)]
#[template(path = "problem.html")]
struct ProblemPage {
    layout: Layout,
    heading: String,
    detail: String,
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

// ---------------------------------------------------------------- pages

async fn home(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let Some(viewer) = viewer(&state, &headers) else {
        return to_login("/");
    };
    let (names, config_errors) = {
        let live = state.config.borrow();
        let names: Vec<(String, String)> = live
            .config
            .pipelines
            .values()
            .map(|pipeline| (pipeline.name.clone(), pipeline.source.branch.clone()))
            .collect();
        (names, live.errors.clone())
    };
    let now = now_millis();
    let store = &state.store;
    let mut pipelines = Vec::with_capacity(names.len());
    for (name, branch) in names {
        let last = match store.runs(Some(&name), 1).await {
            Ok(runs) => runs.first().map(|run| RunView::new(run, now)),
            Err(error) => return internal(&viewer, error),
        };
        let (pinned, deploying) = match (store.pin_of(&name).await, store.lease_of(&name).await) {
            (Ok(pin), Ok(lease)) => (pin.map(|pin| pin.reason), lease.is_some()),
            (Err(error), _) | (_, Err(error)) => return internal(&viewer, error),
        };
        pipelines.push(PipelineRow {
            name,
            branch,
            last,
            pinned: pinned.unwrap_or_default(),
            deploying,
        });
    }
    let recent = match store.runs(None, RECENT_RUNS).await {
        Ok(runs) => runs.iter().map(|run| RunView::new(run, now)).collect(),
        Err(error) => return internal(&viewer, error),
    };
    page(&HomePage {
        layout: Layout::new("Pipelines", &viewer, 3),
        config_errors,
        pipelines,
        recent,
    })
}

#[derive(Debug, Deserialize)]
struct Paging {
    before: Option<i64>,
}

async fn pipeline_page(
    State(state): State<AppState>,
    Path(name): Path<String>,
    Query(paging): Query<Paging>,
    headers: HeaderMap,
) -> Response {
    let Some(viewer) = viewer(&state, &headers) else {
        return to_login(&format!("/pipelines/{name}"));
    };
    let Some(pipeline) = state.config.borrow().config.pipelines.get(&name).cloned() else {
        return problem(
            &viewer,
            StatusCode::NOT_FOUND,
            "No such pipeline",
            &format!("There is no pipeline `{name}` in the configuration."),
        );
    };
    let store = &state.store;
    let now = now_millis();
    let (runs, pin, lease) = match (
        store
            .runs_page(Some(&name), None, paging.before, RUNS_PER_PAGE)
            .await,
        store.pin_of(&name).await,
        store.lease_of(&name).await,
    ) {
        (Ok(runs), Ok(pin), Ok(lease)) => (runs, pin, lease),
        (Err(error), _, _) | (_, Err(error), _) | (_, _, Err(error)) => {
            return internal(&viewer, error);
        }
    };
    let older = (runs.len() as i64 == RUNS_PER_PAGE)
        .then(|| runs.last().map(|run| run.id))
        .flatten();
    // A page waits less than the API for a reading newer than the last run: it
    // refreshes itself anyway.
    let snapshot = crate::engine::status::fresh_snapshot(
        &state.status,
        &state.store,
        Some(&name),
        Duration::from_secs(2),
    )
    .await;
    let instances: Vec<InstanceStatus> = snapshot
        .pipelines
        .iter()
        .filter(|document| document.pipeline == name)
        .flat_map(|document| document.instances.iter().cloned())
        .collect();
    page(&PipelinePage {
        layout: Layout::new(name.clone(), &viewer, 3),
        repo: display_url(&pipeline.source.repo),
        branch: pipeline.source.branch.clone(),
        image: pipeline.image.repository.to_string(),
        pinned: pin.map(|pin| pin.reason).unwrap_or_default(),
        deploying: lease.map(|lease| lease.owner).unwrap_or_default(),
        may_operate: viewer.may_operate(),
        read_at: if snapshot.taken_at == 0 {
            String::new()
        } else {
            age(now - snapshot.taken_at)
        },
        hosts: host_groups(&instances),
        runs: runs.iter().map(|run| RunView::new(run, now)).collect(),
        older,
        name,
    })
}

#[derive(Debug, Deserialize)]
struct RunPageQuery {
    /// Set by the page's own refresh, which only swaps the header and stages: no log.
    live: Option<String>,
}

async fn run_page(
    State(state): State<AppState>,
    Path(id): Path<i64>,
    Query(query): Query<RunPageQuery>,
    headers: HeaderMap,
) -> Response {
    let Some(viewer) = viewer(&state, &headers) else {
        return to_login(&format!("/runs/{id}"));
    };
    let store = &state.store;
    let run = match store.run(id).await {
        Ok(Some(run)) => run,
        Ok(None) => {
            return problem(
                &viewer,
                StatusCode::NOT_FOUND,
                "No such run",
                &format!("There is no run {id}; old runs are pruned after `server.keep_runs`."),
            );
        }
        Err(error) => return internal(&viewer, error),
    };
    let lines = if query.live.is_some() {
        Vec::new()
    } else {
        match store.log_tail(id, PAGE_LOG_LINES as i64).await {
            Ok(lines) => lines,
            Err(error) => return internal(&viewer, error),
        }
    };
    // Sequence numbers count from 0: the first line shown says how many come before.
    let hidden_lines = lines.first().map_or(0, |line| line.seq.max(0) as usize);
    let view = RunView::new(&run, now_millis());
    let refresh = if view.finished { 0 } else { 2 };
    page(&RunPage {
        layout: Layout::new(
            format!("{} #{}", run.pipeline, run.number),
            &viewer,
            refresh,
        ),
        stages: run
            .stages
            .iter()
            .map(|stage| StageView {
                name: stage.name.to_string(),
                state: stage.state.to_string(),
                duration: duration(stage.duration_ms),
                message: stage.message.clone().unwrap_or_default(),
            })
            .collect(),
        hidden_lines,
        last_seq: lines.last().map_or(-1, |line| line.seq),
        lines: lines
            .into_iter()
            .map(|line| LineView {
                seq: line.seq,
                text: line.line,
            })
            .collect(),
        run: view,
    })
}

/// The run's log as server-sent events, for the run page's script.
async fn run_events(
    State(state): State<AppState>,
    Path(id): Path<i64>,
    Query(query): Query<api::LogQuery>,
    headers: HeaderMap,
) -> Response {
    if viewer(&state, &headers).is_none() {
        return StatusCode::UNAUTHORIZED.into_response();
    }
    api::follow_log(state.store.clone(), id, query.after.unwrap_or(-1)).into_response()
}

/// The whole log as plain text, to read or save.
async fn run_log_text(
    State(state): State<AppState>,
    Path(id): Path<i64>,
    headers: HeaderMap,
) -> Response {
    if viewer(&state, &headers).is_none() {
        return to_login(&format!("/runs/{id}/log.txt"));
    }
    // Streamed a page of lines at a time, so a long log is never held whole.
    let store = state.store.clone();
    let pages = futures_util::stream::unfold(Some(-1_i64), move |after| {
        let store = store.clone();
        async move {
            let after = after?;
            match store.log_page(id, after, LOG_TEXT_PAGE).await {
                Ok(lines) if lines.is_empty() => None,
                Ok(lines) => {
                    let last = lines.last().map(|line| line.seq);
                    let mut text = String::new();
                    for line in lines {
                        text.push_str(&line.line);
                        text.push('\n');
                    }
                    Some((Ok::<_, std::io::Error>(bytes::Bytes::from(text)), last))
                }
                Err(error) => {
                    tracing::error!(%error, "reading a run's log");
                    None
                }
            }
        }
    });
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        )],
        axum::body::Body::from_stream(pages),
    )
        .into_response()
}

// ---------------------------------------------------------------- actions

/// What the dashboard may ask of a pipeline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Action {
    Trigger,
    Deploy,
    Rollback,
    Unpin,
}

impl Action {
    fn parse(text: &str) -> Option<Action> {
        match text {
            "trigger" => Some(Action::Trigger),
            "deploy" => Some(Action::Deploy),
            "rollback" => Some(Action::Rollback),
            "unpin" => Some(Action::Unpin),
            _ => None,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Action::Trigger => "trigger",
            Action::Deploy => "deploy",
            Action::Rollback => "rollback",
            Action::Unpin => "unpin",
        }
    }
}

/// The checks every action page makes: a known action, a known pipeline, an operator.
fn operator_for(
    state: &AppState,
    headers: &HeaderMap,
    name: &str,
    action: &str,
) -> Result<(Viewer, Action), Box<Response>> {
    let Some(viewer) = viewer(state, headers) else {
        return Err(Box::new(to_login(&format!("/pipelines/{name}/{action}"))));
    };
    let Some(action) = Action::parse(action) else {
        return Err(Box::new(problem(
            &viewer,
            StatusCode::NOT_FOUND,
            "No such action",
            "A pipeline can be triggered, deployed, rolled back or unpinned.",
        )));
    };
    if !state.config.borrow().config.pipelines.contains_key(name) {
        return Err(Box::new(problem(
            &viewer,
            StatusCode::NOT_FOUND,
            "No such pipeline",
            &format!("There is no pipeline `{name}` in the configuration."),
        )));
    }
    if !viewer.may_operate() {
        return Err(Box::new(problem(
            &viewer,
            StatusCode::FORBIDDEN,
            "Operators only",
            "Log in with the operator token (server.token) to act on a pipeline.",
        )));
    }
    Ok((viewer, action))
}

async fn confirm_page(
    State(state): State<AppState>,
    Path((name, action)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    let (viewer, action) = match operator_for(&state, &headers, &name, &action) {
        Ok(checked) => checked,
        Err(response) => return *response,
    };
    let (question, detail, field, field_label, field_hint, button) = match action {
        Action::Trigger => (
            format!("Run {name} now?"),
            "Builds the branch head (or the ref you give), pushes the image and deploys it."
                .to_string(),
            "commit",
            "Branch, tag or commit",
            "leave empty for the branch head",
            "Run it",
        ),
        Action::Deploy => (
            format!("Deploy {name}?"),
            "Deploys the latest image gantry built, or the image you give, to every host."
                .to_string(),
            "image",
            "Image",
            "repo:tag, repo@digest, a tag or a digest; empty for the latest build",
            "Deploy",
        ),
        Action::Rollback => (
            format!("Roll back {name}?"),
            "Deploys the previous image again and pins the pipeline: pushes are held until \
             it is unpinned."
                .to_string(),
            "to",
            "Roll back to",
            "a deployment number, digest or commit; empty for the previous one",
            "Roll back",
        ),
        Action::Unpin => (
            format!("Unpin {name}?"),
            "Pushes and polls deploy again as they come.".to_string(),
            "",
            "",
            "",
            "Unpin",
        ),
    };
    page(&ConfirmPage {
        layout: Layout::new(question.clone(), &viewer, 0),
        pipeline: name,
        action: action.name().to_string(),
        question,
        detail,
        field: field.to_string(),
        field_label: field_label.to_string(),
        field_hint: field_hint.to_string(),
        button: button.to_string(),
        form_key: viewer.form_key.clone().unwrap_or_default(),
    })
}

#[derive(Debug, Deserialize)]
struct ActionForm {
    form_key: String,
    commit: Option<String>,
    image: Option<String>,
    to: Option<String>,
}

/// Does a confirmed action, then shows its run (or the pipeline, for unpin).
async fn act(
    State(state): State<AppState>,
    Path((name, action)): Path<(String, String)>,
    headers: HeaderMap,
    Form(form): Form<ActionForm>,
) -> Response {
    let (viewer, action) = match operator_for(&state, &headers, &name, &action) {
        Ok(checked) => checked,
        Err(response) => return *response,
    };
    let expected = viewer.form_key.clone().unwrap_or_default();
    if expected.is_empty() || !same(&form.form_key, &expected) {
        return problem(
            &viewer,
            StatusCode::FORBIDDEN,
            "This form has expired",
            "Go back, reload the page and confirm again.",
        );
    }
    let given = |value: Option<String>| {
        value
            .map(|text| text.trim().to_string())
            .filter(|text| !text.is_empty())
    };
    let queued = match action {
        Action::Unpin => {
            return match crate::engine::intake::unpin(&state.store, &name).await {
                Ok(_) => Redirect::to(&format!("/pipelines/{name}")).into_response(),
                Err(error) => internal(&viewer, error),
            };
        }
        Action::Trigger => {
            api::enqueue(
                &state,
                &name,
                RunKind::Run,
                Trigger::Dashboard,
                given(form.commit).as_deref(),
            )
            .await
        }
        Action::Deploy => {
            api::enqueue(
                &state,
                &name,
                RunKind::Deploy,
                Trigger::Dashboard,
                given(form.image).as_deref(),
            )
            .await
        }
        Action::Rollback => {
            api::enqueue(
                &state,
                &name,
                RunKind::Rollback,
                Trigger::Dashboard,
                given(form.to).as_deref(),
            )
            .await
        }
    };
    match queued {
        Ok(run) => Redirect::to(&format!("/runs/{}", run.id)).into_response(),
        // A request that was refused (a bad ref, a store that cannot write) says why;
        // an internal error was logged where it happened.
        Err(error) => problem(&viewer, error.status(), "Not queued", error.message()),
    }
}

// ---------------------------------------------------------------- login

#[derive(Debug, Deserialize)]
struct NextPage {
    next: Option<String>,
}

fn anonymous() -> Viewer {
    Viewer {
        access: Access::Read,
        logged_in: false,
        form_key: None,
    }
}

async fn login_page(State(state): State<AppState>, Query(next): Query<NextPage>) -> Response {
    let server = state.config.borrow().config.server.clone();
    page(&LoginPage {
        layout: Layout::new("Log in", &anonymous(), 0),
        next: safe_next(next.next.as_deref()).to_string(),
        problem: String::new(),
        no_token: server.token.is_none() && server.read_token.is_none(),
    })
}

#[derive(Debug, Deserialize)]
struct LoginForm {
    token: String,
    next: Option<String>,
}

async fn login(
    State(state): State<AppState>,
    headers: HeaderMap,
    Form(form): Form<LoginForm>,
) -> Response {
    let server = state.config.borrow().config.server.clone();
    let given = form.token.trim();
    let now = now_seconds();
    let session = match (&server.token, &server.read_token) {
        (Some(token), _) if is_token(given, token) => Some(session_value(token, OPERATE, now)),
        (_, Some(token)) if is_token(given, token) => Some(session_value(token, READ, now)),
        _ => None,
    };
    let next = safe_next(form.next.as_deref()).to_string();
    let Some(session) = session else {
        let mut response = page(&LoginPage {
            layout: Layout::new("Log in", &anonymous(), 0),
            next,
            problem: "That token is not valid.".to_string(),
            no_token: server.token.is_none() && server.read_token.is_none(),
        });
        *response.status_mut() = StatusCode::UNAUTHORIZED;
        return response;
    };
    // Over https (directly, or behind a proxy that says so) the cookie is never sent in the clear.
    let https = server
        .public_url
        .as_deref()
        .is_some_and(|url| url.starts_with("https://"))
        || headers
            .get("x-forwarded-proto")
            .is_some_and(|proto| proto.as_bytes().eq_ignore_ascii_case(b"https"));
    let cookie = format!(
        "{SESSION_COOKIE}={session}; Path=/; HttpOnly; SameSite=Strict; Max-Age={}{}",
        SESSION_DAYS * 86_400,
        if https { "; Secure" } else { "" }
    );
    let mut response = Redirect::to(&next).into_response();
    if let Ok(value) = HeaderValue::from_str(&cookie) {
        response.headers_mut().insert(header::SET_COOKIE, value);
    }
    response
}

/// Removes the cookie from this browser. (A session is not stored on the server: a copy
/// taken elsewhere stays valid until it expires or the token changes.)
async fn logout() -> Response {
    let mut response = Redirect::to("/login").into_response();
    response.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_static("gantry_session=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0"),
    );
    response
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_path_on_this_server_may_follow_a_login() {
        assert_eq!(safe_next(Some("/runs/4")), "/runs/4");
        assert_eq!(
            safe_next(Some("/pipelines/web?before=9")),
            "/pipelines/web?before=9"
        );
        for outside in [
            "//evil.example",
            "https://evil.example/",
            "/\\evil.example",
            "/\t/evil.example",
            "/\n/evil.example",
            "/ /evil.example",
            "/caf\u{e9}",
            "runs/4",
            "",
        ] {
            assert_eq!(safe_next(Some(outside)), "/", "{outside}");
        }
        assert_eq!(safe_next(None), "/");
    }

    #[test]
    fn a_session_is_an_hmac_of_the_token_that_expires_and_ends_when_the_token_changes() {
        let token = SecretString::from("operator-token");
        let now = 1_800_000_000;
        let session = session_value(&token, OPERATE, now);
        assert!(!session.contains("operator-token"));
        assert!(is_session(&session, &token, OPERATE, now));
        assert!(is_session(&session, &token, OPERATE, now + 29 * 86_400));
        assert!(
            !is_session(&session, &token, OPERATE, now + 31 * 86_400),
            "expired"
        );
        assert!(!is_session(&session, &token, READ, now), "another level");
        let other = SecretString::from("new-token");
        assert!(!is_session(&session, &other, OPERATE, now), "token changed");
        // Editing the level or the time breaks the MAC.
        let forged = session.replacen(&now.to_string(), &(now + 86_400).to_string(), 1);
        assert!(!is_session(&forged, &token, OPERATE, now + 86_400));
        let promoted = session_value(&token, READ, now).replacen("read", "operate", 1);
        assert!(!is_session(&promoted, &token, OPERATE, now));
        for junk in ["", "operate", "operate.x.y", "operate..", &"0".repeat(64)] {
            assert!(!is_session(junk, &token, OPERATE, now), "{junk}");
        }
        assert!(is_token("operator-token", &token));
        assert!(!is_token("operator-toke", &token));
    }

    #[test]
    fn cookies_are_found_by_name_among_others() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::COOKIE,
            HeaderValue::from_static("theme=dark; gantry_session=abc123; other=1"),
        );
        assert_eq!(cookie(&headers, SESSION_COOKIE), Some("abc123"));
        assert_eq!(cookie(&headers, "missing"), None);
    }

    #[test]
    fn ages_and_durations_read_as_a_person_says_them() {
        assert_eq!(age(1_200), "just now");
        assert_eq!(age(42_000), "42 s ago");
        assert_eq!(age(5 * 60_000 + 10), "5 min ago");
        assert_eq!(age(3 * 3_600_000), "3 h ago");
        assert_eq!(age(30 * 3_600_000), "1 day ago");
        assert_eq!(age(5 * 86_400_000), "5 days ago");
        assert_eq!(age(-5), "just now");
        assert_eq!(duration(850), "850 ms");
        assert_eq!(duration(12_400), "12.4 s");
        assert_eq!(duration(185_000), "3 min 5 s");
        assert_eq!(duration(7_800_000), "2 h 10 min");
        assert_eq!(timestamp(0), "1970-01-01T00:00:00Z");
    }

    #[test]
    fn instances_are_grouped_by_host_in_reading_order() {
        let instance = |name: &str, host: &str| InstanceStatus {
            pipeline: "web".to_string(),
            service: "app".to_string(),
            instance: name.to_string(),
            host: host.to_string(),
            container: None,
            image: None,
            tags: Vec::new(),
            digest: Some(format!("sha256:{}", "ab".repeat(32))),
            commit: Some("0123456789abcdef".to_string()),
            state: "running".to_string(),
            health: None,
            uptime_seconds: Some(65),
            recorded_digest: None,
            drift: vec!["digest differs".to_string(), "stopped".to_string()],
            error: None,
            logs: None,
        };
        let groups = host_groups(&[
            instance("app-1", "h1"),
            instance("app-2", "h2"),
            instance("app-3", "h1"),
        ]);
        let hosts: Vec<_> = groups.iter().map(|group| group.host.as_str()).collect();
        assert_eq!(hosts, ["h1", "h2"]);
        assert_eq!(groups[0].instances.len(), 2);
        let first = &groups[0].instances[0];
        assert_eq!(first.commit_short, "01234567");
        assert_eq!(first.digest_short, "abababababab");
        assert_eq!(first.uptime, "1 min 5 s");
        assert_eq!(first.drift, "digest differs; stopped");
    }
}
