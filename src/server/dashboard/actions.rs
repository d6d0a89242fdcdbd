//! Actions: a confirmation page, then a `POST` carrying the session's form key that
//! queues through the engine's intake (run, deploy, roll back) or unpins.

use super::*;

// ---------------------------------------------------------------- actions

/// What the dashboard may ask of a pipeline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Action {
    Trigger,
    Deploy,
    Rollback,
    Unpin,
}

impl Action {
    pub(super) fn parse(text: &str) -> Option<Action> {
        match text {
            "trigger" => Some(Action::Trigger),
            "deploy" => Some(Action::Deploy),
            "rollback" => Some(Action::Rollback),
            "unpin" => Some(Action::Unpin),
            _ => None,
        }
    }

    pub(super) fn name(self) -> &'static str {
        match self {
            Action::Trigger => "trigger",
            Action::Deploy => "deploy",
            Action::Rollback => "rollback",
            Action::Unpin => "unpin",
        }
    }
}

/// The checks every action page makes: a known action, a known pipeline, an operator.
pub(super) fn operator_for(
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

pub(super) async fn confirm_page(
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
pub(super) struct ActionForm {
    pub(super) form_key: String,
    pub(super) commit: Option<String>,
    pub(super) image: Option<String>,
    pub(super) to: Option<String>,
}

/// Does a confirmed action, then shows its run (or the pipeline, for unpin).
pub(super) async fn act(
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
    let (kind, requested) = match action {
        Action::Unpin => {
            return match crate::engine::intake::unpin(&state.store, &name).await {
                Ok(_) => Redirect::to(&format!("/pipelines/{name}")).into_response(),
                Err(error) => internal(&viewer, error),
            };
        }
        Action::Trigger => (RunKind::Run, given(form.commit)),
        Action::Deploy => (RunKind::Deploy, given(form.image)),
        Action::Rollback => (RunKind::Rollback, given(form.to)),
    };
    let queued = api::enqueue(
        &state,
        &name,
        kind,
        Trigger::Dashboard,
        requested.as_deref(),
    )
    .await;
    match queued {
        Ok(run) => Redirect::to(&format!("/runs/{}", run.id)).into_response(),
        // A request that was refused (a bad ref, a store that cannot write) says why;
        // an internal error was logged where it happened.
        Err(error) => problem(&viewer, error.status(), "Not queued", error.message()),
    }
}
