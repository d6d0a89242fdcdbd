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
    }
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
            // Replacing a file nobody asked to replace is a matter of how the command
            // was given; everything else is the backup failing.
            let code = match error {
                BackupError::Exists { .. } => EXIT_USAGE,
                _ => EXIT_FAILED,
            };
            Ok(errors::fail(code, error))
        }
    }
}
