//! The order of swaps, reverts and skips, against containers kept in memory.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::container::{ContainerSpec, DockerCallError};
use super::health::{HealthFailure, ProbeTarget};
use super::swap::{Containers, Existing, Plan, roll_out};
use super::tests::{pipeline, pipeline_with_global, spec_of};
use super::{Action, DeployImage, Release, targets};
use crate::config::{Health, Pipeline};

/// A container in memory.
#[derive(Debug, Clone)]
struct Held {
    id: String,
    running: bool,
    digest: String,
    spec_hash: String,
}

#[derive(Debug, Default)]
struct State {
    /// By (host, name).
    containers: BTreeMap<(String, String), Held>,
    /// Every change made, in order: `create web-1`, `rename web-1 web-1.previous`, ...
    changes: Vec<String>,
}

/// Containers in memory, shared by clones as Docker's are.
#[derive(Clone, Default)]
struct Memory {
    state: Arc<Mutex<State>>,
    /// The instance whose new container fails its health gate, if any.
    failing: Option<&'static str>,
}

impl Memory {
    fn failing(instance: &'static str) -> Memory {
        Memory {
            failing: Some(instance),
            ..Memory::default()
        }
    }

    fn with(&self, change: impl FnOnce(&mut State)) {
        change(&mut self.state.lock().unwrap());
    }

    fn run(&self, name: &str, digest: &str, spec_hash: &str) {
        self.with(|state| {
            state.containers.insert(
                ("local".to_string(), name.to_string()),
                Held {
                    id: format!("id-of-{name}-{digest}"),
                    running: true,
                    digest: digest.to_string(),
                    spec_hash: spec_hash.to_string(),
                },
            );
        });
    }

    /// Every container as `name=digest`, with `(stopped)` for one that is not running.
    fn shown(&self) -> Vec<String> {
        let state = self.state.lock().unwrap();
        state
            .containers
            .iter()
            .map(|((_, name), held)| {
                let stopped = if held.running { "" } else { " (stopped)" };
                format!("{name}={}{stopped}", held.digest)
            })
            .collect()
    }

    fn changes(&self) -> Vec<String> {
        self.state.lock().unwrap().changes.clone()
    }

    fn change(&self, what: String) -> Result<(), DockerCallError> {
        self.with(|state| state.changes.push(what));
        Ok(())
    }
}

fn missing(name: &str) -> DockerCallError {
    DockerCallError {
        action: format!("finding {name}"),
        reason: "no such container".to_string(),
    }
}

impl Containers for Memory {
    async fn inspect(&self, host: &str, name: &str) -> Result<Option<Existing>, DockerCallError> {
        let state = self.state.lock().unwrap();
        Ok(state
            .containers
            .get(&(host.to_string(), name.to_string()))
            .map(|held| Existing {
                id: held.id.clone(),
                running: held.running,
                digest: Some(held.digest.clone()),
                spec_hash: Some(held.spec_hash.clone()),
                holds_fixed_host_port: false,
            }))
    }

    async fn ensure_network(&self, _spec: &ContainerSpec) -> Result<(), DockerCallError> {
        Ok(())
    }

    async fn create(&self, spec: &ContainerSpec) -> Result<String, DockerCallError> {
        self.with(|state| {
            state.containers.insert(
                (spec.host.clone(), spec.instance.clone()),
                Held {
                    id: format!("id-of-{}-{}", spec.instance, spec.digest),
                    running: false,
                    digest: spec.digest.clone(),
                    spec_hash: spec.spec_hash.clone(),
                },
            );
        });
        self.change(format!("create {}", spec.instance))?;
        Ok(format!("id-of-{}-{}", spec.instance, spec.digest))
    }

    async fn start(&self, host: &str, name: &str) -> Result<(), DockerCallError> {
        let mut state = self.state.lock().unwrap();
        let held = state
            .containers
            .get_mut(&(host.to_string(), name.to_string()))
            .ok_or_else(|| missing(name))?;
        held.running = true;
        state.changes.push(format!("start {name}"));
        Ok(())
    }

    async fn stop(
        &self,
        host: &str,
        name: &str,
        _timeout: Option<Duration>,
    ) -> Result<(), DockerCallError> {
        let mut state = self.state.lock().unwrap();
        let held = state
            .containers
            .get_mut(&(host.to_string(), name.to_string()))
            .ok_or_else(|| missing(name))?;
        held.running = false;
        state.changes.push(format!("stop {name}"));
        Ok(())
    }

    async fn rename(&self, host: &str, from: &str, to: &str) -> Result<(), DockerCallError> {
        let mut state = self.state.lock().unwrap();
        let held = state
            .containers
            .remove(&(host.to_string(), from.to_string()))
            .ok_or_else(|| missing(from))?;
        state
            .containers
            .insert((host.to_string(), to.to_string()), held);
        state.changes.push(format!("rename {from} {to}"));
        Ok(())
    }

    async fn remove(&self, host: &str, name: &str) -> Result<(), DockerCallError> {
        let mut state = self.state.lock().unwrap();
        state
            .containers
            .remove(&(host.to_string(), name.to_string()))
            .ok_or_else(|| missing(name))?;
        state.changes.push(format!("remove {name}"));
        Ok(())
    }

    async fn wait_healthy(
        &self,
        _host: &str,
        name: &str,
        _health: &Health,
        _via: Option<&ProbeTarget>,
    ) -> Result<Duration, HealthFailure> {
        if self.failing == Some(name) {
            return Err(HealthFailure {
                check: format!("the check of {name}"),
                result: "HTTP 500".to_string(),
                exited: false,
            });
        }
        Ok(Duration::from_millis(1))
    }

    async fn tail_logs(&self, _host: &str, name: &str, _lines: usize) -> Vec<String> {
        vec![format!("{name} says why")]
    }

    async fn open_probe(
        &self,
        spec: &ContainerSpec,
        container_id: &str,
        _health: &Health,
    ) -> Result<Option<ProbeTarget>, DockerCallError> {
        if spec.proxy.is_none() {
            return Ok(None);
        }
        self.change(format!("probe {container_id}"))?;
        Ok(Some(ProbeTarget {
            address: "127.0.0.1".to_string(),
            port: 80,
            secret: container_id.to_string(),
            upstream: format!("{container_id}:8080"),
            host_name: None,
            tls: false,
        }))
    }

    async fn close_probe(&self, _host: &str, probe: &ProbeTarget) -> Result<(), DockerCallError> {
        self.change(format!("close probe {}", probe.secret))
    }

    async fn switch(
        &self,
        spec: &ContainerSpec,
        container_id: &str,
        _probe: Option<&ProbeTarget>,
    ) -> Result<(), DockerCallError> {
        self.change(format!("route {} to {container_id}", spec.instance))
    }
}

/// Rolls `digest` out; the action of each instance, in order, and the failure's message.
/// `stop` is asked before each batch, as a lost lease would be.
async fn roll<C: Containers>(
    containers: &C,
    pipeline: &Pipeline,
    digest: &str,
    force: bool,
    stop: Option<&(dyn Fn() -> Option<String> + Sync)>,
) -> (Vec<(String, Action)>, Option<String>) {
    let release = release_of(pipeline, digest);
    let targets = targets(pipeline, None);
    let plan = Plan {
        pipeline,
        release: &release,
        targets: &targets,
        force,
        stop,
    };
    let report = roll_out(containers, &plan, &|_: &str| {}).await;
    let actions = report
        .instances
        .iter()
        .map(|instance| (instance.instance.clone(), instance.action))
        .collect();
    (actions, report.failure.map(|failure| failure.message))
}

/// The spec hash an instance of `pipeline` gets, to set up a container already in place.
fn spec_hash(pipeline: &Pipeline, instance: &str) -> String {
    spec_of(pipeline, instance, "sha256:any").spec_hash
}

fn actions(expected: &[(&str, Action)]) -> Vec<(String, Action)> {
    expected
        .iter()
        .map(|(name, action)| (name.to_string(), *action))
        .collect()
}

const FOUR_WEB: &str =
    "  batch: 2\n  services:\n    web:\n      instances: { w1: {}, w2: {}, w3: {}, w4: {} }\n";

#[tokio::test]
async fn a_failure_in_the_second_batch_returns_the_first_to_its_old_containers() {
    let pipeline = pipeline(
        "  batch: 2\n  services:\n    web:\n      instances: { w1: {}, w2: {}, w3: {}, w4: {}, w5: {} }\n",
    );
    let memory = Memory::failing("w3");
    for name in ["w1", "w2", "w3", "w4", "w5"] {
        memory.run(name, "sha256:old", "old-spec");
    }
    let (actions_taken, failure) = roll(&memory, &pipeline, "sha256:new", false, None).await;
    // Batches [w1, w2], [w3, w4], [w5]: w3 fails; w4, swapped beside it, goes back
    // with the first batch; w5 is never reached.
    assert_eq!(
        actions_taken,
        actions(&[
            ("w1", Action::Reverted),
            ("w2", Action::Reverted),
            ("w3", Action::Failed),
            ("w4", Action::Reverted),
            ("w5", Action::NotReached),
        ])
    );
    assert!(failure.unwrap().contains("w3 on local"));
    // Every instance runs its old container again, under its own name, and nothing is
    // left aside.
    assert_eq!(
        memory.shown(),
        [
            "w1=sha256:old",
            "w2=sha256:old",
            "w3=sha256:old",
            "w4=sha256:old",
            "w5=sha256:old"
        ]
    );
    assert!(
        memory.changes().iter().all(|change| !change.contains("w5")),
        "{:?}",
        memory.changes()
    );
}

#[tokio::test]
async fn halt_keeps_what_was_swapped_and_stops_at_the_failure() {
    let pipeline = pipeline(&FOUR_WEB.replace("batch: 2", "batch: 1\n  on_failure: halt"));
    let memory = Memory::failing("w2");
    for name in ["w1", "w2", "w3", "w4"] {
        memory.run(name, "sha256:old", "old-spec");
    }
    let (actions_taken, failure) = roll(&memory, &pipeline, "sha256:new", false, None).await;
    assert_eq!(
        actions_taken,
        actions(&[
            ("w1", Action::Updated),
            ("w2", Action::Failed),
            ("w3", Action::NotReached),
            ("w4", Action::NotReached),
        ])
    );
    assert!(failure.is_some());
    // w1 keeps the new image; w2 has its old container back; the old w1 is gone.
    assert_eq!(
        memory.shown(),
        [
            "w1=sha256:new",
            "w2=sha256:old",
            "w3=sha256:old",
            "w4=sha256:old"
        ]
    );
}

#[tokio::test]
async fn an_instance_at_the_digest_and_spec_is_left_alone_unless_forced() {
    let pipeline = pipeline(FOUR_WEB);
    let memory = Memory::default();
    for name in ["w1", "w2", "w3", "w4"] {
        let hash = spec_hash(&pipeline, name);
        let digest = if name == "w4" {
            "sha256:old"
        } else {
            "sha256:new"
        };
        memory.run(name, digest, &hash);
    }
    let (actions_taken, failure) = roll(&memory, &pipeline, "sha256:new", false, None).await;
    assert_eq!(failure, None);
    assert_eq!(
        actions_taken,
        actions(&[
            ("w1", Action::Unchanged),
            ("w2", Action::Unchanged),
            ("w3", Action::Unchanged),
            ("w4", Action::Updated),
        ])
    );
    // Only w4 was changed: its old container set aside, the new one started, the old
    // one stopped and removed once the rollout was done.
    assert_eq!(
        memory.changes(),
        [
            "rename w4 w4.previous",
            "create w4",
            "start w4",
            "stop w4.previous",
            "remove w4.previous"
        ]
    );
    let (actions_taken, _) = roll(&memory, &pipeline, "sha256:new", true, None).await;
    assert!(
        actions_taken
            .iter()
            .all(|(_, action)| *action == Action::Updated),
        "{actions_taken:?}"
    );
}

#[tokio::test]
async fn services_go_in_requires_order_and_come_back_in_reverse() {
    let pipeline = pipeline(
        "  services:\n    web: { requires: [db], instances: { web-1: {} } }\n    db: { instances: { db-1: {} } }\n",
    );
    let memory = Memory::failing("web-1");
    memory.run("db-1", "sha256:old", "old-spec");
    memory.run("web-1", "sha256:old", "old-spec");
    let (actions_taken, _) = roll(&memory, &pipeline, "sha256:new", false, None).await;
    assert_eq!(
        actions_taken,
        actions(&[("db-1", Action::Reverted), ("web-1", Action::Failed)])
    );
    let changes = memory.changes();
    let position = |change: &str| changes.iter().position(|seen| seen == change).unwrap();
    // db is swapped before web starts; web is restored before db goes back.
    assert!(
        position("start db-1") < position("create web-1"),
        "{changes:?}"
    );
    assert!(
        position("rename web-1.previous web-1") < position("rename db-1.previous db-1"),
        "{changes:?}"
    );
    assert_eq!(memory.shown(), ["db-1=sha256:old", "web-1=sha256:old"]);
}

#[tokio::test]
async fn a_stop_between_batches_ends_the_rollout_there_and_returns_what_it_changed() {
    let pipeline = pipeline(&FOUR_WEB.replace("batch: 2", "batch: 1"));
    let memory = Memory::default();
    for name in ["w1", "w2", "w3", "w4"] {
        memory.run(name, "sha256:old", "old-spec");
    }
    // Asked before each batch: the lease is lost after the first.
    let asked = std::sync::atomic::AtomicUsize::new(0);
    let stop = || {
        let count = asked.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        (count >= 1).then(|| "the deploy lease was taken over".to_string())
    };
    let (actions_taken, failure) = roll(&memory, &pipeline, "sha256:new", false, Some(&stop)).await;
    assert_eq!(
        actions_taken,
        actions(&[
            ("w1", Action::Reverted),
            ("w2", Action::NotReached),
            ("w3", Action::NotReached),
            ("w4", Action::NotReached),
        ])
    );
    assert!(failure.unwrap().contains("the deploy lease was taken over"));
    assert!(
        memory
            .changes()
            .iter()
            .all(|change| !change.contains("w2") && !change.contains("w3")),
        "{:?}",
        memory.changes()
    );
}

#[tokio::test]
async fn behind_the_proxy_the_old_container_keeps_the_requests_until_the_new_one_passed() {
    let pipeline = pipeline_with_global(
        "proxy: { image: \"caddy:2\" }\n",
        "  services:\n    web:\n      proxy: { port: 80, drain: 0s }\n      \
         health: { http: { port: 8080 } }\n      instances: { w1: {}, w2: {} }\n",
    );
    let memory = Memory::failing("w2");
    for name in ["w1", "w2"] {
        memory.run(name, "sha256:old", "old-spec");
    }
    let (actions_taken, _) = roll(&memory, &pipeline, "sha256:new", false, None).await;
    assert_eq!(
        actions_taken,
        actions(&[("w1", Action::Reverted), ("w2", Action::Failed)])
    );
    let changes: Vec<String> = memory
        .changes()
        .into_iter()
        .filter(|change| !change.starts_with("stop"))
        .collect();
    assert_eq!(
        changes,
        [
            // w1: kept aside running (no port to free), gated through its probe route,
            // then the proxy switches to it.
            "rename w1 w1.previous",
            "create w1",
            "start w1",
            "probe id-of-w1-sha256:new",
            "route w1 to id-of-w1-sha256:new",
            // w2 fails its check: its probe closes, the proxy never sent it a request.
            "rename w2 w2.previous",
            "create w2",
            "start w2",
            "probe id-of-w2-sha256:new",
            "close probe id-of-w2-sha256:new",
            "remove w2",
            "rename w2.previous w2",
            "start w2",
            // w1 goes back: its old container runs and takes the requests before the
            // new one is removed.
            "start w1.previous",
            "route w1 to id-of-w1-sha256:old",
            "remove w1",
            "rename w1.previous w1",
        ]
    );
    assert_eq!(memory.shown(), ["w1=sha256:old", "w2=sha256:old"]);
}

/// Every image of `pipeline` at `digest`.
pub(super) fn release_of(pipeline: &Pipeline, digest: &str) -> Release {
    let images = pipeline
        .images
        .values()
        .map(|image| {
            let deployed = DeployImage {
                repository: image.repository.clone(),
                digest: digest.to_string(),
                commit: Some("abc".to_string()),
            };
            (image.name.clone(), deployed)
        })
        .collect();
    Release::new(pipeline, images).unwrap()
}
