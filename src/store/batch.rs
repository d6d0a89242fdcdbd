//! Queueing several runs in one transaction with a fixed number of statements: one
//! look for deliveries seen before, one for each pipeline's last number, one insert of
//! the runs and one of the deliveries. On PostgreSQL each statement is a round trip
//! to the server, made while every other writer waits for the lock; a statement per
//! run would make a group commit as slow as the runs in it. The statements' texts
//! hold only placeholders (`placeholders`); every value is bound.

use std::collections::HashMap;

use sqlx::Row;

use super::queue::{DeliveryAnswer, QueueJob, Queued};
use super::{StoreError, now_millis};
use crate::run::{RunId, RunState};

/// The most runs one group commit queues (`store::group`, `store::writer`).
pub(super) const MOST_AT_ONCE: usize = 256;

/// (pipeline, forge, delivery id, body digest)
pub(super) type DeliveryOf<'a> = (&'a str, &'a str, &'a str, &'a str);

/// What becomes of one job of the batch.
pub(super) enum Fate {
    /// Delivered before: its first answer stands.
    Answered(DeliveryAnswer),
    /// The same delivery as an earlier job of this batch, which answers for both.
    SameAs(usize),
    /// A new run, with the pipeline's next number.
    New { number: i64 },
}

/// Queues `jobs` inside the caller's transaction, which holds the write lock; the
/// outcomes come in the order of `jobs`.
pub(super) async fn queue_many(
    connection: &mut sqlx::AnyConnection,
    jobs: &[&QueueJob],
) -> Result<Vec<Queued>, StoreError> {
    let deliveries: Vec<Option<DeliveryOf<'_>>> = jobs.iter().map(|job| delivery_of(job)).collect();
    let answered = answers_of(connection, &deliveries).await?;
    let next = last_numbers(connection, jobs).await?;
    let fates = plan(jobs, &deliveries, &answered, next);
    let ids = insert_runs(connection, jobs, &fates).await?;
    let (outcomes, stored) = settle(jobs, &deliveries, fates, &ids)?;
    insert_deliveries(connection, &deliveries, &stored).await?;
    Ok(outcomes)
}

/// What becomes of each job, given the deliveries `answered` before and each
/// pipeline's last run number (`next`, counted on from there).
pub(super) fn plan<'a>(
    jobs: &[&'a QueueJob],
    deliveries: &[Option<DeliveryOf<'a>>],
    answered: &HashMap<DeliveryOf<'a>, DeliveryAnswer>,
    mut next: HashMap<&'a str, i64>,
) -> Vec<Fate> {
    let mut first_of: HashMap<DeliveryOf<'a>, usize> = HashMap::new();
    let mut fates = Vec::with_capacity(jobs.len());
    for (at, (job, delivery)) in jobs.iter().zip(deliveries).enumerate() {
        if let Some(delivery) = delivery {
            if let Some(first) = answered.get(delivery) {
                fates.push(Fate::Answered(first.clone()));
                continue;
            }
            if let Some(&earlier) = first_of.get(delivery) {
                fates.push(Fate::SameAs(earlier));
                continue;
            }
            first_of.insert(*delivery, at);
        }
        let number = next.entry(job.pipeline.as_str()).or_insert(0);
        *number += 1;
        fates.push(Fate::New { number: *number });
    }
    fates
}

/// A new run's delivery with the answer it got: (the job's place, the answer, the run's id).
pub(super) type Stored = (usize, DeliveryAnswer, i64);

/// Each job's outcome, once the new runs have their `ids` (by pipeline and number), and
/// the deliveries to remember with the answer each got.
pub(super) fn settle(
    jobs: &[&QueueJob],
    deliveries: &[Option<DeliveryOf<'_>>],
    fates: Vec<Fate>,
    ids: &HashMap<(String, i64), i64>,
) -> Result<(Vec<Queued>, Vec<Stored>), StoreError> {
    let mut outcomes: Vec<Queued> = Vec::with_capacity(jobs.len());
    let mut stored: Vec<Stored> = Vec::new();
    for (at, (job, fate)) in jobs.iter().zip(fates).enumerate() {
        let outcome = match fate {
            Fate::Answered(first) => Err(first),
            Fate::SameAs(earlier) => {
                let (_, first, _) = stored
                    .iter()
                    .find(|(place, _, _)| *place == earlier)
                    .ok_or(sqlx::Error::RowNotFound)?;
                Err(first.clone())
            }
            Fate::New { number } => {
                let id = ids
                    .get(&(job.pipeline.clone(), number))
                    .copied()
                    // Every row inserted has its id.
                    .ok_or(sqlx::Error::RowNotFound)?;
                let run = RunId { id, number };
                if deliveries[at].is_some() {
                    let answer = DeliveryAnswer {
                        status: 202,
                        response: (job.answer)(run),
                    };
                    stored.push((at, answer, id));
                }
                Ok(run)
            }
        };
        outcomes.push(outcome);
    }
    Ok((outcomes, stored))
}

pub(super) fn delivery_of(job: &QueueJob) -> Option<DeliveryOf<'_>> {
    job.delivery.as_ref().map(|(forge, id, body)| {
        (
            job.pipeline.as_str(),
            forge.as_str(),
            id.as_str(),
            body.as_str(),
        )
    })
}

/// The first answers to the deliveries seen before.
async fn answers_of<'a>(
    connection: &mut sqlx::AnyConnection,
    deliveries: &[Option<DeliveryOf<'a>>],
) -> Result<HashMap<DeliveryOf<'a>, DeliveryAnswer>, StoreError> {
    let wanted: Vec<DeliveryOf<'a>> = deliveries.iter().flatten().copied().collect();
    let mut answers = HashMap::new();
    if wanted.is_empty() {
        return Ok(answers);
    }
    let sql = format!(
        "SELECT pipeline, forge, delivery_id, body_sha256, status, response FROM deliveries
         WHERE (pipeline, forge, delivery_id, body_sha256) IN (VALUES {})",
        placeholders(wanted.len(), 4)
    );
    let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
    for (pipeline, forge, id, body) in &wanted {
        query = query.bind(*pipeline).bind(*forge).bind(*id).bind(*body);
    }
    for row in query.fetch_all(&mut *connection).await? {
        let key: (String, String, String, String) = (
            row.try_get("pipeline")?,
            row.try_get("forge")?,
            row.try_get("delivery_id")?,
            row.try_get("body_sha256")?,
        );
        let Some(delivery) = wanted.iter().find(|wanted| {
            (wanted.0, wanted.1, wanted.2, wanted.3)
                == (
                    key.0.as_str(),
                    key.1.as_str(),
                    key.2.as_str(),
                    key.3.as_str(),
                )
        }) else {
            continue;
        };
        let answer = DeliveryAnswer {
            status: row.try_get::<i64, _>("status")? as u16,
            response: row.try_get("response")?,
        };
        answers.insert(*delivery, answer);
    }
    Ok(answers)
}

/// Each pipeline's highest run number (pipelines without runs are left out). One
/// subquery per pipeline, not `MAX` with `GROUP BY`: SQLite reads a grouped maximum by
/// walking every run of the pipeline, but a lone `MAX` of an indexed column by one
/// step down the index of `UNIQUE (pipeline, number)`.
async fn last_numbers<'a>(
    connection: &mut sqlx::AnyConnection,
    jobs: &[&'a QueueJob],
) -> Result<HashMap<&'a str, i64>, StoreError> {
    let mut pipelines: Vec<&'a str> = jobs.iter().map(|job| job.pipeline.as_str()).collect();
    pipelines.sort_unstable();
    pipelines.dedup();
    // A VALUES list names its column `column1` in both back ends.
    let sql = format!(
        "SELECT wanted.column1 AS pipeline,
                (SELECT MAX(number) FROM runs WHERE runs.pipeline = wanted.column1) AS number
         FROM (VALUES {}) AS wanted",
        placeholders(pipelines.len(), 1)
    );
    let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
    for pipeline in &pipelines {
        query = query.bind(*pipeline);
    }
    let mut numbers = HashMap::new();
    for row in query.fetch_all(&mut *connection).await? {
        let pipeline: String = row.try_get("pipeline")?;
        let Some(number) = row.try_get::<Option<i64>, _>("number")? else {
            continue;
        };
        if let Some(known) = pipelines.iter().find(|known| **known == pipeline) {
            numbers.insert(*known, number);
        }
    }
    Ok(numbers)
}

/// Inserts the new runs; their ids by (pipeline, number).
async fn insert_runs(
    connection: &mut sqlx::AnyConnection,
    jobs: &[&QueueJob],
    fates: &[Fate],
) -> Result<HashMap<(String, i64), i64>, StoreError> {
    let new: Vec<(&QueueJob, i64)> = jobs
        .iter()
        .zip(fates)
        .filter_map(|(job, fate)| match fate {
            Fate::New { number } => Some((*job, *number)),
            _ => None,
        })
        .collect();
    let mut ids = HashMap::new();
    if new.is_empty() {
        return Ok(ids);
    }
    let sql = format!(
        "INSERT INTO runs (pipeline, number, kind, trigger, requested, state, started_at)
         VALUES {} RETURNING id, pipeline, number",
        placeholders(new.len(), 7)
    );
    let now = now_millis();
    let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
    for (job, number) in &new {
        query = query
            .bind(job.pipeline.as_str())
            .bind(*number)
            .bind(job.kind.as_str())
            .bind(job.trigger.to_string())
            .bind(job.requested.as_deref())
            .bind(RunState::Queued.as_str())
            .bind(now);
    }
    for row in query.fetch_all(&mut *connection).await? {
        let key = (row.try_get("pipeline")?, row.try_get("number")?);
        ids.insert(key, row.try_get("id")?);
    }
    Ok(ids)
}

/// Remembers each new run's delivery with the answer it got.
async fn insert_deliveries(
    connection: &mut sqlx::AnyConnection,
    deliveries: &[Option<DeliveryOf<'_>>],
    stored: &[Stored],
) -> Result<(), StoreError> {
    if stored.is_empty() {
        return Ok(());
    }
    let sql = format!(
        "INSERT INTO deliveries (pipeline, forge, body_sha256, delivery_id, status, response,
                                 run_id, received_at)
         VALUES {} ON CONFLICT DO NOTHING",
        placeholders(stored.len(), 8)
    );
    let now = now_millis();
    let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
    for (at, answer, run) in stored {
        let Some((pipeline, forge, id, body)) = deliveries[*at] else {
            continue;
        };
        query = query
            .bind(pipeline)
            .bind(forge)
            .bind(body)
            .bind(id)
            .bind(i64::from(answer.status))
            .bind(answer.response.as_str())
            .bind(*run)
            .bind(now);
    }
    query.execute(&mut *connection).await?;
    Ok(())
}

/// `($1, $2), ($3, $4)` for two rows of two columns.
pub(super) fn placeholders(rows: usize, columns: usize) -> String {
    (0..rows)
        .map(|row| {
            let row: Vec<String> = (1..=columns)
                .map(|column| format!("${}", row * columns + column))
                .collect();
            format!("({})", row.join(", "))
        })
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::run::{RunKind, Trigger};
    use crate::store::{Backend, Store};

    crate::on_both_back_ends!(one_batch_numbers_each_pipeline_in_turn_and_answers_repeats_once);

    fn job(pipeline: &str, delivery: Option<&str>) -> QueueJob {
        QueueJob {
            pipeline: pipeline.to_string(),
            kind: RunKind::Run,
            trigger: Trigger::Api,
            requested: Some("c".to_string()),
            delivery: delivery.map(|id| ("github".to_string(), id.to_string(), "ab".to_string())),
            answer: std::sync::Arc::new(|run: RunId| format!("run {}", run.number)),
        }
    }

    async fn one_batch_numbers_each_pipeline_in_turn_and_answers_repeats_once(backend: Backend) {
        let (_state, store) = Store::temporary_on(backend).await;
        let first = [job("a", Some("known")), job("a", None)];
        let queued = store
            .intake_transaction(async |connection| {
                queue_many(connection, &first.iter().collect::<Vec<_>>()).await
            })
            .await
            .unwrap();
        assert_eq!(queued.iter().filter(|queued| queued.is_ok()).count(), 2);

        let batch = [
            job("b", Some("new")),
            job("a", Some("known")),
            job("a", Some("new")),
            job("b", Some("new")),
            job("a", None),
            job("b", None),
        ];
        let queued = store
            .intake_transaction(async |connection| {
                queue_many(connection, &batch.iter().collect::<Vec<_>>()).await
            })
            .await
            .unwrap();
        let seen: Vec<String> = queued
            .iter()
            .map(|queued| match queued {
                Ok(run) => format!("new {}", run.number),
                Err(first) => format!("{} {}", first.status, first.response),
            })
            .collect();
        // "a" continues from its two runs; the same delivery id of another pipeline is
        // another delivery; a repeat inside the batch gets the first one's answer.
        assert_eq!(
            seen,
            ["new 1", "202 run 1", "new 3", "202 run 1", "new 4", "new 2"]
        );
        let stored: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM deliveries")
            .fetch_one(&store.pool)
            .await
            .unwrap();
        assert_eq!(stored, 3, "known (a), new (a), new (b)");
    }

    #[test]
    fn placeholders_number_every_value_of_every_row() {
        assert_eq!(placeholders(1, 1), "($1)");
        assert_eq!(placeholders(2, 3), "($1, $2, $3), ($4, $5, $6)");
    }
}
