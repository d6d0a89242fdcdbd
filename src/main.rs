//! The `gantry` binary: parse the command line, start tracing and the runtime, report the one error.

use std::process::ExitCode;

use gantry::cli::{self, Cli, EXIT_FAILED};

/// The allocator on Linux: jemalloc, in place of the C library's `malloc` for the whole
/// process (libgit2, SQLite and OpenSSL allocate through it too). With glibc's malloc the
/// daemon's resident memory grew by about 4 KiB a run: freed blocks kept between live
/// ones in its arenas and per-thread caches (README, "Soak"). ARCHITECTURE.md, "Memory".
#[cfg(target_os = "linux")]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc's settings, read when it starts (before `main`); `MALLOC_CONF` in the
/// environment still overrides them. One arena and no per-thread caches: freed blocks
/// go back where their neighbours can merge with them, not to a cache of the thread
/// that freed them. Decay 0: pages no block uses any longer go back to the system at
/// once. With the caches on, or a decay other than 0, it still grew (README, "Soak").
/// The threads that answer requests turn a cache of their own on, and empty it when
/// they go idle; a flood of webhooks keeps freed pages until it ends
/// (`gantry::thread_cache`).
#[cfg(target_os = "linux")]
const ALLOCATOR_SETTINGS: &[u8] = b"narenas:1,tcache:false,dirty_decay_ms:0,muzzy_decay_ms:0\0";

/// jemalloc reads its settings from a C string named `malloc_conf` (a `const char *`):
/// this reference to the string's first byte is that pointer.
#[cfg(target_os = "linux")]
#[unsafe(export_name = "malloc_conf")]
static MALLOC_CONF: &u8 = &ALLOCATOR_SETTINGS[0];

/// How long blocking work left over at exit may take to finish.
const RUNTIME_SHUTDOWN: std::time::Duration = std::time::Duration::from_secs(1);

/// How long a thread of the runtime's blocking pool (git, files) waits for more work
/// before it ends. The pool wakes its longest-idle thread first, so every thread a burst
/// of runs started stays alive while the poller's listings (ten a second for a hundred
/// pipelines) come more often than this, each thread holding its stack; at half a second
/// the pool shrinks to the few the listings need (tokio's default is 10 s).
const BLOCKING_THREAD_KEEP_ALIVE: std::time::Duration = std::time::Duration::from_millis(500);

/// The Docker client's debug lines quote request bodies (container environments with
/// their secrets, registry credentials): they never reach gantry's log, whatever
/// `GANTRY_LOG` asks for.
const DOCKER_CLIENT_LEVEL: &str = "bollard=info";

/// `GANTRY_LOG` (or `default_level`), with the Docker client held at `DOCKER_CLIENT_LEVEL`.
fn log_filter(default_level: &str) -> tracing_subscriber::EnvFilter {
    let asked = std::env::var("GANTRY_LOG").unwrap_or_default();
    let mut directives: Vec<&str> = asked
        .split(',')
        .map(str::trim)
        .filter(|directive| !directive.is_empty() && !directive.starts_with("bollard"))
        .collect();
    if directives.is_empty() {
        directives.push(default_level);
    }
    directives.push(DOCKER_CLIENT_LEVEL);
    tracing_subscriber::EnvFilter::try_new(directives.join(",")).unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new(format!("{default_level},{DOCKER_CLIENT_LEVEL}"))
    })
}

/// Writing to stdout fails when its reader went away (`gantry runs | head`) or the disk
/// is full; the command ends there with a line on stderr, not a panic. A closed pipe
/// exits 141, as a shell reports a process that SIGPIPE ended. When stderr itself
/// fails (`gantry validate 2>&1 | head -c 100`) there is nowhere to say so: the exit
/// status alone tells.
fn end_quietly_when_output_fails() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let message = info.payload_as_str().unwrap_or_default();
        let (stream, reason) = match (
            message.strip_prefix("failed printing to stdout: "),
            message.strip_prefix("failed printing to stderr: "),
        ) {
            (Some(reason), _) => ("stdout", reason),
            (None, Some(reason)) => ("stderr", reason),
            (None, None) => return default(info),
        };
        if reason.starts_with("Broken pipe") {
            std::process::exit(141);
        }
        if stream == "stdout" {
            // `eprintln!` would panic again were stderr gone too.
            use std::io::Write;
            let _ = writeln!(std::io::stderr(), "error: cannot write to stdout: {reason}");
        }
        std::process::exit(i32::from(EXIT_FAILED));
    }));
}

fn main() -> ExitCode {
    end_quietly_when_output_fails();
    let cli = Cli::from_process();
    // The daemon tells what it does; one-shot commands speak through their progress.
    let default_level = if matches!(cli.command, cli::Command::Serve { .. }) {
        "info"
    } else {
        "warn"
    };
    tracing_subscriber::fmt()
        .with_env_filter(log_filter(default_level))
        .with_writer(std::io::stderr)
        // Set explicitly, tracing's colours would ignore `NO_COLOR`; this follows it.
        .with_ansi(cli::escapes_allowed(std::io::IsTerminal::is_terminal(
            &std::io::stderr(),
        )))
        .init();
    // SAFETY: no other thread exists yet; libgit2's globals are set once, here.
    unsafe { gantry::source::bound_network_waits() };
    gantry::http::install_crypto();
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    builder
        .enable_all()
        .thread_keep_alive(BLOCKING_THREAD_KEEP_ALIVE);
    // Only the workers park and unpark: blocking threads (a run's) keep no cache.
    builder
        .on_thread_unpark(gantry::thread_cache::keep)
        .on_thread_park(gantry::thread_cache::empty);
    let runtime = match builder.build() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the async runtime: {error}");
            return ExitCode::from(EXIT_FAILED);
        }
    };
    let code = match runtime.block_on(cli::run(cli)) {
        Ok(code) => code,
        Err(error) => cli::errors::fail(EXIT_FAILED, format!("{error:#}")),
    };
    // Work that is still going on a blocking thread (a git fetch stuck on a silent
    // remote) must not keep a finished command or a stopped daemon from exiting.
    runtime.shutdown_timeout(RUNTIME_SHUTDOWN);
    code
}
