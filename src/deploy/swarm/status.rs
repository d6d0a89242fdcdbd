//! `gantry status` of an instance that is a Swarm service: the service's labels (image,
//! digest, commit), its tasks (node, state, digest), and what drifts from the recorded
//! deployment.

use bollard::Docker;

use super::super::status::{InstanceStatus, Recorded};
use super::super::{Target, container, short_digest};
use super::tasks;
use crate::config::{Pipeline, SwarmSettings};

/// Fills `status` for a Swarm service from its manager.
pub async fn read(
    docker: &Docker,
    pipeline: &Pipeline,
    target: &Target<'_>,
    settings: &SwarmSettings,
    known: Option<&Recorded>,
    status: &mut InstanceStatus,
) {
    let name = &target.instance.name;
    let labels = match super::service_labels(docker, name).await {
        Ok(Some(labels)) => labels,
        Ok(None) => {
            if status.recorded_digest.is_some() {
                status.drift.push("Swarm service missing".to_string());
            }
            return;
        }
        Err(message) => {
            status.state = "unknown".to_string();
            status.error = Some(message);
            return;
        }
    };
    if !super::owned_by(&labels, &pipeline.name, name) {
        status.state = "foreign".to_string();
        status.error = Some(format!(
            "Swarm service {name} does not carry gantry's labels for this instance"
        ));
        status
            .drift
            .push("the Swarm service under its name is not this instance's".to_string());
        return;
    }
    status.image = labels.get(container::LABEL_IMAGE).cloned();
    status.digest = labels.get(container::LABEL_DIGEST).cloned();
    status.commit = labels
        .get(container::LABEL_COMMIT)
        .filter(|commit| !commit.is_empty())
        .cloned();
    status.tags = status
        .digest
        .as_ref()
        .and_then(|digest| known?.tags.get(digest).cloned())
        .unwrap_or_default();
    let nodes = tasks::node_names(docker).await;
    let all = match tasks::list(docker, name, &nodes).await {
        Ok(all) => all,
        Err(message) => {
            status.state = "unknown".to_string();
            status.error = Some(message);
            return;
        }
    };
    let current = tasks::current(&all);
    let serving = current.iter().filter(|task| task.is_serving()).count() as u64;
    status.state = if serving == settings.replicas {
        "running".to_string()
    } else {
        format!("{serving}/{} running", settings.replicas)
    };
    if serving != settings.replicas {
        status.drift.push(format!(
            "{serving} of {} task(s) running",
            settings.replicas
        ));
    }
    if let Some(digest) = &status.digest
        && current
            .iter()
            .any(|task| task.digest.as_deref() != Some(digest.as_str()))
    {
        status
            .drift
            .push("tasks run another image than the service's".to_string());
    }
    if let Some(recorded) = &status.recorded_digest
        && status.digest.as_deref() != Some(recorded.as_str())
    {
        status.drift.push(format!(
            "runs {} instead of the deployed {}",
            status.digest.as_deref().map_or_else(
                || "an image gantry did not deploy".to_string(),
                short_digest
            ),
            short_digest(recorded)
        ));
    }
    status.tasks = current;
}
