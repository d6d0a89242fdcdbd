//! A command whose stdout goes away (`gantry runs | head`, a full disk) ends with a
//! clear exit, not a panic.

use std::os::fd::FromRawFd;
use std::process::Stdio;

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
}
