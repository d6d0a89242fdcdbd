//! The command line: subcommands, their options, and how they print.
//!
//! Each subcommand loads the config, calls into `engine`/`host`, and prints either
//! for people or, with `--json`, one JSON document on stdout. Exit codes: 0 success,
//! 1 the work failed (a build error, a refused push, an unreachable host), 2 bad
//! usage or bad config. Progress and diagnostics go to stderr, data to stdout.

mod progress;

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};

use crate::config::{Config, ConfigError, Pipeline};
use crate::engine::{self, BuildReport};
use crate::host;
use crate::store::{Outcome, Store};

/// Exit code for success.
pub const EXIT_OK: u8 = 0;
/// Exit code when the work failed: a build error, a refused push, an unreachable host.
pub const EXIT_FAILED: u8 = 1;
/// Exit code for bad usage or a bad config.
pub const EXIT_USAGE: u8 = 2;

#[derive(Debug, Parser)]
#[command(
    name = "gantry",
    version,
    about = "Git-push continuous delivery: build the image a pipeline describes, push it, deploy it.",
    long_about = "gantry builds the Docker image a pipeline's YAML describes from an exact git commit, \
                  pushes it to a registry and (in later versions) redeploys it on your Docker hosts.\n\n\
                  The config directory holds an optional gantry.yaml (state directory, hosts, registries) \
                  and one pipelines/NAME.yaml per pipeline."
)]
pub struct Cli {
    /// The config directory (gantry.yaml and pipelines/).
    #[arg(
        long,
        short = 'c',
        global = true,
        env = "GANTRY_CONFIG",
        default_value = "."
    )]
    pub config: PathBuf,
    /// Print data as one JSON document on stdout.
    #[arg(long, global = true)]
    pub json: bool,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Check every config file; list every error as file:line:column: message (exit 2 on errors).
    Validate,
    /// Reach each Docker host: engine and API version, or why it cannot be reached.
    Hosts,
    /// Check out a commit, build the pipeline's image, push every tag, and print the pushed digest.
    Build {
        /// The pipeline (the stem of its file in pipelines/).
        pipeline: String,
        /// A branch, tag or commit id to build instead of the head of the pipeline's branch.
        #[arg(long, value_name = "REF")]
        commit: Option<String>,
    },
}

/// Runs the parsed command line and returns the process exit code.
pub async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let config = match Config::load(&cli.config) {
        Ok(config) => config,
        Err(ConfigError::Invalid(diagnostics)) => {
            if cli.json && matches!(cli.command, Command::Validate) {
                let errors: Vec<_> = diagnostics
                    .iter()
                    .map(|diagnostic| {
                        serde_json::json!({
                            "file": diagnostic.file,
                            "line": diagnostic.line,
                            "column": diagnostic.column,
                            "message": diagnostic.message,
                        })
                    })
                    .collect();
                println!(
                    "{}",
                    serde_json::json!({ "valid": false, "errors": errors })
                );
            } else {
                for diagnostic in &diagnostics {
                    eprintln!("{diagnostic}");
                }
                eprintln!("{} error(s); nothing was changed", diagnostics.len());
            }
            return Ok(ExitCode::from(EXIT_USAGE));
        }
        Err(error) => {
            eprintln!("error: {error}");
            return Ok(ExitCode::from(EXIT_USAGE));
        }
    };
    match cli.command {
        Command::Validate => validate(&config, cli.json),
        Command::Hosts => hosts(&config, cli.json).await,
        Command::Build { pipeline, commit } => {
            build(&config, &pipeline, commit.as_deref(), cli.json).await
        }
    }
}

fn validate(config: &Config, json: bool) -> anyhow::Result<ExitCode> {
    if json {
        let pipelines: Vec<&String> = config.pipelines.keys().collect();
        let hosts: Vec<&String> = config.hosts.keys().collect();
        println!(
            "{}",
            serde_json::json!({ "valid": true, "pipelines": pipelines, "hosts": hosts })
        );
    } else {
        println!(
            "config OK: {} pipeline(s), {} host(s), {} registr{} in {}",
            config.pipelines.len(),
            config.hosts.len(),
            config.registries.len(),
            if config.registries.len() == 1 {
                "y"
            } else {
                "ies"
            },
            config.dir.display()
        );
    }
    Ok(ExitCode::from(EXIT_OK))
}

async fn hosts(config: &Config, json: bool) -> anyhow::Result<ExitCode> {
    // All hosts are asked at once, so one slow host costs its own timeout, not everyone's.
    let reports = futures_util::future::join_all(config.hosts.values().map(host::report)).await;
    if json {
        println!("{}", serde_json::to_string_pretty(&reports)?);
    } else {
        let name_width = reports
            .iter()
            .map(|report| report.name.len())
            .max()
            .unwrap_or(4)
            .max(4);
        for report in &reports {
            match &report.error {
                None => println!(
                    "{:name_width$}  ok           engine {} (API {}){}  {}ms",
                    report.name,
                    report.engine_version.as_deref().unwrap_or("?"),
                    report.api_version.as_deref().unwrap_or("?"),
                    report
                        .os
                        .as_deref()
                        .map(|os| format!(", {os}"))
                        .unwrap_or_default(),
                    report.elapsed_ms
                ),
                Some(error) => println!("{:name_width$}  unreachable  {error}", report.name),
            }
        }
    }
    let all_reachable = reports.iter().all(|report| report.reachable);
    Ok(ExitCode::from(if all_reachable {
        EXIT_OK
    } else {
        EXIT_FAILED
    }))
}

/// Finds a pipeline or explains, with a suggestion, why there is none.
fn find_pipeline<'c>(config: &'c Config, name: &str) -> Result<&'c Pipeline, ExitCode> {
    match config.pipeline(name) {
        Some(pipeline) => Ok(pipeline),
        None => {
            let hint = match config.suggest_pipeline(name) {
                Some(near) => format!(" (did you mean `{near}`?)"),
                None if config.pipelines.is_empty() => format!(
                    " (there are no pipelines in {})",
                    config.dir.join(crate::config::PIPELINES_DIR).display()
                ),
                None => format!(
                    " (pipelines: {})",
                    config
                        .pipelines
                        .keys()
                        .cloned()
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            };
            eprintln!("error: no pipeline `{name}`{hint}");
            Err(ExitCode::from(EXIT_USAGE))
        }
    }
}

async fn build(
    config: &Config,
    name: &str,
    reference: Option<&str>,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let pipeline = match find_pipeline(config, name) {
        Ok(pipeline) => pipeline,
        Err(code) => return Ok(code),
    };
    let store = Store::open(&config.state_dir)
        .await
        .context("opening the state store")?;
    let mut progress = progress::for_terminal(std::io::stderr().is_terminal());
    let report = engine::build(
        config,
        pipeline,
        &store,
        reference,
        "manual",
        progress.as_mut(),
    )
    .await
    .context("recording the run")?;
    drop(progress);
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_build(&report);
    }
    Ok(ExitCode::from(match report.outcome {
        Outcome::Succeeded => EXIT_OK,
        Outcome::Failed => EXIT_FAILED,
    }))
}

fn print_build(report: &BuildReport) {
    let stages = report
        .stages
        .iter()
        .map(|stage| {
            format!(
                "{} {}",
                stage.name,
                humantime::format_duration(std::time::Duration::from_millis(
                    stage.duration_ms as u64
                ))
            )
        })
        .collect::<Vec<_>>()
        .join(", ");
    let commit = report
        .commit
        .as_ref()
        .map(|commit| format!(" of {} \"{}\"", commit.short, commit.message))
        .unwrap_or_default();
    match &report.failure {
        None => {
            println!(
                "built {} run #{}{commit}",
                report.pipeline, report.run.number
            );
            println!("  image   {}", report.image);
            for tag in &report.tags {
                println!("  tag     {tag}");
            }
            println!("  digest  {}", report.digest.as_deref().unwrap_or("?"));
            println!("  stages  {stages}");
        }
        Some(failure) => {
            eprintln!(
                "error: {} run #{}{commit} failed at {}: {}",
                report.pipeline, report.run.number, failure.stage, failure.message
            );
            if !failure.details.is_empty() {
                eprintln!("last output:");
                for line in &failure.details {
                    eprintln!("  | {line}");
                }
            }
            eprintln!("  stages  {stages}");
        }
    }
}
