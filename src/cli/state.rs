//! `gantry state`: looking after the state database itself, whether or not a daemon
//! is running. Backups go through `store::back_up`, which never migrates the source.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use super::errors;
use super::{EXIT_FAILED, EXIT_OK, EXIT_USAGE};
use crate::store::{self, BackupError};

#[derive(Debug, clap::Subcommand)]
pub enum StateCommand {
    /// Write a consistent copy of the state database to FILE, also while `gantry serve`
    /// runs. The copy is a complete `state.db`: to restore it, stop the daemon and put
    /// it in the state directory under that name.
    Backup {
        /// Where to write the copy; an existing file is left alone unless --force.
        file: PathBuf,
        /// Replace FILE if it exists (in one rename: FILE is never half-written).
        #[arg(long)]
        force: bool,
    },
    /// Copy a SQLite state directory's runs (with their logs), deliveries, deployments
    /// and pins into this config's PostgreSQL state (or --to's), e.g. before starting
    /// replicas. Rows already there (same pipeline and number) are left as they are, so
    /// running it again copies nothing twice. Stop the daemon on the old state first.
    Migrate {
        /// The state directory to copy from (the one holding state.db).
        #[arg(long, value_name = "DIR")]
        from: PathBuf,
        /// Where to copy to: a postgres:// URL; default the config's `state:`. A URL
        /// here is visible to other users of this machine: prefer the config, whose
        /// password may come from a variable or a file.
        #[arg(long, value_name = "URL")]
        to: Option<String>,
    },
}

pub async fn run(
    state: &store::Location,
    command: StateCommand,
    json: bool,
) -> anyhow::Result<ExitCode> {
    match command {
        StateCommand::Backup { file, force } => match state {
            store::Location::Directory(state_dir) => backup(state_dir, &file, force, json).await,
            store::Location::Postgres(_) => Ok(errors::fail(
                EXIT_USAGE,
                "the state is in PostgreSQL: back it up with the server's own tools \
                 (pg_dump); `gantry state backup` copies a SQLite state directory",
            )),
        },
        StateCommand::Migrate { from, to } => {
            let to = match to {
                Some(url) if crate::config::is_database_url(&url) => {
                    store::Location::Postgres(url.into())
                }
                Some(_) => {
                    return Ok(errors::fail(
                        EXIT_USAGE,
                        "--to must be a postgres:// URL (postgres://USER:PASSWORD@HOST:PORT/DATABASE)",
                    ));
                }
                None => state.clone(),
            };
            migrate(&from, &to, json).await
        }
    }
}

async fn migrate(from: &Path, to: &store::Location, json: bool) -> anyhow::Result<ExitCode> {
    if !from.join(store::DATABASE_FILE).is_file() {
        let message = format!("there is no state database in {}", from.display());
        return Ok(errors::fail(EXIT_USAGE, message));
    }
    let from = store::Location::Directory(from.to_path_buf());
    if to.backend() != store::Backend::Postgres {
        return Ok(errors::fail(
            EXIT_USAGE,
            "the config's state is a directory: give --to postgres://... or set `state:` \
             in gantry.yaml to the PostgreSQL database to copy into",
        ));
    }
    let opened = async |location: &store::Location| {
        store::Store::open(location)
            .await
            .map_err(|error| errors::fail(EXIT_FAILED, error))
    };
    let source = match opened(&from).await {
        Ok(source) => source,
        Err(code) => return Ok(code),
    };
    let target = match opened(to).await {
        Ok(target) => target,
        Err(code) => return Ok(code),
    };
    let copied = match source.copy_into(&target).await {
        Ok(copied) => copied,
        Err(error) => return Ok(errors::fail(EXIT_FAILED, error)),
    };
    source.close().await;
    target.close().await;
    if json {
        let report = serde_json::json!({
            "from": from.describe(),
            "to": to.describe(),
            "copied": copied,
        });
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!(
            "copied {} runs ({} log lines), {} deliveries, {} deployments and {} pins \
             from {} to {}; {} runs and deployments were there already",
            copied.runs,
            copied.log_lines,
            copied.deliveries,
            copied.deployments,
            copied.pins,
            from.describe(),
            to.describe(),
            copied.already_there
        );
    }
    Ok(ExitCode::from(EXIT_OK))
}

async fn backup(
    state_dir: &Path,
    file: &Path,
    force: bool,
    json: bool,
) -> anyhow::Result<ExitCode> {
    match store::back_up(state_dir, file, force).await {
        Ok(backup) => {
            if json {
                println!("{}", serde_json::to_string_pretty(&backup)?);
            } else {
                println!(
                    "backed up {} to {} ({} bytes, schema version {})",
                    backup.source.display(),
                    backup.file.display(),
                    backup.bytes,
                    backup.schema_version
                );
            }
            Ok(ExitCode::from(EXIT_OK))
        }
        Err(error) => {
            // Replacing a file nobody asked to replace, or the database itself, is a
            // matter of how the command was given; everything else is the backup failing.
            let code = match error {
                BackupError::Exists { .. } | BackupError::IntoSource { .. } => EXIT_USAGE,
                _ => EXIT_FAILED,
            };
            Ok(errors::fail(code, error))
        }
    }
}
