//! `gantry task PIPELINE NAME`: one release task run by hand, its output on stderr as
//! it comes, what it did on stdout (or one JSON document with `--json`).

use std::process::ExitCode;

use tokio_util::sync::CancellationToken;

use super::{EXIT_FAILED, EXIT_OK, EXIT_USAGE, find_pipeline, open_store};
use crate::config::{Config, Pipeline, Task};
use crate::deploy::SharedLog;
use crate::engine::task::{TaskRunReport, run_task};

pub async fn task(
    config: &Config,
    pipeline_name: &str,
    task_name: &str,
    wait: bool,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let pipeline = match find_pipeline(config, pipeline_name) {
        Ok(pipeline) => pipeline,
        Err(code) => return Ok(code),
    };
    let Some(task) = find_task(pipeline, task_name) else {
        return Ok(ExitCode::from(EXIT_USAGE));
    };
    let store = open_store(config).await?;
    let shared = SharedLog::new(|line: &str| eprintln!("{line}"));
    let log = |line: &str| shared.line(line);
    // Ctrl-C kills and removes the task's container rather than leaving it running.
    let interrupt = CancellationToken::new();
    let on_ctrl_c = tokio::spawn({
        let interrupt = interrupt.clone();
        async move {
            if tokio::signal::ctrl_c().await.is_ok() {
                interrupt.cancel();
            }
        }
    });
    let report = run_task(config, pipeline, &store, task, wait, &interrupt, &log).await;
    on_ctrl_c.abort();
    store.close().await;
    let report = report?;
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_report(&report);
    }
    Ok(ExitCode::from(match report.failure {
        None => EXIT_OK,
        Some(_) => EXIT_FAILED,
    }))
}

/// The pipeline's task of that name, or (on stderr) why there is none.
fn find_task<'p>(pipeline: &'p Pipeline, name: &str) -> Option<&'p Task> {
    if let Some(task) = pipeline.task(name) {
        return Some(task);
    }
    let names: Vec<&str> = pipeline
        .deploy
        .tasks
        .iter()
        .map(|task| task.name.as_str())
        .collect();
    let hint = match pipeline.suggest_task(name) {
        Some(near) => format!(" (did you mean `{near}`?)"),
        None if names.is_empty() => " (it has no `deploy.tasks`)".to_string(),
        None => format!(" (tasks: {})", names.join(", ")),
    };
    super::errors::fail(
        EXIT_USAGE,
        format!("pipeline `{}` has no task `{name}`{hint}", pipeline.name),
    );
    None
}

fn print_report(report: &TaskRunReport) {
    let image = report
        .image
        .as_ref()
        .map(|chosen| {
            let commit = chosen
                .image
                .commit
                .as_deref()
                .map(|commit| format!(" (commit {})", crate::source::short_commit(commit)))
                .unwrap_or_default();
            format!("{}{commit}", chosen.image.reference())
        })
        .unwrap_or_default();
    match &report.failure {
        None => {
            let took = report
                .run
                .as_ref()
                .map(|run| {
                    humantime::format_duration(std::time::Duration::from_millis(
                        run.duration_ms as u64,
                    ))
                    .to_string()
                })
                .unwrap_or_default();
            println!(
                "task {} of {} ran on {} in {took}: {image}",
                report.task, report.pipeline, report.host
            );
        }
        Some(failure) => {
            eprintln!(
                "error: task {} of {} failed: {}",
                report.task, report.pipeline, failure.message
            );
            for line in &failure.details {
                eprintln!("  | {line}");
            }
        }
    }
}
