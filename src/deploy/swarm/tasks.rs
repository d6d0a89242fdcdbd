//! A Swarm service's tasks as gantry shows them: node, state and digest, read through
//! the manager; and the log lines that tell each task's changes during an update.

use std::collections::{BTreeMap, HashMap};

use bollard::Docker;
use bollard::models::{Task, TaskState};
use bollard::query_parameters::{ListNodesOptions, ListTasksOptionsBuilder};
use serde::{Deserialize, Serialize};

use crate::host::describe_error;

/// One task of a Swarm service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SwarmTask {
    /// The task's id, short.
    pub id: String,
    /// The replica it fills (`web.2` is slot 2).
    pub slot: Option<i64>,
    /// The node's host name (its id when the manager does not know it).
    pub node: Option<String>,
    /// `new`, `pending`, `preparing`, `starting`, `running`, `complete`, `failed`,
    /// `shutdown`, `rejected`, `orphaned`, `remove`.
    pub state: String,
    /// What Swarm wants of it: `running` for a task that is or will be serving.
    pub desired_state: String,
    pub digest: Option<String>,
    /// Why it failed or waits, as Swarm says it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Ports it publishes in `host` mode, where they answer: `ADDRESS:PORT->TARGET/PROTOCOL`
    /// with the node's address.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub published: Vec<String>,
}

impl SwarmTask {
    /// Runs and is meant to.
    pub fn is_serving(&self) -> bool {
        self.state == "running" && self.desired_state == "running"
    }

    /// How the run log names it: `web.2 on gantry-s2`.
    pub fn describe(&self, service: &str) -> String {
        let slot = self
            .slot
            .map_or_else(|| self.id.clone(), |slot| format!("{service}.{slot}"));
        match &self.node {
            Some(node) => format!("{slot} on {node}"),
            None => slot,
        }
    }
}

/// A node as tasks name it.
#[derive(Debug, Clone, Default)]
pub struct NodeName {
    pub hostname: String,
    /// Its address in the Swarm, where its `host`-mode ports answer.
    pub address: Option<String>,
}

/// The nodes by node id.
pub async fn node_names(docker: &Docker) -> HashMap<String, NodeName> {
    docker
        .list_nodes(None::<ListNodesOptions>)
        .await
        .unwrap_or_default()
        .into_iter()
        .filter_map(|node| {
            let hostname = node.description?.hostname?;
            let address = node.status.and_then(|status| status.addr);
            Some((node.id?, NodeName { hostname, address }))
        })
        .collect()
}

/// Every task Swarm keeps for the service (its history too), newest first within a slot.
pub async fn list(
    docker: &Docker,
    service: &str,
    nodes: &HashMap<String, NodeName>,
) -> Result<Vec<SwarmTask>, String> {
    let filters = HashMap::from([("service", vec![service])]);
    let options = ListTasksOptionsBuilder::default().filters(&filters).build();
    let tasks = docker.list_tasks(Some(options)).await.map_err(|error| {
        format!(
            "listing the tasks of Swarm service {service}: {}",
            describe_error(&error)
        )
    })?;
    let mut tasks: Vec<(String, SwarmTask)> = tasks
        .into_iter()
        // The filter matches name prefixes too (`web` and `web-2`): keep this service's.
        .filter(|task| task_service_name(task).is_none_or(|name| name == service))
        .map(|task| (timestamp(&task), view(task, nodes)))
        .collect();
    tasks.sort_by(|(left_time, left), (right_time, right)| {
        left.slot
            .cmp(&right.slot)
            .then_with(|| right_time.cmp(left_time))
    });
    Ok(tasks.into_iter().map(|(_, task)| task).collect())
}

/// The tasks that are meant to run (what `docker service ps` shows first).
pub fn current(tasks: &[SwarmTask]) -> Vec<SwarmTask> {
    tasks
        .iter()
        .filter(|task| task.desired_state == "running" || task.desired_state == "ready")
        .cloned()
        .collect()
}

fn task_service_name(task: &Task) -> Option<&str> {
    task.labels
        .as_ref()
        .and_then(|labels| labels.get("com.docker.swarm.service.name"))
        .map(String::as_str)
}

fn timestamp(task: &Task) -> String {
    task.status
        .as_ref()
        .and_then(|status| status.timestamp.as_ref())
        .map(|time| format!("{time:?}"))
        .unwrap_or_default()
}

fn view(task: Task, nodes: &HashMap<String, NodeName>) -> SwarmTask {
    let status = task.status.unwrap_or_default();
    let address = task
        .node_id
        .as_ref()
        .and_then(|id| nodes.get(id)?.address.clone())
        .unwrap_or_else(|| "0.0.0.0".to_string());
    let published = status
        .port_status
        .clone()
        .and_then(|ports| ports.ports)
        .unwrap_or_default()
        .into_iter()
        .filter_map(|port| {
            Some(format!(
                "{address}:{}->{}/{}",
                port.published_port?,
                port.target_port?,
                port.protocol
                    .map_or_else(|| "tcp".to_string(), |protocol| protocol.to_string())
            ))
        })
        .collect();
    let digest = task
        .spec
        .and_then(|spec| spec.container_spec)
        .and_then(|container| container.image)
        .and_then(|image| image.split_once('@').map(|(_, digest)| digest.to_string()));
    SwarmTask {
        id: task
            .id
            .as_deref()
            .map(super::super::short_id)
            .unwrap_or_default(),
        slot: task.slot,
        node: task
            .node_id
            .map(|id| nodes.get(&id).map_or(id, |node| node.hostname.clone())),
        state: status
            .state
            .map_or_else(|| "unknown".to_string(), state_text),
        desired_state: task
            .desired_state
            .map_or_else(|| "unknown".to_string(), state_text),
        digest,
        error: status.err.filter(|error| !error.is_empty()),
        published,
    }
}

fn state_text(state: TaskState) -> String {
    state.to_string()
}

/// Remembers what each task was last seen as, so each change is logged once.
#[derive(Default)]
pub struct TaskLog {
    seen: BTreeMap<String, (String, String)>,
}

impl TaskLog {
    /// Takes the tasks as they are now without logging them: the state before an update.
    pub fn baseline(tasks: &[SwarmTask]) -> TaskLog {
        TaskLog {
            seen: tasks
                .iter()
                .map(|task| {
                    (
                        task.id.clone(),
                        (task.state.clone(), task.desired_state.clone()),
                    )
                })
                .collect(),
        }
    }

    /// Lines for the tasks that are new or changed since the last call.
    pub fn changes(&mut self, service: &str, tasks: &[SwarmTask]) -> Vec<String> {
        let mut lines = Vec::new();
        for task in tasks {
            let now = (task.state.clone(), task.desired_state.clone());
            if self.seen.get(&task.id) == Some(&now) {
                continue;
            }
            let mut line = format!("task {}: {}", task.describe(service), task.state);
            if task.desired_state != "running" && task.state != task.desired_state {
                line.push_str(&format!(" (to be {})", task.desired_state));
            }
            if let Some(digest) = &task.digest {
                line.push_str(&format!(", {}", super::super::short_digest(digest)));
            }
            if let Some(error) = &task.error {
                line.push_str(&format!(": {error}"));
            }
            lines.push(line);
            self.seen.insert(task.id.clone(), now);
        }
        lines
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task(id: &str, slot: i64, state: &str, desired: &str, digest: &str) -> SwarmTask {
        SwarmTask {
            id: id.to_string(),
            slot: Some(slot),
            node: Some(format!("node-{slot}")),
            state: state.to_string(),
            desired_state: desired.to_string(),
            digest: Some(digest.to_string()),
            error: None,
            published: Vec::new(),
        }
    }

    #[test]
    fn each_change_of_a_task_is_logged_once_and_the_state_before_not_at_all() {
        let before = [task("a", 1, "running", "running", "sha256:old")];
        let mut log = TaskLog::baseline(&before);
        assert!(log.changes("web", &before).is_empty());
        let during = [
            task("a", 1, "running", "shutdown", "sha256:old"),
            task("b", 1, "starting", "running", "sha256:new"),
        ];
        assert_eq!(
            log.changes("web", &during),
            [
                "task web.1 on node-1: running (to be shutdown), sha256:old",
                "task web.1 on node-1: starting, sha256:new",
            ]
        );
        assert!(log.changes("web", &during).is_empty());
        let mut failed = task("c", 2, "failed", "shutdown", "sha256:new");
        failed.error = Some("task: non-zero exit (137)".to_string());
        assert_eq!(
            log.changes("web", &[failed]),
            [
                "task web.2 on node-2: failed (to be shutdown), sha256:new: task: non-zero exit (137)"
            ]
        );
    }

    #[test]
    fn current_tasks_are_those_meant_to_run() {
        let tasks = [
            task("a", 1, "shutdown", "shutdown", "sha256:old"),
            task("b", 1, "running", "running", "sha256:new"),
            task("c", 2, "preparing", "running", "sha256:new"),
        ];
        let current: Vec<String> = current(&tasks).into_iter().map(|task| task.id).collect();
        assert_eq!(current, ["b", "c"]);
        assert!(tasks[1].is_serving() && !tasks[2].is_serving());
    }
}
