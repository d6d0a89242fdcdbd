//! The state store: `state.db` (SQLite) in the state directory, or PostgreSQL with
//! `state: postgres://...`, through sqlx (see `connect`).
//!
//! All SQL of gantry lives here, behind methods named for what they record.
//! Migrations are embedded in the binary and run on open, so a new gantry
//! upgrades an old state by itself. Queries are checked at run time, not at
//! compile time, so building gantry needs no database; each is written once, in
//! SQL both back ends accept.

mod backup;
mod batch;
mod checkpoint;
mod connect;
mod copy;
mod deployments;
mod group;
mod leases;
mod logs;
mod queue;
mod replicas;
mod runs;
mod writer;

#[cfg(test)]
pub(crate) mod testing;
#[cfg(test)]
mod tests;

use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sqlx::AnyPool;

pub use backup::{Backup, BackupError, back_up};
pub use connect::{Backend, Location, newest_migration};
pub use copy::Copied;
pub use deployments::{BuiltImage, DeploymentId, DeploymentRecord, InstanceRecord, NewDeployment};
pub use leases::{LeaseHolder, Pin};
pub use logs::LogLine;
pub use queue::{Answer, DeliveryAnswer, DeliveryKey, Queued, QueuedRun, no_answer};
pub use replicas::Interrupted;
pub use runs::{CommitDetails, FinishedStage, RunRecord, RunResult, StageRecord};

/// The database file inside the state directory.
pub const DATABASE_FILE: &str = "state.db";
/// How long a writer waits for another process's write to finish before failing.
const BUSY_TIMEOUT: Duration = Duration::from_secs(30);
/// How long intake (a delivery, a trigger) waits for the write lock, twice at most (this
/// process's other writers, then another process's): forges give up on an answer after
/// 10 s, and a 503 sent before that is retried, where a late answer is a failure.
pub const INTAKE_WAIT: Duration = Duration::from_secs(4);
/// Connections intake writes on.
const INTAKE_CONNECTIONS: u32 = 2;
/// How often intake asks SQLite for the write lock again while another writer holds it.
const LOCK_POLL: Duration = Duration::from_millis(1);
/// Connections per process: the CLI needs one, the daemon a few.
const MAX_CONNECTIONS: u32 = 4;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("state directory {path}: {source}")]
    Directory {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("state database {place}: {source}")]
    Open { place: String, source: sqlx::Error },
    /// The database was brought to a schema this binary does not know, by a newer
    /// gantry. Nothing is changed: an older binary must not write rows whose meaning
    /// it does not know, nor drop what it does not understand.
    #[error(
        "state database {place}: its schema is version {found}, from a newer gantry; \
         this one knows versions up to {known}. Run the newer gantry, or restore a \
         backup taken before the upgrade (`gantry state backup`)"
    )]
    NewerSchema {
        place: String,
        found: i64,
        known: i64,
    },
    #[error("state database {place}: migration failed: {source}")]
    Migrate {
        place: String,
        source: sqlx::migrate::MigrateError,
    },
    #[error("state database: {0}")]
    Query(#[from] sqlx::Error),
    #[error("state database: {0}")]
    Unreadable(#[from] crate::run::UnknownWord),
    /// A failure shared by every run a group commit queued (see `store::group`).
    #[error("{0}")]
    Shared(std::sync::Arc<StoreError>),
    /// A statement of intake's own SQLite connection (`store::writer`).
    #[error("state database: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("state database: cannot start intake's writer: {0}")]
    Thread(String),
    /// Intake waited `INTAKE_WAIT` for the write lock (another process holds it).
    #[error("state database: locked by another writer for longer than {}s", INTAKE_WAIT.as_secs())]
    Busy,
}

impl StoreError {
    /// Why the database cannot take writes right now, when that is the cause: a full
    /// disk, a failing disk, a read-only file, a lock another process holds, a damaged
    /// file. Callers
    /// answer "try again later" (503) to these; other errors are gantry's own.
    pub fn unwritable(&self) -> Option<&'static str> {
        const LOCKED: &str = "the state database is locked by another writer";
        const UNREACHABLE: &str = "the state database cannot be reached";
        let error = match self {
            StoreError::Query(sqlx::Error::Database(error)) => error,
            StoreError::Sqlite(rusqlite::Error::SqliteFailure(error, _)) => {
                return sqlite_unwritable(i64::from(error.extended_code));
            }
            StoreError::Sqlite(rusqlite::Error::SqliteSingleThreadedMode) => {
                return Some(UNREACHABLE);
            }
            StoreError::Shared(error) => return error.unwritable(),
            StoreError::Busy => return Some(LOCKED),
            StoreError::Query(
                sqlx::Error::Io(_) | sqlx::Error::Tls(_) | sqlx::Error::PoolTimedOut,
            )
            | StoreError::Open { .. } => return Some(UNREACHABLE),
            _ => return None,
        };
        if let Some(error) = error.try_downcast_ref::<sqlx::postgres::PgDatabaseError>() {
            let code = error.code();
            return match code {
                "53100" => Some("the disk holding the state database is full"),
                "25006" => Some("the state database is read-only"),
                "55P03" => Some(LOCKED),
                _ if code.starts_with("53") => {
                    Some("the state database server is out of resources")
                }
                _ if code.starts_with("08") || code.starts_with("57P") => Some(UNREACHABLE),
                _ => None,
            };
        }
        sqlite_unwritable(error.code()?.parse().ok()?)
    }
}

/// `StoreError::unwritable` for one of SQLite's result codes.
fn sqlite_unwritable(code: i64) -> Option<&'static str> {
    // The extended result codes carry the primary code in their low byte.
    match code & 0xff {
        13 => Some("the disk holding the state database is full"),
        10 => Some("the disk holding the state database failed a write"),
        8 => Some("the state database is read-only"),
        5 | 6 => Some("the state database is locked by another writer"),
        14 => Some("the state database cannot be opened"),
        // SQLITE_CORRUPT, SQLITE_NOTADB: only a restore mends it, but the answer is
        // still the store's state, not gantry failing.
        11 | 26 => Some("the state database is damaged; restore it from a backup"),
        _ => None,
    }
}

/// A handle on the state database; cheap to clone.
#[derive(Debug, Clone)]
pub struct Store {
    backend: Backend,
    pool: AnyPool,
    /// Intake's connections: the same database, a shorter wait for its lock.
    intake_pool: AnyPool,
    /// One connection for the daemon's work on a timer (`on_timers`).
    timer_pool: AnyPool,
    /// Queue writers of this process wait here, in order, instead of in SQLite's busy
    /// handler, whose growing sleeps (1, 2, 5, 10 ms...) would make the slow tail.
    queue_writer: std::sync::Arc<tokio::sync::Mutex<()>>,
    /// Why the last write failed, while no write has succeeded since: what `/healthz`
    /// and refused requests tell.
    write_failure: std::sync::Arc<std::sync::Mutex<Option<&'static str>>>,
    /// Runs waiting to be queued together (PostgreSQL; see `store::group`).
    waiting: std::sync::Arc<std::sync::Mutex<Vec<group::Waiting>>>,
    /// SQLite: the database file, and intake's writer on it (`store::writer`).
    file: Option<std::sync::Arc<std::path::Path>>,
    writer: std::sync::Arc<writer::Writer>,
}

/// How a write transaction waits while another connection holds SQLite's write lock
/// (on PostgreSQL the server queues writers on the lock itself).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LockWait {
    /// In SQLite's busy handler, up to the connection's busy timeout. It sleeps longer
    /// and longer between tries (1, 2, 5, 10, 15, 20, 25 ms...), so a writer that found
    /// the lock held for a millisecond can wait twenty.
    BusyHandler,
    /// Asking again every `LOCK_POLL`, up to `INTAKE_WAIT`: intake, where every
    /// delivery of a group commit waits as long as its writer does.
    Poll,
}

/// SQLite's answer when another connection holds the lock (`SQLITE_BUSY`).
fn is_busy(error: &sqlx::Error) -> bool {
    let sqlx::Error::Database(error) = error else {
        return false;
    };
    error
        .code()
        .and_then(|code| code.parse::<i64>().ok())
        .is_some_and(|code| code & 0xff == 5)
}

/// A column that holds a word of the run vocabulary, read back as its type.
fn word<T>(row: &sqlx::any::AnyRow, column: &str) -> Result<T, StoreError>
where
    T: std::str::FromStr<Err = crate::run::UnknownWord>,
{
    use sqlx::Row;
    let text: String = row.try_get(column)?;
    Ok(text.parse()?)
}

/// Milliseconds since the epoch, the store's one time format.
pub fn now_millis() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_millis() as i64)
}

impl Store {
    /// Opens (creating if needed) the state database and brings its schema up to date.
    pub async fn open(location: &Location) -> Result<Store, StoreError> {
        let (pool, backend) = connect::connect(location, BUSY_TIMEOUT, MAX_CONNECTIONS).await?;
        let place = location.describe();
        backend
            .migrations()
            .run(&pool)
            .await
            .map_err(|source| match source {
                // sqlx checks every applied migration against the embedded ones before
                // it applies any, so this error leaves the database as it was.
                sqlx::migrate::MigrateError::VersionMissing(found)
                    if found > newest_migration() =>
                {
                    StoreError::NewerSchema {
                        place: place.clone(),
                        found,
                        known: newest_migration(),
                    }
                }
                source => StoreError::Migrate {
                    place: place.clone(),
                    source,
                },
            })?;
        // Lazily: a command that never queues opens none of these.
        let (url, _) = connect::database_url(location)?;
        let lazy = |lock_wait, size, idle| {
            connect::pool_options(backend, lock_wait, size, idle)
                .connect_lazy(&url)
                .map_err(|source| StoreError::Open {
                    place: place.clone(),
                    source,
                })
        };
        // Intake's SQLite connections have no busy timeout: `transaction_on` asks again
        // for the lock itself (`LockWait::Poll`).
        let intake_wait = match backend {
            Backend::Sqlite => Duration::ZERO,
            Backend::Postgres => INTAKE_WAIT,
        };
        let idle = connect::idle_connection(backend);
        let intake_pool = lazy(intake_wait, INTAKE_CONNECTIONS, idle)?;
        let timer_pool = lazy(BUSY_TIMEOUT, 1, idle.max(connect::TIMER_CONNECTION_IDLE))?;
        Ok(Store {
            backend,
            pool,
            intake_pool,
            timer_pool,
            queue_writer: std::sync::Arc::new(tokio::sync::Mutex::new(())),
            write_failure: std::sync::Arc::new(std::sync::Mutex::new(None)),
            waiting: std::sync::Arc::default(),
            file: match location {
                Location::Directory(dir) => Some(dir.join(DATABASE_FILE).into()),
                Location::Postgres(_) => None,
            },
            writer: std::sync::Arc::default(),
        })
    }

    /// This store, reading and writing through one connection of its own: for the
    /// daemon's work on a timer (the queue's scan, the status reading, pruning). The
    /// pool hands out its idle connections in turn, so work every second or so on
    /// the shared pool would keep every connection a burst of runs opened alive (each
    /// with a thread and a page cache); this way an idle daemon holds one, and the
    /// others close after a while unused.
    pub fn on_timers(&self) -> Store {
        Store {
            pool: self.timer_pool.clone(),
            ..self.clone()
        }
    }

    /// Which database the store writes to.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Why the store cannot write, if its last write failed for that reason.
    pub fn write_failure(&self) -> Option<&'static str> {
        *self
            .write_failure
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Remembers how a write ended, for `write_failure`.
    fn wrote<T>(&self, result: Result<T, StoreError>) -> Result<T, StoreError> {
        let failure = match &result {
            Ok(_) => None,
            Err(error) => match error.unwritable() {
                Some(reason) => Some(reason),
                None => return result,
            },
        };
        *self
            .write_failure
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = failure;
        result
    }

    /// Runs `work` in a transaction on a connection of its own. When anything fails
    /// (a statement, or the commit itself), that connection is closed instead of going
    /// back to the pool: SQLite may leave it inside the transaction (a failed commit on
    /// a full disk does), and a reused one would hold the write lock for good and
    /// answer later writes from inside a transaction that is never committed.
    async fn transaction<T>(
        &self,
        work: impl AsyncFnOnce(&mut sqlx::AnyConnection) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        self.transaction_on(&self.pool, LockWait::BusyHandler, work)
            .await
    }

    /// `transaction` for intake: after this process's other queue writers (at most
    /// `INTAKE_WAIT`), on a connection that waits at most `INTAKE_WAIT` for the lock,
    /// asking for it every `LOCK_POLL`.
    async fn intake_transaction<T>(
        &self,
        work: impl AsyncFnOnce(&mut sqlx::AnyConnection) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let writer = tokio::time::timeout(INTAKE_WAIT, self.queue_writer.lock()).await;
        let Ok(_writer) = writer else {
            return self.wrote(Err(StoreError::Busy));
        };
        self.transaction_on(&self.intake_pool, LockWait::Poll, work)
            .await
    }

    async fn transaction_on<T>(
        &self,
        pool: &AnyPool,
        wait: LockWait,
        work: impl AsyncFnOnce(&mut sqlx::AnyConnection) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let mut connection = pool.acquire().await?;
        let polls = wait == LockWait::Poll && self.backend == Backend::Sqlite;
        let deadline = std::time::Instant::now() + INTAKE_WAIT;
        let mut work = Some(work);
        let result = loop {
            let mut transaction = match self.backend.begin_write(&mut connection).await {
                Ok(transaction) => transaction,
                Err(error) if polls && is_busy(&error) => {
                    if std::time::Instant::now() >= deadline {
                        break Err(StoreError::Busy);
                    }
                    tokio::time::sleep(LOCK_POLL).await;
                    continue;
                }
                Err(error) => break Err(error.into()),
            };
            let work = work.take().expect("the transaction begins once");
            break async {
                let value = work(&mut transaction).await?;
                transaction.commit().await?;
                Ok::<T, StoreError>(value)
            }
            .await;
        };
        if result.is_err() {
            // Closing rolls back whatever SQLite kept open and releases its locks.
            let _ = connection.close().await;
        }
        self.wrote(result)
    }

    /// Closes every connection, folding the write-ahead log back into the database.
    pub async fn close(self) {
        self.writer.close().await;
        self.intake_pool.close().await;
        self.timer_pool.close().await;
        self.pool.close().await;
    }
}

#[cfg(test)]
impl Store {
    /// A store in a temporary directory, which goes when the returned guard drops.
    pub(crate) async fn temporary() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let location = Location::Directory(dir.path().to_path_buf());
        let store = Store::open(&location).await.expect("a store opens");
        (dir, store)
    }

    /// A run started by hand, as `gantry build` or `gantry run` starts one.
    pub(crate) async fn manual_run(
        &self,
        pipeline: &str,
        kind: crate::run::RunKind,
    ) -> crate::run::RunId {
        self.start_run(pipeline, kind, &crate::run::Trigger::Manual, None)
            .await
            .expect("a run starts")
    }
}
