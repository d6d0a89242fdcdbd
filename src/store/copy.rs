//! Copying one state into another (`gantry state migrate`): a SQLite state directory
//! into PostgreSQL when a team moves to replicas. Runs (with their stages and log
//! lines), webhook deliveries, deployments (with their instances) and pins are copied;
//! leases and replicas are of the moment and are not. Rows get the target's ids, and
//! references between them are renumbered. A run or deployment the target already has
//! (same pipeline and number) is left as it is, so copying again copies nothing twice.

use std::collections::HashMap;

use sqlx::Row;
use sqlx::any::AnyRow;

use super::{Store, StoreError};

/// How many rows a copy added, per kind (rows already there are not counted).
#[derive(Debug, Default, serde::Serialize)]
pub struct Copied {
    pub runs: u64,
    pub log_lines: u64,
    pub deliveries: u64,
    pub deployments: u64,
    pub pins: u64,
    /// Runs and deployments the target had already.
    pub already_there: u64,
}

#[derive(Clone, Copy)]
enum Kind {
    Int,
    Text,
}

use Kind::{Int, Text};

const RUNS: &[(&str, Kind)] = &[
    ("pipeline", Text),
    ("number", Int),
    ("kind", Text),
    ("trigger", Text),
    ("requested", Text),
    ("commit_sha", Text),
    ("state", Text),
    ("failed_stage", Text),
    ("message", Text),
    ("image", Text),
    ("tags", Text),
    ("digest", Text),
    ("started_at", Int),
    ("finished_at", Int),
    ("runner", Text),
    ("commit_message", Text),
    ("commit_author", Text),
    ("images", Text),
    ("replica", Text),
];
const STAGES: &[(&str, Kind)] = &[
    ("position", Int),
    ("name", Text),
    ("state", Text),
    ("started_at", Int),
    ("duration_ms", Int),
    ("message", Text),
];
const LOG_LINES: &[(&str, Kind)] = &[("seq", Int), ("at", Int), ("line", Text)];
const DELIVERIES: &[(&str, Kind)] = &[
    ("pipeline", Text),
    ("forge", Text),
    ("delivery_id", Text),
    ("body_sha256", Text),
    ("status", Int),
    ("response", Text),
    ("received_at", Int),
];
const DEPLOYMENTS: &[(&str, Kind)] = &[
    ("pipeline", Text),
    ("number", Int),
    ("kind", Text),
    ("image", Text),
    ("digest", Text),
    ("commit_sha", Text),
    ("state", Text),
    ("message", Text),
    ("started_at", Int),
    ("finished_at", Int),
    ("images", Text),
];
const INSTANCES: &[(&str, Kind)] = &[
    ("service", Text),
    ("instance", Text),
    ("host", Text),
    ("action", Text),
    ("digest", Text),
    ("previous_digest", Text),
    ("message", Text),
    ("finished_at", Int),
];
const PINS: &[(&str, Kind)] = &[
    ("pipeline", Text),
    ("digest", Text),
    ("reason", Text),
    ("pinned_at", Int),
];

/// One value of a row, as read from the source.
enum Value {
    Int(Option<i64>),
    Text(Option<String>),
}

fn values(row: &AnyRow, columns: &[(&str, Kind)]) -> Result<Vec<Value>, StoreError> {
    columns
        .iter()
        .map(|(name, kind)| {
            Ok(match kind {
                Int => Value::Int(row.try_get(*name)?),
                Text => Value::Text(row.try_get(*name)?),
            })
        })
        .collect()
}

fn names(columns: &[(&str, Kind)]) -> String {
    columns
        .iter()
        .map(|(name, _)| *name)
        .collect::<Vec<_>>()
        .join(", ")
}

/// `INSERT INTO table (extra..., columns...) VALUES ($1...) tail`, with the values
/// bound after `extra` (a renumbered reference, first).
async fn insert(
    connection: &mut sqlx::AnyConnection,
    table: &str,
    extra: Option<(&str, Option<i64>)>,
    columns: &[(&str, Kind)],
    row: Vec<Value>,
    tail: &str,
) -> Result<Option<i64>, StoreError> {
    let mut names = names(columns);
    let count = columns.len() + usize::from(extra.is_some());
    if let Some((name, _)) = extra {
        names = format!("{name}, {names}");
    }
    let placeholders = (1..=count)
        .map(|index| format!("${index}"))
        .collect::<Vec<_>>()
        .join(", ");
    // Table and column names are this module's constants; values are bound.
    let statement = format!("INSERT INTO {table} ({names}) VALUES ({placeholders}) {tail}");
    let mut query = sqlx::query(sqlx::AssertSqlSafe(statement));
    if let Some((_, reference)) = extra {
        query = query.bind(reference);
    }
    for value in row {
        query = match value {
            Value::Int(value) => query.bind(value),
            Value::Text(value) => query.bind(value),
        };
    }
    let returned = query.fetch_optional(&mut *connection).await?;
    Ok(returned.and_then(|row| row.try_get::<i64, _>("id").ok()))
}

impl Store {
    /// Copies everything lasting in `self` into `target` in one transaction of the
    /// target's: all of it or, on an error, nothing.
    pub async fn copy_into(&self, target: &Store) -> Result<Copied, StoreError> {
        let select = |table: &str, references: &str, columns: &[(&str, Kind)]| {
            format!(
                "SELECT id, {references}, {} FROM {table} ORDER BY id",
                names(columns)
            )
        };
        let runs = sqlx::query(sqlx::AssertSqlSafe(select("runs", "superseded_by", RUNS)))
            .fetch_all(&self.pool)
            .await?;
        let deployments = select("deployments", "run_id", DEPLOYMENTS);
        let deployments = sqlx::query(sqlx::AssertSqlSafe(deployments))
            .fetch_all(&self.pool)
            .await?;
        let source = self.clone();
        target
            .transaction(async |connection| {
                let mut copied = Copied::default();
                let mut superseded: Vec<(i64, i64)> = Vec::new();
                // Source run id -> target run id, for every run the target has.
                let mut run_ids: HashMap<i64, i64> = HashMap::new();
                for row in &runs {
                    let id: i64 = row.try_get("id")?;
                    if let Some(by) = row.try_get::<Option<i64>, _>("superseded_by")? {
                        superseded.push((id, by));
                    }
                    let tail = "ON CONFLICT (pipeline, number) DO NOTHING RETURNING id";
                    let new = insert(connection, "runs", None, RUNS, values(row, RUNS)?, tail)
                        .await?;
                    let Some(new) = new else {
                        copied.already_there += 1;
                        let existing: i64 = sqlx::query_scalar(
                            "SELECT id FROM runs WHERE pipeline = $1 AND number = $2",
                        )
                        .bind(row.try_get::<String, _>("pipeline")?)
                        .bind(row.try_get::<i64, _>("number")?)
                        .fetch_one(&mut *connection)
                        .await?;
                        run_ids.insert(id, existing);
                        continue;
                    };
                    run_ids.insert(id, new);
                    copied.runs += 1;
                    for (table, columns, counted) in [
                        ("stages", STAGES, false),
                        ("run_logs", LOG_LINES, true),
                    ] {
                        let statement = format!(
                            "SELECT {} FROM {table} WHERE run_id = $1",
                            names(columns)
                        );
                        let rows = sqlx::query(sqlx::AssertSqlSafe(statement))
                            .bind(id)
                            .fetch_all(&source.pool)
                            .await?;
                        for child in &rows {
                            let value = values(child, columns)?;
                            insert(connection, table, Some(("run_id", Some(new))), columns, value, "")
                                .await?;
                        }
                        if counted {
                            copied.log_lines += rows.len() as u64;
                        }
                    }
                }
                for (run, by) in &superseded {
                    if let (Some(run), Some(by)) = (run_ids.get(run), run_ids.get(by)) {
                        sqlx::query(
                            "UPDATE runs SET superseded_by = $1 WHERE id = $2 AND superseded_by IS NULL",
                        )
                        .bind(*by)
                        .bind(*run)
                        .execute(&mut *connection)
                        .await?;
                    }
                }
                let statement = format!("SELECT run_id, {} FROM deliveries", names(DELIVERIES));
                for row in sqlx::query(sqlx::AssertSqlSafe(statement))
                    .fetch_all(&source.pool)
                    .await?
                {
                    let run = remap(&row, "run_id", &run_ids)?;
                    let value = values(&row, DELIVERIES)?;
                    let tail = "ON CONFLICT DO NOTHING RETURNING CAST(1 AS BIGINT) AS id";
                    let added =
                        insert(connection, "deliveries", Some(("run_id", run)), DELIVERIES, value, tail);
                    if added.await?.is_some() {
                        copied.deliveries += 1;
                    }
                }
                for row in &deployments {
                    let id: i64 = row.try_get("id")?;
                    let run = remap(row, "run_id", &run_ids)?;
                    let tail = "ON CONFLICT (pipeline, number) DO NOTHING RETURNING id";
                    let value = values(row, DEPLOYMENTS)?;
                    let new =
                        insert(connection, "deployments", Some(("run_id", run)), DEPLOYMENTS, value, tail)
                            .await?;
                    let Some(new) = new else {
                        copied.already_there += 1;
                        continue;
                    };
                    copied.deployments += 1;
                    let statement = format!(
                        "SELECT {} FROM deployment_instances WHERE deployment_id = $1",
                        names(INSTANCES)
                    );
                    for child in sqlx::query(sqlx::AssertSqlSafe(statement))
                        .bind(id)
                        .fetch_all(&source.pool)
                        .await?
                    {
                        let value = values(&child, INSTANCES)?;
                        let reference = Some(("deployment_id", Some(new)));
                        insert(connection, "deployment_instances", reference, INSTANCES, value, "")
                            .await?;
                    }
                }
                let statement = format!("SELECT {} FROM pins", names(PINS));
                for row in sqlx::query(sqlx::AssertSqlSafe(statement))
                    .fetch_all(&source.pool)
                    .await?
                {
                    let tail = "ON CONFLICT (pipeline) DO NOTHING RETURNING CAST(1 AS BIGINT) AS id";
                    if insert(connection, "pins", None, PINS, values(&row, PINS)?, tail)
                        .await?
                        .is_some()
                    {
                        copied.pins += 1;
                    }
                }
                Ok(copied)
            })
            .await
    }
}

/// A source row's reference to a run, as the target's id (none for a run not copied).
fn remap(
    row: &AnyRow,
    column: &str,
    run_ids: &HashMap<i64, i64>,
) -> Result<Option<i64>, StoreError> {
    let run: Option<i64> = row.try_get(column)?;
    Ok(run.and_then(|run| run_ids.get(&run).copied()))
}

#[cfg(test)]
mod tests {
    use super::super::{Backend, DeliveryKey, InstanceRecord, NewDeployment};
    use super::*;
    use crate::run::{Outcome, RunKind, RunState, Trigger};

    crate::on_both_back_ends!(a_state_is_copied_whole_and_a_second_copy_adds_nothing);

    async fn a_state_is_copied_whole_and_a_second_copy_adds_nothing(backend: Backend) {
        let (_dir, source) = Store::temporary().await;
        let queue = async |requested: &str, delivery: Option<DeliveryKey<'_>>| {
            source
                .queue_run(
                    "web",
                    RunKind::Run,
                    &Trigger::Api,
                    Some(requested),
                    delivery,
                    std::sync::Arc::new(|run: crate::run::RunId| format!("run {}", run.id)),
                )
                .await
                .unwrap()
                .unwrap()
        };
        let older = queue("c1", None).await;
        let delivery = DeliveryKey {
            forge: "github",
            id: "d-1",
            body_sha256: "ab",
        };
        let newer = queue("c2", Some(delivery)).await;
        let taken = source.take_queued("web", "r").await.unwrap().unwrap();
        assert_eq!(taken.run, newer, "the older one is coalesced into it");
        source
            .append_logs(newer.id, &["one".to_string(), "two".to_string()])
            .await
            .unwrap();
        source
            .end_run(newer, RunState::Skipped, "already deployed")
            .await
            .unwrap();
        let deployment = source
            .start_deployment(&NewDeployment {
                pipeline: "web",
                run: Some(newer),
                kind: RunKind::Run,
                image: "r/web@sha256:2",
                digest: "sha256:2",
                commit: Some("c2"),
                images: &Default::default(),
            })
            .await
            .unwrap();
        let instance = InstanceRecord {
            service: "web".to_string(),
            instance: "web-1".to_string(),
            host: "local".to_string(),
            action: "updated".to_string(),
            digest: Some("sha256:2".to_string()),
            previous_digest: None,
            message: None,
        };
        source.record_instance(deployment, &instance).await.unwrap();
        source
            .finish_deployment(deployment, Outcome::Succeeded, None)
            .await
            .unwrap();
        source.pin("web", "sha256:2", "held").await.unwrap();

        let (_target_state, target) = Store::temporary_on(backend).await;
        let copied = source.copy_into(&target).await.unwrap();
        assert_eq!(
            (
                copied.runs,
                copied.log_lines,
                copied.deliveries,
                copied.deployments,
                copied.pins
            ),
            (2, 2, 1, 1, 1)
        );
        let strip = |mut runs: Vec<super::super::RunRecord>| {
            for run in &mut runs {
                run.id = 0;
            }
            serde_json::to_value(runs).unwrap()
        };
        let runs = target.runs(Some("web"), 10).await.unwrap();
        let copied_newer = runs
            .iter()
            .find(|run| run.number == newer.number)
            .unwrap()
            .id;
        let copied_older = runs
            .iter()
            .find(|run| run.number == older.number)
            .unwrap()
            .id;
        assert_eq!(
            strip(runs.clone()),
            strip(source.runs(Some("web"), 10).await.unwrap())
        );
        let superseded_by: Option<i64> =
            sqlx::query_scalar("SELECT superseded_by FROM runs WHERE id = $1")
                .bind(copied_older)
                .fetch_one(&target.pool)
                .await
                .unwrap();
        assert_eq!(superseded_by, Some(copied_newer));
        let lines: Vec<String> = target
            .log_lines(copied_newer, -1)
            .await
            .unwrap()
            .into_iter()
            .map(|line| line.line)
            .collect();
        assert_eq!(lines, ["one", "two"]);
        let deployments = target.deployments("web", 10).await.unwrap();
        assert_eq!(deployments.len(), 1);
        assert_eq!(deployments[0].instances.len(), 1);
        assert_eq!(
            target.pin_of("web").await.unwrap().unwrap().digest,
            "sha256:2"
        );
        // The delivery answers as it did, pointing at the copied run.
        let answer = target
            .queue_run(
                "web",
                RunKind::Run,
                &Trigger::Api,
                Some("c2"),
                Some(delivery),
                crate::store::no_answer(),
            )
            .await
            .unwrap();
        assert_eq!(answer.unwrap_err().response, format!("run {}", newer.id));

        let again = source.copy_into(&target).await.unwrap();
        assert_eq!(
            (
                again.runs,
                again.log_lines,
                again.deliveries,
                again.deployments,
                again.pins
            ),
            (0, 0, 0, 0, 0)
        );
        assert_eq!(again.already_there, 3);
        assert_eq!(target.runs(Some("web"), 10).await.unwrap().len(), 2);
    }
}
