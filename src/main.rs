//! The `gantry` binary: parse the command line, start tracing and the runtime, report the one error.

use std::process::ExitCode;

use clap::Parser;
use gantry::cli::{self, Cli, EXIT_FAILED};

/// How long blocking work left over at exit may take to finish.
const RUNTIME_SHUTDOWN: std::time::Duration = std::time::Duration::from_secs(1);

fn main() -> ExitCode {
    let cli = Cli::parse();
    // The daemon tells what it does; one-shot commands speak through their progress.
    let default_level = if matches!(cli.command, cli::Command::Serve { .. }) {
        "info"
    } else {
        "warn"
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("GANTRY_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level)),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    // SAFETY: no other thread exists yet; libgit2's globals are set once, here.
    unsafe { gantry::source::bound_network_waits() };
    gantry::http::install_crypto();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the async runtime: {error}");
            return ExitCode::from(EXIT_FAILED);
        }
    };
    let code = match runtime.block_on(cli::run(cli)) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::from(EXIT_FAILED)
        }
    };
    // Work that is still going on a blocking thread (a git fetch stuck on a silent
    // remote) must not keep a finished command or a stopped daemon from exiting.
    runtime.shutdown_timeout(RUNTIME_SHUTDOWN);
    code
}
