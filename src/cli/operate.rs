//! The operator's commands: `deploy`, `run`, `rollback`, `unpin`, `status`, and
//! `stop`/`start`/`restart`. Each prints for people, or one JSON document with `--json`.

use std::process::ExitCode;

use anyhow::Context;

use super::errors;
use super::printable::printable;
use super::{EXIT_FAILED, EXIT_OK, EXIT_USAGE, find_pipeline, open_store, print_build, progress};
use crate::config::{Config, Pipeline};
use crate::deploy::status::{Lifecycle, LifecycleReport, lifecycle};
use crate::deploy::{Action, SharedLog, short_digest};
use crate::engine::status::PipelineStatus;
use crate::engine::{self, DeployOptions, DeployReport, RollbackTarget};
use crate::run::Outcome;
use crate::store::Store;

/// Parses `--only`; a bad pattern is bad usage.
pub fn parse_only(only: Option<&str>) -> Result<Option<glob::Pattern>, ExitCode> {
    match only.map(glob::Pattern::new).transpose() {
        Ok(pattern) => Ok(pattern),
        Err(error) => Err(errors::fail(EXIT_USAGE, format!("--only: {error}"))),
    }
}

pub(super) fn exit_for(outcome: Outcome) -> ExitCode {
    ExitCode::from(match outcome {
        Outcome::Succeeded => EXIT_OK,
        Outcome::Failed => EXIT_FAILED,
    })
}

/// The shape of every command on one pipeline of the local state: the pipeline named
/// `name` (or exit 2 naming the ones that exist), the state store, progress on the
/// terminal, `work` done with them, the store closed, then `show` prints the result and
/// says the exit code.
pub(super) async fn on_pipeline<T>(
    config: &Config,
    name: &str,
    work: impl AsyncFnOnce(&Pipeline, &Store, &mut dyn engine::Progress) -> anyhow::Result<T>,
    show: impl FnOnce(&Pipeline, T) -> anyhow::Result<ExitCode>,
) -> anyhow::Result<ExitCode> {
    let pipeline = match find_pipeline(config, name) {
        Ok(pipeline) => pipeline,
        Err(code) => return Ok(code),
    };
    let store = open_store(config).await?;
    let mut progress = progress::for_stderr();
    let done = work(pipeline, &store, progress.as_mut()).await;
    drop(progress);
    store.close().await;
    show(pipeline, done.context("the state store")?)
}

pub async fn deploy(
    config: &Config,
    name: &str,
    options: DeployOptions,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let work = async |pipeline: &Pipeline, store: &Store, progress: &mut dyn engine::Progress| {
        Ok(engine::deploy(config, pipeline, store, &options, progress).await?)
    };
    on_pipeline(config, name, work, |_, report| show_deploy(&report, json)).await
}

pub async fn rollback(
    config: &Config,
    name: &str,
    to: Option<String>,
    options: DeployOptions,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let target = RollbackTarget(to);
    let work = async |pipeline: &Pipeline, store: &Store, progress: &mut dyn engine::Progress| {
        Ok(engine::rollback(config, pipeline, store, &target, &options, progress).await?)
    };
    on_pipeline(config, name, work, |_, report| show_deploy(&report, json)).await
}

fn show_deploy(report: &DeployReport, json: bool) -> anyhow::Result<ExitCode> {
    print_deploy(report, json)?;
    Ok(exit_for(report.outcome))
}

pub async fn run(
    config: &Config,
    name: &str,
    reference: Option<&str>,
    options: DeployOptions,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let work = async |pipeline: &Pipeline, store: &Store, progress: &mut dyn engine::Progress| {
        let report =
            engine::run_pipeline(config, pipeline, store, reference, &options, None, progress)
                .await?;
        Ok(report)
    };
    on_pipeline(config, name, work, |_, report| {
        if json {
            println!("{}", serde_json::to_string_pretty(&report)?);
        } else {
            if let Some(build) = &report.build {
                print_build(build);
            }
            if let Some(deploy) = &report.deploy {
                print_deploy(deploy, false)?;
            }
        }
        Ok(exit_for(report.outcome()))
    })
    .await
}

pub async fn pin(
    config: &Config,
    name: &str,
    reason: &str,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let work = async |pipeline: &Pipeline, store: &Store, _: &mut dyn engine::Progress| {
        Ok(engine::intake::pin(store, &pipeline.name, reason).await?)
    };
    on_pipeline(config, name, work, |pipeline, pinned| {
        if json {
            println!(
                "{}",
                serde_json::json!({ "pipeline": pipeline.name, "pinned": pinned })
            );
        } else {
            println!(
                "pinned {}: {reason}; automatic deploys are held until `gantry unpin {}`",
                pipeline.name, pipeline.name
            );
        }
        Ok(ExitCode::from(EXIT_OK))
    })
    .await
}

pub async fn unpin(config: &Config, name: &str, json: bool) -> anyhow::Result<ExitCode> {
    let work = async |pipeline: &Pipeline, store: &Store, _: &mut dyn engine::Progress| {
        Ok(engine::intake::unpin(store, &pipeline.name).await?)
    };
    on_pipeline(config, name, work, |pipeline, was_pinned| {
        if json {
            println!(
                "{}",
                serde_json::json!({ "pipeline": pipeline.name, "was_pinned": was_pinned })
            );
        } else if was_pinned {
            println!(
                "unpinned {}: automatic deploys go ahead again",
                pipeline.name
            );
        } else {
            println!("{} was not pinned", pipeline.name);
        }
        Ok(ExitCode::from(EXIT_OK))
    })
    .await
}

fn print_deploy(report: &DeployReport, json: bool) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(report)?);
        return Ok(());
    }
    let image = report
        .image
        .as_ref()
        .map(|image| {
            let commit = image
                .commit
                .as_deref()
                .map(|commit| format!(" (commit {})", crate::source::short_commit(commit)))
                .unwrap_or_default();
            format!("{}{commit}", image.reference())
        })
        .unwrap_or_default();
    let deployment = report
        .deployment
        .map(|deployment| format!(" deployment #{}", deployment.number))
        .unwrap_or_default();
    match &report.failure {
        None => println!(
            "{} {}{deployment} (run #{}): {image}",
            match report.kind.as_str() {
                "rollback" => "rolled back",
                _ => "deployed",
            },
            report.pipeline,
            report.run.number
        ),
        Some(failure) => {
            eprintln!(
                "error: {} of {} failed at {}: {}",
                report.kind,
                report.pipeline,
                failure.stage,
                printable(&failure.message)
            );
            for line in &failure.details {
                eprintln!("  | {}", printable(line));
            }
        }
    }
    let width = report
        .instances
        .iter()
        .map(|instance| instance.instance.len())
        .max()
        .unwrap_or(0);
    for instance in &report.instances {
        let detail = match instance.action {
            Action::Updated => instance
                .healthy_after_ms
                .map(|millis| format!("healthy after {millis} ms"))
                .unwrap_or_default(),
            _ => instance.message.clone().unwrap_or_default(),
        };
        let line = format!(
            "  {:width$}  {:10}  {:11}  {}",
            instance.instance,
            instance.host,
            instance.action.as_str(),
            printable(&detail)
        );
        if report.failure.is_some() {
            eprintln!("{}", line.trim_end());
        } else {
            println!("{}", line.trim_end());
        }
    }
    if let Some(pin) = &report.pinned {
        eprintln!(
            "note: {} is pinned: {}; automatic deploys are held until `gantry unpin {}`",
            report.pipeline,
            printable(&pin.reason),
            report.pipeline
        );
    }
    Ok(())
}

/// Pipelines named on the command line, or all of them.
fn selected<'c>(config: &'c Config, name: Option<&str>) -> Result<Vec<&'c Pipeline>, ExitCode> {
    match name {
        Some(name) => find_pipeline(config, name).map(|pipeline| vec![pipeline]),
        None => Ok(config.pipelines.values().collect()),
    }
}

pub async fn show_status(
    config: &Config,
    name: Option<&str>,
    log_lines: usize,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let pipelines = match selected(config, name) {
        Ok(pipelines) => pipelines,
        Err(code) => return Ok(code),
    };
    let store = open_store(config).await?;
    let documents = engine::status::collect(config, &store, &pipelines, log_lines).await?;
    store.close().await;
    render_status(&documents, json)?;
    Ok(ExitCode::from(EXIT_OK))
}

/// Prints `gantry status`: one JSON document, or a table per pipeline.
pub(super) fn render_status(documents: &[PipelineStatus], json: bool) -> anyhow::Result<()> {
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({ "pipelines": documents }))?
        );
        return Ok(());
    }
    for document in documents {
        let name = &document.pipeline;
        println!("{name}");
        if let Some(pin) = &document.pinned {
            println!(
                "  pinned: {}; automatic deploys are held until `gantry unpin {name}`",
                pin.reason
            );
        }
        if let Some(lease) = &document.deploying {
            println!("  deploying: {}", lease.owner);
        }
        if document.instances.is_empty() {
            println!("  (no instances)");
            continue;
        }
        let width = document
            .instances
            .iter()
            .map(|row| row.instance.len())
            .max()
            .unwrap_or(8)
            .max(8);
        println!(
            "  {:width$}  {:10}  {:12}  {:10}  {:9}  {:12}  {:19}  {:7}  {:>8}  DRIFT",
            "INSTANCE", "HOST", "CONTAINER", "STATE", "HEALTH", "TAG", "DIGEST", "COMMIT", "UPTIME"
        );
        for row in &document.instances {
            println!(
                "  {:width$}  {:10}  {:12}  {:10}  {:9}  {:12}  {:19}  {:7}  {:>8}  {}",
                row.instance,
                row.host,
                row.container.as_deref().unwrap_or("-"),
                row.state,
                row.health.as_deref().unwrap_or("-"),
                row.tags
                    .first()
                    .and_then(|reference| reference.rsplit(':').next())
                    .unwrap_or("-"),
                row.digest
                    .as_deref()
                    .map(short_digest)
                    .unwrap_or("-".to_string()),
                row.commit
                    .as_deref()
                    .map(crate::source::short_commit)
                    .unwrap_or("-"),
                row.uptime_seconds
                    .map(|seconds| {
                        humantime::format_duration(std::time::Duration::from_secs(seconds))
                            .to_string()
                            .split(' ')
                            .next()
                            .unwrap_or("")
                            .to_string()
                    })
                    .unwrap_or("-".to_string()),
                if row.drift.is_empty() {
                    "-".to_string()
                } else {
                    row.drift.join("; ")
                }
            );
            if let Some(error) = &row.error {
                println!("    error: {error}");
            }
            if let Some(route) = &row.proxy {
                match (&route.upstream, route.state.as_str()) {
                    (Some(upstream), "running") => {
                        println!("    proxy :{} -> {upstream}", route.port)
                    }
                    (None, "running") => println!("    proxy :{} -> (not routed)", route.port),
                    (_, state) => println!("    proxy :{} is {state}", route.port),
                }
            }
            for task in &row.tasks {
                println!(
                    "    task {:24}  {:10}  {}{}{}",
                    task.describe(&row.instance),
                    task.state,
                    task.digest
                        .as_deref()
                        .map(short_digest)
                        .unwrap_or("-".to_string()),
                    if task.published.is_empty() {
                        String::new()
                    } else {
                        format!("  {}", task.published.join(", "))
                    },
                    task.error
                        .as_deref()
                        .map(|error| format!("  {error}"))
                        .unwrap_or_default()
                );
            }
            for line in row.logs.iter().flatten() {
                println!("    | {line}");
            }
        }
    }
    Ok(())
}

pub async fn lifecycle_command(
    config: &Config,
    name: &str,
    command: Lifecycle,
    only: Option<&str>,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let pipeline = match find_pipeline(config, name) {
        Ok(pipeline) => pipeline,
        Err(code) => return Ok(code),
    };
    let only = match parse_only(only) {
        Ok(only) => only,
        Err(code) => return Ok(code),
    };
    let shared = SharedLog::new(|line: &str| eprintln!("{line}"));
    let log = |line: &str| shared.line(line);
    let report: LifecycleReport = lifecycle(config, pipeline, command, only.as_ref(), &log).await;
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        for step in &report.steps {
            if step.ok {
                println!(
                    "{} {} on {}",
                    if step.action == "stop" {
                        "stopped"
                    } else {
                        "started"
                    },
                    step.instance,
                    step.host
                );
            }
        }
        if let Some(failure) = &report.failure {
            eprintln!("error: {failure}");
        }
    }
    Ok(ExitCode::from(if report.failure.is_none() {
        EXIT_OK
    } else {
        EXIT_FAILED
    }))
}
