//! Hot reload: the config directory watched, each edit loaded on a thread of its
//! own, and the newest valid config published to everything that serves; an invalid
//! edit is reported and the last good config goes on serving.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use crate::config::{Config, ConfigError};
use crate::store::Location;

/// How long file changes settle before the config is read again.
const RELOAD_DEBOUNCE: Duration = Duration::from_millis(300);

/// The config the daemon serves with, and the errors of the newest edit if it is invalid.
#[derive(Debug, Clone)]
pub struct LiveConfig {
    pub config: Arc<Config>,
    /// `file:line:column: message` for each problem of the files on disk; empty when they load.
    pub errors: Vec<String>,
}

/// Loads the config directory; on errors, the messages as `file:line:column: message`.
pub fn load(dir: &std::path::Path) -> Result<Config, Vec<String>> {
    match Config::load(dir) {
        Ok(config) => Ok(config),
        Err(ConfigError::Invalid(diagnostics)) => {
            Err(diagnostics.iter().map(ToString::to_string).collect())
        }
        Err(error) => Err(vec![error.to_string()]),
    }
}

/// The config directory, watched: edits are noticed from the moment this exists, so
/// the daemon makes it before it answers anyone (an edit made right after `/healthz`
/// answers is not missed).
pub struct ConfigWatch {
    dir: PathBuf,
    changes: mpsc::Receiver<()>,
    // Dropped, it stops watching.
    _debouncer: notify_debouncer_full::Debouncer<
        notify::RecommendedWatcher,
        notify_debouncer_full::RecommendedCache,
    >,
}

/// Starts watching the config directory (and its pipelines folder).
pub fn watch_config(dir: PathBuf) -> Result<ConfigWatch, notify::Error> {
    use notify::RecursiveMode;
    use notify_debouncer_full::{DebounceEventResult, new_debouncer};

    let (changed, changes) = mpsc::channel::<()>(16);
    let mut debouncer =
        new_debouncer(RELOAD_DEBOUNCE, None, move |result: DebounceEventResult| {
            // Only YAML files (and the pipelines folder itself) are config; the state
            // directory may live in the config directory and changes all the time.
            let relevant = result.is_ok_and(|events| {
                events
                    .iter()
                    // Reading a file (as every `gantry` command does) changes nothing.
                    .filter(|event| !matches!(event.kind, notify::EventKind::Access(_)))
                    .flat_map(|event| event.paths.iter())
                    .any(|path| {
                        let yaml = path
                            .extension()
                            .is_some_and(|extension| extension == "yaml" || extension == "yml");
                        yaml || path
                            .file_name()
                            .is_some_and(|name| name == crate::config::PIPELINES_DIR)
                    })
            });
            if relevant {
                let _ = changed.try_send(());
            }
        })?;
    debouncer.watch(&dir, RecursiveMode::NonRecursive)?;
    let pipelines = dir.join(crate::config::PIPELINES_DIR);
    if pipelines.is_dir() {
        debouncer.watch(&pipelines, RecursiveMode::NonRecursive)?;
    }
    Ok(ConfigWatch {
        dir,
        changes,
        _debouncer: debouncer,
    })
}

impl ConfigWatch {
    /// Publishes each valid config until `shutdown`; an invalid edit is logged and kept
    /// as `errors` while the last good config goes on serving. Editors that save by
    /// writing a new file and renaming it are seen like any other change.
    pub async fn run(mut self, live: watch::Sender<LiveConfig>, shutdown: CancellationToken) {
        // Each change is loaded on a blocking thread of its own, so that a load that
        // takes long can never hold up the next edit; results are numbered, and only
        // one newer than the last applied is applied.
        let (loaded_sender, mut loaded) = mpsc::channel::<(u64, Result<Config, Vec<String>>)>(16);
        let mut requested: u64 = 0;
        let mut applied: u64 = 0;
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                change = self.changes.recv() => {
                    if change.is_none() {
                        return;
                    }
                    requested += 1;
                    let generation = requested;
                    let dir = self.dir.clone();
                    let sender = loaded_sender.clone();
                    tokio::task::spawn_blocking(move || {
                        let _ = sender.blocking_send((generation, load(&dir)));
                    });
                }
                Some((generation, result)) = loaded.recv() => {
                    if generation <= applied {
                        continue;
                    }
                    applied = generation;
                    apply(&live, result);
                }
            }
        }
    }
}

/// Publishes a freshly loaded config, or keeps the last good one and records the errors.
fn apply(live: &watch::Sender<LiveConfig>, loaded: Result<Config, Vec<String>>) {
    // The daemon's store was opened from the config it started with; another `state:`
    // takes a restart, and until then commands would read another history than the
    // daemon writes. The edit is refused like an invalid one, and says so.
    let loaded = loaded.and_then(|config| {
        let serving = Location::of(&live.borrow().config);
        let edited = Location::of(&config);
        if serving.same_place(&edited) {
            Ok(config)
        } else {
            Err(vec![format!(
                "gantry.yaml: `state` now names {}, but this daemon writes to {} until it is \
                 restarted; restart `gantry serve` to move, or put `state` back",
                edited.describe(),
                serving.describe()
            )])
        }
    });
    match loaded {
        Ok(config) => {
            tracing::info!(pipelines = config.pipelines.len(), "config reloaded");
            for warning in &config.warnings {
                tracing::warn!("{warning}");
            }
            live.send_replace(LiveConfig {
                config: Arc::new(config),
                errors: Vec::new(),
            });
        }
        Err(errors) => {
            for error in &errors {
                tracing::error!("{error}");
            }
            tracing::error!("the config has errors; the last good config keeps serving");
            live.send_modify(|current| current.errors = errors);
        }
    }
}
