//! The pages: home, a pipeline, a run (with its live log and plain-text log).

use super::*;

// ---------------------------------------------------------------- pages

pub(super) async fn home(State(state): State<AppState>, headers: HeaderMap) -> Response {
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
pub(super) struct Paging {
    pub(super) before: Option<i64>,
}

pub(super) async fn pipeline_page(
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
        image: pipeline
            .images
            .values()
            .map(|image| image.repository.to_string())
            .collect::<Vec<_>>()
            .join(", "),
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
pub(super) struct RunPageQuery {
    /// Set by the page's own refresh, which only swaps the header and stages: no log.
    pub(super) live: Option<String>,
}

pub(super) async fn run_page(
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
pub(super) async fn run_events(
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
pub(super) async fn run_log_text(
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
