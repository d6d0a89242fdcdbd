//! Where a run's progress goes: to whoever watches (a terminal, the daemon's log) and
//! into the run's stored log, line by line, in order.
//!
//! A run has one `RunLog` from its first stage to its last, shared by build and
//! deploy. Its lines go to the store on a task of their own, so a slow disk never
//! holds up a build, and only up to `MAX_LOG_LINES` lines and `MAX_LOG_BYTES` bytes:
//! a build that prints without end cannot fill memory or the disk. What is left out
//! is counted, and the count is the log's last line.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use super::{EngineError, Failure, StageReport};
use crate::run::{Outcome, RunId, RunState, Stage};
use crate::store::{FinishedStage, RunResult, Store, now_millis};

/// The most lines a run's stored log keeps. A verbose build prints a few thousand.
pub const MAX_LOG_LINES: usize = 20_000;
/// The most bytes a run's stored log keeps.
pub const MAX_LOG_BYTES: usize = 8 * 1024 * 1024;
/// Lines written to the store in one transaction, at most.
const WRITE_AT_ONCE: usize = 500;
/// How long the log's writer waits, once a line came, for the lines that follow it: a
/// build prints in bursts, and each write is a commit (a sync of the state's log, the
/// write lock held meanwhile, while webhook deliveries wait for it).
const GATHER: Duration = Duration::from_millis(50);
/// The longest line kept whole; a longer one is cut and says so.
pub const MAX_LINE_BYTES: usize = 4096;

/// Where a run reports what it is doing, for a terminal, a log or nothing.
pub trait Progress: Send {
    fn stage_started(&mut self, stage: Stage);
    fn line(&mut self, line: &str);
    fn stage_finished(&mut self, stage: Stage, outcome: Outcome, elapsed: Duration);
}

/// Progress that goes nowhere.
pub struct Silent;

impl Progress for Silent {
    fn stage_started(&mut self, _stage: Stage) {}
    fn line(&mut self, _line: &str) {}
    fn stage_finished(&mut self, _stage: Stage, _outcome: Outcome, _elapsed: Duration) {}
}

/// A run's stored log; cheap to clone, and every clone writes to the same log.
#[derive(Clone)]
pub struct RunLog {
    /// Lines on their way to the store; one task writes them in order.
    messages: tokio::sync::mpsc::UnboundedSender<Message>,
    budget: Arc<Budget>,
}

enum Message {
    Line(String),
    /// Write what came so far at once, then say so.
    Flush(tokio::sync::oneshot::Sender<()>),
    /// Write the count of what was left out, then say so: the run is over.
    Finish(tokio::sync::oneshot::Sender<()>),
}

/// What a run's log has kept and left out so far.
#[derive(Debug, Default)]
struct Budget {
    lines: AtomicUsize,
    bytes: AtomicUsize,
    left_out_lines: AtomicUsize,
    left_out_bytes: AtomicUsize,
}

impl RunLog {
    /// Starts the writer of `run`'s log.
    pub fn new(store: &Store, run: RunId) -> RunLog {
        let (messages, receiver) = tokio::sync::mpsc::unbounded_channel::<Message>();
        let budget = Arc::new(Budget::default());
        tokio::spawn(write(store.clone(), run, receiver, budget.clone()));
        RunLog { messages, budget }
    }

    /// Stores one line, cut to `MAX_LINE_BYTES`, unless the log is full.
    pub fn line(&self, line: &str) {
        let line = cut(line);
        let bytes = line.len();
        let budget = &self.budget;
        let lines_before = budget.lines.fetch_add(1, Ordering::Relaxed);
        let bytes_before = budget.bytes.fetch_add(bytes, Ordering::Relaxed);
        if lines_before >= MAX_LOG_LINES || bytes_before + bytes > MAX_LOG_BYTES {
            budget.left_out_lines.fetch_add(1, Ordering::Relaxed);
            budget.left_out_bytes.fetch_add(bytes, Ordering::Relaxed);
            return;
        }
        let _ = self.messages.send(Message::Line(line));
    }

    /// Waits until every line so far is stored, and the count of what was left out.
    pub async fn finish(&self) {
        let (done, finished) = tokio::sync::oneshot::channel();
        if self.messages.send(Message::Finish(done)).is_ok() {
            let _ = finished.await;
        }
    }

    /// Waits until every line so far is stored: before the run's end is, so that
    /// whoever sees the run ended finds its whole log.
    pub async fn flush(&self) {
        let (done, flushed) = tokio::sync::oneshot::channel();
        if self.messages.send(Message::Flush(done)).is_ok() {
            let _ = flushed.await;
        }
    }
}

/// The writer of one run's log: lines in order, a batch per write.
async fn write(
    store: Store,
    run: RunId,
    mut receiver: tokio::sync::mpsc::UnboundedReceiver<Message>,
    budget: Arc<Budget>,
) {
    let mut batch: Vec<Message> = Vec::new();
    // Whatever has piled up while the last lines were written, and what follows within
    // `GATHER`, goes in one write; a run that is over is not kept waiting.
    while receiver.recv_many(&mut batch, WRITE_AT_ONCE).await > 0 {
        let finishing = batch
            .iter()
            .any(|message| matches!(message, Message::Finish(_) | Message::Flush(_)));
        if !finishing && batch.len() < WRITE_AT_ONCE {
            tokio::time::sleep(GATHER).await;
            while batch.len() < WRITE_AT_ONCE
                && let Ok(message) = receiver.try_recv()
            {
                batch.push(message);
            }
        }
        let mut lines = Vec::with_capacity(batch.len());
        let mut finished = Vec::new();
        let mut over = false;
        for message in batch.drain(..) {
            match message {
                Message::Line(line) => lines.push(line),
                Message::Flush(done) => finished.push(done),
                Message::Finish(done) => {
                    over = true;
                    finished.push(done);
                }
            }
        }
        let left_out = budget.left_out_lines.load(Ordering::Relaxed);
        if over && left_out > 0 {
            lines.push(format!(
                "[log] {left_out} more lines ({} bytes) were not kept: a run's log keeps at most {MAX_LOG_LINES} lines and {} MiB",
                budget.left_out_bytes.load(Ordering::Relaxed),
                MAX_LOG_BYTES / (1024 * 1024)
            ));
        }
        if !lines.is_empty()
            && let Err(error) = store.append_logs(run.id, &lines).await
        {
            tracing::warn!(run = run.id, %error, "storing log lines");
        }
        for done in finished {
            let _ = done.send(());
        }
    }
}

/// A line no longer than `MAX_LINE_BYTES`, cut between characters.
fn cut(line: &str) -> String {
    if line.len() <= MAX_LINE_BYTES {
        return line.to_string();
    }
    let mut end = MAX_LINE_BYTES;
    while !line.is_char_boundary(end) {
        end -= 1;
    }
    format!("{} [{} more bytes cut]", &line[..end], line.len() - end)
}

/// Progress that also keeps every line in the run's stored log, for `gantry logs`.
pub struct Recording<'a> {
    inner: &'a mut dyn Progress,
    stage: String,
    log: RunLog,
}

impl<'a> Recording<'a> {
    pub fn new(log: &RunLog, inner: &'a mut dyn Progress) -> Recording<'a> {
        Recording {
            inner,
            stage: String::new(),
            log: log.clone(),
        }
    }
}

impl Progress for Recording<'_> {
    fn stage_started(&mut self, stage: Stage) {
        self.stage = stage.to_string();
        self.log.line(&format!("[{stage}] started"));
        self.inner.stage_started(stage);
    }

    fn line(&mut self, line: &str) {
        self.log.line(&format!("[{}] {line}", self.stage));
        self.inner.line(line);
    }

    fn stage_finished(&mut self, stage: Stage, outcome: Outcome, elapsed: Duration) {
        let word = match outcome {
            Outcome::Succeeded => "done",
            Outcome::Failed => "failed",
        };
        self.log.line(&format!(
            "[{stage}] {word} in {}",
            humantime::format_duration(Duration::from_millis(elapsed.as_millis() as u64))
        ));
        self.inner.stage_finished(stage, outcome, elapsed);
    }
}

/// The one owner of a run's record while it goes, from its first stage to its end,
/// build and deploy alike: its log (every line, in order), its stages (timed, shown
/// to whoever watches, stored with their position), and how it ended.
pub struct RunRecorder<'a> {
    store: &'a Store,
    pub run: RunId,
    log: RunLog,
    progress: Recording<'a>,
    /// Every stage so far, in order.
    pub stages: Vec<StageReport>,
}

impl<'a> RunRecorder<'a> {
    /// Starts recording `run`, showing its progress to `progress` too.
    pub fn new(store: &'a Store, run: RunId, progress: &'a mut dyn Progress) -> RunRecorder<'a> {
        let log = RunLog::new(store, run);
        let progress = Recording::new(&log, progress);
        RunRecorder {
            store,
            run,
            log,
            progress,
            stages: Vec::new(),
        }
    }

    pub fn store(&self) -> &'a Store {
        self.store
    }

    /// Runs one stage: reports its start and end, times it, and records it after the
    /// stages before it. A `Failure` of the work is data (the caller ends the run with
    /// it); `Err` is the store failing.
    pub async fn stage<T>(
        &mut self,
        name: Stage,
        work: impl AsyncFnOnce(&mut dyn Progress) -> Result<T, Failure>,
    ) -> Result<Result<T, Failure>, EngineError> {
        self.progress.stage_started(name);
        let started_at = now_millis();
        let started = std::time::Instant::now();
        let result = work(&mut self.progress).await;
        let elapsed = started.elapsed();
        let outcome = if result.is_ok() {
            Outcome::Succeeded
        } else {
            Outcome::Failed
        };
        self.progress.stage_finished(name, outcome, elapsed);
        let message = result.as_ref().err().map(|failure| failure.message.clone());
        let stage = FinishedStage {
            position: self.stages.len() as i64,
            name,
            outcome,
            started_at,
            duration: elapsed,
            message: message.as_deref(),
        };
        self.store.record_stage(self.run, &stage).await?;
        self.stages.push(StageReport {
            name,
            outcome,
            duration_ms: elapsed.as_millis(),
        });
        Ok(result)
    }

    /// A line in the run's log (and shown) after its last stage, under that stage's name.
    pub fn line(&mut self, line: &str) {
        self.progress.line(line);
    }

    /// Ends the run as failed at the failure's stage.
    pub async fn fail(&mut self, failure: &Failure) -> Result<(), EngineError> {
        let result = RunResult::Failed {
            stage: failure.stage,
            message: failure.message.clone(),
        };
        self.log.flush().await;
        Ok(self.store.finish_run(self.run, &result).await?)
    }

    /// Ends the run as succeeded with what it produced.
    pub async fn succeed(&mut self, result: &RunResult) -> Result<(), EngineError> {
        self.log.flush().await;
        Ok(self.store.finish_run(self.run, result).await?)
    }

    /// Ends a run that had nothing to do (`held`, `skipped`), saying why.
    pub async fn end(&mut self, state: RunState, message: &str) -> Result<(), EngineError> {
        self.progress.line(message);
        self.log.flush().await;
        Ok(self.store.end_run(self.run, state, message).await?)
    }

    /// Waits until the run's log is stored whole.
    pub async fn finish(self) {
        self.log.finish().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::run::RunKind;

    #[test]
    fn long_lines_are_cut_between_characters() {
        let long = "é".repeat(MAX_LINE_BYTES);
        let kept = cut(&long);
        assert!(kept.starts_with(&"é".repeat(MAX_LINE_BYTES / 2)));
        assert!(kept.ends_with(&format!("[{} more bytes cut]", MAX_LINE_BYTES)));
        assert_eq!(cut("short"), "short");
    }

    /// Lines a little apart go to the store in one write (one `at` for the write), and
    /// a finished run's lines are stored before `finish` returns.
    #[tokio::test]
    async fn lines_that_come_close_together_are_written_together() {
        let (_dir, store) = Store::temporary().await;
        let run = store.manual_run("p", RunKind::Build).await;
        let log = RunLog::new(&store, run);
        log.line("first");
        tokio::time::sleep(GATHER / 4).await;
        log.line("second");
        tokio::time::sleep(GATHER * 3).await;
        log.line("third");
        log.finish().await;
        let lines = store.log_lines(run.id, -1).await.unwrap();
        let texts: Vec<&str> = lines.iter().map(|line| line.line.as_str()).collect();
        assert_eq!(texts, ["first", "second", "third"]);
        assert_eq!(lines[0].at, lines[1].at, "one write for the first two");
        assert!(lines[2].at > lines[1].at, "a later line, a later write");
    }

    /// Whoever sees a run ended finds its whole log: the lines are stored before the
    /// end is (a follower stopped at the end and missed the last lines otherwise).
    #[tokio::test]
    async fn a_run_is_ended_only_once_its_log_is_stored() {
        let (_dir, store) = Store::temporary().await;
        for ending in ["succeed", "fail", "end"] {
            let run = store.manual_run("p", RunKind::Run).await;
            let mut silent = Silent;
            let mut recorder = RunRecorder::new(&store, run, &mut silent);
            recorder.line("the last line before the end");
            match ending {
                "succeed" => recorder
                    .succeed(&RunResult::Succeeded {
                        image: String::new(),
                        tags: Vec::new(),
                        digest: String::new(),
                        images: Default::default(),
                    })
                    .await
                    .unwrap(),
                "fail" => recorder
                    .fail(&Failure::new(Stage::Build, "broke".to_string()))
                    .await
                    .unwrap(),
                _ => recorder
                    .end(RunState::Skipped, "nothing to do")
                    .await
                    .unwrap(),
            }
            let lines = store.log_lines(run.id, -1).await.unwrap();
            let texts: Vec<&str> = lines.iter().map(|line| line.line.as_str()).collect();
            assert!(
                texts
                    .iter()
                    .any(|text| text.contains("the last line before the end")),
                "{ending}: {texts:?}"
            );
            recorder.finish().await;
        }
    }

    #[tokio::test]
    async fn a_log_keeps_its_limit_and_counts_the_rest() {
        let (_dir, store) = Store::temporary().await;
        let run = store.manual_run("p", RunKind::Build).await;
        let log = RunLog::new(&store, run);
        let other = log.clone();
        for index in 0..MAX_LOG_LINES + 500 {
            if index % 2 == 0 {
                log.line(&format!("line {index}"));
            } else {
                other.line(&format!("line {index}"));
            }
        }
        other.finish().await;
        let lines = store.log_lines(run.id, -1).await.unwrap();
        assert_eq!(lines.len(), MAX_LOG_LINES + 1);
        assert_eq!(
            lines[MAX_LOG_LINES - 1].line,
            format!("line {}", MAX_LOG_LINES - 1)
        );
        assert!(
            lines[MAX_LOG_LINES]
                .line
                .starts_with("[log] 500 more lines"),
            "{}",
            lines[MAX_LOG_LINES].line
        );
    }
}
