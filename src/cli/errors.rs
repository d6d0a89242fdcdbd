//! How a command reports that it could not do its work: `error: MESSAGE` on stderr, or,
//! under `--json`, one JSON document on stdout, `{"error": {"message", "exit_code"}}`
//! (with `diagnostics` for a config that does not load), so a script reading stdout
//! always gets JSON. A command that ran and failed (a build, a deploy) prints its own
//! report instead, with its `failure`.

use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};

use serde_json::{Value, json};

/// Set once from `--json` (or from the raw arguments when they do not parse).
static JSON: AtomicBool = AtomicBool::new(false);

pub fn set_json(json: bool) {
    JSON.store(json, Ordering::Relaxed);
}

pub fn json_errors() -> bool {
    JSON.load(Ordering::Relaxed)
}

/// Reports `message` as the command's error and gives the exit code to end with.
pub fn fail(code: u8, message: impl std::fmt::Display) -> ExitCode {
    fail_with(code, &message.to_string(), None)
}

/// The same with extra fields for the JSON form (`diagnostics`).
pub fn fail_with(code: u8, message: &str, extra: Option<(&str, Value)>) -> ExitCode {
    if json_errors() {
        let mut error = json!({ "message": message, "exit_code": code });
        if let Some((key, value)) = extra {
            error[key] = value;
        }
        println!("{}", json!({ "error": error }));
    } else {
        // A message may carry text from outside (a daemon's answer, git's error).
        eprintln!("error: {}", super::printable::printable(message));
    }
    ExitCode::from(code)
}

/// `--json` among arguments clap could not parse (before `--`): their error is JSON too.
pub fn asked_for_json(arguments: &[std::ffi::OsString]) -> bool {
    arguments
        .iter()
        .skip(1)
        .take_while(|argument| *argument != "--")
        .any(|argument| argument == "--json")
}
