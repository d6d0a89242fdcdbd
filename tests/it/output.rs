//! How gantry writes: a command whose stdout goes away (`gantry runs | head`, a full
//! disk) ends with a clear exit, not a panic; on a terminal, `NO_COLOR` leaves out
//! every escape sequence.

use std::io::Read;
use std::os::fd::FromRawFd;
use std::process::{Command, Stdio};

use crate::common::*;

#[test]
fn a_closed_pipe_or_a_full_disk_on_stdout_ends_the_command_without_a_panic() {
    let config = ConfigDir::new();
    // A pipe whose reading end is closed before gantry writes: its first line fails.
    let mut ends = [0; 2];
    // SAFETY: `ends` has room for the two descriptors pipe(2) fills in.
    assert_eq!(unsafe { libc::pipe(ends.as_mut_ptr()) }, 0);
    // SAFETY: both descriptors were just made and are owned here, once each.
    let (reader, writer) = unsafe {
        (
            std::fs::File::from_raw_fd(ends[0]),
            std::fs::File::from_raw_fd(ends[1]),
        )
    };
    drop(reader);
    let output = config
        .command(&["runs"])
        .stdout(Stdio::from(writer))
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(141), "{}", stderr(&output));
    assert!(!stderr(&output).contains("panicked"), "{}", stderr(&output));

    let full = std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/full")
        .unwrap();
    let output = config
        .command(&["runs"])
        .stdout(Stdio::from(full))
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    assert_eq!(
        stderr(&output).trim(),
        "error: cannot write to stdout: No space left on device (os error 28)"
    );

    // The same on stderr (`gantry validate 2>&1 | head -c 100`): there is nowhere to say
    // anything, and the exit status says what happened.
    config.write("pipelines/broken.yaml", "source: [\n");
    let closed_pipe = || {
        let mut ends = [0; 2];
        // SAFETY: as above.
        assert_eq!(unsafe { libc::pipe(ends.as_mut_ptr()) }, 0);
        // SAFETY: as above; the reading end is closed at once.
        unsafe {
            drop(std::fs::File::from_raw_fd(ends[0]));
            std::fs::File::from_raw_fd(ends[1])
        }
    };
    let output = config
        .command(&["validate"])
        .stdout(Stdio::null())
        .stderr(Stdio::from(closed_pipe()))
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(141));
    let full = std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/full")
        .unwrap();
    let output = config
        .command(&["validate"])
        .stdout(Stdio::null())
        .stderr(Stdio::from(full))
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
}

#[test]
fn completions_and_the_man_page_come_from_the_command_definitions() {
    let gantry = |arguments: &[&str]| {
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_gantry"))
            .args(arguments)
            // Neither needs a config, a daemon or an engine.
            .env("GANTRY_CONFIG", "/nonexistent/gantry-config")
            .env("GANTRY_SERVER", "http://127.0.0.1:9")
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "{arguments:?}: {}",
            stderr(&output)
        );
        stdout(&output)
    };
    let commands = [
        "validate", "deploy", "rollback", "status", "serve", "task", "prune",
    ];
    let bash = gantry(&["completions", "bash"]);
    let checked = std::process::Command::new("bash")
        .args(["-n", "-c", &bash])
        .output()
        .unwrap();
    assert!(checked.status.success(), "{}", stderr(&checked));
    let zsh = gantry(&["completions", "zsh"]);
    assert!(zsh.starts_with("#compdef gantry"), "{zsh}");
    let fish = gantry(&["completions", "fish"]);
    assert!(fish.contains("complete -c gantry"), "{fish}");
    for script in [&bash, &zsh, &fish] {
        for command in commands {
            assert!(script.contains(command), "{command} missing");
        }
    }
    let man = gantry(&["man"]);
    assert!(man.contains(".TH gantry 1"), "{man}");
    for command in commands {
        assert!(
            man.contains(&format!("gantry\\-{command}")),
            "{command} missing from the man page"
        );
    }
    let refused = std::process::Command::new(env!("CARGO_BIN_EXE_gantry"))
        .args(["completions", "tcsh"])
        .output()
        .unwrap();
    assert_eq!(refused.status.code(), Some(2));
    assert!(stderr(&refused).contains("possible values: bash, zsh, fish"));
}

#[test]
fn gantry_server_in_the_environment_leaves_local_commands_local_and_no_flag_is_dropped() {
    let config = ConfigDir::new();
    // Nothing listens on the discard port: a command sent there would fail.
    let daemon = "http://127.0.0.1:9";
    let output = config
        .command(&["validate"])
        .env("GANTRY_SERVER", daemon)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    assert!(
        stdout(&output).starts_with("config OK: "),
        "{}",
        stdout(&output)
    );

    // Named on the command line, --server is refused for a command the daemon cannot do.
    let output = config
        .command(&["--server", daemon, "validate"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(
        stderr(&output).contains("run this command where the config is, without --server"),
        "{}",
        stderr(&output)
    );

    // A flag the daemon's API does not take is refused, not dropped.
    for (arguments, flag) in [
        (vec!["deploy", "hello", "--force"], "deploy --force"),
        (vec!["deploy", "hello", "--only", "web-*"], "deploy --only"),
        (vec!["rollback", "hello", "--wait"], "rollback --wait"),
        (vec!["status", "--logs", "5"], "status --logs"),
    ] {
        let mut full = vec!["--server", daemon];
        full.extend(arguments);
        let output = config.command(&full).output().unwrap();
        assert_eq!(
            output.status.code(),
            Some(2),
            "{full:?}: {}",
            stderr(&output)
        );
        assert!(
            stderr(&output).contains(&format!("`{flag}` is not available with --server")),
            "{full:?}: {}",
            stderr(&output)
        );
    }

    // An empty GANTRY_SERVER names no daemon: `runs` reads the local history.
    let output = config
        .command(&["runs"])
        .env("GANTRY_SERVER", "")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));

    // An address that is not a daemon's URL, or holds credentials, is refused before
    // anything is sent, and the credentials are not quoted back.
    for (server, says) in [
        ("nowhere", "is not a URL"),
        ("ftp://127.0.0.1:9", "is not an http:// or https:// address"),
        ("http://user:s3cret-pw@127.0.0.1:9", "holds credentials"),
        (
            "user:s3cret-pw@127.0.0.1:9",
            "is not an http:// or https:// address",
        ),
        ("http:user:s3cret-pw@127.0.0.1:9", "holds credentials"),
        ("http://user:s3cret/pw@127.0.0.1:9", "is not a URL"),
    ] {
        let output = config
            .command(&["--server", server, "runs"])
            .output()
            .unwrap();
        assert_eq!(
            output.status.code(),
            Some(2),
            "{server}: {}",
            stderr(&output)
        );
        assert!(
            stderr(&output).contains(says),
            "{server}: {}",
            stderr(&output)
        );
        assert!(
            !stderr(&output).contains("s3cret-pw"),
            "{}",
            stderr(&output)
        );
    }
}

/// Runs `gantry --config DIR ARGS` with stdout and stderr on a new pseudo-terminal, as
/// at a person's terminal; returns all it wrote there and its exit code. A command that
/// does not end by itself (`serve`) gets SIGTERM once it has written `stop_after`.
fn on_terminal(
    config: &ConfigDir,
    arguments: &[&str],
    no_color: &str,
    stop_after: Option<&str>,
) -> (String, Option<i32>) {
    let (mut controller, mut terminal) = (0, 0);
    // SAFETY: openpty(3) fills in the two descriptors; the name, settings and window
    // size may be null.
    let made = unsafe {
        libc::openpty(
            &mut controller,
            &mut terminal,
            std::ptr::null_mut(),
            std::ptr::null(),
            std::ptr::null(),
        )
    };
    assert_eq!(made, 0, "openpty: {}", std::io::Error::last_os_error());
    // SAFETY: both descriptors were just made and are owned here, once each.
    let (mut controller, terminal) = unsafe {
        (
            std::fs::File::from_raw_fd(controller),
            std::fs::File::from_raw_fd(terminal),
        )
    };
    let mut child = {
        // The command holds its copies of the terminal until it drops: then only the
        // child has it open, and reading ends when the child exits.
        let mut command = config.command(arguments);
        command
            .env("TERM", "xterm-256color")
            .env("NO_COLOR", no_color)
            .env("GANTRY_LOG", "info")
            .env_remove("CLICOLOR")
            .env_remove("CLICOLOR_FORCE")
            .stdin(Stdio::null())
            .stdout(terminal.try_clone().unwrap())
            .stderr(terminal);
        command.spawn().unwrap()
    };
    let mut stop_after = stop_after;
    let mut written = Vec::new();
    let mut buffer = [0; 4096];
    loop {
        match controller.read(&mut buffer) {
            Ok(0) => break,
            Ok(count) => {
                written.extend_from_slice(&buffer[..count]);
                if let Some(mark) = stop_after
                    && String::from_utf8_lossy(&written).contains(mark)
                    && child.try_wait().unwrap().is_none()
                {
                    run(Command::new("kill").args(["-TERM", &child.id().to_string()]));
                    stop_after = None;
                }
            }
            // Linux answers EIO once no process has the terminal open any more.
            Err(error) if error.raw_os_error() == Some(libc::EIO) => break,
            Err(error) => panic!("reading the terminal: {error}"),
        }
    }
    let status = child.wait().unwrap();
    (
        String::from_utf8_lossy(&written).into_owned(),
        status.code(),
    )
}

#[test]
fn no_color_leaves_every_escape_sequence_out_of_what_gantry_writes_to_a_terminal() {
    let mut config = ConfigDir::new();
    let name = unique("nocolor");
    config.pipeline(
        &name,
        &format!("file:///nonexistent/{name}"),
        &format!("{}/{name}", registry()),
        &["x"],
    );
    // The help, a usage error, a build that fails at its checkout (progress and the
    // error), and the daemon's log lines until it has served and is stopped.
    let listen = format!("127.0.0.1:{}", free_port());
    let cases: [(&[&str], Option<&str>); 4] = [
        (&["--help"], None),
        (&["build"], None),
        (&["build", &name], None),
        (&["serve", "--listen", &listen], Some("gantry::daemon")),
    ];
    // An empty NO_COLOR counts as unset: on this terminal the help, the usage error
    // and the daemon's log are in colour, and the build shows a spinner, not lines.
    let coloured: Vec<_> = cases
        .iter()
        .map(|(arguments, stop_after)| on_terminal(&config, arguments, "", *stop_after))
        .collect();
    for index in [0, 1, 3] {
        let (written, _) = &coloured[index];
        assert!(
            written.contains('\x1b'),
            "{:?} has no colour: {written:?}",
            cases[index].0
        );
    }
    assert!(
        !coloured[2].0.contains("[checkout] started"),
        "{:?}",
        coloured[2].0
    );

    let plain: Vec<_> = cases
        .iter()
        .map(|(arguments, stop_after)| on_terminal(&config, arguments, "1", *stop_after))
        .collect();
    for ((arguments, _), ((written, code), (coloured, coloured_code))) in
        cases.iter().zip(plain.iter().zip(&coloured))
    {
        assert!(
            !written.contains('\x1b'),
            "{arguments:?} with NO_COLOR: {written:?}"
        );
        assert_eq!(code, coloured_code, "{arguments:?}: {written}\n{coloured}");
    }
    let [help, _, build, serve] = &plain[..] else {
        unreachable!("four cases")
    };
    assert_eq!(help.1, Some(0), "{}", help.0);
    assert!(help.0.contains("Usage: gantry"), "{}", help.0);
    assert_eq!(build.1, Some(1), "{}", build.0);
    assert!(build.0.contains("[checkout] started"), "{}", build.0);
    assert!(build.0.contains("failed at checkout"), "{}", build.0);
    assert_eq!(serve.1, Some(0), "{}", serve.0);
    assert!(
        serve.0.contains(" INFO gantry::daemon: serving"),
        "{}",
        serve.0
    );
}

/// stdout of a `--json` command that failed: one JSON document, with the error's
/// message and exit code (or, for work that ran and failed, its report).
fn json_error(config: &ConfigDir, arguments: &[&str], code: i32) -> serde_json::Value {
    let output = config.gantry(arguments);
    assert_eq!(
        output.status.code(),
        Some(code),
        "{arguments:?}: {}",
        stderr(&output)
    );
    let text = stdout(&output);
    let value: serde_json::Value = serde_json::from_str(&text)
        .unwrap_or_else(|error| panic!("{arguments:?}: stdout is not JSON ({error}): {text:?}"));
    assert_eq!(value["error"]["exit_code"], code, "{arguments:?}: {value}");
    assert!(
        !value["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .is_empty(),
        "{arguments:?}: {value}"
    );
    value
}

#[test]
fn with_json_every_command_reports_its_error_as_json_on_stdout() {
    let mut config = ConfigDir::new();
    let repo = Repo::from_fixture();
    config.pipeline(
        "app",
        &repo.url(),
        &format!("{}/gantry-it/json-errors", registry()),
        &["latest"],
    );
    config.append(
        "pipelines/app.yaml",
        "deploy:\n  services:\n    web:\n      instances: { json-errors-web: {} }\n",
    );
    let existing = config.path().join("existing.db");
    std::fs::write(&existing, "x").unwrap();
    let existing = existing.to_string_lossy().into_owned();
    // Usage: an unknown pipeline, run, task or flag value, for every command that names one.
    for arguments in [
        vec!["build", "nope"],
        vec!["run", "nope"],
        vec!["deploy", "nope"],
        vec!["deploy", "app", "--only", "["],
        vec!["rollback", "nope"],
        vec!["pin", "nope", "--reason", "x"],
        vec!["unpin", "nope"],
        vec!["status", "nope"],
        vec!["stop", "nope"],
        vec!["start", "nope"],
        vec!["restart", "nope"],
        vec!["prune", "nope"],
        vec!["task", "app", "nope"],
        vec!["trigger", "nope"],
        vec!["logs", "app#99"],
        vec!["serve", "--listen", "nowhere"],
        vec!["state", "backup", &existing],
        // Arguments that do not parse.
        vec!["deploy"],
        vec!["no-such-command"],
        vec!["hosts", "--server", "http://127.0.0.1:9"],
    ] {
        let mut with_json = vec!["--json"];
        with_json.extend(&arguments);
        json_error(&config, &with_json, 2);
    }
    let message = json_error(&config, &["--json", "build", "nope"], 2);
    assert!(
        message["error"]["message"]
            .as_str()
            .unwrap()
            .contains("no pipeline `nope`"),
        "{message}"
    );
    // An argument clap finds missing is named, as clap's own message names it.
    let missing = json_error(&config, &["--json", "deploy"], 2);
    assert_eq!(
        missing["error"]["message"],
        "the following required arguments were not provided: <PIPELINE>",
        "{missing}"
    );
    // Failures of the work itself: a daemon that does not answer.
    json_error(
        &config,
        &["--json", "--server", "http://127.0.0.1:9", "status"],
        1,
    );
    // A config that does not load: every diagnostic, as printed.
    config.write("pipelines/broken.yaml", "source: [\n");
    let broken = json_error(&config, &["--json", "hosts"], 2);
    let diagnostics = broken["error"]["diagnostics"].as_array().unwrap();
    assert!(
        diagnostics[0].as_str().unwrap().contains("broken.yaml:"),
        "{broken}"
    );
    // Without --json, errors stay on stderr and stdout stays empty.
    let output = config.gantry(&["build", "nope"]);
    assert_eq!(output.status.code(), Some(2));
    assert!(stdout(&output).is_empty());
    assert!(stderr(&output).contains("error: "), "{}", stderr(&output));
}
