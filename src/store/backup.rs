//! A consistent copy of the state database, taken while a daemon may be writing it.
//!
//! SQLite's `VACUUM INTO` reads one snapshot of the database inside a read
//! transaction and writes it as a new, compact file; writers go on meanwhile (WAL).
//! The copy is written beside its destination under a temporary name, checked,
//! synced, and only then given its name, so a failed or interrupted backup never
//! leaves a half-written file where a good one was. This module never migrates the
//! source: a database from a newer gantry can be backed up by an older one.

use std::path::{Path, PathBuf};

use sqlx::ConnectOptions;
use sqlx::sqlite::SqliteConnectOptions;

use super::{BUSY_TIMEOUT, DATABASE_FILE};

/// What a finished backup wrote.
#[derive(Debug, serde::Serialize)]
pub struct Backup {
    /// The state database that was copied.
    pub source: PathBuf,
    /// The copy.
    pub file: PathBuf,
    pub bytes: u64,
    /// The newest migration applied in the copy (see `store::newest_migration`).
    pub schema_version: i64,
}

#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error("there is no state database at {path}")]
    NoDatabase { path: PathBuf },
    #[error(
        "{file} is the state database itself (or one of its journal files); back it up to another file"
    )]
    IntoSource { file: PathBuf },
    #[error("{file} already exists; pass --force to replace it")]
    Exists { file: PathBuf },
    #[error("cannot write the backup {file}: {source}")]
    Write {
        file: PathBuf,
        source: std::io::Error,
    },
    #[error("state database {path}: cannot copy it: {source}")]
    Copy { path: PathBuf, source: sqlx::Error },
    #[error("the copy of {path} does not read back whole: {problem}")]
    Damaged { path: PathBuf, problem: String },
}

/// Copies the database in `state_dir` to `file`. An existing `file` is replaced only
/// when `overwrite` is true, and then in one rename.
pub async fn back_up(
    state_dir: &Path,
    file: &Path,
    overwrite: bool,
) -> Result<Backup, BackupError> {
    let source = state_dir.join(DATABASE_FILE);
    if !source.is_file() {
        return Err(BackupError::NoDatabase { path: source });
    }
    let exists = || BackupError::Exists {
        file: file.to_path_buf(),
    };
    let write_error = |source: std::io::Error| BackupError::Write {
        file: file.to_path_buf(),
        source,
    };
    if names_the_source(file, &source) {
        return Err(BackupError::IntoSource {
            file: file.to_path_buf(),
        });
    }
    // Checked now for a clear answer before any work; the final no-clobber rename
    // checks again, for a file that appears meanwhile.
    if !overwrite && file.symlink_metadata().is_ok() {
        return Err(exists());
    }
    let directory = match file.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    };
    let partial = tempfile::Builder::new()
        .prefix(".gantry-backup-")
        .tempfile_in(directory)
        .map_err(write_error)?;
    let partial_name = partial.path().to_str().ok_or_else(|| {
        write_error(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "SQLite takes only UTF-8 file names",
        ))
    })?;

    let copy_error = |error: sqlx::Error| BackupError::Copy {
        path: source.clone(),
        source: error,
    };
    // No `create_if_missing` and no migrations: the source is read as it is.
    let mut connection = SqliteConnectOptions::new()
        .filename(&source)
        .busy_timeout(BUSY_TIMEOUT)
        .connect()
        .await
        .map_err(copy_error)?;
    // The file exists (empty) under its temporary name, which `VACUUM INTO` accepts.
    let copied = sqlx::query("VACUUM INTO ?")
        .bind(partial_name)
        .execute(&mut connection)
        .await;
    let _ = sqlx::Connection::close(connection).await;
    copied.map_err(copy_error)?;

    let schema_version = check_copy(partial.path()).await?;
    partial.as_file().sync_all().map_err(write_error)?;
    if overwrite {
        partial
            .persist(file)
            .map_err(|error| write_error(error.error))?;
    } else {
        partial.persist_noclobber(file).map_err(|error| {
            if error.error.kind() == std::io::ErrorKind::AlreadyExists {
                exists()
            } else {
                write_error(error.error)
            }
        })?;
    }
    // The new name is durable once its directory is.
    std::fs::File::open(directory)
        .and_then(|directory| directory.sync_all())
        .map_err(write_error)?;
    let bytes = std::fs::metadata(file).map_err(write_error)?.len();
    Ok(Backup {
        source,
        file: file.to_path_buf(),
        bytes,
        schema_version,
    })
}

/// Whether renaming a file to `file` would replace the database `source` or one of
/// the journal files SQLite keeps beside it. The directories are compared resolved;
/// the last component is not followed, since a rename replaces a link, not its target.
fn names_the_source(file: &Path, source: &Path) -> bool {
    let resolved = |path: &Path| {
        let directory = match path.parent() {
            Some(parent) if !parent.as_os_str().is_empty() => parent,
            _ => Path::new("."),
        };
        Some(directory.canonicalize().ok()?.join(path.file_name()?))
    };
    let (Some(file), Some(source)) = (resolved(file), resolved(source)) else {
        return false;
    };
    ["", "-wal", "-shm", "-journal"].iter().any(|suffix| {
        let mut name = source.clone().into_os_string();
        name.push(suffix);
        file == Path::new(&name)
    })
}

/// Reads the copy back: SQLite's quick check of its pages and indexes, and the
/// newest migration it holds.
async fn check_copy(copy: &Path) -> Result<i64, BackupError> {
    let damaged = |problem: String| BackupError::Damaged {
        path: copy.to_path_buf(),
        problem,
    };
    let mut connection = SqliteConnectOptions::new()
        .filename(copy)
        .read_only(true)
        .connect()
        .await
        .map_err(|error| damaged(error.to_string()))?;
    let checked = async {
        let verdict: String = sqlx::query_scalar("PRAGMA quick_check")
            .fetch_one(&mut connection)
            .await?;
        let version: i64 = sqlx::query_scalar(
            "SELECT COALESCE(MAX(version), 0) FROM _sqlx_migrations WHERE success",
        )
        .fetch_one(&mut connection)
        .await?;
        Ok::<_, sqlx::Error>((verdict, version))
    }
    .await;
    let _ = sqlx::Connection::close(connection).await;
    match checked {
        Ok((verdict, version)) if verdict == "ok" => Ok(version),
        Ok((verdict, _)) => Err(damaged(verdict)),
        Err(error) => Err(damaged(error.to_string())),
    }
}
