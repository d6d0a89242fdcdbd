//! Deployments: which digest each rollout put on which instance, the history that
//! `status` (drift) and `rollback` read, and the images builds pushed.

use std::collections::BTreeMap;

use serde::Serialize;
use sqlx::Row;

use super::{Store, StoreError, now_millis, word};
use crate::run::{Outcome, RunId, RunKind, RunState};

/// A deployment's identity: the row id and the per-pipeline number users see.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct DeploymentId {
    pub id: i64,
    pub number: i64,
}

/// An image a build run pushed.
#[derive(Debug, Clone, Serialize)]
pub struct BuiltImage {
    pub run: i64,
    pub image: String,
    pub digest: String,
    pub commit: Option<String>,
    /// Every image the run pushed, name → `repository@digest` (empty for a run stored
    /// before runs kept several: its one image is `image` with `digest`).
    pub images: BTreeMap<String, String>,
}

/// A deployment about to start.
#[derive(Debug, Clone)]
pub struct NewDeployment<'a> {
    pub pipeline: &'a str,
    pub run: Option<RunId>,
    /// `deploy`, `rollback` or `run`.
    pub kind: RunKind,
    /// repository@digest of the first image.
    pub image: &'a str,
    pub digest: &'a str,
    pub commit: Option<&'a str>,
    /// Every image rolled out, name → `repository@digest`.
    pub images: &'a BTreeMap<String, String>,
}

/// What a deployment did to one instance.
#[derive(Debug, Clone, Serialize)]
pub struct InstanceRecord {
    pub service: String,
    pub instance: String,
    pub host: String,
    pub action: String,
    /// The digest the instance runs afterwards, when known.
    pub digest: Option<String>,
    pub previous_digest: Option<String>,
    pub message: Option<String>,
}

/// One stored deployment with its instances.
#[derive(Debug, Clone, Serialize)]
pub struct DeploymentRecord {
    pub id: i64,
    pub pipeline: String,
    pub number: i64,
    pub run: Option<i64>,
    pub kind: RunKind,
    pub image: String,
    pub digest: String,
    pub commit: Option<String>,
    /// Every image rolled out, name → `repository@digest` (empty for a deployment
    /// stored before deployments kept several: its one image is `image`).
    pub images: BTreeMap<String, String>,
    /// `running`, `succeeded` or `failed`.
    pub state: RunState,
    pub message: Option<String>,
    pub started_at: i64,
    pub finished_at: Option<i64>,
    pub instances: Vec<InstanceRecord>,
}

impl Store {
    /// The newest image a build of the pipeline pushed (a digest is stored only once the push is confirmed).
    pub async fn latest_built(&self, pipeline: &str) -> Result<Option<BuiltImage>, StoreError> {
        let row = sqlx::query(
            "SELECT id, image, digest, commit_sha, images FROM runs
             WHERE pipeline = $1 AND digest IS NOT NULL AND kind IN ('build', 'run')
             ORDER BY id DESC LIMIT 1",
        )
        .bind(pipeline)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(|row| BuiltImage {
            run: row.get("id"),
            image: row.get("image"),
            digest: row.get("digest"),
            commit: row.get("commit_sha"),
            images: images_of(&row),
        }))
    }

    /// The tags (full references) each digest a build of the pipeline pushed was given.
    pub async fn tags_by_digest(
        &self,
        pipeline: &str,
    ) -> Result<BTreeMap<String, Vec<String>>, StoreError> {
        let mut all = self.tags_by_pipeline(Some(pipeline)).await?;
        Ok(all.remove(pipeline).unwrap_or_default())
    }

    /// `tags_by_digest` of one pipeline, or of every pipeline (`None`) in one query.
    pub async fn tags_by_pipeline(
        &self,
        pipeline: Option<&str>,
    ) -> Result<BTreeMap<String, BTreeMap<String, Vec<String>>>, StoreError> {
        let rows = sqlx::query(
            "SELECT pipeline, digest, tags, images FROM runs
             WHERE ($1 IS NULL OR pipeline = $1) AND digest IS NOT NULL
                   AND kind IN ('build', 'run')
             ORDER BY id",
        )
        .bind(pipeline)
        .fetch_all(&self.pool)
        .await?;
        let mut tags: BTreeMap<String, BTreeMap<String, Vec<String>>> = BTreeMap::new();
        for row in rows {
            let pushed: Vec<String> = row
                .get::<Option<String>, _>("tags")
                .and_then(|text| serde_json::from_str(&text).ok())
                .unwrap_or_default();
            // Of several images, a tag belongs to the image of its repository.
            let images = images_of(&row);
            let digest_of = |tag: &str| {
                images.values().find_map(|reference| {
                    let (repository, digest) = reference.rsplit_once('@')?;
                    let named = tag.strip_prefix(repository)?.starts_with(':');
                    named.then(|| digest.to_string())
                })
            };
            let of_pipeline = tags.entry(row.get("pipeline")).or_default();
            for tag in pushed {
                let digest = digest_of(&tag).unwrap_or_else(|| row.get("digest"));
                let known = of_pipeline.entry(digest).or_default();
                if !known.contains(&tag) {
                    known.push(tag);
                }
            }
        }
        Ok(tags)
    }

    /// The commit a build of the pipeline made `digest` from, if gantry built it.
    pub async fn commit_of_digest(
        &self,
        pipeline: &str,
        digest: &str,
    ) -> Result<Option<String>, StoreError> {
        let commit: Option<Option<String>> = sqlx::query_scalar(
            "SELECT commit_sha FROM runs
             WHERE pipeline = $1 AND (digest = $2 OR images LIKE '%@' || $2 || '\"%')
                   AND commit_sha IS NOT NULL AND kind IN ('build', 'run')
             ORDER BY id DESC LIMIT 1",
        )
        .bind(pipeline)
        .bind(digest)
        .fetch_optional(&self.pool)
        .await?;
        Ok(commit.flatten())
    }

    /// Records a deployment as running and gives it the pipeline's next deployment number.
    pub async fn start_deployment(
        &self,
        deployment: &NewDeployment<'_>,
    ) -> Result<DeploymentId, StoreError> {
        let row = sqlx::query(
            "INSERT INTO deployments (pipeline, number, run_id, kind, image, digest, commit_sha,
                                      state, started_at, images)
             VALUES ($1, (SELECT COALESCE(MAX(number), 0) + 1 FROM deployments WHERE pipeline = $1),
                     $2, $3, $4, $5, $6, 'running', $7, $8)
             RETURNING id, number",
        )
        .bind(deployment.pipeline)
        .bind(deployment.run.map(|run| run.id))
        .bind(deployment.kind.as_str())
        .bind(deployment.image)
        .bind(deployment.digest)
        .bind(deployment.commit)
        .bind(now_millis())
        .bind(serde_json::to_string(deployment.images).unwrap_or_default())
        .fetch_one(&self.pool)
        .await?;
        Ok(DeploymentId {
            id: row.get("id"),
            number: row.get("number"),
        })
    }

    /// Records (or replaces) what a deployment did to one instance.
    pub async fn record_instance(
        &self,
        deployment: DeploymentId,
        record: &InstanceRecord,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO deployment_instances (deployment_id, service, instance, host, action,
                                               digest, previous_digest, message, finished_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
             ON CONFLICT (deployment_id, instance) DO UPDATE SET
                 action = excluded.action, digest = excluded.digest,
                 previous_digest = excluded.previous_digest, message = excluded.message,
                 finished_at = excluded.finished_at",
        )
        .bind(deployment.id)
        .bind(&record.service)
        .bind(&record.instance)
        .bind(&record.host)
        .bind(&record.action)
        .bind(&record.digest)
        .bind(&record.previous_digest)
        .bind(&record.message)
        .bind(now_millis())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn finish_deployment(
        &self,
        deployment: DeploymentId,
        outcome: Outcome,
        message: Option<&str>,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE deployments SET state = $1, message = $2, finished_at = $3 WHERE id = $4",
        )
        .bind(outcome.as_str())
        .bind(message)
        .bind(now_millis())
        .bind(deployment.id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The newest deployments of a pipeline, newest first, with their instances.
    pub async fn deployments(
        &self,
        pipeline: &str,
        limit: i64,
    ) -> Result<Vec<DeploymentRecord>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, pipeline, number, run_id, kind, image, digest, commit_sha, state, message,
                    started_at, finished_at, images
             FROM deployments WHERE pipeline = $1 ORDER BY id DESC LIMIT $2",
        )
        .bind(pipeline)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        let mut deployments: Vec<DeploymentRecord> = Vec::with_capacity(rows.len());
        for row in rows {
            let id: i64 = row.get("id");
            let instances = sqlx::query(
                "SELECT service, instance, host, action, digest, previous_digest, message
                 FROM deployment_instances WHERE deployment_id = $1 ORDER BY instance",
            )
            .bind(id)
            .fetch_all(&self.pool)
            .await?
            .into_iter()
            .map(|instance| InstanceRecord {
                service: instance.get("service"),
                instance: instance.get("instance"),
                host: instance.get("host"),
                action: instance.get("action"),
                digest: instance.get("digest"),
                previous_digest: instance.get("previous_digest"),
                message: instance.get("message"),
            })
            .collect();
            deployments.push(DeploymentRecord {
                id,
                pipeline: row.get("pipeline"),
                number: row.get("number"),
                run: row.get("run_id"),
                kind: word(&row, "kind")?,
                image: row.get("image"),
                digest: row.get("digest"),
                commit: row.get("commit_sha"),
                images: images_of(&row),
                state: word(&row, "state")?,
                message: row.get("message"),
                started_at: row.get("started_at"),
                finished_at: row.get("finished_at"),
                instances,
            });
        }
        Ok(deployments)
    }

    /// The commit the pipeline's newest successful deployment rolled out, if gantry
    /// built it.
    pub async fn deployed_commit(&self, pipeline: &str) -> Result<Option<String>, StoreError> {
        let commit: Option<Option<String>> = sqlx::query_scalar(
            "SELECT commit_sha FROM deployments WHERE pipeline = $1 AND state = $2
             ORDER BY id DESC LIMIT 1",
        )
        .bind(pipeline)
        .bind(RunState::Succeeded.as_str())
        .fetch_optional(&self.pool)
        .await?;
        Ok(commit.flatten())
    }

    /// The digest each instance of a pipeline should run, by the newest record that knows it.
    pub async fn recorded_digests(
        &self,
        pipeline: &str,
    ) -> Result<BTreeMap<String, String>, StoreError> {
        let mut all = self.recorded_digests_by_pipeline(Some(pipeline)).await?;
        Ok(all.remove(pipeline).unwrap_or_default())
    }

    /// `recorded_digests` of one pipeline, or of every pipeline (`None`) in one query.
    pub async fn recorded_digests_by_pipeline(
        &self,
        pipeline: Option<&str>,
    ) -> Result<BTreeMap<String, BTreeMap<String, String>>, StoreError> {
        let rows = sqlx::query(
            "SELECT d.pipeline, i.instance, i.digest FROM deployment_instances i
             JOIN deployments d ON d.id = i.deployment_id
             WHERE ($1 IS NULL OR d.pipeline = $1) AND i.digest IS NOT NULL
             ORDER BY d.id DESC",
        )
        .bind(pipeline)
        .fetch_all(&self.pool)
        .await?;
        let mut digests: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
        for row in rows {
            // Newest first: the first row seen for an instance wins.
            digests
                .entry(row.get::<String, _>("pipeline"))
                .or_default()
                .entry(row.get::<String, _>("instance"))
                .or_insert_with(|| row.get::<String, _>("digest"));
        }
        Ok(digests)
    }

    /// Deployments per pipeline, kind and outcome, with the newest success's end time.
    #[allow(clippy::type_complexity)]
    pub async fn deployment_counts(
        &self,
    ) -> Result<Vec<(String, String, String, i64, Option<i64>)>, StoreError> {
        let rows = sqlx::query(
            "SELECT pipeline, kind, state, COUNT(*) AS count,
                    MAX(CASE WHEN state = 'succeeded' THEN finished_at END) AS last_success
             FROM deployments GROUP BY pipeline, kind, state",
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|row| {
                (
                    row.get("pipeline"),
                    row.get("kind"),
                    row.get("state"),
                    row.get("count"),
                    row.get("last_success"),
                )
            })
            .collect())
    }
}

/// A row's `images` column: name → `repository@digest`, empty when NULL (older rows).
pub(super) fn images_of(row: &sqlx::any::AnyRow) -> BTreeMap<String, String> {
    row.get::<Option<String>, _>("images")
        .and_then(|text| serde_json::from_str(&text).ok())
        .unwrap_or_default()
}
