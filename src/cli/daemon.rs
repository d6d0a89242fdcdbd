//! `gantry serve` and the commands that read or feed its queue: `runs`, `logs`, `trigger`.
//! They work on the state directory, whether or not a daemon is running.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use tokio_util::sync::CancellationToken;

use super::errors;
use super::printable::printable;
use super::{EXIT_FAILED, EXIT_OK, EXIT_USAGE, find_pipeline};
use crate::config::{Config, Pipeline};
use crate::engine::Progress;
use crate::engine::intake::{self, IntakeError};
use crate::engine::scheduler;
use crate::run::{RunKind, Trigger};
use crate::store::{RunRecord, Store};

/// How often `gantry logs --follow` looks for new lines.
const FOLLOW_EVERY: Duration = Duration::from_millis(200);

pub async fn serve(config: Config, listen: Option<String>) -> anyhow::Result<ExitCode> {
    let address = match listen {
        Some(text) => match text.parse() {
            Ok(address) => address,
            Err(_) => {
                return Ok(errors::fail(
                    EXIT_USAGE,
                    format!("--listen `{text}` is not an address like 127.0.0.1:8700"),
                ));
            }
        },
        None => config.server.listen,
    };
    if !address.ip().is_loopback() && config.server.token.is_none() {
        return Ok(errors::fail(
            EXIT_USAGE,
            format!(
                "refusing to listen on {address} without server.token: anyone who can reach it could act \
                 (set server.token in gantry.yaml, or listen on 127.0.0.1)"
            ),
        ));
    }
    let listener = match tokio::net::TcpListener::bind(address).await {
        Ok(listener) => listener,
        Err(error) => {
            return Ok(errors::fail(
                EXIT_FAILED,
                format!("cannot listen on {address}: {error}"),
            ));
        }
    };
    eprintln!("gantry serve: listening on http://{address} (webhooks at /hooks/PIPELINE)");
    let shutdown = CancellationToken::new();
    let stop = shutdown.clone();
    tokio::spawn(async move {
        wait_for_signal().await;
        eprintln!(
            "gantry serve: stopping (running runs get {}s to finish)",
            scheduler::SHUTDOWN_GRACE.as_secs()
        );
        stop.cancel();
    });
    crate::daemon::run(config, listener, shutdown)
        .await
        .context("the state store")?;
    eprintln!("gantry serve: stopped");
    Ok(ExitCode::from(EXIT_OK))
}

/// SIGTERM or Ctrl-C.
async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut terminate) => {
                tokio::select! {
                    _ = terminate.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// `config` is `None` when the config directory has errors: history is still shown.
pub async fn runs(
    state: &crate::store::Location,
    config: Option<&Config>,
    name: Option<&str>,
    limit: i64,
    json: bool,
) -> anyhow::Result<ExitCode> {
    if let (Some(name), Some(config)) = (name, config)
        && let Err(code) = find_pipeline(config, name)
    {
        return Ok(code);
    }
    let store = Store::open(state)
        .await
        .context("opening the state store")?;
    let runs = store.runs(name, limit).await?;
    store.close().await;
    if json {
        println!("{}", serde_json::to_string_pretty(&runs)?);
        return Ok(ExitCode::from(EXIT_OK));
    }
    if runs.is_empty() {
        println!("no runs yet");
    }
    for run in &runs {
        println!("{}", printable(&describe(run)));
    }
    Ok(ExitCode::from(EXIT_OK))
}

/// One line per run, as `gantry runs` prints it.
pub(super) fn describe(run: &RunRecord) -> String {
    let commit = run
        .commit
        .as_deref()
        .or(run.requested.as_deref())
        .map(|commit| crate::source::short_commit(commit).to_string())
        .unwrap_or_else(|| "-".to_string());
    let duration = run
        .finished_at
        .map(|finished| {
            humantime::format_duration(Duration::from_millis(
                (finished - run.started_at).max(0) as u64
            ))
            .to_string()
        })
        .unwrap_or_else(|| "-".to_string());
    let started = humantime::format_rfc3339_seconds(
        std::time::UNIX_EPOCH + Duration::from_millis(run.started_at.max(0) as u64),
    );
    let detail = match (&run.failed_stage, &run.message) {
        (Some(stage), Some(message)) => format!("  at {stage}: {message}"),
        (None, Some(message)) => format!("  {message}"),
        _ => String::new(),
    };
    format!(
        "{:>6}  {}#{:<4}  {:6}  {:12}  {:7}  {started}  {duration:>10}  {}{detail}",
        run.id, run.pipeline, run.number, run.kind, run.state, commit, run.trigger
    )
}

/// Finds a run by `PIPELINE#NUMBER` or by its id.
async fn find_run(store: &Store, text: &str) -> anyhow::Result<Option<i64>> {
    if let Some((pipeline, number)) = text.split_once('#') {
        let Ok(number) = number.parse() else {
            return Ok(None);
        };
        return Ok(store.run_id(pipeline, number).await?);
    }
    match text.parse::<i64>() {
        Ok(id) => Ok(store.run(id).await?.map(|run| run.id)),
        Err(_) => Ok(None),
    }
}

pub async fn logs(
    state: &crate::store::Location,
    run: &str,
    follow: bool,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let store = Store::open(state)
        .await
        .context("opening the state store")?;
    let Some(id) = find_run(&store, run).await? else {
        return Ok(errors::fail(
            EXIT_USAGE,
            format!("no run `{run}` (give PIPELINE#NUMBER or the id `gantry runs` shows)"),
        ));
    };
    let mut last = -1;
    loop {
        let lines = store.log_lines(id, last).await?;
        for line in &lines {
            if json {
                println!("{}", serde_json::to_string(line)?);
            } else {
                println!("{}", printable(&line.line));
            }
            last = line.seq;
        }
        // A run that is gone (pruned) is over too.
        let done = store
            .run(id)
            .await?
            .is_none_or(|run| run.state.is_finished());
        if !follow || done {
            if follow {
                // Lines written just before the run ended.
                tokio::time::sleep(FOLLOW_EVERY).await;
                for line in store.log_lines(id, last).await? {
                    if json {
                        println!("{}", serde_json::to_string(&line)?);
                    } else {
                        println!("{}", printable(&line.line));
                    }
                }
            }
            break;
        }
        tokio::time::sleep(FOLLOW_EVERY).await;
    }
    store.close().await;
    Ok(ExitCode::from(EXIT_OK))
}

pub async fn trigger(
    config: &Config,
    name: &str,
    reference: Option<&str>,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let work = async |pipeline: &Pipeline, store: &Store, _: &mut dyn Progress| {
        let request = intake::Request {
            pipeline: &pipeline.name,
            kind: RunKind::Run,
            trigger: Trigger::Manual,
            requested: reference,
            delivery: None,
        };
        Ok(intake::queue(store, None, &request, crate::store::no_answer()).await)
    };
    super::operate::on_pipeline(config, name, work, |pipeline, queued| {
        let run = match queued {
            Ok(Ok(run)) => run,
            Ok(Err(_)) => anyhow::bail!("the run was not queued"),
            Err(IntakeError::Invalid(message)) => {
                return Ok(errors::fail(EXIT_USAGE, format!("--commit {message}")));
            }
            Err(IntakeError::Store(error)) => return Err(error.into()),
        };
        if json {
            println!(
                "{}",
                serde_json::json!({ "pipeline": pipeline.name, "run": run.number, "run_id": run.id, "queued": true })
            );
        } else {
            println!(
                "queued {}#{} (id {}); `gantry serve` runs it, `gantry logs {}#{} --follow` shows it",
                pipeline.name, run.number, run.id, pipeline.name, run.number
            );
        }
        Ok(ExitCode::from(EXIT_OK))
    })
    .await
}
