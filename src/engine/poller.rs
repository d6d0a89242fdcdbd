//! Polling: pipelines with `poll:` have their remote's branch heads listed (no fetch)
//! on their interval; a moved head queues a run. Repositories are asked concurrently
//! (at most `MAX_PARALLEL_POLLS` at once), each listing bounded by `LIST_TIMEOUT`, so
//! a remote that hangs delays only its own pipelines. A remote that fails is asked
//! again later and later, up to `MAX_POLL_BACKOFF`.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::{Semaphore, mpsc, watch};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::intake::{self, Request};
use super::reload::LiveConfig;
use super::scheduler::Event;
use crate::config::{Config, Pipeline, Source};
use crate::run::{RunKind, Trigger};
use crate::source;
use crate::store::Store;

/// The longest wait between polls of a failing remote.
const MAX_POLL_BACKOFF: Duration = Duration::from_secs(600);
/// How long one listing of a remote's heads may take: a healthy remote answers in
/// well under a second; one that does not answer in this long counts as failing.
pub const LIST_TIMEOUT: Duration = Duration::from_secs(10);
/// Remotes listed at once.
const MAX_PARALLEL_POLLS: usize = 8;
/// How long the lister thread waits for more work before it ends (its cache with it).
const LISTER_KEEP_ALIVE: Duration = Duration::from_secs(2);
/// How often the poller looks for repositories that are due.
const TICK: Duration = Duration::from_millis(250);

/// Polls the pipelines that have `poll:`; pipelines sharing a repository share one
/// remote listing.
pub struct Poller {
    pub config: watch::Receiver<LiveConfig>,
    pub store: Store,
    pub sender: mpsc::Sender<Event>,
    /// Polls only while this replica holds the poll lease (always, on SQLite).
    pub replica: std::sync::Arc<super::replica::Replica>,
}

/// One repository's listing, as it came back.
struct Listed {
    repo: String,
    heads: Result<Vec<(String, String)>, String>,
}

impl Poller {
    pub async fn run(self, shutdown: CancellationToken) {
        // Per repository: when it is due, and how many times in a row it failed.
        let mut due: HashMap<String, Instant> = HashMap::new();
        let mut failures: HashMap<String, u32> = HashMap::new();
        // Per pipeline: the head last seen, so an unchanged head queues nothing.
        let mut seen: HashMap<String, String> = HashMap::new();
        let permits = Arc::new(Semaphore::new(MAX_PARALLEL_POLLS));
        let mut listings: JoinSet<Listed> = JoinSet::new();
        // Repositories with a listing under way, which are not asked again meanwhile.
        let mut asking: std::collections::HashSet<String> = std::collections::HashSet::new();
        let mut groups = Groups::of(self.config.borrow().config.clone());
        let mut tick = tokio::time::interval(TICK);
        loop {
            let listed = tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tick.tick() => None,
                Some(Ok(listed)) = listings.join_next(), if !listings.is_empty() => Some(listed),
            };
            let config = self.config.borrow().config.clone();
            if !Arc::ptr_eq(&config, &groups.config) {
                groups = Groups::of(config);
            }
            if let Some(Listed { repo, heads }) = listed {
                asking.remove(&repo);
                let pipelines = groups.pipelines(&repo);
                let interval = poll_interval(&pipelines);
                let wait = match heads {
                    Ok(heads) => {
                        failures.remove(&repo);
                        tracing::debug!(
                            repo = source::display_url(&repo),
                            pipelines = ?pipelines.iter().map(|pipeline| &pipeline.name).collect::<Vec<_>>(),
                            "listed remote heads"
                        );
                        for pipeline in &pipelines {
                            let branch = format!("refs/heads/{}", pipeline.source.branch);
                            if let Some((_, head)) = heads.iter().find(|(name, _)| *name == branch)
                            {
                                self.consider(pipeline, head, &mut seen).await;
                            }
                        }
                        interval
                    }
                    Err(reason) => {
                        let count = failures.entry(repo.clone()).or_insert(0);
                        *count += 1;
                        let backoff = interval
                            .saturating_mul(2u32.saturating_pow(*count))
                            .min(MAX_POLL_BACKOFF);
                        tracing::warn!(
                            repo = source::display_url(&repo),
                            reason,
                            retry_in_s = backoff.as_secs(),
                            "polling failed"
                        );
                        backoff
                    }
                };
                due.insert(repo, Instant::now() + wait + random_share(wait, 0.1));
                continue;
            }
            if !self.replica.polls() {
                // Another replica polls. What was seen is forgotten: when this one
                // takes over, its first look compares heads with the newest runs.
                seen.clear();
                continue;
            }
            let now = Instant::now();
            for repo in groups.by_repo.keys() {
                if asking.contains(repo) {
                    continue;
                }
                match due.get(repo) {
                    Some(at) if *at > now => continue,
                    Some(_) => {}
                    // A repository first seen (at start, or added by a reload) is first
                    // listed at a random moment of its first interval: a hundred
                    // pipelines started together then poll spread over it, not in
                    // bursts that each need a thread per listing (and hit the forge
                    // at once).
                    None => {
                        let interval = poll_interval(&groups.pipelines(repo));
                        due.insert(repo.clone(), now + random_share(interval, 1.0));
                        continue;
                    }
                }
                let Some(pipeline) = groups.pipelines(repo).first().copied() else {
                    continue;
                };
                asking.insert(repo.clone());
                let source = pipeline.source.clone();
                listings.spawn(list(repo.clone(), source, permits.clone()));
            }
        }
    }

    /// Queues a run when the pipeline's branch head is new to it.
    async fn consider(&self, pipeline: &Pipeline, head: &str, seen: &mut HashMap<String, String>) {
        if seen.get(&pipeline.name).map(String::as_str) == Some(head) {
            return;
        }
        // On the first look, a head that the newest run already had is not news.
        if !seen.contains_key(&pipeline.name)
            && let Ok(runs) = self.store.runs(Some(&pipeline.name), 1).await
            && runs.first().is_some_and(|run| {
                run.commit.as_deref() == Some(head) || run.requested.as_deref() == Some(head)
            })
        {
            seen.insert(pipeline.name.clone(), head.to_string());
            return;
        }
        let request = Request {
            pipeline: &pipeline.name,
            kind: RunKind::Run,
            trigger: Trigger::Poll,
            requested: Some(head),
            delivery: None,
        };
        match intake::queue(
            &self.store,
            Some(&self.sender),
            &request,
            crate::store::no_answer(),
        )
        .await
        {
            Ok(Ok(run)) => {
                tracing::info!(
                    pipeline = pipeline.name,
                    run = run.number,
                    head,
                    "new commit seen by polling"
                );
                seen.insert(pipeline.name.clone(), head.to_string());
            }
            Ok(Err(_)) => {}
            Err(error) => tracing::error!(%error, "queueing a polled commit"),
        }
    }
}

/// A config's pipelines with `poll:`, by repository: built again only when the config
/// changes, not on each of the poller's wake-ups.
struct Groups {
    config: Arc<Config>,
    /// Each polled repository's pipelines, by name.
    by_repo: BTreeMap<String, Vec<String>>,
}

impl Groups {
    fn of(config: Arc<Config>) -> Groups {
        let mut by_repo: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for pipeline in config.pipelines.values() {
            if pipeline.source.poll.is_some() {
                by_repo
                    .entry(pipeline.source.repo.clone())
                    .or_default()
                    .push(pipeline.name.clone());
            }
        }
        Groups { config, by_repo }
    }

    /// The pipelines polling `repo` (none once a reload removed them all).
    fn pipelines(&self, repo: &str) -> Vec<&Pipeline> {
        self.by_repo
            .get(repo)
            .into_iter()
            .flatten()
            .filter_map(|name| self.config.pipelines.get(name))
            .collect()
    }
}

/// The shortest `poll` of the pipelines sharing a repository.
fn poll_interval(pipelines: &[&Pipeline]) -> Duration {
    pipelines
        .iter()
        .filter_map(|pipeline| pipeline.source.poll)
        .min()
        .unwrap_or(Duration::from_secs(60))
}

/// Lists a remote's heads on a blocking thread, waiting at most `LIST_TIMEOUT` (a
/// listing that outlasts it goes on on its thread, bounded by libgit2's own timeouts,
/// and its result is dropped).
async fn list(repo: String, source: Source, permits: Arc<Semaphore>) -> Listed {
    let Ok(_permit) = permits.acquire_owned().await else {
        return Listed {
            repo,
            heads: Err("the poller is stopping".to_string()),
        };
    };
    let listing = spawn_listing(move || source::remote_heads(&source));
    let heads = match tokio::time::timeout(LIST_TIMEOUT, listing).await {
        Ok(Ok(result)) => result.map_err(|error| error.to_string()),
        Ok(Err(error)) => Err(error.to_string()),
        Err(_) => Err(format!(
            "the remote did not answer within {}s",
            LIST_TIMEOUT.as_secs()
        )),
    };
    Listed { repo, heads }
}

/// Runs `listing` on the lister thread when it is free, else on a blocking thread of
/// the runtime. Listings are many and alike (ten a second for a hundred pipelines)
/// and short, so one thread takes nearly all of them; it keeps an allocation cache
/// (`thread_cache`) that the blocking threads runs use do not have, and without it
/// each listing's freed pages went back to the system and were mapped again by the
/// next. A remote that is slow to answer holds the lister; the others go on beside it.
fn spawn_listing<T: Send + 'static>(
    listing: impl FnOnce() -> T + Send + 'static,
) -> tokio::task::JoinHandle<T> {
    static LISTER: std::sync::OnceLock<Option<tokio::runtime::Runtime>> =
        std::sync::OnceLock::new();
    static LISTER_BUSY: AtomicBool = AtomicBool::new(false);
    let lister = LISTER.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .max_blocking_threads(1)
            .thread_keep_alive(LISTER_KEEP_ALIVE)
            .thread_name("gantry-lister")
            .on_thread_start(crate::thread_cache::keep)
            .build()
            .map_err(|error| tracing::warn!(%error, "starting the listing thread"))
            .ok()
    });
    match lister {
        Some(lister)
            if LISTER_BUSY
                .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
                .is_ok() =>
        {
            lister.spawn_blocking(move || {
                // Free again when the listing ends, even by a panic.
                struct Free;
                impl Drop for Free {
                    fn drop(&mut self) {
                        LISTER_BUSY.store(false, Ordering::Release);
                    }
                }
                let _free = Free;
                listing()
            })
        }
        _ => tokio::task::spawn_blocking(listing),
    }
}

/// A random part of `interval`, up to `share` of it (a tenth after each listing, so
/// that many pipelines do not fall into step).
fn random_share(interval: Duration, share: f64) -> Duration {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |now| now.subsec_nanos());
    interval.mul_f64(share * f64::from(nanos % 1000) / 1000.0)
}
