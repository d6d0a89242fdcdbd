//! The store against a real SQLite file in a temporary directory and a real
//! PostgreSQL database: each test of both back ends runs once on each.

use super::*;

crate::on_both_back_ends!(
    runs_are_numbered_per_pipeline_and_recorded,
    a_lease_has_one_holder_until_it_expires_or_is_released,
    deployments_record_instance_digests_and_pins,
    only_runs_the_daemon_took_are_recovered_after_a_crash,
    runs_page_by_pipeline_and_state_from_before,
    a_run_is_taken_by_one_replica_and_recovered_once_its_replica_is_dead,
    deliveries_queued_at_once_are_each_stored_once_and_numbered_in_turn,
    every_pipelines_records_are_read_at_once_and_kept_apart,
    work_on_timers_shares_the_state_through_one_connection_of_its_own,
    pruning_keeps_the_newest_runs_and_every_queued_or_running_one,
    a_list_of_runs_gives_each_run_its_own_stages_in_order,
);
use crate::run::{Outcome, RunKind, RunState, Stage, Trigger};
use sqlx::Row;

async fn runs_are_numbered_per_pipeline_and_recorded(backend: Backend) {
    let (state, store) = Store::temporary_on(backend).await;
    let first = store.manual_run("a", RunKind::Build).await;
    let other = store.manual_run("b", RunKind::Build).await;
    let second = store
        .start_run("a", RunKind::Build, &Trigger::Manual, Some("v1"))
        .await
        .unwrap();
    assert_eq!((first.number, other.number, second.number), (1, 1, 2));

    store.set_commit(first, "abc", None).await.unwrap();
    store
        .record_stage(
            first,
            &FinishedStage {
                position: 0,
                name: Stage::Checkout,
                outcome: Outcome::Succeeded,
                started_at: 1,
                duration: Duration::from_millis(5),
                message: None,
            },
        )
        .await
        .unwrap();
    store
        .finish_run(
            first,
            &RunResult::Succeeded {
                image: "r/x".to_string(),
                tags: vec!["r/x:1".to_string()],
                digest: "sha256:1".to_string(),
                images: Default::default(),
            },
        )
        .await
        .unwrap();
    store
        .finish_run(
            second,
            &RunResult::Failed {
                stage: Stage::Build,
                message: "boom".to_string(),
            },
        )
        .await
        .unwrap();

    // Reopening runs no migration twice and sees the same rows.
    store.close().await;
    let store = Store::open(state.location()).await.unwrap();
    let runs = store.runs(Some("a"), 10).await.unwrap();
    assert_eq!(runs.len(), 2);
    assert_eq!(runs[0].state, RunState::Failed);
    assert_eq!(runs[0].failed_stage, Some(Stage::Build));
    assert_eq!(runs[1].state, RunState::Succeeded);
    assert_eq!(runs[1].commit.as_deref(), Some("abc"));
    assert_eq!(runs[1].tags, vec!["r/x:1".to_string()]);
    assert_eq!(runs[1].stages[0].duration_ms, 5);
}

async fn a_lease_has_one_holder_until_it_expires_or_is_released(backend: Backend) {
    let (_state, store) = Store::temporary_on(backend).await;
    let ttl = Duration::from_secs(60);
    let takes = async |pipeline: &str, owner: &str, ttl: Duration| {
        store
            .acquire_lease(pipeline, owner, ttl)
            .await
            .unwrap()
            .is_none()
    };
    assert!(takes("p", "one", ttl).await);
    // The holder may take it again (renewal by acquiring); another may not.
    assert!(takes("p", "one", ttl).await);
    let holder = store.acquire_lease("p", "two", ttl).await.unwrap().unwrap();
    assert_eq!(holder.owner, "one");
    // Other pipelines have their own lease.
    assert!(takes("q", "two", ttl).await);
    assert!(store.renew_lease("p", "one", ttl).await.unwrap());
    assert!(!store.renew_lease("p", "two", ttl).await.unwrap());
    store.release_lease("p", "one").await.unwrap();
    assert!(takes("p", "two", ttl).await);

    // A lease whose holder stopped renewing is taken over once it expires.
    assert!(takes("r", "dead", Duration::ZERO).await);
    tokio::time::sleep(Duration::from_millis(5)).await;
    assert!(takes("r", "alive", ttl).await);
    assert!(!store.renew_lease("r", "dead", ttl).await.unwrap());
}

/// An updated instance of service `web` on host `local`.
fn record(instance: &str, digest: Option<&str>) -> InstanceRecord {
    InstanceRecord {
        service: "web".to_string(),
        instance: instance.to_string(),
        host: "local".to_string(),
        action: "updated".to_string(),
        digest: digest.map(str::to_string),
        previous_digest: None,
        message: None,
    }
}

async fn deployments_record_instance_digests_and_pins(backend: Backend) {
    let (_state, store) = Store::temporary_on(backend).await;
    let first = store
        .start_deployment(&NewDeployment {
            pipeline: "p",
            run: None,
            kind: RunKind::Deploy,
            image: "r/x@sha256:1",
            digest: "sha256:1",
            commit: Some("c1"),
            images: &Default::default(),
        })
        .await
        .unwrap();
    store
        .record_instance(first, &record("a", Some("sha256:1")))
        .await
        .unwrap();
    store
        .record_instance(first, &record("b", Some("sha256:1")))
        .await
        .unwrap();
    store
        .finish_deployment(first, Outcome::Succeeded, None)
        .await
        .unwrap();
    let second = store
        .start_deployment(&NewDeployment {
            pipeline: "p",
            run: None,
            kind: RunKind::Deploy,
            image: "r/x@sha256:2",
            digest: "sha256:2",
            commit: None,
            images: &Default::default(),
        })
        .await
        .unwrap();
    assert_eq!((first.number, second.number), (1, 2));
    store
        .record_instance(second, &record("a", Some("sha256:2")))
        .await
        .unwrap();
    // Unknown afterwards: the older record still says what b should run.
    store
        .record_instance(second, &record("b", None))
        .await
        .unwrap();
    store
        .finish_deployment(second, Outcome::Failed, Some("b failed"))
        .await
        .unwrap();

    let digests = store.recorded_digests("p").await.unwrap();
    assert_eq!(digests["a"], "sha256:2");
    assert_eq!(digests["b"], "sha256:1");
    let history = store.deployments("p", 10).await.unwrap();
    assert_eq!(history.len(), 2);
    assert_eq!(history[0].state, RunState::Failed);
    assert_eq!(history[0].message.as_deref(), Some("b failed"));
    assert_eq!(history[1].instances.len(), 2);
    // The newest successful deployment's commit: the failed one after it does not count.
    assert_eq!(
        store.deployed_commit("p").await.unwrap().as_deref(),
        Some("c1")
    );
    assert_eq!(store.deployed_commit("other").await.unwrap(), None);

    assert!(store.pin_of("p").await.unwrap().is_none());
    store.pin("p", "sha256:1", "rolled back").await.unwrap();
    assert_eq!(store.pin_of("p").await.unwrap().unwrap().digest, "sha256:1");
    assert!(store.unpin("p").await.unwrap());
    assert!(!store.unpin("p").await.unwrap());
}

/// What `gantry status` reads of every pipeline in one query per kind (digests, tags,
/// pins, leases) is what the per-pipeline reads give, each under its own pipeline.
async fn every_pipelines_records_are_read_at_once_and_kept_apart(backend: Backend) {
    let (_state, store) = Store::temporary_on(backend).await;
    for (pipeline, digest) in [("p", "sha256:1"), ("q", "sha256:2")] {
        let run = store.manual_run(pipeline, RunKind::Build).await;
        let tag = format!("r/{pipeline}:1");
        store
            .finish_run(
                run,
                &RunResult::Succeeded {
                    image: format!("r/{pipeline}"),
                    tags: vec![tag],
                    digest: digest.to_string(),
                    images: Default::default(),
                },
            )
            .await
            .unwrap();
        let deployment = store
            .start_deployment(&NewDeployment {
                pipeline,
                run: None,
                kind: RunKind::Deploy,
                image: &format!("r/{pipeline}@{digest}"),
                digest,
                commit: None,
                images: &Default::default(),
            })
            .await
            .unwrap();
        store
            .record_instance(deployment, &record("web", Some(digest)))
            .await
            .unwrap();
    }
    store.pin("q", "sha256:2", "rolled back").await.unwrap();
    let lease = Duration::from_secs(60);
    assert!(
        store
            .acquire_lease("p", "me", lease)
            .await
            .unwrap()
            .is_none()
    );

    let digests = store.recorded_digests_by_pipeline(None).await.unwrap();
    assert_eq!(digests.len(), 2);
    assert_eq!(digests["p"]["web"], "sha256:1");
    assert_eq!(digests["q"]["web"], "sha256:2");
    assert_eq!(digests["q"], store.recorded_digests("q").await.unwrap());
    let tags = store.tags_by_pipeline(None).await.unwrap();
    assert_eq!(tags["p"]["sha256:1"], vec!["r/p:1".to_string()]);
    assert_eq!(tags["q"]["sha256:2"], vec!["r/q:1".to_string()]);
    assert_eq!(tags["p"], store.tags_by_digest("p").await.unwrap());
    let only_q = store.tags_by_pipeline(Some("q")).await.unwrap();
    assert_eq!(only_q.keys().collect::<Vec<_>>(), ["q"]);
    let pins = store.pins().await.unwrap();
    assert_eq!(pins.keys().collect::<Vec<_>>(), ["q"]);
    assert_eq!(pins["q"].digest, "sha256:2");
    let leases = store.leases().await.unwrap();
    assert_eq!(leases.keys().collect::<Vec<_>>(), ["p"]);
    assert_eq!(leases["p"].owner, "me");
}

async fn only_runs_the_daemon_took_are_recovered_after_a_crash(backend: Backend) {
    let (_state, store) = Store::temporary_on(backend).await;
    // A `gantry run` in the foreground of another process.
    let foreground = store.manual_run("p", RunKind::Run).await;
    let queued = store
        .queue_run(
            "p",
            RunKind::Deploy,
            &Trigger::Api,
            Some("r/x:1"),
            None,
            crate::store::no_answer(),
        )
        .await
        .unwrap()
        .unwrap();
    let taken = store.take_queued("p", "r1").await.unwrap().unwrap();
    assert_eq!((taken.run, taken.kind), (queued, RunKind::Deploy));
    let recovered = store.interrupt_running(Interrupted::All).await.unwrap();
    assert_eq!(recovered.len(), 1);
    assert_eq!(recovered[0].run, queued);
    assert_eq!(recovered[0].kind, RunKind::Deploy);
    assert_eq!(recovered[0].requested.as_deref(), Some("r/x:1"));
    let runs = store.runs(Some("p"), 10).await.unwrap();
    let state_of = |id: i64| runs.iter().find(|run| run.id == id).unwrap().state;
    assert_eq!(state_of(foreground.id), RunState::Running);
    assert_eq!(state_of(queued.id), RunState::Interrupted);
}

async fn runs_page_by_pipeline_and_state_from_before(backend: Backend) {
    let (_state, store) = Store::temporary_on(backend).await;
    let mut web = Vec::new();
    for index in 0..7 {
        let run = store.manual_run("web", RunKind::Run).await;
        store.manual_run("db", RunKind::Run).await;
        if index % 2 == 0 {
            store.end_run(run, RunState::Skipped, "").await.unwrap();
        }
        web.push(run.id);
    }
    let ids = |runs: Vec<RunRecord>| runs.iter().map(|run| run.id).collect::<Vec<_>>();
    let first = store.runs_page(Some("web"), None, None, 3).await.unwrap();
    assert_eq!(ids(first.clone()), [web[6], web[5], web[4]]);
    let next = store
        .runs_page(Some("web"), None, Some(first[2].id), 3)
        .await
        .unwrap();
    assert_eq!(ids(next), [web[3], web[2], web[1]]);
    let skipped = store
        .runs_page(Some("web"), Some(RunState::Skipped), Some(web[6]), 10)
        .await
        .unwrap();
    assert_eq!(ids(skipped), [web[4], web[2], web[0]]);
    let all = store.runs_page(None, None, None, 100).await.unwrap();
    assert_eq!(all.len(), 14);
    assert!(all.windows(2).all(|pair| pair[0].id > pair[1].id));
    let before = store
        .runs_page(None, None, Some(web[1]), 100)
        .await
        .unwrap();
    assert_eq!(ids(before).len(), 2, "web[0] and db's first");
    assert_eq!(store.last_finished_at(Some("db")).await.unwrap(), None);
}

#[tokio::test]
async fn a_damaged_database_is_said_to_be_damaged_not_an_internal_error() {
    let (dir, store) = Store::temporary().await;
    for _ in 0..200 {
        store.manual_run("web", RunKind::Build).await;
    }
    sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
        .execute(&store.pool)
        .await
        .unwrap();
    // Every page past the schema's turned to noise under the open store, as a failing
    // disk might leave them.
    let file = dir.path().join(DATABASE_FILE);
    let mut bytes = std::fs::read(&file).unwrap();
    let page = 4096;
    for byte in &mut bytes[8 * page..] {
        *byte = 0xA5;
    }
    std::fs::write(&file, bytes).unwrap();

    let error = store
        .runs_page(None, None, None, 500)
        .await
        .map(|_| ())
        .unwrap_err();
    assert_eq!(
        error.unwritable(),
        Some("the state database is damaged; restore it from a backup"),
        "{error}"
    );
}

#[tokio::test]
async fn a_database_from_a_newer_gantry_is_refused_and_left_as_it_was() {
    let (dir, store) = Store::temporary().await;
    store.manual_run("web", RunKind::Build).await;
    let newer = newest_migration() + 1;
    sqlx::query(
        "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) \
         VALUES (?, 'from a newer gantry', TRUE, X'00', 0)",
    )
    .bind(newer)
    .execute(&store.pool)
    .await
    .unwrap();
    store.close().await;
    let before = std::fs::read(dir.path().join(DATABASE_FILE)).unwrap();

    let refused = Store::open(&Location::Directory(dir.path().to_path_buf()))
        .await
        .unwrap_err();
    match &refused {
        StoreError::NewerSchema { found, known, .. } => {
            assert_eq!((*found, *known), (newer, newest_migration()));
        }
        other => panic!("not NewerSchema: {other}"),
    }
    assert!(
        refused.to_string().contains("from a newer gantry"),
        "{refused}"
    );
    assert_eq!(
        std::fs::read(dir.path().join(DATABASE_FILE)).unwrap(),
        before
    );
}

async fn a_run_is_taken_by_one_replica_and_recovered_once_its_replica_is_dead(backend: Backend) {
    let (_state, store) = Store::temporary_on(backend).await;
    let queue = async |pipeline: &str| {
        store
            .queue_run(
                pipeline,
                RunKind::Run,
                &Trigger::Api,
                Some("main"),
                None,
                crate::store::no_answer(),
            )
            .await
            .unwrap()
            .unwrap()
    };
    let first = queue("p").await;
    store
        .renew_replica("a", Duration::from_secs(60))
        .await
        .unwrap();
    store
        .renew_replica("b", Duration::from_millis(1))
        .await
        .unwrap();
    let taken = store.take_queued("p", "b").await.unwrap().unwrap();
    assert_eq!(taken.run, first);
    // While b runs p, nobody takes p's next run, not even b.
    let second = queue("p").await;
    assert!(store.take_queued("p", "a").await.unwrap().is_none());
    assert!(store.take_queued("p", "b").await.unwrap().is_none());
    // Another pipeline is free.
    let other = queue("q").await;
    assert_eq!(
        store.take_queued("q", "a").await.unwrap().unwrap().run,
        other
    );

    // a lives, b's row expired: b's run is recovered, once; a's is left alone.
    tokio::time::sleep(Duration::from_millis(5)).await;
    assert_eq!(store.live_replicas().await.unwrap(), ["a"]);
    let recovered = store
        .interrupt_running(Interrupted::OfDeadReplicas)
        .await
        .unwrap();
    assert_eq!(
        recovered.iter().map(|run| run.run).collect::<Vec<_>>(),
        [first]
    );
    let again = store
        .interrupt_running(Interrupted::OfDeadReplicas)
        .await
        .unwrap();
    assert!(again.is_empty());
    // p is free again: its queued run is taken.
    assert_eq!(
        store.take_queued("p", "a").await.unwrap().unwrap().run,
        second
    );
    // At a's shutdown, its own runs are interrupted and nobody else's.
    let mine = store.interrupt_running(Interrupted::Of("a")).await.unwrap();
    let mut mine: Vec<i64> = mine.iter().map(|run| run.run.id).collect();
    mine.sort();
    assert_eq!(mine, [second.id, other.id]);
}

async fn deliveries_queued_at_once_are_each_stored_once_and_numbered_in_turn(backend: Backend) {
    let (_state, store) = Store::temporary_on(backend).await;
    // 120 deliveries at once, each sent twice: 120 runs, and each second send gets the
    // first answer (on PostgreSQL, sends are committed together; see `store::group`).
    let ids: Vec<String> = (0..120).map(|index| format!("d-{index}")).collect();
    let sends = ids.iter().chain(&ids).map(|id| {
        let store = store.clone();
        async move {
            let key = DeliveryKey {
                forge: "github",
                id,
                body_sha256: "ab",
            };
            let answer: Answer = std::sync::Arc::new(|run: crate::run::RunId| run.id.to_string());
            let queued = store
                .queue_run(
                    "p",
                    RunKind::Run,
                    &Trigger::Api,
                    Some("c"),
                    Some(key),
                    answer,
                )
                .await
                .unwrap();
            (id.clone(), queued)
        }
    });
    let outcomes = futures_util::future::join_all(sends).await;
    let mut runs = std::collections::BTreeMap::new();
    for (id, queued) in &outcomes {
        let run = match queued {
            Ok(run) => run.id,
            Err(first) => first.response.parse().unwrap(),
        };
        assert_eq!(*runs.entry(id.clone()).or_insert(run), run, "{id}");
    }
    assert_eq!(runs.len(), 120);
    let new: usize = outcomes.iter().filter(|(_, queued)| queued.is_ok()).count();
    assert_eq!(new, 120, "each delivery queued once");
    let mut numbers: Vec<i64> = store
        .runs(Some("p"), 1000)
        .await
        .unwrap()
        .iter()
        .map(|run| run.number)
        .collect();
    numbers.sort();
    assert_eq!(numbers, (1..=120).collect::<Vec<i64>>());
}

/// Each table of the state (sqlx's own left out) with its indexes, each with its
/// columns in order.
async fn indexes_by_table(store: &Store) -> Vec<(String, Vec<(String, Vec<String>)>)> {
    let pragma = |sql: String| sqlx::query(sqlx::AssertSqlSafe(sql)).fetch_all(&store.pool);
    let tables: Vec<String> =
        sqlx::query_scalar("SELECT name FROM sqlite_master WHERE type = 'table'")
            .fetch_all(&store.pool)
            .await
            .unwrap();
    let mut found = Vec::new();
    for table in tables
        .into_iter()
        .filter(|table| !table.starts_with("_sqlx"))
    {
        let mut indexes = Vec::new();
        for index in pragma(format!("PRAGMA index_list({table})")).await.unwrap() {
            let name: String = index.get("name");
            let columns: Vec<String> = pragma(format!("PRAGMA index_info({name})"))
                .await
                .unwrap()
                .iter()
                .map(|column| column.get("name"))
                .collect();
            indexes.push((name, columns));
        }
        found.push((table, indexes));
    }
    found
}

/// Deleting a run (pruning) updates every row that points at it; each such column
/// has an index that starts with it, or each deleted run reads the whole table.
#[tokio::test]
async fn every_column_that_points_at_another_table_is_indexed() {
    let (_dir, store) = Store::temporary().await;
    let mut unindexed = Vec::new();
    for (table, indexes) in indexes_by_table(&store).await {
        let pointing: Vec<String> = sqlx::query(sqlx::AssertSqlSafe(format!(
            "PRAGMA foreign_key_list({table})"
        )))
        .fetch_all(&store.pool)
        .await
        .unwrap()
        .iter()
        .map(|row| row.get("from"))
        .collect();
        for column in pointing {
            if !indexes
                .iter()
                .any(|(_, columns)| columns.first() == Some(&column))
            {
                unindexed.push(format!("{table}.{column}"));
            }
        }
    }
    assert!(unindexed.is_empty(), "no index starts with {unindexed:?}");
}

/// Every index is written at each insert: none repeats another's columns, and the run
/// numbers intake reads for each group come from the end of one, not a scan.
#[tokio::test]
async fn no_index_repeats_another_and_the_last_run_number_is_read_from_one() {
    let (_dir, store) = Store::temporary().await;
    for (table, indexes) in indexes_by_table(&store).await {
        for (at, (name, columns)) in indexes.iter().enumerate() {
            if let Some((other, _)) = indexes[..at].iter().find(|(_, known)| known == columns) {
                panic!("{table}: index {name} repeats {other} ({columns:?})");
            }
        }
    }
    let plan: Vec<String> =
        sqlx::query("EXPLAIN QUERY PLAN SELECT MAX(number) FROM runs WHERE pipeline = 'p'")
            .fetch_all(&store.pool)
            .await
            .unwrap()
            .iter()
            .map(|row| row.get("detail"))
            .collect();
    assert!(
        plan.iter()
            .all(|step| step.contains("USING COVERING INDEX")),
        "{plan:?}"
    );
}

async fn work_on_timers_shares_the_state_through_one_connection_of_its_own(backend: Backend) {
    let (_state, store) = Store::temporary_on(backend).await;
    let timed = store.on_timers();
    store.manual_run("a", RunKind::Build).await;
    let opened = store.pool.size();
    let pipelines = |runs: Vec<RunRecord>| -> Vec<String> {
        runs.into_iter().map(|run| run.pipeline).collect()
    };
    // Readers on a timer at once: they take turns on the one connection.
    let reads = futures_util::future::join_all((0..4).map(|_| timed.runs(None, 10))).await;
    for read in reads {
        assert_eq!(pipelines(read.unwrap()), ["a"]);
    }
    assert_eq!(timed.pool.size(), 1);
    assert_eq!(
        store.pool.size(),
        opened,
        "the shared pool opened no connection"
    );
    // What it writes, the shared pool reads.
    timed.manual_run("b", RunKind::Build).await;
    assert_eq!(pipelines(store.runs(None, 10).await.unwrap()), ["b", "a"]);
}

async fn pruning_keeps_the_newest_runs_and_every_queued_or_running_one(backend: Backend) {
    let (_state, store) = Store::temporary_on(backend).await;
    let mut runs = Vec::new();
    for _ in 0..6 {
        runs.push(store.manual_run("p", RunKind::Build).await);
    }
    let other = store.manual_run("q", RunKind::Build).await;
    // The oldest run still runs, the next one waits; the others and `q`'s ended.
    for run in runs[2..].iter().chain([&other]) {
        store.end_run(*run, RunState::Succeeded, "").await.unwrap();
    }
    sqlx::query("UPDATE runs SET state = 'queued' WHERE id = $1")
        .bind(runs[1].id)
        .execute(&store.pool)
        .await
        .unwrap();
    let numbers = async |pipeline| -> Vec<i64> {
        let runs = store.runs(Some(pipeline), 10).await.unwrap();
        runs.into_iter().map(|run| run.number).collect()
    };
    assert_eq!(store.prune_runs("p", 6).await.unwrap(), 0);
    assert_eq!(store.prune_runs("p", 2).await.unwrap(), 2);
    assert_eq!(numbers("p").await, [6, 5, 2, 1]);
    assert_eq!(numbers("q").await, [1]);
}

/// Pruning with nothing to prune writes nothing, so it never waits for the write lock
/// (a run's end prunes while a flood of deliveries holds it in turn).
#[tokio::test]
async fn pruning_nothing_does_not_wait_for_another_writer() {
    let (_dir, store) = Store::temporary().await;
    let run = store.manual_run("p", RunKind::Build).await;
    store.end_run(run, RunState::Succeeded, "").await.unwrap();
    let mut writer = store.pool.acquire().await.unwrap();
    sqlx::query("BEGIN IMMEDIATE")
        .execute(&mut *writer)
        .await
        .unwrap();
    let pruned = tokio::time::timeout(Duration::from_secs(2), store.prune_runs("p", 10)).await;
    assert_eq!(
        pruned
            .expect("pruned without waiting for the writer")
            .unwrap(),
        0
    );
    sqlx::query("ROLLBACK").execute(&mut *writer).await.unwrap();
}

/// Intake's SQLite connections have no busy timeout of their own: intake asks for the
/// lock again until the writer holding it is done, then queues.
#[tokio::test]
async fn intake_waits_for_the_writer_that_holds_the_lock_then_queues() {
    let (_dir, store) = Store::temporary().await;
    let mut writer = store.pool.acquire().await.unwrap();
    sqlx::query("BEGIN IMMEDIATE")
        .execute(&mut *writer)
        .await
        .unwrap();
    let release = async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        sqlx::query("ROLLBACK").execute(&mut *writer).await.unwrap();
    };
    let queue = store.queue_run(
        "p",
        RunKind::Run,
        &Trigger::Api,
        None,
        None,
        crate::store::no_answer(),
    );
    let (queued, ()) = tokio::join!(queue, release);
    let queued = queued.expect("queued once the lock was free").unwrap();
    let taken = store.take_queued("p", "r1").await.unwrap().unwrap();
    assert_eq!(taken.run, queued);
}

/// Stages are read for many runs at once (`STAGES_AT_ONCE` to a query): each run gets
/// its own, in order, on both sides of a query's edge.
async fn a_list_of_runs_gives_each_run_its_own_stages_in_order(backend: Backend) {
    let (_state, store) = Store::temporary_on(backend).await;
    let mut runs = Vec::new();
    for _ in 0..503 {
        runs.push(store.manual_run("p", RunKind::Build).await);
    }
    // Newest first in the list: the 500th listed is runs[3], the 501st runs[2].
    let staged = [0, 2, 3, 502];
    for (at, index) in staged.iter().enumerate() {
        for position in (0..=at as i64).rev() {
            let stage = FinishedStage {
                position,
                name: if position == 0 {
                    Stage::Checkout
                } else {
                    Stage::Build
                },
                outcome: Outcome::Succeeded,
                started_at: *index as i64,
                duration: Duration::from_millis(position as u64),
                message: None,
            };
            store.record_stage(runs[*index], &stage).await.unwrap();
        }
    }
    let listed = store.runs(Some("p"), 1000).await.unwrap();
    assert_eq!(listed.len(), 503);
    for run in &listed {
        let index = runs.iter().position(|id| id.id == run.id).unwrap();
        let expected = staged
            .iter()
            .position(|staged| *staged == index)
            .map_or(0, |at| at + 1);
        assert_eq!(run.stages.len(), expected, "run {index}");
        for (position, stage) in run.stages.iter().enumerate() {
            assert_eq!(
                stage.started_at, index as i64,
                "run {index}: its own stages"
            );
            assert_eq!(stage.duration_ms, position as i64, "run {index}: in order");
        }
    }
}
