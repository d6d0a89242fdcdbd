//! What pages show: plain view structs with their text already formatted (templates
//! hold no logic beyond `if` and `for`), and the templates themselves.

use super::*;

// ---------------------------------------------------------------- views

/// What every page's frame shows.
pub(super) struct Layout {
    pub(super) title: String,
    /// `Operator`, `Reader` or empty (anonymous).
    pub(super) who: String,
    pub(super) logged_in: bool,
    /// Seconds between refreshes of the page's live part; 0 for none.
    pub(super) refresh: u32,
    pub(super) version: &'static str,
}

impl Layout {
    pub(super) fn new(title: impl Into<String>, viewer: &Viewer, refresh: u32) -> Layout {
        Layout {
            title: title.into(),
            who: match (viewer.logged_in, viewer.access) {
                (false, _) => String::new(),
                (true, Access::Operate) => "operator".to_string(),
                (true, Access::Read) => "reader".to_string(),
            },
            logged_in: viewer.logged_in,
            refresh,
            version: env!("CARGO_PKG_VERSION"),
        }
    }
}

/// A run as a row or a page header shows it.
pub(super) struct RunView {
    pub(super) id: i64,
    pub(super) number: i64,
    pub(super) pipeline: String,
    pub(super) kind: String,
    pub(super) trigger: String,
    pub(super) requested: String,
    pub(super) state: String,
    pub(super) finished: bool,
    pub(super) commit: String,
    pub(super) commit_short: String,
    pub(super) commit_message: String,
    pub(super) author: String,
    pub(super) age: String,
    pub(super) started: String,
    pub(super) duration: String,
    pub(super) failed_stage: String,
    pub(super) message: String,
    pub(super) image: String,
    pub(super) digest_short: String,
    pub(super) tags: Vec<String>,
    /// Of a run of several images: each one's name, repository and short digest.
    pub(super) images: Vec<(String, String, String)>,
}

impl RunView {
    pub(super) fn new(run: &RunRecord, now: i64) -> RunView {
        let finished = run.state.is_finished();
        let commit = run.commit.clone().unwrap_or_default();
        RunView {
            id: run.id,
            number: run.number,
            pipeline: run.pipeline.clone(),
            kind: run.kind.to_string(),
            trigger: run.trigger.to_string(),
            requested: run.requested.clone().unwrap_or_default(),
            state: run.state.to_string(),
            finished,
            commit_short: commit.chars().take(8).collect(),
            commit,
            commit_message: run.commit_message.clone().unwrap_or_default(),
            author: run.author.clone().unwrap_or_default(),
            age: age(now - run.started_at),
            started: timestamp(run.started_at),
            duration: match (run.state, run.finished_at) {
                (RunState::Queued, _) => String::new(),
                (_, Some(end)) => duration(end - run.started_at),
                (_, None) => duration(now - run.started_at),
            },
            failed_stage: run
                .failed_stage
                .map(|stage| stage.to_string())
                .unwrap_or_default(),
            message: run.message.clone().unwrap_or_default(),
            image: run.image.clone().unwrap_or_default(),
            digest_short: short_digest(run.digest.as_deref()),
            tags: run.tags.clone(),
            images: match run.images.len() {
                0 | 1 => Vec::new(),
                _ => run
                    .images
                    .iter()
                    .map(|(name, reference)| {
                        let (repository, digest) =
                            reference.rsplit_once('@').unwrap_or((reference, ""));
                        (
                            name.clone(),
                            repository.to_string(),
                            short_digest(Some(digest)),
                        )
                    })
                    .collect(),
            },
        }
    }
}

pub(super) struct PipelineRow {
    pub(super) name: String,
    pub(super) branch: String,
    pub(super) last: Option<RunView>,
    pub(super) pinned: String,
    pub(super) deploying: bool,
}

pub(super) struct StageView {
    pub(super) name: String,
    pub(super) state: String,
    pub(super) duration: String,
    pub(super) message: String,
}

pub(super) struct InstanceView {
    pub(super) service: String,
    pub(super) instance: String,
    pub(super) state: String,
    pub(super) health: String,
    pub(super) drift: String,
    pub(super) commit_short: String,
    pub(super) digest_short: String,
    pub(super) uptime: String,
    pub(super) error: String,
}

pub(super) struct HostGroup {
    pub(super) host: String,
    pub(super) instances: Vec<InstanceView>,
}

pub(super) struct LineView {
    pub(super) seq: i64,
    pub(super) text: String,
}

pub(super) fn short_digest(digest: Option<&str>) -> String {
    digest
        .map(|digest| {
            let hex = digest.strip_prefix("sha256:").unwrap_or(digest);
            hex.chars().take(12).collect()
        })
        .unwrap_or_default()
}

/// `just now`, `42 s ago`, `5 min ago`, `3 h ago`, `2 days ago`.
pub(super) fn age(millis: i64) -> String {
    let seconds = millis.max(0) / 1000;
    match seconds {
        0..5 => "just now".to_string(),
        5..60 => format!("{seconds} s ago"),
        60..3600 => format!("{} min ago", seconds / 60),
        3600..86_400 => format!("{} h ago", seconds / 3600),
        86_400..172_800 => "1 day ago".to_string(),
        _ => format!("{} days ago", seconds / 86_400),
    }
}

/// `850 ms`, `12.4 s`, `3 min 5 s`, `2 h 10 min`.
pub(super) fn duration(millis: i64) -> String {
    let millis = millis.max(0);
    let seconds = millis / 1000;
    match millis {
        0..1000 => format!("{millis} ms"),
        1000..60_000 => format!("{:.1} s", millis as f64 / 1000.0),
        60_000..3_600_000 => format!("{} min {} s", seconds / 60, seconds % 60),
        _ => format!("{} h {} min", seconds / 3600, seconds / 60 % 60),
    }
}

/// RFC 3339 in UTC, to the second.
pub(super) fn timestamp(millis: i64) -> String {
    let at = UNIX_EPOCH + Duration::from_millis(millis.max(0) as u64);
    humantime::format_rfc3339_seconds(at).to_string()
}

pub(super) fn host_groups(instances: &[InstanceStatus]) -> Vec<HostGroup> {
    let mut groups: Vec<HostGroup> = Vec::new();
    for instance in instances {
        let view = InstanceView {
            service: instance.service.clone(),
            instance: instance.instance.clone(),
            state: instance.state.clone(),
            health: instance.health.clone().unwrap_or_default(),
            drift: instance.drift.join("; "),
            commit_short: instance
                .commit
                .as_deref()
                .unwrap_or_default()
                .chars()
                .take(8)
                .collect(),
            digest_short: short_digest(instance.digest.as_deref()),
            uptime: instance
                .uptime_seconds
                .map(|seconds| duration(seconds as i64 * 1000))
                .unwrap_or_default(),
            error: instance.error.clone().unwrap_or_default(),
        };
        match groups.iter_mut().find(|group| group.host == instance.host) {
            Some(group) => group.instances.push(view),
            None => groups.push(HostGroup {
                host: instance.host.clone(),
                instances: vec![view],
            }),
        }
    }
    groups
}

// ---------------------------------------------------------------- templates

#[derive(Template)]
#[template(path = "home.html")]
pub(super) struct HomePage {
    pub(super) layout: Layout,
    pub(super) config_errors: Vec<String>,
    pub(super) pipelines: Vec<PipelineRow>,
    pub(super) recent: Vec<RunView>,
}

#[derive(Template)]
#[template(path = "pipeline.html")]
pub(super) struct PipelinePage {
    pub(super) layout: Layout,
    pub(super) name: String,
    pub(super) repo: String,
    pub(super) branch: String,
    pub(super) image: String,
    pub(super) pinned: String,
    pub(super) deploying: String,
    pub(super) may_operate: bool,
    pub(super) read_at: String,
    pub(super) hosts: Vec<HostGroup>,
    pub(super) runs: Vec<RunView>,
    pub(super) older: Option<i64>,
}

#[derive(Template)]
#[template(path = "run.html")]
pub(super) struct RunPage {
    pub(super) layout: Layout,
    pub(super) run: RunView,
    pub(super) stages: Vec<StageView>,
    pub(super) lines: Vec<LineView>,
    /// Earlier lines left off the page.
    pub(super) hidden_lines: usize,
    pub(super) last_seq: i64,
}

#[derive(Template)]
#[template(path = "confirm.html")]
pub(super) struct ConfirmPage {
    pub(super) layout: Layout,
    pub(super) pipeline: String,
    pub(super) action: String,
    pub(super) question: String,
    pub(super) detail: String,
    /// The optional field the action takes (`commit`, `image`, `to`), or empty.
    pub(super) field: String,
    pub(super) field_label: String,
    pub(super) field_hint: String,
    pub(super) button: String,
    pub(super) form_key: String,
}

#[derive(Template)]
#[template(path = "login.html")]
pub(super) struct LoginPage {
    pub(super) layout: Layout,
    pub(super) next: String,
    pub(super) problem: String,
    pub(super) no_token: bool,
}

#[derive(Template)]
#[template(path = "problem.html")]
pub(super) struct ProblemPage {
    pub(super) layout: Layout,
    pub(super) heading: String,
    pub(super) detail: String,
}
