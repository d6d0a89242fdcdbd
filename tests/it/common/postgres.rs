//! The test PostgreSQL of `scripts/test-env.sh` (`GANTRY_TEST_POSTGRES`): a schema of it
//! per test.

use crate::common::unique;

/// A schema of the test database for one test, dropped when it ends.
pub struct Schema {
    admin: String,
    name: String,
}

impl Schema {
    pub fn new() -> Schema {
        let admin = std::env::var("GANTRY_TEST_POSTGRES").expect(
            "GANTRY_TEST_POSTGRES is not set: run `bash scripts/test-env.sh` and source its env file",
        );
        let name = unique("state").replace('-', "_");
        Schema::execute(&admin, &format!("CREATE SCHEMA {name}"));
        Schema { admin, name }
    }

    /// The `state:` URL whose tables live in this schema.
    pub fn url(&self) -> String {
        let separator = if self.admin.contains('?') { '&' } else { '?' };
        format!(
            "{}{separator}options=-c%20search_path%3D{}",
            self.admin, self.name
        )
    }

    fn execute(url: &str, statement: &str) {
        use sqlx::Connection;
        tokio::runtime::Runtime::new().unwrap().block_on(async {
            let mut connection = sqlx::PgConnection::connect(url).await.unwrap();
            sqlx::query(sqlx::AssertSqlSafe(statement.to_string()))
                .execute(&mut connection)
                .await
                .unwrap();
        });
    }
}

impl Drop for Schema {
    fn drop(&mut self) {
        Schema::execute(
            &self.admin,
            &format!("DROP SCHEMA IF EXISTS {} CASCADE", self.name),
        );
    }
}
