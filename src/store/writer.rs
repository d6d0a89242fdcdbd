//! Intake's writer on SQLite: one thread with a connection of its own, which queues
//! every run waiting for it in one transaction (group commit, as `store::group` does on
//! PostgreSQL) and answers each caller once the commit is on disk.
//!
//! Through sqlx each statement is a trip to the connection's worker thread and back,
//! each row of an answer one more message: a group commit of five statements was a
//! dozen thread hops, and every delivery waiting behind it waited for all of them. Here
//! the whole transaction runs where the connection lives (rusqlite, on the same SQLite
//! library sqlx links), with statements prepared once and kept, so a commit takes what
//! SQLite takes: the rows, and one sync of the log.

use std::collections::{HashMap, VecDeque};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender};
use std::time::{Duration, Instant};

use rusqlite::{Connection, OpenFlags, OptionalExtension, TransactionBehavior, params};
use tokio::sync::oneshot;

use super::batch::{DeliveryOf, Fate, MOST_AT_ONCE, delivery_of, plan, settle};
use super::connect::{Backend, idle_connection, sqlite_settings};
use super::queue::{DeliveryAnswer, QueueJob, Queued};
use super::{INTAKE_WAIT, StoreError, now_millis};
use crate::run::RunState;

/// A caller's run, waiting for the writer.
struct Waiting {
    job: QueueJob,
    /// When its caller stops waiting for the lock: `INTAKE_WAIT` after it came.
    deadline: Instant,
    reply: oneshot::Sender<Result<Queued, Arc<StoreError>>>,
}

/// The writer thread, started on the first run queued; it ends once every handle on
/// it is gone (`close`, or the last `Store` dropped), or after `idle_connection`
/// without work, and the next run queued starts another.
#[derive(Debug, Default)]
pub(super) struct Writer {
    running: Arc<std::sync::Mutex<Option<Running>>>,
    turns: Arc<Turns>,
}

/// What a long job writing the same database in many transactions looks at between
/// them (`Writer::let_waiting_in`): the runs sent to the writer and not yet answered,
/// and a count of the writer's attempts to commit.
#[derive(Debug, Default)]
struct Turns {
    waiting: AtomicUsize,
    attempts: tokio::sync::watch::Sender<u64>,
}

impl Turns {
    /// The writer answered `count` runs after an attempt.
    fn answered(&self, count: usize) {
        self.waiting.fetch_sub(count, Ordering::SeqCst);
        self.attempts
            .send_modify(|attempts| *attempts = attempts.wrapping_add(1));
    }
}

/// How long `Writer::let_waiting_in` waits for the writer's turn at most (the writer
/// itself may be waiting for another process's lock).
const TURN_LIMIT: Duration = Duration::from_secs(1);

#[derive(Debug)]
struct Running {
    sender: Sender<Waiting>,
    thread: std::thread::JoinHandle<()>,
    /// Which thread this is, for it to tell that it is still the one running.
    generation: u64,
}

impl std::fmt::Debug for Waiting {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(formatter, "run of {} waiting", self.job.pipeline)
    }
}

impl Writer {
    /// Queues `job` in the database `file` with whatever else is waiting; answers once
    /// it is committed, or `Busy` once another process held the lock for `INTAKE_WAIT`.
    pub(super) async fn queue(&self, file: &Path, job: QueueJob) -> Result<Queued, StoreError> {
        let (reply, answered) = oneshot::channel();
        let waiting = Waiting {
            job,
            deadline: Instant::now() + INTAKE_WAIT,
            reply,
        };
        self.turns.waiting.fetch_add(1, Ordering::SeqCst);
        if let Err(error) = self.send(file, waiting) {
            self.turns.waiting.fetch_sub(1, Ordering::SeqCst);
            return Err(error);
        }
        match answered.await {
            Ok(outcome) => outcome.map_err(StoreError::Shared),
            // The thread died (it does not, short of a panic): nothing is known.
            Err(_) => Err(StoreError::Busy),
        }
    }

    fn send(&self, file: &Path, waiting: Waiting) -> Result<(), StoreError> {
        let mut running = lock(&self.running);
        let waiting = match running.as_ref() {
            Some(running) => match running.sender.send(waiting) {
                Ok(()) => return Ok(()),
                // The thread is gone: a new one takes it.
                Err(unsent) => unsent.0,
            },
            None => waiting,
        };
        static THREADS: AtomicU64 = AtomicU64::new(0);
        let generation = THREADS.fetch_add(1, Ordering::Relaxed);
        let (sender, receiver) = std::sync::mpsc::channel();
        let file = file.to_path_buf();
        let slot = Arc::clone(&self.running);
        let turns = Arc::clone(&self.turns);
        let thread = std::thread::Builder::new()
            .name("gantry-intake".to_string())
            .spawn(move || {
                write_until_idle(&file, &receiver, &turns, &|| {
                    hand_over(&slot, &receiver, generation)
                })
            })
            .map_err(|error| StoreError::Thread(error.to_string()))?;
        let _ = sender.send(waiting);
        *running = Some(Running {
            sender,
            thread,
            generation,
        });
        Ok(())
    }

    /// Between two transactions of a long job on the same database (coalescing a flood
    /// of queued runs): when runs wait for the writer, lets its next attempt go first,
    /// so that a delivery waits for one of the job's transactions, not for all of them
    /// (SQLite takes whichever writer asks first after a commit, and the job asks at
    /// once).
    pub(super) async fn let_waiting_in(&self) {
        let mut attempts = self.turns.attempts.subscribe();
        if self.turns.waiting.load(Ordering::SeqCst) == 0 {
            return;
        }
        let _ = tokio::time::timeout(TURN_LIMIT, attempts.changed()).await;
    }

    /// Lets the thread finish what is waiting and close its connection.
    pub(super) async fn close(&self) {
        let running = lock(&self.running).take();
        if let Some(Running { sender, thread, .. }) = running {
            drop(sender);
            let _ = tokio::task::spawn_blocking(move || thread.join()).await;
        }
    }
}

/// The last look of an idle writer thread (`generation`), under the writer's lock: what
/// was sent before the lock was taken is still in the channel, and with nothing there
/// the thread is no longer the one running, so the next run queued starts another.
fn hand_over(
    slot: &std::sync::Mutex<Option<Running>>,
    receiver: &Receiver<Waiting>,
    generation: u64,
) -> Option<Waiting> {
    let mut running = lock(slot);
    if let Ok(waiting) = receiver.try_recv() {
        return Some(waiting);
    }
    if running
        .as_ref()
        .is_some_and(|running| running.generation == generation)
    {
        *running = None;
    }
    None
}

fn lock(running: &std::sync::Mutex<Option<Running>>) -> std::sync::MutexGuard<'_, Option<Running>> {
    running
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The thread: takes every run waiting (up to `MOST_AT_ONCE`), queues them in one
/// transaction and answers each, until the channel closes or nothing came for
/// `idle_connection`; then `last_look` takes what came meanwhile, or, with nothing
/// more, hands the work to the next thread (its stack and its connection's page cache
/// are not kept for an idle daemon).
fn write_until_idle(
    file: &Path,
    receiver: &Receiver<Waiting>,
    turns: &Turns,
    last_look: &dyn Fn() -> Option<Waiting>,
) {
    crate::thread_cache::keep();
    let mut flood = Flood::default();
    let mut connection: Option<Connection> = None;
    let mut pending: VecDeque<Waiting> = VecDeque::new();
    loop {
        if pending.is_empty() {
            let next = match receiver.try_recv() {
                Ok(waiting) => Some(waiting),
                Err(_) => {
                    crate::thread_cache::empty();
                    match receiver.recv_timeout(idle_connection(Backend::Sqlite)) {
                        Ok(waiting) => Some(waiting),
                        Err(RecvTimeoutError::Timeout) => last_look(),
                        Err(RecvTimeoutError::Disconnected) => None,
                    }
                }
            };
            match next {
                Some(waiting) => pending.push_back(waiting),
                None => return,
            }
        }
        while let Ok(waiting) = receiver.try_recv() {
            pending.push_back(waiting);
        }
        let count = pending.len().min(MOST_AT_ONCE);
        let batch: Vec<Waiting> = pending.drain(..count).collect();
        let outcome = match &mut connection {
            Some(open) => queue_all(open, &batch),
            None => match open(file) {
                Ok(open) => queue_all(connection.insert(open), &batch),
                Err(error) => Err(error),
            },
        };
        match outcome {
            Ok(queued) => {
                flood.queued(batch.len());
                turns.answered(batch.len());
                for (waiting, queued) in batch.into_iter().zip(queued) {
                    let _ = waiting.reply.send(Ok(queued));
                }
            }
            Err(StoreError::Busy) => {
                // Those whose wait is over are told; the rest try again, first in line.
                let now = Instant::now();
                let (over, again): (Vec<Waiting>, Vec<Waiting>) = batch
                    .into_iter()
                    .partition(|waiting| waiting.deadline <= now);
                turns.answered(over.len());
                for waiting in over {
                    let _ = waiting.reply.send(Err(Arc::new(StoreError::Busy)));
                }
                for waiting in again.into_iter().rev() {
                    pending.push_front(waiting);
                }
            }
            Err(error) => {
                // A connection that failed may be left inside its transaction (a full
                // disk's failed commit): the next batch opens a new one.
                connection = None;
                let error = Arc::new(error);
                turns.answered(batch.len());
                for waiting in batch {
                    let _ = waiting.reply.send(Err(error.clone()));
                }
            }
        }
    }
}

/// Runs queued within `FLOOD_WINDOW` that make a flood: the allocator then keeps freed
/// pages (`thread_cache::Burst`) until the writer goes idle. Only a flood of webhooks
/// queues this many; runs one after another all day leave the allocator as it is (with
/// pages kept while each run worked, the daemon's memory grew by 4 KiB a run, README,
/// "Soak").
const FLOOD_RUNS: usize = 200;
const FLOOD_WINDOW: Duration = Duration::from_secs(1);

/// How many runs the writer queued lately, and the burst a flood of them began.
#[derive(Debug, Default)]
struct Flood {
    window: Option<Instant>,
    runs: usize,
    burst: Option<crate::thread_cache::Burst>,
}

impl Flood {
    fn queued(&mut self, runs: usize) {
        if self.burst.is_some() {
            return;
        }
        let now = Instant::now();
        match self.window {
            Some(start) if now - start < FLOOD_WINDOW => self.runs += runs,
            _ => {
                self.window = Some(now);
                self.runs = runs;
            }
        }
        if self.runs >= FLOOD_RUNS {
            self.burst = Some(crate::thread_cache::Burst::begin());
        }
    }
}

/// The writer's connection to the state's database file, which `Store::open` created
/// and migrated, with the settings of every other connection (`connect::pool_options`).
fn open(file: &Path) -> Result<Connection, StoreError> {
    let connection = Connection::open_with_flags(
        file,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    connection.execute_batch(&sqlite_settings().join(";\n"))?;
    connection.busy_handler(Some(wait_for_the_lock))?;
    Ok(connection)
}

thread_local! {
    /// When the batch being written stops waiting for the lock (`wait_for_the_lock`).
    static LOCK_DEADLINE: std::cell::Cell<Option<Instant>> = const { std::cell::Cell::new(None) };
}

/// How often the writer asks for the lock again while another connection holds it. A
/// run's log lines commit beside intake and hold the lock for the length of one sync,
/// a fraction of a millisecond, and every delivery of the waiting group waits as long
/// as the writer does: this thread sleeps precisely (`store::LOCK_POLL`, on the
/// runtime's timer, cannot be shorter than its one-millisecond tick).
const LOCK_POLL: Duration = Duration::from_micros(200);

/// SQLite's busy handler for the writer: asks for the lock again every `LOCK_POLL` until
/// the batch's first deadline (SQLite's own handler sleeps longer and longer, so a lock
/// held for a millisecond could cost every waiting delivery twenty).
fn wait_for_the_lock(_tries: i32) -> bool {
    let deadline = LOCK_DEADLINE.get();
    if deadline.is_none_or(|deadline| Instant::now() >= deadline) {
        return false;
    }
    std::thread::sleep(LOCK_POLL);
    true
}

/// Queues the batch in one transaction; `Busy` when another writer kept the lock past
/// the first caller's deadline.
fn queue_all(connection: &mut Connection, batch: &[Waiting]) -> Result<Vec<Queued>, StoreError> {
    LOCK_DEADLINE.set(batch.iter().map(|waiting| waiting.deadline).min());
    let transaction = match connection.transaction_with_behavior(TransactionBehavior::Immediate) {
        Ok(transaction) => transaction,
        Err(error) if is_busy(&error) => return Err(StoreError::Busy),
        Err(error) => return Err(error.into()),
    };
    let jobs: Vec<&QueueJob> = batch.iter().map(|waiting| &waiting.job).collect();
    let queued = queue_many(&transaction, &jobs)?;
    transaction.commit()?;
    Ok(queued)
}

fn is_busy(error: &rusqlite::Error) -> bool {
    error.sqlite_error_code() == Some(rusqlite::ErrorCode::DatabaseBusy)
}

/// `batch::queue_many`, one row at a time: each statement is prepared once and kept.
fn queue_many(connection: &Connection, jobs: &[&QueueJob]) -> Result<Vec<Queued>, StoreError> {
    let deliveries: Vec<Option<DeliveryOf<'_>>> = jobs.iter().map(|job| delivery_of(job)).collect();
    let mut answered = HashMap::new();
    let mut answer_of = connection.prepare_cached(
        "SELECT status, response FROM deliveries
         WHERE pipeline = ?1 AND forge = ?2 AND delivery_id = ?3 AND body_sha256 = ?4",
    )?;
    for delivery @ (pipeline, forge, id, body) in deliveries.iter().flatten() {
        let first = answer_of
            .query_row(params![pipeline, forge, id, body], |row| {
                Ok(DeliveryAnswer {
                    status: row.get::<_, i64>(0)? as u16,
                    response: row.get(1)?,
                })
            })
            .optional()?;
        if let Some(first) = first {
            answered.insert(*delivery, first);
        }
    }
    let mut last_number =
        connection.prepare_cached("SELECT MAX(number) FROM runs WHERE pipeline = ?1")?;
    let mut next = HashMap::new();
    for job in jobs {
        let pipeline = job.pipeline.as_str();
        if next.contains_key(pipeline) {
            continue;
        }
        let last: Option<i64> = last_number.query_row([pipeline], |row| row.get(0))?;
        next.insert(pipeline, last.unwrap_or(0));
    }
    let fates = plan(jobs, &deliveries, &answered, next);

    let mut insert_run = connection.prepare_cached(
        "INSERT INTO runs (pipeline, number, kind, trigger, requested, state, started_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) RETURNING id",
    )?;
    let now = now_millis();
    let mut ids = HashMap::new();
    for (job, fate) in jobs.iter().zip(&fates) {
        let Fate::New { number } = fate else {
            continue;
        };
        let id: i64 = insert_run.query_row(
            params![
                job.pipeline,
                number,
                job.kind.as_str(),
                job.trigger.to_string(),
                job.requested,
                RunState::Queued.as_str(),
                now
            ],
            |row| row.get(0),
        )?;
        ids.insert((job.pipeline.clone(), *number), id);
    }
    let (outcomes, stored) = settle(jobs, &deliveries, fates, &ids)?;

    let mut insert_delivery = connection.prepare_cached(
        "INSERT INTO deliveries (pipeline, forge, body_sha256, delivery_id, status, response,
                                 run_id, received_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8) ON CONFLICT DO NOTHING",
    )?;
    for (at, answer, run) in &stored {
        let Some((pipeline, forge, id, body)) = deliveries[*at] else {
            continue;
        };
        insert_delivery.execute(params![
            pipeline,
            forge,
            body,
            id,
            i64::from(answer.status),
            answer.response,
            run,
            now
        ])?;
    }
    Ok(outcomes)
}

#[cfg(test)]
mod tests {
    use crate::run::{RunKind, Trigger};
    use crate::store::{Backend, Store, connect::idle_connection, no_answer};

    #[test]
    fn only_a_flood_of_runs_keeps_freed_pages() {
        use super::{FLOOD_RUNS, FLOOD_WINDOW, Flood};
        let mut flood = Flood::default();
        flood.queued(FLOOD_RUNS - 1);
        assert!(flood.burst.is_none(), "fewer runs than a flood");
        // The window is over: its runs no longer count.
        flood.window = flood.window.map(|start| start - FLOOD_WINDOW);
        flood.queued(1);
        assert!(flood.burst.is_none(), "a new window");
        flood.queued(FLOOD_RUNS - 1);
        assert!(flood.burst.is_some(), "a flood within the window");
    }

    async fn queue(store: &Store) -> crate::run::RunId {
        store
            .queue_run("p", RunKind::Build, &Trigger::Api, None, None, no_answer())
            .await
            .expect("the run is queued")
            .expect("a new run")
    }

    fn running(store: &Store) -> bool {
        store.writer.running.lock().unwrap().is_some()
    }

    /// An idle writer ends its thread; the next run queued starts another.
    #[tokio::test]
    async fn an_idle_writer_ends_its_thread_and_the_next_run_starts_another() {
        let (_state, store) = Store::temporary_on(Backend::Sqlite).await;
        let first = queue(&store).await;
        assert!(running(&store));
        let gone = std::time::Instant::now() + idle_connection(Backend::Sqlite) * 10;
        while running(&store) {
            assert!(
                std::time::Instant::now() < gone,
                "the idle writer kept running"
            );
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        let second = queue(&store).await;
        assert_eq!(second.number, first.number + 1);
        assert!(running(&store));
    }

    /// Runs queued while the writer goes idle and ends are all queued, none lost.
    #[tokio::test]
    async fn runs_queued_around_the_writers_end_are_all_queued() {
        let (_state, store) = Store::temporary_on(Backend::Sqlite).await;
        let idle = idle_connection(Backend::Sqlite);
        let mut numbers = Vec::new();
        for round in 0..6u32 {
            numbers.push(queue(&store).await.number);
            // Around the moment the thread gives up: a little before, at, after.
            tokio::time::sleep(idle + std::time::Duration::from_millis(u64::from(round % 4) * 3))
                .await;
        }
        let expected: Vec<i64> = (1..=6).collect();
        assert_eq!(numbers, expected);
    }
}
