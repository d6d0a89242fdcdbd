//! Where the state database is and how gantry connects to it: SQLite in the state
//! directory (the default), or PostgreSQL, shared by several `gantry serve` replicas.
//!
//! Both go through sqlx's `Any` driver, so every query is written once, in the SQL
//! both accept (`$1` placeholders, `ON CONFLICT`, `RETURNING`). What differs lives
//! here: each connection's settings, how a write transaction takes the one write
//! lock, and which migrations apply (`migrations/sqlite` and `migrations/postgres`,
//! the same versions in each back end's words).

use std::path::{Path, PathBuf};
use std::sync::Once;
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use sqlx::AnyConnection;
use sqlx::any::AnyPoolOptions;
use sqlx::migrate::Migrator;
use sqlx::{AnyPool, Executor};

use super::{DATABASE_FILE, StoreError};

static SQLITE_MIGRATIONS: Migrator = sqlx::migrate!("./migrations/sqlite");
static POSTGRES_MIGRATIONS: Migrator = sqlx::migrate!("./migrations/postgres");

/// How long a PostgreSQL connection may take before the store gives up on the server.
const CONNECT_WAIT: Duration = Duration::from_secs(10);

/// The advisory lock every PostgreSQL write transaction holds (`gantry` in ASCII):
/// writers take turns, as on SQLite, so numbering runs and answering a delivery once
/// hold across replicas without retries.
const WRITE_LOCK: i64 = 0x67_61_6e_74_72_79;

/// Where the state database is.
#[derive(Clone)]
pub enum Location {
    /// `state.db` in this directory.
    Directory(PathBuf),
    /// A PostgreSQL database, by a URL that may hold a password.
    Postgres(SecretString),
}

impl Location {
    /// Where a configuration keeps its state.
    pub fn of(config: &crate::config::Config) -> Location {
        match &config.state_database {
            Some(url) => Location::Postgres(url.clone()),
            None => Location::Directory(config.state_dir.clone()),
        }
    }

    /// Where the state of a config directory is, read leniently (see `config::state_of`).
    pub fn of_dir(dir: &Path) -> Result<Location, String> {
        Ok(match crate::config::state_of(dir)? {
            crate::config::StateLocation::Directory(path) => Location::Directory(path),
            crate::config::StateLocation::Database(url) => Location::Postgres(url),
        })
    }

    /// The database file, or the URL without its password, for messages.
    pub fn describe(&self) -> String {
        match self {
            Location::Directory(dir) => dir.join(DATABASE_FILE).display().to_string(),
            Location::Postgres(url) => without_password(url.expose_secret()),
        }
    }

    /// Whether both name the same state: one directory, or one database (the URL but
    /// for its password, which may be rotated).
    pub fn same_place(&self, other: &Location) -> bool {
        match (self, other) {
            (Location::Directory(one), Location::Directory(other)) => one == other,
            (Location::Postgres(one), Location::Postgres(other)) => {
                without_password(one.expose_secret()) == without_password(other.expose_secret())
            }
            _ => false,
        }
    }

    pub fn backend(&self) -> Backend {
        match self {
            Location::Directory(_) => Backend::Sqlite,
            Location::Postgres(_) => Backend::Postgres,
        }
    }
}

impl std::fmt::Debug for Location {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str(&self.describe())
    }
}

/// A URL with its password, if any, replaced by `***`.
fn without_password(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut parsed) => {
            if parsed.password().is_some() {
                let _ = parsed.set_password(Some("***"));
            }
            parsed.to_string()
        }
        Err(_) => "(an unreadable postgres:// URL)".to_string(),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    pub(super) fn migrations(self) -> &'static Migrator {
        match self {
            Backend::Sqlite => &SQLITE_MIGRATIONS,
            Backend::Postgres => &POSTGRES_MIGRATIONS,
        }
    }

    /// Begins a write transaction that holds the database's one write lock, waiting
    /// for it as long as the connection's lock wait allows.
    pub(super) async fn begin_write(
        self,
        connection: &mut AnyConnection,
    ) -> Result<sqlx::Transaction<'_, sqlx::Any>, sqlx::Error> {
        match self {
            // IMMEDIATE: the write lock is taken at the start, where SQLite waits for it
            // (the busy timeout); a transaction that read first and then wrote would fail
            // at once if another connection wrote in between.
            Backend::Sqlite => sqlx::Connection::begin_with(connection, "BEGIN IMMEDIATE").await,
            Backend::Postgres => {
                let mut transaction = sqlx::Connection::begin(connection).await?;
                sqlx::query("SELECT 1 FROM pg_advisory_xact_lock($1)")
                    .bind(WRITE_LOCK)
                    .execute(&mut *transaction)
                    .await?;
                Ok(transaction)
            }
        }
    }
}

/// The newest schema version this binary knows: its last embedded migration.
pub fn newest_migration() -> i64 {
    SQLITE_MIGRATIONS
        .iter()
        .map(|migration| migration.version)
        .max()
        .unwrap_or(0)
}

/// SQLite keeps each writing statement's journal (what to undo should the statement
/// fail halfway) in memory, in chunks as large as the point where it would move to a
/// temporary file: 64 KiB by default, taken and freed by every insert of a group commit,
/// and the allocator gives such a chunk's pages back to the system at once (src/main.rs),
/// each time flushing the other cores' TLBs. With no such point the chunks are 1 KiB,
/// from the allocator's slabs. Set before SQLite starts (the first connection), once.
fn keep_statement_journals_in_memory() {
    // SAFETY: `sqlite3_config` takes this option with one `int`; it is called before any
    // connection exists, and when SQLite has started already it refuses (SQLITE_MISUSE)
    // without changing anything.
    let code =
        unsafe { rusqlite::ffi::sqlite3_config(rusqlite::ffi::SQLITE_CONFIG_STMTJRNL_SPILL, -1) };
    if code != rusqlite::ffi::SQLITE_OK {
        tracing::debug!(code, "SQLite kept its statement journal setting");
    }
}

/// The URL sqlx opens, and the back end behind it. The state directory is created.
pub(super) fn database_url(location: &Location) -> Result<(String, Backend), StoreError> {
    static DRIVERS: Once = Once::new();
    DRIVERS.call_once(|| {
        keep_statement_journals_in_memory();
        sqlx::any::install_drivers(&[sqlx::sqlite::any::DRIVER, sqlx::postgres::any::DRIVER])
            .expect("the database drivers are installed once");
    });
    match location {
        Location::Postgres(url) => Ok((url.expose_secret().to_string(), Backend::Postgres)),
        Location::Directory(dir) => {
            std::fs::create_dir_all(dir).map_err(|source| StoreError::Directory {
                path: dir.clone(),
                source,
            })?;
            let file = dir.join(DATABASE_FILE);
            let Some(path) = file.to_str() else {
                return Err(StoreError::Directory {
                    path: dir.clone(),
                    source: std::io::Error::other("the path is not valid UTF-8"),
                });
            };
            // The path is percent-decoded by the driver: `%`, `?` and `#` are escaped.
            let path = path
                .replace('%', "%25")
                .replace('?', "%3F")
                .replace('#', "%23");
            Ok((format!("sqlite://{path}?mode=rwc"), Backend::Sqlite))
        }
    }
}

/// How long a connection may sit unused before its pool closes it (the pool looks this
/// often, so it is closed within twice this). Each SQLite connection holds a worker
/// thread and a page cache of its own (about 300 KiB in all); an idle daemon needs the
/// one its timers keep busy (`Store::on_timers`), not the few a burst of runs or
/// requests opened, and opening one again takes well under a millisecond. A PostgreSQL
/// connection costs a round trip and a login to open again: it is kept longer.
pub(super) fn idle_connection(backend: Backend) -> Duration {
    match backend {
        Backend::Sqlite => Duration::from_millis(500),
        Backend::Postgres => Duration::from_secs(10),
    }
}

/// How long the timers' connection may sit unused: longer than the queue's scan every
/// second, so it is opened once.
pub(super) const TIMER_CONNECTION_IDLE: Duration = Duration::from_secs(5);

/// The settings of every SQLite connection, the pools' and intake's writer's
/// (`store::writer`), which each set how they wait for the lock themselves.
pub(super) fn sqlite_settings() -> Vec<String> {
    vec![
        // WAL lets the CLI read while the daemon writes. FULL syncs the log at every
        // commit, so what a 202 promises outlives a power cut, not only a killed
        // process; group commit shares one sync among the deliveries that wait
        // together. It also leaves the checkpoints little to sync: under NORMAL a
        // checkpoint synced all the log written since the last one, and on ext4 commits
        // appending to the log waited behind that sync (README, "Webhook intake").
        "PRAGMA journal_mode = WAL".to_string(),
        "PRAGMA synchronous = FULL".to_string(),
        // The daemon checkpoints in the background (`store::checkpoint`).
        format!(
            "PRAGMA wal_autocheckpoint = {}",
            super::checkpoint::AUTO_CHECKPOINT_PAGES
        ),
        "PRAGMA foreign_keys = ON".to_string(),
    ]
}

/// A pool whose connections wait `lock_wait` for another writer's lock and close after
/// `idle` unused.
pub(super) fn pool_options(
    backend: Backend,
    lock_wait: Duration,
    size: u32,
    idle: Duration,
) -> AnyPoolOptions {
    let wait = lock_wait.as_millis();
    let options = AnyPoolOptions::new()
        .max_connections(size)
        .idle_timeout(idle);
    let options = match backend {
        // A SQLite connection is a file in this process: there is nothing to ping, and
        // a ping is one more trip to the connection's worker thread on every acquire.
        Backend::Sqlite => options.test_before_acquire(false),
        Backend::Postgres => options.acquire_timeout(CONNECT_WAIT),
    };
    options.after_connect(move |connection, _| {
        Box::pin(async move {
            let settings = match backend {
                Backend::Sqlite => {
                    let mut settings = sqlite_settings();
                    settings.push(format!("PRAGMA busy_timeout = {wait}"));
                    settings
                }
                Backend::Postgres => vec![format!("SET lock_timeout = {wait}")],
            };
            for setting in settings {
                connection.execute(sqlx::AssertSqlSafe(setting)).await?;
            }
            Ok(())
        })
    })
}

/// Connects a pool now (to fail early on a server that does not answer).
pub(super) async fn connect(
    location: &Location,
    lock_wait: Duration,
    size: u32,
) -> Result<(AnyPool, Backend), StoreError> {
    let (url, backend) = database_url(location)?;
    let pool = pool_options(backend, lock_wait, size, idle_connection(backend))
        .connect(&url)
        .await
        .map_err(|source| StoreError::Open {
            place: location.describe(),
            source,
        })?;
    Ok((pool, backend))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_back_ends_have_the_same_migrations() {
        let versions = |migrator: &Migrator| -> Vec<(i64, String)> {
            migrator
                .iter()
                .map(|migration| (migration.version, migration.description.to_string()))
                .collect()
        };
        assert_eq!(versions(&SQLITE_MIGRATIONS), versions(&POSTGRES_MIGRATIONS));
    }

    #[test]
    fn a_postgres_location_never_shows_its_password() {
        let location = Location::Postgres(SecretString::from(
            "postgres://gantry:hunter2@db.internal:5432/gantry".to_string(),
        ));
        assert_eq!(
            location.describe(),
            "postgres://gantry:***@db.internal:5432/gantry"
        );
        assert!(!format!("{location:?}").contains("hunter2"));
    }
}
