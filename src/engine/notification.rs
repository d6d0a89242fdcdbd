//! Notifications: a run's outcome announced to the webhooks in `notifications:`, as
//! generic JSON or in Slack's incoming-webhook format.
//!
//! Each target is sent to on its own task with retries and backoff, after the run has
//! ended, so a slow or dead receiver never delays or fails a deploy. What happened to
//! each notification is appended to the run's log; target URLs (which often carry a
//! credential) never are.

use std::time::Duration;

use secrecy::ExposeSecret;
use serde::Serialize;

use crate::config::{Config, Notification, NotificationFormat};
use crate::run::RunKind;
use crate::store::Store;

/// Attempts per notification, and the wait before the second one (doubled each time).
const ATTEMPTS: u32 = 4;
const FIRST_BACKOFF: Duration = Duration::from_millis(500);
/// The longest one attempt may take.
const SEND_TIMEOUT: Duration = Duration::from_secs(5);

/// What is announced about a run.
#[derive(Debug, Clone, Serialize)]
pub struct Notice {
    pub pipeline: String,
    pub run: i64,
    pub run_id: i64,
    /// `run`, `deploy` or `rollback`.
    pub kind: RunKind,
    /// `success`, `failure` or `rollback`.
    pub outcome: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub commit: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub author: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Where the run can be seen.
    pub url: String,
}

impl Notice {
    fn slack_text(&self) -> String {
        let commit = self
            .commit
            .as_deref()
            .map(|commit| format!(" `{}`", crate::source::short_commit(commit)))
            .unwrap_or_default();
        let mark = match self.outcome.as_str() {
            "success" => ":white_check_mark:",
            "rollback" => ":leftwards_arrow_with_hook:",
            _ => ":x:",
        };
        let message = self
            .message
            .as_deref()
            .map(|message| format!(": {message}"))
            .unwrap_or_default();
        format!(
            "{mark} {} #{} {}{commit}{message} <{}|details>",
            self.pipeline, self.run, self.outcome, self.url
        )
    }
}

/// The targets that want this notice.
fn targets<'c>(config: &'c Config, notice: &Notice) -> Vec<&'c Notification> {
    config
        .notifications
        .values()
        .filter(|target| target.on.contains(&notice.outcome))
        .filter(|target| {
            target
                .pipelines
                .as_ref()
                .is_none_or(|pipelines| pipelines.contains(&notice.pipeline))
        })
        .collect()
}

/// Sends the notice to every target that wants it, in the background.
pub fn announce(config: &Config, store: &Store, notice: Notice) {
    for target in targets(config, &notice) {
        let target = target.clone();
        let store = store.clone();
        let notice = notice.clone();
        tokio::spawn(async move {
            let line = match send(&target, &notice).await {
                Ok(attempts) => format!(
                    "[notify] {}: {} notification delivered (attempt {attempts})",
                    target.name, notice.outcome
                ),
                Err(reason) => format!(
                    "[notify] {}: {} notification failed after {ATTEMPTS} attempts: {reason}",
                    target.name, notice.outcome
                ),
            };
            if let Err(error) = store.append_log(notice.run_id, &line).await {
                tracing::warn!(%error, "recording a notification");
            }
        });
    }
}

/// Posts the notice, retrying with backoff; returns the attempt that worked.
async fn send(target: &Notification, notice: &Notice) -> Result<u32, String> {
    let client = crate::http::client()?;
    let body = match target.format {
        NotificationFormat::Json => serde_json::to_value(notice).unwrap_or_default(),
        NotificationFormat::Slack => serde_json::json!({ "text": notice.slack_text() }),
    };
    let mut backoff = FIRST_BACKOFF;
    let mut last = String::new();
    for attempt in 1..=ATTEMPTS {
        match client
            .post(target.url.expose_secret())
            .timeout(SEND_TIMEOUT)
            .json(&body)
            .send()
            .await
        {
            Ok(response) if response.status().is_success() => return Ok(attempt),
            Ok(response) => last = format!("HTTP {}", response.status().as_u16()),
            // The error text may hold the URL; keep only what kind of failure it was.
            Err(error) if error.is_timeout() => last = "the receiver did not answer in time".into(),
            Err(error) if error.is_connect() => last = "the receiver could not be reached".into(),
            Err(_) => last = "the request failed".into(),
        }
        if attempt < ATTEMPTS {
            tokio::time::sleep(backoff).await;
            backoff *= 2;
        }
    }
    Err(last)
}

/// Where a run can be seen: `server.public_url` (or the listen address) and its API path.
pub fn run_url(config: &Config, run_id: i64) -> String {
    let base = config
        .server
        .public_url
        .clone()
        .unwrap_or_else(|| format!("http://{}", config.server.listen));
    format!("{}/api/v1/runs/{run_id}", base.trim_end_matches('/'))
}
