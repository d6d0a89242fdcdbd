//! The commands that can drive a remote daemon through its HTTP API (`--server URL`
//! with `--token`): `runs`, `logs [--follow]`, `trigger`, `deploy`, `rollback`, `pin`
//! and `unpin`. They print what the local commands print and exit the same way; a
//! deploy or rollback is queued on the daemon and followed to its end.

use std::process::ExitCode;
use std::time::Duration;

use reqwest::{Method, StatusCode};
use secrecy::{ExposeSecret, SecretString};
use serde_json::{Value, json};

use super::errors;
use super::printable::printable;
use super::{Cli, Command, EXIT_FAILED, EXIT_OK, EXIT_USAGE, SERVER_COMMANDS};
use crate::run::RunState;
use crate::store::{LogLine, RunRecord};

/// How often a followed run is asked for new log lines.
const FOLLOW_EVERY: Duration = Duration::from_millis(300);
/// The longest one API call may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// A daemon's API, with the token to use.
pub struct Remote {
    base: String,
    token: Option<SecretString>,
    client: reqwest::Client,
}

/// An API call that did not give the expected answer: the exit code and why.
pub struct Refused {
    pub code: u8,
    pub message: String,
}

impl Remote {
    /// The daemon at `base` (`http://HOST:PORT` or `https://...`). An address that is
    /// not such a URL, or that holds credentials (which belong in `--token`), is refused;
    /// messages never quote the credentials.
    pub fn new(base: &str, token: Option<SecretString>) -> Result<Remote, Refused> {
        let usage = |message: String| Refused {
            code: EXIT_USAGE,
            message,
        };
        // What was given may hold a password in any form: a message never quotes it.
        let url = url::Url::parse(base).map_err(|error| {
            usage(format!(
                "--server is not a URL ({error}); give the daemon's address, like http://127.0.0.1:8700"
            ))
        })?;
        if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
            return Err(usage(
                "--server is not an http:// or https:// address of a daemon, like http://127.0.0.1:8700"
                    .to_string(),
            ));
        }
        let mut shown = url.clone();
        let _ = shown.set_username("");
        let _ = shown.set_password(None);
        if !url.username().is_empty() || url.password().is_some() {
            return Err(usage(format!(
                "--server `{shown}` holds credentials; give the address alone and the token with --token or GANTRY_TOKEN"
            )));
        }
        let client = crate::http::client()
            .map_err(|message| Refused {
                code: EXIT_FAILED,
                message,
            })?
            .clone();
        Ok(Remote {
            base: base.trim_end_matches('/').to_string(),
            token,
            client,
        })
    }

    /// Calls the API; a 4xx is the caller's fault (exit 2 for 400/404, 1 otherwise).
    async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value, Refused> {
        let mut request = self
            .client
            .request(method, format!("{}{path}", self.base))
            .timeout(REQUEST_TIMEOUT);
        if let Some(token) = &self.token {
            request = request.bearer_auth(token.expose_secret());
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.map_err(|error| Refused {
            code: EXIT_FAILED,
            message: format!(
                "cannot reach {}: {}",
                self.base,
                crate::http::innermost_cause(&error)
            ),
        })?;
        let status = response.status();
        let answer: Value = response.json().await.unwrap_or(Value::Null);
        if status.is_success() {
            return Ok(answer);
        }
        let reason = answer["error"]
            .as_str()
            .unwrap_or("no reason given")
            .to_string();
        let code = match status {
            StatusCode::BAD_REQUEST | StatusCode::NOT_FOUND => EXIT_USAGE,
            _ => EXIT_FAILED,
        };
        let hint = match status {
            StatusCode::UNAUTHORIZED => " (hint: pass --token or set GANTRY_TOKEN)",
            _ => "",
        };
        Err(Refused {
            code,
            message: format!("{} answered {}: {reason}{hint}", self.base, status.as_u16()),
        })
    }
}

fn refused(refusal: Refused) -> ExitCode {
    errors::fail(refusal.code, &refusal.message)
}

pub async fn runs(remote: &Remote, pipeline: Option<&str>, limit: i64, json: bool) -> ExitCode {
    let mut path = format!("/api/v1/runs?limit={}", limit.clamp(1, 500));
    if let Some(pipeline) = pipeline {
        path.push_str(&format!("&pipeline={pipeline}"));
    }
    let page = match remote.call(Method::GET, &path, None).await {
        Ok(page) => page,
        Err(refusal) => return refused(refusal),
    };
    let runs: Vec<RunRecord> = serde_json::from_value(page["runs"].clone()).unwrap_or_default();
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&runs).unwrap_or_default()
        );
    } else if runs.is_empty() {
        println!("no runs yet");
    } else {
        for run in &runs {
            println!("{}", printable(&super::daemon::describe(run)));
        }
    }
    ExitCode::from(EXIT_OK)
}

/// `gantry status` from the daemon's latest reading of every instance.
pub async fn status(remote: &Remote, pipeline: Option<&str>, json: bool) -> ExitCode {
    let path = match pipeline {
        Some(pipeline) => format!("/api/v1/instances?pipeline={pipeline}"),
        None => "/api/v1/instances".to_string(),
    };
    let answer = match remote.call(Method::GET, &path, None).await {
        Ok(answer) => answer,
        Err(refusal) => return refused(refusal),
    };
    let documents: Vec<crate::engine::status::PipelineStatus> =
        serde_json::from_value(answer["pipelines"].clone()).unwrap_or_default();
    if let Some(pipeline) = pipeline
        && documents.is_empty()
    {
        return refused(Refused {
            code: EXIT_USAGE,
            message: format!(
                "the daemon has no pipeline `{pipeline}` (or has not read its instances yet)"
            ),
        });
    }
    match super::operate::render_status(&documents, json) {
        Ok(()) => ExitCode::from(EXIT_OK),
        Err(error) => refused(Refused {
            code: EXIT_FAILED,
            message: error.to_string(),
        }),
    }
}

/// Finds a run's id from `PIPELINE#NUMBER` or an id.
async fn run_id(remote: &Remote, run: &str) -> Result<i64, Refused> {
    let not_found = || Refused {
        code: EXIT_USAGE,
        message: format!("no run `{run}` (give PIPELINE#NUMBER or the id `gantry runs` shows)"),
    };
    if let Ok(id) = run.parse::<i64>() {
        return Ok(id);
    }
    let (pipeline, number) = run.split_once('#').ok_or_else(not_found)?;
    let number: i64 = number.parse().map_err(|_| not_found())?;
    // Runs of a pipeline are numbered 1, 2, ...; page back until the number shows.
    let mut before: Option<i64> = None;
    loop {
        let mut path = format!("/api/v1/runs?pipeline={pipeline}&limit=500");
        if let Some(before) = before {
            path.push_str(&format!("&before={before}"));
        }
        let page = remote.call(Method::GET, &path, None).await?;
        let runs: Vec<RunRecord> = serde_json::from_value(page["runs"].clone()).unwrap_or_default();
        if let Some(found) = runs.iter().find(|run| run.number == number) {
            return Ok(found.id);
        }
        match page["next_before"].as_i64() {
            Some(next) => before = Some(next),
            None => return Err(not_found()),
        }
    }
}

pub async fn logs(remote: &Remote, run: &str, follow: bool, json: bool) -> ExitCode {
    let id = match run_id(remote, run).await {
        Ok(id) => id,
        Err(refusal) => return refused(refusal),
    };
    match print_log(remote, id, follow, json).await {
        Ok(_) => ExitCode::from(EXIT_OK),
        Err(refusal) => refused(refusal),
    }
}

/// Prints a run's log (following it to the end when asked); returns the run's state.
async fn print_log(
    remote: &Remote,
    id: i64,
    follow: bool,
    json: bool,
) -> Result<Option<RunState>, Refused> {
    let mut printed = -1;
    loop {
        let answer = remote
            .call(Method::GET, &format!("/api/v1/runs/{id}/log"), None)
            .await?;
        let lines: Vec<LogLine> =
            serde_json::from_value(answer["lines"].clone()).unwrap_or_default();
        let already = printed;
        for line in lines.iter().filter(|line| line.seq > already) {
            if json {
                println!("{}", serde_json::to_string(line).unwrap_or_default());
            } else {
                println!("{}", printable(&line.line));
            }
            printed = line.seq;
        }
        // A state the daemon does not name (a run gone) is taken as over.
        let state: Option<RunState> = serde_json::from_value(answer["state"].clone()).ok();
        if !follow || state.is_none_or(RunState::is_finished) {
            return Ok(state);
        }
        tokio::time::sleep(FOLLOW_EVERY).await;
    }
}

/// Queues an action and, unless it is a plain trigger, follows its run to the end.
pub async fn act(
    remote: &Remote,
    pipeline: &str,
    action: &str,
    body: Value,
    follow: bool,
    json: bool,
) -> ExitCode {
    let path = format!("/api/v1/pipelines/{pipeline}/{action}");
    let answer = match remote.call(Method::POST, &path, Some(body)).await {
        Ok(answer) => answer,
        Err(refusal) => return refused(refusal),
    };
    if !follow {
        if json {
            println!("{answer}");
        } else if let Some(run) = answer["run"].as_i64() {
            println!(
                "queued {pipeline}#{run} (id {}) on {}",
                answer["run_id"], remote.base
            );
        } else {
            println!("{pipeline}: {action} done");
        }
        return ExitCode::from(EXIT_OK);
    }
    let Some(id) = answer["run_id"].as_i64() else {
        return refused(Refused {
            code: EXIT_FAILED,
            message: format!("the daemon queued no run: {answer}"),
        });
    };
    eprintln!(
        "queued {pipeline}#{} on {}; following it",
        answer["run"], remote.base
    );
    let state = match print_log(remote, id, true, false).await {
        Ok(state) => state,
        Err(refusal) => return refused(refusal),
    };
    let run = remote
        .call(Method::GET, &format!("/api/v1/runs/{id}"), None)
        .await
        .unwrap_or(Value::Null);
    if json {
        println!("{}", serde_json::to_string_pretty(&run).unwrap_or_default());
    }
    if state == Some(RunState::Succeeded) {
        if !json {
            println!("{pipeline}#{}: {action} succeeded", answer["run"]);
        }
        ExitCode::from(EXIT_OK)
    } else {
        eprintln!(
            "error: {action} of {pipeline} {}{}",
            state.map_or("ended", RunState::as_str),
            run["failed_stage"]
                .as_str()
                .map(|stage| format!(
                    " at {stage}: {}",
                    printable(run["message"].as_str().unwrap_or(""))
                ))
                .unwrap_or_default()
        );
        ExitCode::from(EXIT_FAILED)
    }
}

/// The JSON body of an action.
pub fn body(pairs: &[(&str, Option<&str>)]) -> Value {
    let mut body = json!({});
    for (key, value) in pairs {
        if let Some(value) = value {
            body[*key] = Value::String(value.to_string());
        }
    }
    body
}

/// A command against a daemon's API.
pub(super) async fn command(cli: Cli, server: &str) -> anyhow::Result<ExitCode> {
    let remote = match Remote::new(server, cli.token.map(secrecy::SecretString::from)) {
        Ok(remote) => remote,
        Err(refused) => return Ok(errors::fail(refused.code, refused.message)),
    };
    let json = cli.json;
    Ok(match cli.command {
        Command::Runs { pipeline, limit } => runs(&remote, pipeline.as_deref(), limit, json).await,
        Command::Logs { run, follow } => logs(&remote, &run, follow, json).await,
        Command::Trigger { pipeline, commit } => {
            let body = body(&[("commit", commit.as_deref())]);
            act(&remote, &pipeline, "trigger", body, false, json).await
        }
        Command::Deploy {
            pipeline,
            image,
            deploy,
        } => {
            let dropped = [
                (deploy.only.is_some(), "--only"),
                (deploy.force, "--force"),
                (deploy.wait, "--wait"),
            ];
            if let Some(code) = refuse_remote_flags(&dropped, "deploy") {
                return Ok(code);
            }
            let body = body(&[("image", image.as_deref())]);
            act(&remote, &pipeline, "deploy", body, true, json).await
        }
        Command::Rollback { pipeline, to, wait } => {
            if let Some(code) = refuse_remote_flags(&[(wait, "--wait")], "rollback") {
                return Ok(code);
            }
            let body = body(&[("to", to.as_deref())]);
            act(&remote, &pipeline, "rollback", body, true, json).await
        }
        Command::Pin { pipeline, reason } => {
            let body = body(&[("reason", Some(reason.as_str()))]);
            act(&remote, &pipeline, "pin", body, false, json).await
        }
        Command::Unpin { pipeline } => {
            act(
                &remote,
                &pipeline,
                "unpin",
                serde_json::json!({}),
                false,
                json,
            )
            .await
        }
        Command::Status { pipeline, logs } => {
            if let Some(code) = refuse_remote_flags(&[(logs > 0, "--logs")], "status") {
                return Ok(code);
            }
            status(&remote, pipeline.as_deref(), json).await
        }
        _ => errors::fail(EXIT_USAGE, SERVER_COMMANDS),
    })
}

/// A flag the daemon's API does not take is refused, never dropped: the first one
/// given, as the exit code of a usage error.
fn refuse_remote_flags(flags: &[(bool, &str)], command: &str) -> Option<ExitCode> {
    let (_, flag) = flags.iter().find(|(given, _)| *given)?;
    Some(errors::fail(
        EXIT_USAGE,
        format!(
            "`{command} {flag}` is not available with --server (the daemon's API does not take it); \
             run it where the config is, without --server"
        ),
    ))
}
