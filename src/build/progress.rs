//! BuildKit's progress as lines of text, the way `docker build --progress=plain` shows
//! it: each step (a "vertex") gets the next number when it starts, then `#N NAME`,
//! its output as `#N LINE`, and one of `#N CACHED`, `#N DONE 1.2s` or `#N ERROR: ...`.
//!
//! Every line passes through a `Redactor` first, so the value of a build secret that a
//! step prints never reaches the run's log. Pure: no IO, fed one status at a time.

use std::borrow::Cow;
use std::collections::{HashMap, VecDeque};

use bollard_buildkit_proto::moby::buildkit::v1::StatusResponse;
use secrecy::{ExposeSecret, SecretString};

use super::FAILURE_TAIL_LINES;

/// Secret values shorter than this are not masked: masking a two-letter value would
/// garble every line that happens to hold those letters, and hide nothing worth hiding.
pub const MIN_REDACTED_LENGTH: usize = 4;

/// What stands in for a secret's value in output.
const MASK: &str = "***";

/// How BuildKit names the step that reads a `cache_from` image's metadata. It fails
/// when the image does not exist (yet), and the build goes on without that cache.
const CACHE_IMPORT_STEP: &str = "importing cache manifest from ";

/// The longest partial line kept for one step while waiting for its newline: a step
/// that prints megabytes without one must not grow gantry's memory.
const MAX_PARTIAL_LINE: usize = 64 * 1024;

/// Masks secret values in lines of output.
#[derive(Default)]
pub struct Redactor {
    /// Longest first, so that a value containing another is masked whole.
    values: Vec<SecretString>,
}

impl Redactor {
    /// A redactor for these values; each is also masked without surrounding whitespace
    /// (a file's trailing newline never shows in a line).
    pub fn new(values: impl IntoIterator<Item = SecretString>) -> Redactor {
        let mut texts: Vec<String> = Vec::new();
        for value in values {
            let value = value.expose_secret();
            for candidate in [value, value.trim()] {
                if candidate.len() >= MIN_REDACTED_LENGTH
                    && !candidate.contains('\n')
                    && !texts.iter().any(|known| known == candidate)
                {
                    texts.push(candidate.to_string());
                }
            }
            // A value of several lines can show one line at a time.
            for line in value.lines().map(str::trim) {
                if line.len() >= MIN_REDACTED_LENGTH && !texts.iter().any(|known| known == line) {
                    texts.push(line.to_string());
                }
            }
        }
        texts.sort_by_key(|text| std::cmp::Reverse(text.len()));
        Redactor {
            values: texts.into_iter().map(SecretString::from).collect(),
        }
    }

    pub fn clean<'a>(&self, line: &'a str) -> Cow<'a, str> {
        let mut cleaned = Cow::Borrowed(line);
        for value in &self.values {
            let value = value.expose_secret();
            if cleaned.contains(value) {
                cleaned = Cow::Owned(cleaned.replace(value, MASK));
            }
        }
        cleaned
    }
}

/// One step as seen so far.
struct Step {
    number: usize,
    name: String,
    announced: bool,
    finished: bool,
    started_at: Option<f64>,
    /// Output not yet ended by a newline.
    partial: Vec<u8>,
    /// The step's last lines of output, for a failure.
    tail: VecDeque<String>,
}

/// The progress of one BuildKit build.
pub struct Progress {
    redactor: Redactor,
    steps: HashMap<String, Step>,
    /// How many steps have been shown: each gets the next number when it is.
    shown: usize,
    /// The digest of the step that failed, if one did.
    failed: Option<String>,
    /// The digest of the step that started last.
    last_started: Option<String>,
}

impl Progress {
    pub fn new(redactor: Redactor) -> Progress {
        Progress {
            redactor,
            steps: HashMap::new(),
            shown: 0,
            failed: None,
            last_started: None,
        }
    }

    /// Whether BuildKit has reported anything yet.
    pub fn has_started(&self) -> bool {
        !self.steps.is_empty()
    }

    /// A line with the secrets masked.
    pub fn clean<'a>(&self, line: &'a str) -> Cow<'a, str> {
        self.redactor.clean(line)
    }

    /// Takes one status message, calling `out` with each line it makes.
    pub fn update(&mut self, status: &StatusResponse, out: &mut dyn FnMut(&str)) {
        for vertex in &status.vertexes {
            let step = self
                .steps
                .entry(vertex.digest.clone())
                .or_insert_with(|| Step {
                    number: 0,
                    name: String::new(),
                    announced: false,
                    finished: false,
                    started_at: None,
                    partial: Vec::new(),
                    tail: VecDeque::new(),
                });
            if !vertex.name.is_empty() {
                step.name = vertex.name.clone();
            }
            let started = vertex.started.as_ref().map(seconds);
            let active = started.is_some()
                || vertex.cached
                || vertex.completed.is_some()
                || !vertex.error.is_empty();
            if active && !step.announced {
                step.announced = true;
                self.shown += 1;
                step.number = self.shown;
                step.started_at = started;
                out(&self
                    .redactor
                    .clean(&format!("#{} {}", step.number, step.name)));
                if started.is_some() {
                    self.last_started = Some(vertex.digest.clone());
                }
            }
            if step.finished {
                continue;
            }
            if !vertex.error.is_empty() {
                step.finished = true;
                if !step.name.starts_with(CACHE_IMPORT_STEP) {
                    self.failed.get_or_insert_with(|| vertex.digest.clone());
                }
                let line = format!("#{} ERROR: {}", step.number, vertex.error);
                out(&self.redactor.clean(&line));
            } else if vertex.cached {
                step.finished = true;
                out(&format!("#{} CACHED", step.number));
            } else if let Some(completed) = vertex.completed.as_ref().map(seconds) {
                step.finished = true;
                let took = step
                    .started_at
                    .map_or(0.0, |started| (completed - started).max(0.0));
                out(&format!("#{} DONE {took:.1}s", step.number));
            }
        }
        for log in &status.logs {
            let Some(step) = self
                .steps
                .get_mut(&log.vertex)
                .filter(|step| step.announced)
            else {
                continue;
            };
            step.partial.extend_from_slice(&log.msg);
            while let Some(end) = step.partial.iter().position(|byte| *byte == b'\n') {
                let line: Vec<u8> = step.partial.drain(..=end).collect();
                emit(step, &self.redactor, &line, out);
            }
            if step.partial.len() > MAX_PARTIAL_LINE {
                let line = std::mem::take(&mut step.partial);
                emit(step, &self.redactor, &line, out);
            }
        }
        for warning in &status.warnings {
            if let Some(step) = self
                .steps
                .get(&warning.vertex)
                .filter(|step| step.announced)
            {
                let line = format!(
                    "#{} WARNING: {}",
                    step.number,
                    String::from_utf8_lossy(&warning.short)
                );
                out(&self.redactor.clean(&line));
            }
        }
    }

    /// The step that failed, or else the last one that started and did not finish
    /// (a build can fail between steps, as when the Dockerfile does not parse).
    pub fn failing_step(&self) -> Option<String> {
        self.failing()
            .map(|step| self.redactor.clean(&step.name).into_owned())
    }

    /// The last lines of output of `failing_step`.
    pub fn failing_tail(&self) -> Vec<String> {
        self.failing()
            .map(|step| step.tail.iter().cloned().collect())
            .unwrap_or_default()
    }

    fn failing(&self) -> Option<&Step> {
        if let Some(failed) = &self.failed {
            return self.steps.get(failed);
        }
        self.steps
            .get(self.last_started.as_ref()?)
            .filter(|step| !step.finished)
    }
}

/// Shows one line of a step's output and keeps it in the step's tail.
fn emit(step: &mut Step, redactor: &Redactor, bytes: &[u8], out: &mut dyn FnMut(&str)) {
    let text = String::from_utf8_lossy(bytes);
    let text = text.trim_end_matches(['\n', '\r']);
    // A progress bar redraws with `\r`; its last state is what the line says.
    let text = text.rsplit('\r').next().unwrap_or_default();
    if text.trim().is_empty() {
        return;
    }
    let text = redactor.clean(text).into_owned();
    out(&format!("#{} {text}", step.number));
    if step.tail.len() == FAILURE_TAIL_LINES {
        step.tail.pop_front();
    }
    step.tail.push_back(text);
}

fn seconds(timestamp: &bollard_buildkit_proto::google::protobuf::Timestamp) -> f64 {
    timestamp.seconds as f64 + f64::from(timestamp.nanos) / 1e9
}

#[cfg(test)]
mod tests {
    use super::*;
    use bollard_buildkit_proto::google::protobuf::Timestamp;
    use bollard_buildkit_proto::moby::buildkit::v1::{Vertex, VertexLog};

    fn at(seconds: i64, nanos: i32) -> Option<Timestamp> {
        Some(Timestamp { seconds, nanos })
    }

    fn vertex(digest: &str, name: &str) -> Vertex {
        Vertex {
            digest: digest.to_string(),
            name: name.to_string(),
            ..Vertex::default()
        }
    }

    fn log(digest: &str, text: &str) -> VertexLog {
        VertexLog {
            vertex: digest.to_string(),
            msg: text.as_bytes().to_vec(),
            ..VertexLog::default()
        }
    }

    /// Feeds the statuses in order; every line they make.
    fn check<S: AsRef<str>>(
        progress: &mut Progress,
        statuses: Vec<StatusResponse>,
        expected: &[S],
    ) {
        let mut lines = Vec::new();
        for status in statuses {
            progress.update(&status, &mut |line| lines.push(line.to_string()));
        }
        let expected: Vec<&str> = expected.iter().map(AsRef::as_ref).collect();
        assert_eq!(lines, expected);
    }

    #[test]
    fn steps_are_numbered_and_show_their_output_and_end() {
        let mut progress = Progress::new(Redactor::default());
        check(
            &mut progress,
            vec![
                // Listed before it starts: nothing to show yet.
                StatusResponse {
                    vertexes: vec![
                        vertex("a", "[1/2] FROM base"),
                        vertex("b", "[2/2] RUN make"),
                    ],
                    ..StatusResponse::default()
                },
                StatusResponse {
                    vertexes: vec![
                        Vertex {
                            cached: true,
                            started: at(10, 0),
                            completed: at(10, 0),
                            ..vertex("a", "[1/2] FROM base")
                        },
                        Vertex {
                            started: at(10, 0),
                            ..vertex("b", "[2/2] RUN make")
                        },
                    ],
                    ..StatusResponse::default()
                },
                StatusResponse {
                    logs: vec![log("b", "compiling\nlinking"), log("b", " done\r\n\n")],
                    ..StatusResponse::default()
                },
                StatusResponse {
                    vertexes: vec![Vertex {
                        started: at(10, 0),
                        completed: at(12, 500_000_000),
                        ..vertex("b", "[2/2] RUN make")
                    }],
                    ..StatusResponse::default()
                },
            ],
            &[
                "#1 [1/2] FROM base",
                "#1 CACHED",
                "#2 [2/2] RUN make",
                "#2 compiling",
                "#2 linking done",
                "#2 DONE 2.5s",
            ],
        );
        assert!(progress.has_started());
        // Every step finished: a failure now is not one of them.
        assert_eq!(progress.failing_step(), None);
    }

    #[test]
    fn a_failed_step_is_named_with_its_last_lines() {
        let mut progress = Progress::new(Redactor::default());
        check(
            &mut progress,
            vec![
                // A `cache_from` image that is not there yet is not why a build fails.
                StatusResponse {
                    vertexes: vec![Vertex {
                        started: at(1, 0),
                        completed: at(1, 0),
                        error: "not found".to_string(),
                        ..vertex("i", "importing cache manifest from reg/app:latest")
                    }],
                    ..StatusResponse::default()
                },
                StatusResponse {
                    vertexes: vec![Vertex {
                        started: at(1, 0),
                        ..vertex("c", "[2/3] RUN test")
                    }],
                    logs: (1..=15).map(|n| log("c", &format!("line {n}\n"))).collect(),
                    ..StatusResponse::default()
                },
                StatusResponse {
                    vertexes: vec![Vertex {
                        started: at(1, 0),
                        completed: at(2, 0),
                        error: "exit code: 1".to_string(),
                        ..vertex("c", "[2/3] RUN test")
                    }],
                    ..StatusResponse::default()
                },
            ],
            &[
                [
                    "#1 importing cache manifest from reg/app:latest",
                    "#1 ERROR: not found",
                ]
                .map(String::from)
                .as_slice(),
                &["#2 [2/3] RUN test".to_string()],
                &(1..=15).map(|n| format!("#2 line {n}")).collect::<Vec<_>>(),
                &["#2 ERROR: exit code: 1".to_string()],
            ]
            .concat()[..],
        );
        assert_eq!(progress.failing_step().as_deref(), Some("[2/3] RUN test"));
        let tail = progress.failing_tail();
        assert_eq!(tail.len(), FAILURE_TAIL_LINES);
        assert_eq!(tail.first().map(String::as_str), Some("line 4"));
        assert_eq!(tail.last().map(String::as_str), Some("line 15"));
    }

    #[test]
    fn secret_values_never_reach_a_line() {
        let redactor = Redactor::new([
            SecretString::from("hunter2-long-value\n"),
            SecretString::from("abc"),
            SecretString::from("first line\nsecond-line"),
        ]);
        let mut progress = Progress::new(redactor);
        check(
            &mut progress,
            vec![StatusResponse {
                vertexes: vec![Vertex {
                    started: at(1, 0),
                    ..vertex("d", "[1/1] RUN cat /run/secrets/token")
                }],
                logs: vec![
                    log("d", "token=hunter2-long-value!\n"),
                    log("d", "abc is too short to mask\n"),
                    log("d", "then second-line alone\n"),
                ],
                ..StatusResponse::default()
            }],
            &[
                "#1 [1/1] RUN cat /run/secrets/token",
                "#1 token=***!",
                "#1 abc is too short to mask",
                "#1 then *** alone",
            ],
        );
        assert_eq!(progress.failing_tail()[0], "token=***!");
        assert_eq!(progress.clean("x hunter2-long-value y"), "x *** y");
    }
}
