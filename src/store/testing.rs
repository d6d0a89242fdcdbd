//! Stores for tests: SQLite in a temporary directory, or PostgreSQL in a schema of its
//! own inside the test database `GANTRY_TEST_POSTGRES` names (`scripts/test-env.sh`
//! starts one), dropped when the test ends.

use sqlx::Connection;

use super::{Backend, Location, Store};

/// The PostgreSQL database tests own, from `scripts/test-env.sh`'s env file.
pub const POSTGRES_VARIABLE: &str = "GANTRY_TEST_POSTGRES";

/// What keeps a test's database: its directory, or its schema.
pub struct TestState {
    _dir: tempfile::TempDir,
    location: Location,
    schema: Option<(String, String)>,
}

impl TestState {
    /// Where the test's database is, to open it again.
    pub fn location(&self) -> &Location {
        &self.location
    }

    /// A database of its own on `backend`, empty (not migrated).
    pub async fn new(backend: Backend) -> TestState {
        let dir = tempfile::tempdir().expect("a temporary directory");
        match backend {
            Backend::Sqlite => TestState {
                location: Location::Directory(dir.path().to_path_buf()),
                _dir: dir,
                schema: None,
            },
            Backend::Postgres => {
                let url = postgres_url();
                static COUNT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
                let schema = format!(
                    "test_{}_{}_{}",
                    std::process::id(),
                    COUNT.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
                    super::now_millis()
                );
                let mut connection = sqlx::PgConnection::connect(&url)
                    .await
                    .unwrap_or_else(|error| panic!("{POSTGRES_VARIABLE}: {error}"));
                sqlx::query(sqlx::AssertSqlSafe(format!("CREATE SCHEMA {schema}")))
                    .execute(&mut connection)
                    .await
                    .expect("a schema for the test");
                let _ = connection.close().await;
                let separator = if url.contains('?') { '&' } else { '?' };
                let location = Location::Postgres(
                    format!("{url}{separator}options=-c%20search_path%3D{schema}").into(),
                );
                TestState {
                    _dir: dir,
                    location,
                    schema: Some((url, schema)),
                }
            }
        }
    }
}

impl Drop for TestState {
    fn drop(&mut self) {
        let Some((url, schema)) = self.schema.take() else {
            return;
        };
        // Drop runs inside the test's runtime: the schema goes on a thread of its own.
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a runtime");
            runtime.block_on(async {
                if let Ok(mut connection) = sqlx::PgConnection::connect(&url).await {
                    let drop = format!("DROP SCHEMA IF EXISTS {schema} CASCADE");
                    let _ = sqlx::query(sqlx::AssertSqlSafe(drop))
                        .execute(&mut connection)
                        .await;
                }
            });
        });
        let _ = dropped.join();
    }
}

/// The test database's URL; a test on PostgreSQL fails without it rather than pass
/// having tested nothing.
pub fn postgres_url() -> String {
    std::env::var(POSTGRES_VARIABLE).unwrap_or_else(|_| {
        panic!(
            "{POSTGRES_VARIABLE} is not set: run `bash scripts/test-env.sh` and \
             `source /var/lib/gantry-test-env/env` (it starts the test PostgreSQL)"
        )
    })
}

impl Store {
    /// A migrated store of its own on `backend`.
    pub async fn temporary_on(backend: Backend) -> (TestState, Store) {
        let state = TestState::new(backend).await;
        let store = Store::open(state.location()).await.expect("a store opens");
        (state, store)
    }
}

/// Runs each named `async fn NAME(backend: Backend)` as two tests, `sqlite::NAME` and
/// `postgres::NAME`.
#[macro_export]
macro_rules! on_both_back_ends {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test]
                async fn $name() {
                    super::$name($crate::store::Backend::Sqlite).await
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test]
                async fn $name() {
                    super::$name($crate::store::Backend::Postgres).await
                }
            )*
        }
    };
}
