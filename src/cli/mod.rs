//! The command line: subcommands, their options, and how they print.
//!
//! Each subcommand loads the config, calls into `engine`/`host`, and prints either
//! for people or, with `--json`, one JSON document on stdout. Exit codes: 0 success,
//! 1 the work failed (a build error, a refused push, an unreachable host, a failed
//! health check), 2 bad
//! usage or bad config. Progress and diagnostics go to stderr, data to stdout.

mod daemon;
pub mod errors;
mod operate;
mod printable;
mod progress;
mod prune;
mod remote;
mod state;
mod task;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};

use crate::config::{Config, ConfigError, Pipeline};
use crate::deploy::status::Lifecycle;
use crate::engine::{self, BuildReport};
use crate::host;
use crate::run::{RunKind, Trigger};
use crate::store::Store;

pub use progress::escapes_allowed;

/// Exit code for success.
pub const EXIT_OK: u8 = 0;
/// Exit code when the work failed: a build error, a refused push, an unreachable host.
pub const EXIT_FAILED: u8 = 1;
/// Exit code for bad usage or a bad config.
pub const EXIT_USAGE: u8 = 2;

#[derive(Debug, Parser)]
#[command(
    name = "gantry",
    version,
    about = "Git-push continuous delivery: build the image a pipeline describes, push it, deploy it.",
    long_about = "gantry builds the Docker image a pipeline's YAML describes from an exact git commit, \
                  pushes it to a registry and redeploys it on your Docker hosts: image pulled everywhere first, \
                  containers replaced in dependency order, health-gated, with rollback.\n\n\
                  The config directory holds an optional gantry.yaml (state directory, hosts, registries) \
                  and one pipelines/NAME.yaml per pipeline."
)]
pub struct Cli {
    /// The config directory (gantry.yaml and pipelines/).
    #[arg(
        long,
        short = 'c',
        global = true,
        env = "GANTRY_CONFIG",
        default_value = "."
    )]
    pub config: PathBuf,
    /// Print data as one JSON document on stdout.
    #[arg(long, global = true)]
    pub json: bool,
    /// Drive the daemon at this URL through its API instead of the local state directory
    /// (runs, logs, trigger, deploy, rollback, pin, unpin).
    #[arg(long, global = true, env = "GANTRY_SERVER", value_name = "URL")]
    pub server: Option<String>,
    /// The API bearer token for --server.
    #[arg(long, global = true, env = "GANTRY_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    #[command(subcommand)]
    pub command: Command,
    /// `server` came from GANTRY_SERVER, not the command line: commands that only work
    /// where the config is then run there instead of being refused.
    #[arg(skip)]
    pub server_from_environment: bool,
}

impl Cli {
    /// Parses the process's arguments (exiting on `--help` or a usage error).
    pub fn from_process() -> Cli {
        use clap::{CommandFactory, FromArgMatches};
        let arguments: Vec<std::ffi::OsString> = std::env::args_os().collect();
        let matches = match Cli::command().try_get_matches_from(&arguments) {
            Ok(matches) => matches,
            Err(error) => usage_error(error, &arguments),
        };
        let mut cli =
            Cli::from_arg_matches(&matches).unwrap_or_else(|error| usage_error(error, &arguments));
        cli.server_from_environment =
            matches.value_source("server") == Some(clap::parser::ValueSource::EnvVariable);
        // An empty GANTRY_SERVER (`GANTRY_SERVER= gantry ...`) names no daemon.
        if cli.server_from_environment && cli.server.as_deref().is_some_and(str::is_empty) {
            cli.server = None;
            cli.server_from_environment = false;
        }
        cli
    }
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Check every config file; list every error as file:line:column: message (exit 2 on errors).
    Validate,
    /// Reach each Docker host: engine and API version, or why it cannot be reached.
    Hosts,
    /// Check out a commit, build the pipeline's image, push every tag, and print the pushed digest.
    Build {
        /// The pipeline (the stem of its file in pipelines/).
        pipeline: String,
        /// A branch, tag or commit id to build instead of the head of the pipeline's branch.
        #[arg(long, value_name = "REF")]
        commit: Option<String>,
    },
    /// Build, push and deploy one commit in one go, with progress per stage and per instance.
    Run {
        /// The pipeline (the stem of its file in pipelines/).
        pipeline: String,
        /// A branch, tag or commit id to build instead of the head of the pipeline's branch.
        #[arg(long, value_name = "REF")]
        commit: Option<String>,
        #[command(flatten)]
        deploy: DeployFlags,
    },
    /// Redeploy without a build: the latest image gantry built for the pipeline, or --image.
    ///
    /// The image is pulled by digest on every target host first; an unreachable host or a
    /// failed pull stops the deploy before any container is touched. Then, in `requires`
    /// order and `batch` instances at a time, each instance's container is replaced and
    /// health-gated; a failed check brings the old container back (and, with
    /// `on_failure: rollback`, every instance already updated in this deploy).
    Deploy {
        /// The pipeline (the stem of its file in pipelines/).
        pipeline: String,
        /// The image to deploy: `repo:tag`, `repo@sha256:...`, a tag or a digest of the
        /// pipeline's repository (`NAME=REF` for one of several images).
        #[arg(long, value_name = "REF", value_parser = image_request)]
        image: Option<String>,
        #[command(flatten)]
        deploy: DeployFlags,
    },
    /// Return to the previous image (or --to an earlier deployment) and hold automatic deploys until `gantry unpin`.
    Rollback {
        /// The pipeline (the stem of its file in pipelines/).
        pipeline: String,
        /// A deployment number (`3` or `#3`), an image digest or a commit id (prefixes work).
        #[arg(long, value_name = "VERSION")]
        to: Option<String>,
        /// Wait for another deploy of the pipeline to finish instead of giving up.
        #[arg(long)]
        wait: bool,
    },
    /// Hold automatic deploys of a pipeline (webhooks and polls are recorded, not deployed).
    Pin {
        /// The pipeline (the stem of its file in pipelines/).
        pipeline: String,
        /// Why, for whoever looks at `gantry status`.
        #[arg(long, default_value = "pinned by an operator")]
        reason: String,
    },
    /// Let automatic deploys of a pinned pipeline go ahead again.
    Unpin {
        /// The pipeline (the stem of its file in pipelines/).
        pipeline: String,
    },
    /// Every instance on every host: container, image digest, commit, state, health, uptime, drift.
    Status {
        /// Only this pipeline.
        pipeline: Option<String>,
        /// Also show the last N lines of each instance's container log.
        #[arg(long, value_name = "N", default_value_t = 0)]
        logs: usize,
    },
    /// The daemon: signed forge webhooks, polling, a durable queue, hot reload of the config.
    ///
    /// Webhooks go to POST /hooks/PIPELINE (GitHub, GitLab, Gitea, Forgejo, Bitbucket Cloud,
    /// or the generic X-Gantry-Signature-256); GET /healthz reports the config's state.
    /// Runs of one pipeline never overlap, newer pushes coalesce into one pending run (a
    /// queued deploy or rollback never does), and every trigger is stored before it is
    /// answered. SIGTERM stops it gracefully.
    Serve {
        /// The address to listen on (default: server.listen, 127.0.0.1:8700).
        #[arg(long, value_name = "ADDR")]
        listen: Option<String>,
    },
    /// Run history, newest first: trigger, commit, state, duration.
    Runs {
        /// Only this pipeline.
        pipeline: Option<String>,
        /// How many runs to list.
        #[arg(long, default_value_t = 50)]
        limit: i64,
    },
    /// A run's stored log: RUN is PIPELINE#NUMBER or the id `gantry runs` shows.
    Logs {
        run: String,
        /// Keep printing new lines until the run ends.
        #[arg(long, short = 'f')]
        follow: bool,
    },
    /// Queue a run of the pipeline for `gantry serve` (the branch head, or --commit).
    Trigger {
        /// The pipeline (the stem of its file in pipelines/).
        pipeline: String,
        /// A branch, tag or commit id instead of the branch head at run time.
        #[arg(long, value_name = "REF")]
        commit: Option<String>,
    },
    /// Run one of the pipeline's release tasks (`deploy.tasks`) by hand.
    ///
    /// The task runs once, in a new container of the image its service runs now (what
    /// the service's instances run, or else the pipeline's newest successful deployment),
    /// with the service's env, volumes and network, on the task's host. Its output is
    /// printed as it comes; the container is removed when the task ends, and killed
    /// first when it outlives its `timeout`. The pipeline's deploy lease is held
    /// meanwhile, so it never runs beside a deploy. Exit 1 when the task fails, with
    /// its last lines.
    Task {
        /// The pipeline (the stem of its file in pipelines/).
        pipeline: String,
        /// The task's name under `deploy.tasks`.
        task: String,
        /// Wait for a deploy of the pipeline to finish instead of giving up.
        #[arg(long)]
        wait: bool,
    },
    /// Remove the pipeline's images beyond `deploy.keep_images` per host, and stopped
    /// `NAME.previous` containers an interrupted deploy left; list what goes and what stays.
    ///
    /// Only images with the pipeline's build labels and a name in its repository count;
    /// what an instance runs, the rollback target and any image a container uses stay.
    /// A deploy does this by itself after it succeeds.
    Prune {
        /// The pipeline (the stem of its file in pipelines/).
        pipeline: String,
        /// List what would be removed; remove nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// The state directory's database: `gantry state backup FILE`.
    State {
        #[command(subcommand)]
        action: state::StateCommand,
    },
    /// Print a completion script for a shell, generated from these commands.
    ///
    /// bash: `gantry completions bash > /etc/bash_completion.d/gantry`; zsh: into a
    /// directory on `$fpath` as `_gantry`; fish: `~/.config/fish/completions/gantry.fish`.
    Completions {
        #[arg(value_enum)]
        shell: CompletionShell,
    },
    /// Print gantry's man page (roff), generated from these commands:
    /// `gantry man > /usr/local/share/man/man1/gantry.1`.
    Man,
    /// Stop a pipeline's containers, dependents before what they require.
    Stop(LifecycleArgs),
    /// Start a pipeline's containers, required services first, each health-gated.
    Start(LifecycleArgs),
    /// Stop (dependents first), then start (required services first) a pipeline's containers.
    Restart(LifecycleArgs),
}

/// Options shared by the commands that deploy.
#[derive(Debug, clap::Args)]
pub struct DeployFlags {
    /// Only instances (or services) whose name matches this glob, like `web-*`.
    #[arg(long, value_name = "GLOB")]
    only: Option<String>,
    /// Replace containers that already run this image and spec, and deploy a pinned pipeline.
    #[arg(long)]
    force: bool,
    /// Wait for another deploy of the pipeline to finish instead of giving up.
    #[arg(long)]
    wait: bool,
}

#[derive(Debug, clap::Args)]
pub struct LifecycleArgs {
    /// The pipeline (the stem of its file in pipelines/).
    pipeline: String,
    /// Only instances (or services) whose name matches this glob, like `web-*`.
    #[arg(long, value_name = "GLOB")]
    only: Option<String>,
}

/// `deploy --image`, checked as the API checks it, before anything is recorded.
fn image_request(text: &str) -> Result<String, String> {
    engine::intake::check_requested(RunKind::Deploy, text).map(|()| text.to_string())
}

impl DeployFlags {
    fn options(&self, image: Option<String>) -> Result<engine::DeployOptions, ExitCode> {
        Ok(engine::DeployOptions {
            image,
            only: operate::parse_only(self.only.as_deref())?,
            force: self.force,
            wait: self.wait,
            trigger: Trigger::Manual,
            queued: None,
        })
    }
}

/// The shells `gantry completions` writes for.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum CompletionShell {
    Bash,
    Zsh,
    Fish,
}

/// Writes what `completions` and `man` print: they need no config, daemon or engine.
fn describe_cli(command: &Command) -> Option<anyhow::Result<ExitCode>> {
    use clap::CommandFactory;
    use std::io::Write;
    let mut definition = Cli::command();
    let mut text = Vec::new();
    match command {
        Command::Completions { shell } => {
            let shell = match shell {
                CompletionShell::Bash => clap_complete::Shell::Bash,
                CompletionShell::Zsh => clap_complete::Shell::Zsh,
                CompletionShell::Fish => clap_complete::Shell::Fish,
            };
            clap_complete::generate(shell, &mut definition, "gantry", &mut text);
        }
        Command::Man => {
            if let Err(error) = clap_mangen::Man::new(definition).render(&mut text) {
                return Some(Err(anyhow::anyhow!("cannot render the man page: {error}")));
            }
        }
        _ => return None,
    }
    let mut out = std::io::stdout().lock();
    Some(match out.write_all(&text).and_then(|()| out.flush()) {
        Ok(()) => Ok(ExitCode::SUCCESS),
        // Its reader went away (`gantry man | head`), as SIGPIPE would end it.
        Err(error) if error.kind() == std::io::ErrorKind::BrokenPipe => Ok(ExitCode::from(141)),
        Err(error) => Err(anyhow::anyhow!("cannot write to stdout: {error}")),
    })
}

/// Runs the parsed command line and returns the process exit code.
/// What `--server` refuses to send to the daemon.
const SERVER_COMMANDS: &str = "with --server only status, runs, logs, trigger, deploy, rollback, pin and unpin \
     go to the daemon; run this command where the config is, without --server";

/// Ends the process on arguments that do not parse: clap's own message (and help and
/// version, which are not errors), or a JSON error when `--json` was among them.
fn usage_error(error: clap::Error, arguments: &[std::ffi::OsString]) -> ! {
    use clap::error::ErrorKind;
    let shown = matches!(
        error.kind(),
        ErrorKind::DisplayHelp
            | ErrorKind::DisplayVersion
            | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
    );
    if shown || !errors::asked_for_json(arguments) {
        error.exit();
    }
    errors::set_json(true);
    let message = error.kind().as_str().map_or_else(
        || error.to_string(),
        |kind| {
            // clap's first paragraph (the error, and what it names on the lines under
            // it: missing arguments), as one line, without `error: ` and styling.
            let rendered = error.render().to_string();
            let paragraph: Vec<&str> = rendered
                .lines()
                .take_while(|line| !line.trim().is_empty())
                .map(str::trim)
                .collect();
            let message = paragraph.join(" ");
            let message = message.strip_prefix("error: ").unwrap_or(&message);
            if message.is_empty() {
                kind.to_string()
            } else {
                message.to_string()
            }
        },
    );
    errors::fail(EXIT_USAGE, message);
    std::process::exit(i32::from(EXIT_USAGE));
}

pub async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    errors::set_json(cli.json);
    if let Some(result) = describe_cli(&cli.command) {
        return result;
    }
    if let Some(server) = cli.server.clone() {
        let remote = matches!(
            cli.command,
            Command::Runs { .. }
                | Command::Logs { .. }
                | Command::Trigger { .. }
                | Command::Deploy { .. }
                | Command::Rollback { .. }
                | Command::Pin { .. }
                | Command::Unpin { .. }
                | Command::Status { .. }
        );
        if remote {
            return remote::command(cli, &server).await;
        }
        if !cli.server_from_environment {
            return Ok(errors::fail(EXIT_USAGE, SERVER_COMMANDS));
        }
        // GANTRY_SERVER only says where the daemon is: this command runs here.
    }
    let config = match Config::load(&cli.config) {
        Ok(config) => config,
        Err(ConfigError::Invalid(diagnostics))
            if matches!(
                cli.command,
                Command::Runs { .. } | Command::Logs { .. } | Command::State { .. }
            ) =>
        {
            // History stays readable, and can be backed up, while a config file is broken.
            if !cli.json {
                for diagnostic in &diagnostics {
                    eprintln!("warning: {diagnostic}");
                }
            }
            let state = match crate::store::Location::of_dir(&cli.config) {
                Ok(state) => state,
                Err(message) => return Ok(errors::fail(EXIT_USAGE, message)),
            };
            return match cli.command {
                Command::Runs { pipeline, limit } => {
                    daemon::runs(&state, None, pipeline.as_deref(), limit, cli.json).await
                }
                Command::Logs { run, follow } => daemon::logs(&state, &run, follow, cli.json).await,
                Command::State { action } => state::run(&state, action, cli.json).await,
                _ => Ok(ExitCode::from(EXIT_USAGE)),
            };
        }
        Err(ConfigError::Invalid(diagnostics)) => {
            if cli.json && matches!(cli.command, Command::Validate) {
                let errors: Vec<_> = diagnostics
                    .iter()
                    .map(|diagnostic| {
                        serde_json::json!({
                            "file": diagnostic.file,
                            "line": diagnostic.line,
                            "column": diagnostic.column,
                            "message": diagnostic.message,
                        })
                    })
                    .collect();
                println!(
                    "{}",
                    serde_json::json!({ "valid": false, "errors": errors })
                );
            } else if cli.json {
                let listed: Vec<String> = diagnostics.iter().map(ToString::to_string).collect();
                let message = format!(
                    "{} error(s) in the config; nothing was changed",
                    listed.len()
                );
                return Ok(errors::fail_with(
                    EXIT_USAGE,
                    &message,
                    Some(("diagnostics", listed.into())),
                ));
            } else {
                for diagnostic in &diagnostics {
                    eprintln!("{diagnostic}");
                }
                eprintln!("{} error(s); nothing was changed", diagnostics.len());
            }
            return Ok(ExitCode::from(EXIT_USAGE));
        }
        Err(error) => return Ok(errors::fail(EXIT_USAGE, error)),
    };
    match cli.command {
        Command::Validate => validate(&config, cli.json),
        Command::Hosts => hosts(&config, cli.json).await,
        Command::Build { pipeline, commit } => {
            build(&config, &pipeline, commit.as_deref(), cli.json).await
        }
        Command::Run {
            pipeline,
            commit,
            deploy,
        } => match deploy.options(None) {
            Ok(options) => {
                operate::run(&config, &pipeline, commit.as_deref(), options, cli.json).await
            }
            Err(code) => Ok(code),
        },
        Command::Deploy {
            pipeline,
            image,
            deploy,
        } => match deploy.options(image) {
            Ok(options) => operate::deploy(&config, &pipeline, options, cli.json).await,
            Err(code) => Ok(code),
        },
        Command::Rollback { pipeline, to, wait } => {
            let options = engine::DeployOptions {
                wait,
                trigger: Trigger::Manual,
                ..engine::DeployOptions::default()
            };
            operate::rollback(&config, &pipeline, to, options, cli.json).await
        }
        Command::Unpin { pipeline } => operate::unpin(&config, &pipeline, cli.json).await,
        Command::Pin { pipeline, reason } => {
            operate::pin(&config, &pipeline, &reason, cli.json).await
        }
        Command::Status { pipeline, logs } => {
            operate::show_status(&config, pipeline.as_deref(), logs, cli.json).await
        }
        Command::Serve { listen } => daemon::serve(config, listen).await,
        Command::Runs { pipeline, limit } => {
            daemon::runs(
                &crate::store::Location::of(&config),
                Some(&config),
                pipeline.as_deref(),
                limit,
                cli.json,
            )
            .await
        }
        Command::Logs { run, follow } => {
            daemon::logs(&crate::store::Location::of(&config), &run, follow, cli.json).await
        }
        Command::Trigger { pipeline, commit } => {
            daemon::trigger(&config, &pipeline, commit.as_deref(), cli.json).await
        }
        Command::Task {
            pipeline,
            task,
            wait,
        } => task::task(&config, &pipeline, &task, wait, cli.json).await,
        Command::Prune { pipeline, dry_run } => {
            prune::prune(&config, &pipeline, dry_run, cli.json).await
        }
        Command::State { action } => {
            state::run(&crate::store::Location::of(&config), action, cli.json).await
        }
        // Answered before the config is read (`describe_cli`).
        command @ (Command::Completions { .. } | Command::Man) => {
            describe_cli(&command).unwrap_or(Ok(ExitCode::SUCCESS))
        }
        Command::Stop(args) => lifecycle(&config, args, Lifecycle::Stop, cli.json).await,
        Command::Start(args) => lifecycle(&config, args, Lifecycle::Start, cli.json).await,
        Command::Restart(args) => lifecycle(&config, args, Lifecycle::Restart, cli.json).await,
    }
}

async fn lifecycle(
    config: &Config,
    args: LifecycleArgs,
    command: Lifecycle,
    json: bool,
) -> anyhow::Result<ExitCode> {
    operate::lifecycle_command(config, &args.pipeline, command, args.only.as_deref(), json).await
}

fn validate(config: &Config, json: bool) -> anyhow::Result<ExitCode> {
    if json {
        let pipelines: Vec<&String> = config.pipelines.keys().collect();
        let hosts: Vec<&String> = config.hosts.keys().collect();
        let warnings: Vec<String> = config.warnings.iter().map(ToString::to_string).collect();
        println!(
            "{}",
            serde_json::json!({ "valid": true, "pipelines": pipelines, "hosts": hosts, "warnings": warnings })
        );
    } else {
        for warning in &config.warnings {
            eprintln!("warning: {warning}");
        }
        println!(
            "config OK: {} pipeline(s), {} host(s), {} registr{} in {}",
            config.pipelines.len(),
            config.hosts.len(),
            config.registries.len(),
            if config.registries.len() == 1 {
                "y"
            } else {
                "ies"
            },
            config.dir.display()
        );
    }
    Ok(ExitCode::from(EXIT_OK))
}

async fn hosts(config: &Config, json: bool) -> anyhow::Result<ExitCode> {
    // All hosts are asked at once, so one slow host costs its own timeout, not everyone's.
    let reports = futures_util::future::join_all(config.hosts.values().map(host::report)).await;
    if json {
        println!("{}", serde_json::to_string_pretty(&reports)?);
    } else {
        let name_width = reports
            .iter()
            .map(|report| report.name.len())
            .max()
            .unwrap_or(4)
            .max(4);
        for report in &reports {
            match &report.error {
                None => println!(
                    "{:name_width$}  ok           engine {} (API {}){}  {}ms",
                    report.name,
                    report.engine_version.as_deref().unwrap_or("?"),
                    report.api_version.as_deref().unwrap_or("?"),
                    report
                        .os
                        .as_deref()
                        .map(|os| format!(", {os}"))
                        .unwrap_or_default(),
                    report.elapsed_ms
                ),
                Some(error) => println!("{:name_width$}  unreachable  {error}", report.name),
            }
        }
    }
    let all_reachable = reports.iter().all(|report| report.reachable);
    Ok(ExitCode::from(if all_reachable {
        EXIT_OK
    } else {
        EXIT_FAILED
    }))
}

/// Finds a pipeline or explains, with a suggestion, why there is none.
fn find_pipeline<'c>(config: &'c Config, name: &str) -> Result<&'c Pipeline, ExitCode> {
    match config.pipeline(name) {
        Some(pipeline) => Ok(pipeline),
        None => {
            let hint = match config.suggest_pipeline(name) {
                Some(near) => format!(" (did you mean `{near}`?)"),
                None if config.pipelines.is_empty() => format!(
                    " (there are no pipelines in {})",
                    config.dir.join(crate::config::PIPELINES_DIR).display()
                ),
                None => format!(
                    " (pipelines: {})",
                    config
                        .pipelines
                        .keys()
                        .cloned()
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            };
            Err(errors::fail(
                EXIT_USAGE,
                format!("no pipeline `{name}`{hint}"),
            ))
        }
    }
}

/// The config's state store, opened (and migrated) for a command.
pub(crate) async fn open_store(config: &Config) -> anyhow::Result<Store> {
    Store::open(&crate::store::Location::of(config))
        .await
        .context("opening the state store")
}

async fn build(
    config: &Config,
    name: &str,
    reference: Option<&str>,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let work = async |pipeline: &Pipeline, store: &Store, progress: &mut dyn engine::Progress| {
        let report = engine::build(
            config,
            pipeline,
            store,
            reference,
            &Trigger::Manual,
            progress,
        )
        .await?;
        Ok(report)
    };
    operate::on_pipeline(config, name, work, |_, report| {
        if json {
            println!("{}", serde_json::to_string_pretty(&report)?);
        } else {
            print_build(&report);
        }
        Ok(operate::exit_for(report.outcome))
    })
    .await
}

fn print_build(report: &BuildReport) {
    let stages = report
        .stages
        .iter()
        .map(|stage| {
            format!(
                "{} {}",
                stage.name,
                humantime::format_duration(std::time::Duration::from_millis(
                    stage.duration_ms as u64
                ))
            )
        })
        .collect::<Vec<_>>()
        .join(", ");
    let commit = report
        .commit
        .as_ref()
        .map(|commit| format!(" of {} \"{}\"", commit.short, commit.message))
        .unwrap_or_default();
    match &report.failure {
        None => {
            println!(
                "built {} run #{}{commit}",
                report.pipeline, report.run.number
            );
            for image in &report.images {
                let name = match report.images.len() {
                    1 => String::new(),
                    _ => format!(" ({})", image.name),
                };
                println!("  image   {}{name}", image.image);
                for tag in &image.tags {
                    println!("  tag     {tag}");
                }
                println!("  digest  {}", image.digest.as_deref().unwrap_or("?"));
            }
            println!("  stages  {stages}");
        }
        Some(failure) => {
            eprintln!(
                "error: {} run #{}{commit} failed at {}: {}",
                report.pipeline, report.run.number, failure.stage, failure.message
            );
            if !failure.details.is_empty() {
                eprintln!("last output:");
                for line in &failure.details {
                    eprintln!("  | {line}");
                }
            }
            eprintln!("  stages  {stages}");
        }
    }
}
