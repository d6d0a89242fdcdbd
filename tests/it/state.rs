//! The state database looked after by hand: `gantry state backup` while the daemon
//! runs, and what a gantry does with a database a newer gantry wrote.

use std::time::Duration;

use crate::common::*;

/// A config whose pipeline's repository does not exist: every run fails at once at
/// its checkout, which is all these tests need of a run.
fn config_with_failing_pipeline() -> (ConfigDir, String) {
    let mut config = ConfigDir::new();
    let name = unique("state");
    let missing = format!("file:///nonexistent/{name}");
    config.pipeline(&name, &missing, &format!("{}/{name}", registry()), &["x"]);
    (config, name)
}

fn run_ids(runs: &serde_json::Value) -> Vec<i64> {
    runs.as_array()
        .unwrap()
        .iter()
        .map(|run| run["id"].as_i64().unwrap())
        .collect()
}

#[test]
fn state_backup_copies_the_database_while_the_daemon_runs() {
    let (config, name) = config_with_failing_pipeline();
    let daemon = Daemon::start(&config);
    // One at a time: triggers that wait together coalesce into one run.
    let mut runs = serde_json::Value::Null;
    for count in 1..=3 {
        let output = config.gantry(&["trigger", &name]);
        assert!(output.status.success(), "{}", stderr(&output));
        runs = eventually("the run ends", Duration::from_secs(30), || {
            let (_, runs) = config.gantry_json(&["runs", &name]);
            let ended = runs
                .as_array()
                .unwrap()
                .iter()
                .filter(|run| run["state"] == "failed")
                .count();
            if ended == count {
                Ok(runs)
            } else {
                Err(format!("{runs}\n{}", daemon.log()))
            }
        });
    }

    // The daemon keeps writing while the copy is taken: a fourth run is queued and
    // run meanwhile.
    let target = tempfile::tempdir().unwrap();
    let file = target.path().join("state.db");
    let mut trigger = config.command(&["trigger", &name]).spawn().unwrap();
    let (output, backup) = config.gantry_json(&["state", "backup", file.to_str().unwrap()]);
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(trigger.wait().unwrap().success());
    assert_eq!(backup["file"], file.to_str().unwrap());
    assert_eq!(
        backup["source"],
        config.state_database().to_str().unwrap(),
        "{backup}"
    );
    assert_eq!(backup["bytes"], std::fs::metadata(&file).unwrap().len());
    assert!(backup["schema_version"].as_i64().unwrap() >= 6, "{backup}");

    // Read as another process would, the copy holds the three ended runs.
    let copied: Vec<i64> = with_database(&file, async |pool| {
        sqlx::query_scalar("SELECT id FROM runs WHERE state = 'failed'")
            .fetch_all(pool)
            .await
            .unwrap()
    });
    let expected = run_ids(&runs);
    assert_eq!(expected.len(), 3, "{runs}");
    for id in &expected {
        assert!(copied.contains(id), "run {id} not in the copy: {copied:?}");
    }

    // The copy is a state directory of its own: a config that points there lists them.
    let restored = ConfigDir::new();
    restored.write(
        "gantry.yaml",
        &format!("state: {}\n", target.path().display()),
    );
    let (output, listed) = restored.gantry_json(&["runs"]);
    assert!(output.status.success(), "{}", stderr(&output));
    for id in &expected {
        assert!(run_ids(&listed).contains(id), "run {id} not in {listed}");
    }

    // An existing file is left alone unless --force; then it is replaced.
    let before = std::fs::read(&file).unwrap();
    let output = config.gantry(&["state", "backup", file.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
    assert!(
        stderr(&output).contains("already exists; pass --force"),
        "{}",
        stderr(&output)
    );
    assert_eq!(std::fs::read(&file).unwrap(), before);
    let output = config.gantry(&["state", "backup", "--force", file.to_str().unwrap()]);
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(
        stdout(&output).starts_with("backed up "),
        "{}",
        stdout(&output)
    );

    // The live database is never the destination, even with --force.
    let live = config.state_database();
    let output = config.gantry(&["state", "backup", "--force", live.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
    assert!(
        stderr(&output).contains("is the state database itself"),
        "{}",
        stderr(&output)
    );
    let (output, listed) = config.gantry_json(&["runs", &name]);
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(listed.as_array().unwrap().len(), 4, "{listed}");

    // A directory that does not exist is the backup failing; no FILE is bad usage.
    let nowhere = target.path().join("missing/state.db");
    let output = config.gantry(&["state", "backup", nowhere.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    assert!(
        stderr(&output).contains("cannot write the backup"),
        "{}",
        stderr(&output)
    );
    let output = config.gantry(&["state", "backup"]);
    assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
    drop(daemon);
}

#[test]
fn a_database_from_a_newer_gantry_is_refused_by_commands_and_the_daemon() {
    let (config, name) = config_with_failing_pipeline();
    let output = config.gantry(&["trigger", &name]);
    assert!(output.status.success(), "{}", stderr(&output));
    let database = config.state_database();
    with_database(&database, async |pool| {
        sqlx::query(
            "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) \
             VALUES (99990101, 'from a newer gantry', TRUE, X'00', 0)",
        )
        .execute(pool)
        .await
        .unwrap();
    });
    let count_runs = || {
        with_database(&database, async |pool| {
            sqlx::query_scalar::<_, i64>("SELECT COUNT(*) FROM runs")
                .fetch_one(pool)
                .await
                .unwrap()
        })
    };
    assert_eq!(count_runs(), 1);

    for arguments in [
        vec!["runs"],
        vec!["trigger", name.as_str()],
        vec!["serve", "--listen", "127.0.0.1:0"],
    ] {
        let output = config.gantry(&arguments);
        let error = stderr(&output);
        assert_eq!(output.status.code(), Some(1), "{arguments:?}: {error}");
        assert!(
            error.contains("its schema is version 99990101, from a newer gantry"),
            "{arguments:?}: {error}"
        );
    }
    // Nothing was written: the run is still the only one.
    assert_eq!(count_runs(), 1);
    // A backup does not migrate, so it takes a newer database as it is.
    let target = tempfile::tempdir().unwrap();
    let file = target.path().join("newer.db");
    let (output, backup) = config.gantry_json(&["state", "backup", file.to_str().unwrap()]);
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(backup["schema_version"], 99990101);
}

#[test]
fn state_migrate_copies_a_sqlite_state_into_postgres_once() {
    let (config, name) = config_with_failing_pipeline();
    let daemon = Daemon::start(&config);
    for _ in 1..=2 {
        let output = config.gantry(&["trigger", &name]);
        assert!(output.status.success(), "{}", stderr(&output));
        eventually("the run ends", Duration::from_secs(30), || {
            let (_, runs) = config.gantry_json(&["runs", &name]);
            let ended = runs
                .as_array()
                .unwrap()
                .iter()
                .all(|run| run["state"] == "failed");
            if ended { Ok(()) } else { Err(runs.to_string()) }
        });
    }
    drop(daemon);
    let (_, before) = config.gantry_json(&["runs", &name]);
    assert_eq!(before.as_array().unwrap().len(), 2);

    // The same pipelines, their state now in PostgreSQL (the password from a variable).
    let schema = Schema::new();
    let moved = ConfigDir::new();
    std::fs::create_dir_all(moved.path().join("pipelines")).unwrap();
    let pipeline = format!("pipelines/{name}.yaml");
    std::fs::copy(config.path().join(&pipeline), moved.path().join(&pipeline)).unwrap();
    let url = schema.url();
    let (head, host) = url.split_once('@').unwrap();
    let (user, password) = head.rsplit_once(':').unwrap();
    moved.write(
        "gantry.yaml",
        &format!("state: \"{user}:${{PG_PASSWORD}}@{host}\"\n"),
    );
    let environment = [("PG_PASSWORD", password)];
    let from = config.path().join(".gantry");
    let from = from.to_str().unwrap();

    let migrate = |json: bool| {
        let mut arguments = vec!["state", "migrate", "--from", from];
        if json {
            arguments.insert(0, "--json");
        }
        moved.gantry_with(&arguments, &environment)
    };
    let output = migrate(true);
    assert!(output.status.success(), "{}", stderr(&output));
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(report["copied"]["runs"], 2, "{report}");
    assert!(
        report["copied"]["log_lines"].as_u64().unwrap() > 0,
        "{report}"
    );
    // The URL's password is never shown.
    let shown = String::from_utf8_lossy(&output.stdout);
    assert!(!shown.contains(password), "{shown}");
    assert!(report["to"].as_str().unwrap().contains(":***@"), "{report}");

    let runs = moved.gantry_with(&["--json", "runs", &name], &environment);
    assert!(runs.status.success(), "{}", stderr(&runs));
    let after: serde_json::Value = serde_json::from_slice(&runs.stdout).unwrap();
    let without_ids = |runs: &serde_json::Value| {
        let mut runs = runs.clone();
        for run in runs.as_array_mut().unwrap() {
            run["id"] = serde_json::Value::Null;
        }
        runs
    };
    assert_eq!(without_ids(&after), without_ids(&before));
    let logs = moved.gantry_with(&["logs", &format!("{name}#1")], &environment);
    assert!(logs.status.success(), "{}", stderr(&logs));
    assert!(!stdout(&logs).trim().is_empty());

    // Again: nothing twice.
    let output = migrate(false);
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(
        stdout(&output)
            .contains("copied 0 runs (0 log lines), 0 deliveries, 0 deployments and 0 pins"),
        "{}",
        stdout(&output)
    );
    let runs = moved.gantry_with(&["--json", "runs", &name], &environment);
    let again: serde_json::Value = serde_json::from_slice(&runs.stdout).unwrap();
    assert_eq!(again.as_array().unwrap().len(), 2);

    // Bad input: a directory with no state, a --to that is not a database.
    let nowhere = moved.gantry_with(
        &["state", "migrate", "--from", "/nonexistent"],
        &environment,
    );
    assert_eq!(nowhere.status.code(), Some(2), "{}", stderr(&nowhere));
    assert!(stderr(&nowhere).contains("there is no state database in /nonexistent"));
    let not_a_url = moved.gantry_with(
        &["state", "migrate", "--from", from, "--to", "mysql://x"],
        &environment,
    );
    assert_eq!(not_a_url.status.code(), Some(2), "{}", stderr(&not_a_url));
    assert!(stderr(&not_a_url).contains("--to must be a postgres:// URL"));
}

#[test]
fn a_state_that_cannot_be_read_or_moves_under_the_daemon_is_said_not_guessed() {
    // Commands that read history while the config is broken refuse a `state:` they
    // cannot read, rather than show the default directory's (another) history.
    let (config, name) = config_with_failing_pipeline();
    let good = std::fs::read_to_string(config.path().join("gantry.yaml")).unwrap_or_default();
    config.write("gantry.yaml", &format!("{good}state: \"postgres://\"\n"));
    for command in [
        vec!["runs"],
        vec!["logs", "x#1"],
        vec!["state", "backup", "copy.db"],
    ] {
        let output = config.gantry(&command);
        assert_eq!(
            output.status.code(),
            Some(2),
            "{command:?}: {}",
            stderr(&output)
        );
        assert!(
            stderr(&output).contains("gantry.yaml:")
                && stderr(&output).contains("not a valid postgres:// URL"),
            "{command:?}: {}",
            stderr(&output)
        );
    }
    assert!(
        !config.path().join(".gantry").exists(),
        "no default state was made"
    );
    config.write("gantry.yaml", &good);

    // A daemon keeps the store it opened: a `state:` edited while it runs is refused as
    // a config error that says so, until it is put back.
    let daemon = Daemon::start(&config);
    config.write("gantry.yaml", &format!("{good}state: elsewhere\n"));
    let health = eventually("the moved state shows", Duration::from_secs(20), || {
        let (_, body) = daemon.get("/healthz");
        let health: serde_json::Value = serde_json::from_str(&body).unwrap();
        match health["config_errors"][0].as_str() {
            Some(error) if error.contains("restart `gantry serve`") => Ok(error.to_string()),
            _ => Err(format!("{body}\n{}", daemon.log())),
        }
    });
    assert!(health.contains("elsewhere/state.db"), "{health}");
    assert!(health.contains(".gantry/state.db"), "{health}");
    config.write("gantry.yaml", &good);
    eventually(
        "the config is good again",
        Duration::from_secs(20),
        || match daemon.get("/healthz") {
            (200, body) if body.contains("\"status\":\"ok\"") => Ok(()),
            other => Err(format!("{other:?}")),
        },
    );
    let output = config.gantry(&["trigger", &name]);
    assert!(output.status.success(), "{}", stderr(&output));
}
