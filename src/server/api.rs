//! The JSON API under `/api/v1`: pipelines, runs (paged), a run's log (whole, or
//! followed as server-sent events), and the actions that only record: trigger a run,
//! pin and unpin. Every action goes through the same store and queue as webhooks and
//! the CLI.
//!
//! Access: `server.token` may read and act; `server.read_token` may only read (an
//! action with it is 403); without a token, reads answer only when `server.public_read`
//! is set. Tokens are judged by `server::access` (hashed, then compared in constant
//! time) and never appear in an answer.

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};

use super::access::{Access, anonymous_access, token_access};
use super::body::ActionBody;
use super::{ApiError, AppState};
use crate::engine::intake;
use crate::run::{RunId, RunKind, RunState, Trigger};
use crate::source::display_url;

/// The most runs one page holds.
pub const MAX_PAGE: i64 = 500;
/// The most an API request body may hold (actions take a few short fields).
pub const MAX_BODY: usize = 64 * 1024;
/// How often a followed log is read for new lines.
const FOLLOW_EVERY: Duration = Duration::from_millis(200);

/// The access the request's bearer token gives (without one, what anybody may do).
fn access(state: &AppState, headers: &HeaderMap) -> Result<Access, ApiError> {
    let live = state.config.borrow().config.clone();
    let server = &live.server;
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(bearer_token);
    match bearer {
        Some(given) => token_access(server, given)
            .map(|(access, _)| access)
            .ok_or_else(|| {
                ApiError::new(StatusCode::UNAUTHORIZED, "the bearer token is not valid")
            }),
        None => anonymous_access(server).ok_or_else(|| {
            ApiError::new(
                StatusCode::UNAUTHORIZED,
                "a bearer token is required (Authorization: Bearer TOKEN)",
            )
        }),
    }
}

/// The token of an `Authorization: Bearer TOKEN` value; the scheme's name is matched
/// without regard to case, as HTTP says.
fn bearer_token(value: &str) -> Option<&str> {
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim_start_matches(' '))
}

fn may_read(state: &AppState, headers: &HeaderMap) -> Result<(), ApiError> {
    access(state, headers).map(|_| ())
}

fn may_operate(state: &AppState, headers: &HeaderMap) -> Result<(), ApiError> {
    match access(state, headers)? {
        Access::Operate => Ok(()),
        Access::Read => Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "this token may only read; actions need server.token",
        )),
    }
}

/// The API's routes, made from `endpoints()`: what is served is what is documented.
pub fn routes() -> Router<AppState> {
    endpoints()
        .into_iter()
        .fold(Router::new(), |router, endpoint| {
            router.route(endpoint.path, endpoint.handler)
        })
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY))
}

/// One pipeline as the API shows it: its config summary (no secrets) and state.
async fn summary(state: &AppState, name: &str) -> Result<Value, ApiError> {
    let live = state.config.borrow().config.clone();
    let pipeline = live
        .pipelines
        .get(name)
        .ok_or_else(|| ApiError::no_pipeline(name))?;
    let store = &state.store;
    let last_run = store
        .runs(Some(name), 1)
        .await
        .map_err(ApiError::store)?
        .into_iter()
        .next();
    let pinned = store.pin_of(name).await.map_err(ApiError::store)?;
    let deploying = store.lease_of(name).await.map_err(ApiError::store)?;
    Ok(json!({
        "name": pipeline.name,
        "repo": display_url(&pipeline.source.repo),
        "branch": pipeline.source.branch,
        "poll_seconds": pipeline.source.poll.map(|poll| poll.as_secs()),
        "webhook": pipeline.source.webhook.is_some(),
        "image": pipeline.images.values().next().map(|image| image.repository.to_string()),
        "images": pipeline.images.values()
            .map(|image| (image.name.clone(), image.repository.to_string()))
            .collect::<std::collections::BTreeMap<_, _>>(),
        "services": pipeline.deploy.services.keys().collect::<Vec<_>>(),
        "instances": pipeline.deploy.services.values()
            .flat_map(|service| service.instances.values().map(|instance| json!({
                "service": service.name, "instance": instance.name, "host": instance.host,
            })))
            .collect::<Vec<_>>(),
        "last_run": last_run,
        "pinned": pinned,
        "deploying": deploying,
    }))
}

async fn pipelines(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    may_read(&state, &headers)?;
    let (names, errors) = {
        let live = state.config.borrow();
        (
            live.config.pipelines.keys().cloned().collect::<Vec<_>>(),
            live.errors.clone(),
        )
    };
    let mut listed = Vec::with_capacity(names.len());
    for name in names {
        listed.push(summary(&state, &name).await?);
    }
    Ok(Json(json!({ "pipelines": listed, "config_errors": errors })).into_response())
}

async fn pipeline(
    State(state): State<AppState>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    may_read(&state, &headers)?;
    Ok(Json(summary(&state, &name).await?).into_response())
}

#[derive(Debug, Deserialize)]
struct InstanceFilter {
    pipeline: Option<String>,
}

/// The daemon's latest reading (refreshed every few seconds); handlers never call Docker.
async fn instances(
    State(state): State<AppState>,
    Query(filter): Query<InstanceFilter>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    may_read(&state, &headers)?;
    if let Some(pipeline) = &filter.pipeline {
        ensure_pipeline(&state, pipeline)?;
    }
    let snapshot = crate::engine::status::fresh_snapshot(
        &state.status,
        &state.store,
        filter.pipeline.as_deref(),
        crate::engine::status::STATUS_EVERY * 2,
    )
    .await;
    let pipelines: Vec<_> = snapshot
        .pipelines
        .iter()
        .filter(|document| {
            filter
                .pipeline
                .as_ref()
                .is_none_or(|pipeline| *pipeline == document.pipeline)
        })
        .collect();
    Ok(Json(json!({ "taken_at": snapshot.taken_at, "pipelines": pipelines })).into_response())
}

#[derive(Debug, Deserialize)]
struct RunFilter {
    pipeline: Option<String>,
    state: Option<RunState>,
    /// The `next_before` of the previous page.
    before: Option<i64>,
    /// Runs per page, 1 to `MAX_PAGE` (more is taken as `MAX_PAGE`).
    limit: Option<u32>,
}

async fn runs(
    State(state): State<AppState>,
    Query(filter): Query<RunFilter>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    may_read(&state, &headers)?;
    let limit = match filter.limit {
        None => 50,
        Some(0) => {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                format!("`limit` must be 1 to {MAX_PAGE}"),
            ));
        }
        Some(limit) => i64::from(limit).min(MAX_PAGE),
    };
    let page = state
        .store
        .runs_page(
            filter.pipeline.as_deref(),
            filter.state,
            filter.before,
            limit,
        )
        .await
        .map_err(ApiError::store)?;
    let next_before = (page.len() as i64 == limit)
        .then(|| page.last().map(|run| run.id))
        .flatten();
    Ok(Json(json!({ "runs": page, "next_before": next_before })).into_response())
}

async fn run(
    State(state): State<AppState>,
    Path(id): Path<i64>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    may_read(&state, &headers)?;
    let run = state
        .store
        .run(id)
        .await
        .map_err(ApiError::store)?
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, format!("no run {id}")))?;
    Ok(Json(run).into_response())
}

/// Which lines of a log to send.
#[derive(Debug, Deserialize)]
pub(super) struct LogQuery {
    /// Only lines after this sequence number.
    pub after: Option<i64>,
}

/// The whole log as JSON, or with `Accept: text/event-stream` every line as an event
/// (`line`, with the line as JSON) until the run ends (`end`, with its state).
async fn log(
    State(state): State<AppState>,
    Path(id): Path<i64>,
    Query(query): Query<LogQuery>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    may_read(&state, &headers)?;
    let store = state.store.clone();
    let run = store
        .run(id)
        .await
        .map_err(ApiError::store)?
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, format!("no run {id}")))?;
    let wants_events = headers
        .get(header::ACCEPT)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|accept| accept.contains("text/event-stream"));
    let after = query.after.unwrap_or(-1);
    if !wants_events {
        let lines = store.log_lines(id, after).await.map_err(ApiError::store)?;
        return Ok(Json(json!({ "run": id, "state": run.state, "lines": lines })).into_response());
    }
    Ok(follow_log(store, id, after).into_response())
}

/// A run's log lines after `after` as server-sent events: `line` for each, then `end`
/// with the run's final state.
pub(super) fn follow_log(
    store: crate::store::Store,
    id: i64,
    after: i64,
) -> Sse<impl futures_util::Stream<Item = Result<SseEvent, Infallible>>> {
    Sse::new(log_events(store, id, after)).keep_alive(KeepAlive::default())
}

/// The events of a followed log.
fn log_events(
    store: crate::store::Store,
    id: i64,
    after: i64,
) -> impl futures_util::Stream<Item = Result<SseEvent, Infallible>> {
    futures_util::stream::unfold(
        (store, after, false),
        move |(store, last, ended)| async move {
            if ended {
                return None;
            }
            loop {
                let lines = store.log_lines(id, last).await.unwrap_or_default();
                if let Some(line) = lines.first() {
                    let event = SseEvent::default()
                        .event("line")
                        .data(serde_json::to_string(line).unwrap_or_default());
                    return Some((Ok(event), (store, line.seq, false)));
                }
                let state = store.run(id).await.ok().flatten().map(|run| run.state);
                // A run that is gone (pruned) is over too.
                if state.is_none_or(RunState::is_finished) {
                    // Lines written just before the run ended.
                    tokio::time::sleep(FOLLOW_EVERY).await;
                    if store
                        .log_lines(id, last)
                        .await
                        .is_ok_and(|lines| !lines.is_empty())
                    {
                        continue;
                    }
                    let event = SseEvent::default().event("end").data(
                        json!({ "state": state.map_or("gone", RunState::as_str) }).to_string(),
                    );
                    return Some((Ok(event), (store, last, true)));
                }
                tokio::time::sleep(FOLLOW_EVERY).await;
            }
        },
    )
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a JSON object")]
struct TriggerBody {
    /// A branch, tag or commit id; the branch head at run time when absent.
    commit: Option<String>,
}

async fn trigger(
    State(state): State<AppState>,
    Path(name): Path<String>,
    headers: HeaderMap,
    ActionBody(body): ActionBody<TriggerBody>,
) -> Result<Response, ApiError> {
    let commit = body.commit;
    queue_action(&state, &headers, name, RunKind::Run, commit).await
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a JSON object")]
struct DeployBody {
    image: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a JSON object")]
struct RollbackBody {
    to: Option<String>,
}

async fn deploy(
    State(state): State<AppState>,
    Path(name): Path<String>,
    headers: HeaderMap,
    ActionBody(body): ActionBody<DeployBody>,
) -> Result<Response, ApiError> {
    let image = body.image;
    queue_action(&state, &headers, name, RunKind::Deploy, image).await
}

async fn rollback(
    State(state): State<AppState>,
    Path(name): Path<String>,
    headers: HeaderMap,
    ActionBody(body): ActionBody<RollbackBody>,
) -> Result<Response, ApiError> {
    let to = body.to;
    queue_action(&state, &headers, name, RunKind::Rollback, to).await
}

/// Queues a run, deploy or rollback; the scheduler runs it (a deploy or rollback under
/// the pipeline's lease).
async fn queue_action(
    state: &AppState,
    headers: &HeaderMap,
    name: String,
    kind: RunKind,
    requested: Option<String>,
) -> Result<Response, ApiError> {
    may_operate(state, headers)?;
    ensure_pipeline(state, &name)?;
    let queued = enqueue(state, &name, kind, Trigger::Api, requested.as_deref()).await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({ "queued": true, "kind": kind, "pipeline": name, "run": queued.number, "run_id": queued.id })),
    )
        .into_response())
}

/// Queues a run of `kind` as the API or the dashboard asked, through the engine's intake.
pub(super) async fn enqueue(
    state: &AppState,
    name: &str,
    kind: RunKind,
    trigger: Trigger,
    requested: Option<&str>,
) -> Result<RunId, ApiError> {
    let request = intake::Request {
        pipeline: name,
        kind,
        trigger,
        requested,
        delivery: None,
    };
    let queued = intake::queue(
        &state.store,
        Some(&state.events),
        &request,
        crate::store::no_answer(),
    )
    .await?;
    queued.map_err(|_| ApiError::internal("a run without a delivery was refused"))
}

fn ensure_pipeline(state: &AppState, name: &str) -> Result<(), ApiError> {
    if state.config.borrow().config.pipelines.contains_key(name) {
        Ok(())
    } else {
        Err(ApiError::no_pipeline(name))
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a JSON object")]
struct PinBody {
    reason: Option<String>,
}

async fn pin(
    State(state): State<AppState>,
    Path(name): Path<String>,
    headers: HeaderMap,
    ActionBody(body): ActionBody<PinBody>,
) -> Result<Response, ApiError> {
    may_operate(&state, &headers)?;
    ensure_pipeline(&state, &name)?;
    let reason = body
        .reason
        .unwrap_or_else(|| "pinned through the API".to_string());
    let pinned = intake::pin(&state.store, &name, &reason)
        .await
        .map_err(ApiError::store)?;
    Ok(Json(json!({ "pipeline": name, "pinned": pinned })).into_response())
}

async fn unpin(
    State(state): State<AppState>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    may_operate(&state, &headers)?;
    ensure_pipeline(&state, &name)?;
    let was_pinned = intake::unpin(&state.store, &name)
        .await
        .map_err(ApiError::store)?;
    Ok(Json(json!({ "pipeline": name, "was_pinned": was_pinned })).into_response())
}

/// The OpenAPI 3.1 description of the API.
/// One endpoint of the API, declared once: `routes` serves it and `openapi_document`
/// describes it, so none can be added without its description.
pub struct Endpoint {
    pub method: &'static str,
    pub path: &'static str,
    handler: axum::routing::MethodRouter<AppState>,
    /// The OpenAPI operation: `summary`, `parameters`, `requestBody`, `responses`.
    pub operation: Value,
}

/// Every endpoint of the API.
pub fn endpoints() -> Vec<Endpoint> {
    use axum::routing::{get, post};
    let error = json!({ "$ref": "#/components/schemas/Error" });
    let errors = |codes: &[&str]| -> Value {
        let mut map = serde_json::Map::new();
        for code in codes {
            map.insert(
                code.to_string(),
                json!({ "description": "an error", "content": { "application/json": { "schema": error } } }),
            );
        }
        Value::Object(map)
    };
    let with = |mut ok: Value, codes: &[&str]| {
        if let (Some(ok), Value::Object(more)) = (ok.as_object_mut(), errors(codes)) {
            ok.extend(more);
        }
        ok
    };
    let name =
        json!({ "name": "name", "in": "path", "required": true, "schema": { "type": "string" } });
    let id =
        json!({ "name": "id", "in": "path", "required": true, "schema": { "type": "integer" } });
    let json_ok = |description: &str| json!({ "200": { "description": description, "content": { "application/json": { "schema": { "type": "object" } } } } });
    let body = |field: &str| {
        json!({ "required": false, "content": { "application/json": { "schema": {
        "type": "object", "properties": { field: { "type": "string" } } } } } })
    };
    let queued = json!({ "202": { "description": "queued: `run` and `run_id`" } });
    let endpoint = |method, path, handler, operation| Endpoint {
        method,
        path,
        handler,
        operation,
    };
    vec![
        endpoint(
            "get",
            "/api/v1/openapi.json",
            get(openapi),
            json!({
            "summary": "This document", "security": [],
            "responses": json_ok("the OpenAPI document") }),
        ),
        endpoint(
            "get",
            "/api/v1/pipelines",
            get(pipelines),
            json!({
            "summary": "Every pipeline: config summary, last run, pin, deploy in progress, config errors",
            "responses": with(json_ok("pipelines"), &["401"]) }),
        ),
        endpoint(
            "get",
            "/api/v1/pipelines/{name}",
            get(pipeline),
            json!({
            "summary": "One pipeline", "parameters": [name],
            "responses": with(json_ok("the pipeline"), &["401", "404"]) }),
        ),
        endpoint(
            "post",
            "/api/v1/pipelines/{name}/trigger",
            post(trigger),
            json!({
            "summary": "Queue a run of the branch head, or of `commit` (a commit id, branch or tag)",
            "parameters": [name], "requestBody": body("commit"),
            "responses": with(queued.clone(), &["400", "401", "403", "404", "429", "503"]) }),
        ),
        endpoint(
            "post",
            "/api/v1/pipelines/{name}/deploy",
            post(deploy),
            json!({
            "summary": "Queue a deploy of the latest built image, or of `image` (repo:tag, repo@digest, a tag or a digest)",
            "parameters": [name], "requestBody": body("image"),
            "responses": with(queued.clone(), &["400", "401", "403", "404", "429", "503"]) }),
        ),
        endpoint(
            "post",
            "/api/v1/pipelines/{name}/rollback",
            post(rollback),
            json!({
            "summary": "Queue a rollback to the previous image, or `to` a deployment number, digest or commit; it pins the pipeline",
            "parameters": [name], "requestBody": body("to"),
            "responses": with(queued, &["400", "401", "403", "404", "429", "503"]) }),
        ),
        endpoint(
            "post",
            "/api/v1/pipelines/{name}/pin",
            post(pin),
            json!({
            "summary": "Hold automatic deploys", "parameters": [name], "requestBody": body("reason"),
            "responses": with(json_ok("the pin"), &["401", "403", "404", "429", "503"]) }),
        ),
        endpoint(
            "post",
            "/api/v1/pipelines/{name}/unpin",
            post(unpin),
            json!({
            "summary": "Let automatic deploys go ahead", "parameters": [name],
            "responses": with(json_ok("`was_pinned`"), &["401", "403", "404", "429", "503"]) }),
        ),
        endpoint(
            "get",
            "/api/v1/instances",
            get(instances),
            json!({
            "summary": "Every instance on every host (what `gantry status` shows), as last read by the daemon",
            "parameters": [{ "name": "pipeline", "in": "query", "schema": { "type": "string" } }],
            "responses": with(json_ok("`taken_at` and `pipelines` with their instances"), &["401"]) }),
        ),
        endpoint(
            "get",
            "/api/v1/runs",
            get(runs),
            json!({
            "summary": "Runs, newest first, a page at a time",
            "parameters": [
                { "name": "pipeline", "in": "query", "schema": { "type": "string" } },
                { "name": "state", "in": "query", "schema": { "type": "string" } },
                { "name": "before", "in": "query", "description": "`next_before` of the previous page", "schema": { "type": "integer" } },
                { "name": "limit", "in": "query", "schema": { "type": "integer", "maximum": MAX_PAGE } }
            ],
            "responses": with(json_ok("`runs` and `next_before`"), &["400", "401"]) }),
        ),
        endpoint(
            "get",
            "/api/v1/runs/{id}",
            get(run),
            json!({
            "summary": "One run with its stages", "parameters": [id],
            "responses": with(json_ok("the run"), &["401", "404"]) }),
        ),
        endpoint(
            "get",
            "/api/v1/runs/{id}/log",
            get(log),
            json!({
            "summary": "A run's log; with `Accept: text/event-stream`, followed live (`line` events, then `end`)",
            "parameters": [id, { "name": "after", "in": "query", "description": "only lines after this `seq`", "schema": { "type": "integer" } }],
            "responses": with(json!({ "200": { "description": "the log", "content": {
                "application/json": { "schema": { "type": "object" } },
                "text/event-stream": { "schema": { "type": "string" } } } } }), &["401", "404"]) }),
        ),
    ]
}

/// The OpenAPI document: every endpoint, as `endpoints()` declares it.
pub fn openapi_document() -> Value {
    let mut paths = serde_json::Map::new();
    for endpoint in endpoints() {
        let methods = paths
            .entry(endpoint.path.to_string())
            .or_insert_with(|| json!({}));
        methods[endpoint.method] = endpoint.operation;
    }
    json!({
        "openapi": "3.1.0",
        "info": { "title": "gantry", "version": env!("CARGO_PKG_VERSION"),
                  "description": "Runs, pipelines and actions of a gantry daemon." },
        "components": {
            "securitySchemes": { "bearer": { "type": "http", "scheme": "bearer" } },
            "schemas": { "Error": { "type": "object", "required": ["error"],
                                    "properties": { "error": { "type": "string" } } } }
        },
        "security": [{ "bearer": [] }],
        "paths": paths,
    })
}

async fn openapi() -> Response {
    Json(openapi_document()).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_endpoint_is_described_and_the_document_lists_them_all() {
        let document = openapi_document();
        let paths = document["paths"].as_object().unwrap();
        let documented: usize = paths
            .values()
            .map(|methods| methods.as_object().unwrap().len())
            .sum();
        assert_eq!(
            documented,
            endpoints().len(),
            "no two endpoints share a method and path"
        );
        for endpoint in endpoints() {
            let operation = &paths[endpoint.path][endpoint.method];
            assert!(
                operation["summary"]
                    .as_str()
                    .is_some_and(|summary| !summary.is_empty()),
                "{} {} has no summary",
                endpoint.method,
                endpoint.path
            );
            assert!(
                operation["responses"]
                    .as_object()
                    .is_some_and(|responses| !responses.is_empty()),
                "{} {} has no responses",
                endpoint.method,
                endpoint.path
            );
        }
    }
}
