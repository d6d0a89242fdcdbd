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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::run::RunKind;
    use crate::store::{Location, RunRecord, Store, newest_migration};

    #[tokio::test]
    async fn a_backup_holds_the_runs_and_never_replaces_a_file_unasked() {
        let (dir, store) = Store::temporary().await;
        let first = store.manual_run("web", RunKind::Build).await;
        let copies = tempfile::tempdir().unwrap();
        let file = copies.path().join(DATABASE_FILE);

        let backup = back_up(dir.path(), &file, false).await.unwrap();
        assert_eq!(backup.schema_version, newest_migration());
        assert_eq!(backup.bytes, std::fs::metadata(&file).unwrap().len());

        // The copy is a state directory of its own, with the run in it.
        store.manual_run("web", RunKind::Build).await;
        let copy = Store::open(&Location::Directory(copies.path().to_path_buf()))
            .await
            .unwrap();
        let ids = |runs: Vec<RunRecord>| runs.iter().map(|run| run.id).collect::<Vec<_>>();
        let runs = copy.runs_page(None, None, None, 10).await.unwrap();
        assert_eq!(ids(runs), [first.id]);
        copy.close().await;

        let before = std::fs::read(&file).unwrap();
        let refused = back_up(dir.path(), &file, false).await.unwrap_err();
        assert!(matches!(refused, BackupError::Exists { .. }), "{refused}");
        assert_eq!(std::fs::read(&file).unwrap(), before);
        let leftovers = std::fs::read_dir(copies.path()).unwrap().count();
        assert_eq!(leftovers, 1, "only state.db: no temporary file left behind");

        back_up(dir.path(), &file, true).await.unwrap();
        let copy = Store::open(&Location::Directory(copies.path().to_path_buf()))
            .await
            .unwrap();
        assert_eq!(copy.runs_page(None, None, None, 10).await.unwrap().len(), 2);
        copy.close().await;

        let missing = back_up(copies.path().join("none").as_path(), &file, true).await;
        assert!(matches!(missing, Err(BackupError::NoDatabase { .. })));
    }

    #[tokio::test]
    async fn a_backup_never_writes_over_the_database_it_copies() {
        let (dir, store) = Store::temporary().await;
        let first = store.manual_run("web", RunKind::Build).await;
        // The live file, its journal files, and the live file reached another way.
        let state_dir = dir.path();
        let roundabout = state_dir.join("sub");
        std::fs::create_dir(&roundabout).unwrap();
        let targets = [
            state_dir.join(DATABASE_FILE),
            state_dir.join(format!("{DATABASE_FILE}-wal")),
            state_dir.join(format!("{DATABASE_FILE}-shm")),
            roundabout.join("..").join(DATABASE_FILE),
        ];
        for target in &targets {
            let refused = back_up(state_dir, target, true).await.unwrap_err();
            assert!(
                matches!(refused, BackupError::IntoSource { .. }),
                "{}: {refused}",
                target.display()
            );
            assert!(
                refused.to_string().contains("the state database itself"),
                "{refused}"
            );
        }
        let verdict: String = sqlx::query_scalar("PRAGMA quick_check")
            .fetch_one(&store.pool)
            .await
            .unwrap();
        assert_eq!(verdict, "ok");
        let runs = store.runs_page(None, None, None, 10).await.unwrap();
        assert_eq!(runs.len(), 1);
        assert_eq!(runs[0].id, first.id);
    }
}
