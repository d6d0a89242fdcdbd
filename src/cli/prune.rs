//! `gantry prune PIPELINE [--dry-run]`: the pipeline's old images and stopped leftover
//! containers removed by hand, listed as they go (or, with `--dry-run`, as they would).

use std::process::ExitCode;

use super::errors;
use super::{EXIT_FAILED, EXIT_OK, operate};
use crate::config::{Config, Pipeline};
use crate::deploy::prune::{PruneReport, describe};
use crate::engine;
use crate::store::Store;

pub async fn prune(
    config: &Config,
    name: &str,
    dry_run: bool,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let work = async |pipeline: &Pipeline, store: &Store, _: &mut dyn engine::Progress| {
        // Removals are listed at the end; progress lines would only repeat them.
        let quiet = |_: &str| {};
        Ok(engine::prune::prune(config, pipeline, store, dry_run, &quiet).await?)
    };
    operate::on_pipeline(config, name, work, |_, result| match result {
        Ok(report) => show(&report, json),
        Err(failure) => Ok(errors::fail(EXIT_FAILED, &failure.message)),
    })
    .await
}

fn show(report: &PruneReport, json: bool) -> anyhow::Result<ExitCode> {
    if json {
        println!("{}", serde_json::to_string_pretty(report)?);
    } else {
        let verb = if report.dry_run {
            "would remove"
        } else {
            "removed"
        };
        if report.removed.is_empty() {
            println!(
                "{}: nothing to remove ({} image(s) kept per host)",
                report.pipeline, report.keep_images
            );
        } else {
            println!(
                "{}: {verb} ({} image(s) kept per host):",
                report.pipeline, report.keep_images
            );
            for item in &report.removed {
                println!("  {}", describe(item));
            }
        }
        if !report.kept.is_empty() {
            println!("kept:");
            for item in &report.kept {
                println!("  {}", describe(item));
            }
        }
        for error in &report.errors {
            eprintln!("error: host `{}`: {}", error.host, error.message);
        }
    }
    Ok(ExitCode::from(if report.errors.is_empty() {
        EXIT_OK
    } else {
        EXIT_FAILED
    }))
}
