//! Prometheus metrics of the daemon: what it observes as it goes (runs, stages,
//! webhook deliveries, failed health checks) and what the store knows when scraped
//! (queue depth, deploys and rollbacks, the last successful deploy).
//!
//! The counters live here so that the scheduler and the webhook handler can count;
//! `server` encodes them for `GET /metrics`.

use std::sync::Arc;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::store::{Store, StoreError};

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RunLabels {
    pub pipeline: String,
    pub outcome: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StageLabels {
    pub pipeline: String,
    pub stage: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DeliveryLabels {
    pub forge: String,
    /// `queued`, `ignored`, `duplicate`, `unauthorized`, `malformed`, `refused`, `error`.
    pub result: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PipelineLabels {
    pub pipeline: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DeploymentLabels {
    pub pipeline: String,
    /// `deploy`, `rollback` or `run`.
    pub kind: String,
    pub outcome: String,
}

fn stage_histogram() -> Histogram {
    // 50 ms to about 14 minutes.
    Histogram::new(exponential_buckets(0.05, 2.0, 15))
}

/// Every metric, shared by the tasks that count.
#[derive(Clone)]
pub struct Metrics {
    registry: Arc<Registry>,
    pub runs: Family<RunLabels, Counter>,
    pub stage_seconds: Family<StageLabels, Histogram, fn() -> Histogram>,
    pub deliveries: Family<DeliveryLabels, Counter>,
    pub health_check_failures: Family<PipelineLabels, Counter>,
    queue_depth: Family<PipelineLabels, Gauge>,
    deployments: Family<DeploymentLabels, Gauge>,
    last_deploy: Family<PipelineLabels, Gauge>,
    resident_memory: Gauge,
    cpu_seconds: Gauge<f64, std::sync::atomic::AtomicU64>,
    open_fds: Gauge,
    start_time: Gauge,
}

impl Default for Metrics {
    fn default() -> Metrics {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("gantry");
        let metrics = Metrics {
            registry: Arc::new(Registry::default()),
            runs: Family::default(),
            stage_seconds: Family::new_with_constructor(stage_histogram),
            deliveries: Family::default(),
            health_check_failures: Family::default(),
            queue_depth: Family::default(),
            deployments: Family::default(),
            last_deploy: Family::default(),
            resident_memory: Gauge::default(),
            cpu_seconds: Gauge::default(),
            open_fds: Gauge::default(),
            start_time: Gauge::default(),
        };
        registry.register(
            "runs",
            "Runs the daemon finished, by pipeline and outcome",
            metrics.runs.clone(),
        );
        registry.register(
            "stage_duration_seconds",
            "How long run stages took",
            metrics.stage_seconds.clone(),
        );
        registry.register(
            "webhook_deliveries",
            "Webhook deliveries by forge and what became of them",
            metrics.deliveries.clone(),
        );
        registry.register(
            "health_check_failures",
            "Deploys stopped by a failed health check",
            metrics.health_check_failures.clone(),
        );
        registry.register(
            "queue_depth",
            "Runs waiting in the queue",
            metrics.queue_depth.clone(),
        );
        registry.register(
            "deployments",
            "Deployments in the state store by kind (deploy, rollback, run) and outcome",
            metrics.deployments.clone(),
        );
        registry.register(
            "last_successful_deploy_timestamp_seconds",
            "When the pipeline last deployed successfully",
            metrics.last_deploy.clone(),
        );
        let process = registry.sub_registry_with_prefix("process");
        process.register(
            "resident_memory_bytes",
            "Resident memory of the daemon",
            metrics.resident_memory.clone(),
        );
        process.register(
            "cpu_seconds",
            "CPU time the daemon used (user and system)",
            metrics.cpu_seconds.clone(),
        );
        process.register(
            "open_fds",
            "Open file descriptors",
            metrics.open_fds.clone(),
        );
        process.register(
            "start_time_seconds",
            "When the daemon started, in seconds since the epoch",
            metrics.start_time.clone(),
        );
        metrics.start_time.set(crate::store::now_millis() / 1000);
        Metrics {
            registry: Arc::new(registry),
            ..metrics
        }
    }

    /// Reads what the store knows and the process's own figures, then encodes everything.
    pub async fn render(&self, store: &Store) -> Result<String, StoreError> {
        for (pipeline, depth) in store.queue_depths().await? {
            self.queue_depth
                .get_or_create(&PipelineLabels { pipeline })
                .set(depth);
        }
        for (pipeline, kind, outcome, count, last_success) in store.deployment_counts().await? {
            self.deployments
                .get_or_create(&DeploymentLabels {
                    pipeline: pipeline.clone(),
                    kind,
                    outcome,
                })
                .set(count);
            if let Some(at) = last_success {
                let gauge = self.last_deploy.get_or_create(&PipelineLabels { pipeline });
                gauge.set(gauge.get().max(at / 1000));
            }
        }
        self.read_process();
        let mut text = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut text, &self.registry);
        Ok(text)
    }

    /// Memory, CPU and file descriptors from /proc (Linux); left alone elsewhere.
    fn read_process(&self) {
        let page_size = 4096;
        if let Ok(statm) = std::fs::read_to_string("/proc/self/statm")
            && let Some(resident) = statm
                .split_whitespace()
                .nth(1)
                .and_then(|pages| pages.parse::<i64>().ok())
        {
            self.resident_memory.set(resident * page_size);
        }
        if let Ok(stat) = std::fs::read_to_string("/proc/self/stat")
            && let Some(after_name) = stat.rsplit_once(')').map(|(_, rest)| rest)
        {
            // Fields 14 and 15 (utime, stime) are the 12th and 13th after the name.
            let fields: Vec<&str> = after_name.split_whitespace().collect();
            let ticks: f64 = [11, 12]
                .iter()
                .filter_map(|index| fields.get(*index)?.parse::<f64>().ok())
                .sum();
            // The kernel's clock ticks per second are 100 on Linux.
            self.cpu_seconds.set(ticks / 100.0);
        }
        if let Ok(entries) = std::fs::read_dir("/proc/self/fd") {
            self.open_fds.set(entries.count() as i64);
        }
    }
}
