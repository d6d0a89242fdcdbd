//! gantry: a git-push continuous-delivery runner.
//!
//! # Layout
//! - `config`: the config directory (`gantry.yaml`, `pipelines/*.yaml`) read into a validated `Config`.
//! - `host`: Docker engines gantry talks to over their API (`unix://`, `tcp://`, TLS).
//! - `http`: the one HTTP client setup (TLS provider, shared clients).
//! - `source`: git repositories: the fetch cache, resolving a branch or ref to a commit, reading its tree,
//!   listing remote heads; `source::webhook` verifies and parses forge push webhooks.
//! - `build`: the build context (a tar made from the commit's tree, `.dockerignore` applied) and the image build.
//! - `registry`: credentials, pushing tags, confirming the pushed digest with the registry itself.
//! - `deploy`: rolling an image out to a pipeline's instances on their hosts (pull, swap, health gate,
//!   rollback), what runs where (`status`), and stop/start/restart in dependency order.
//! - `run`: the words of a run (kind, state, trigger, stage, outcome, id), typed; text
//!   only at the SQL and JSON edges.
//! - `store`: the state database (SQLite through sqlx, migrations embedded); all SQL lives here.
//! - `engine`: runs, recorded stage by stage: build (checkout, context, build, push), deploy
//!   (resolve, lease, rollout), rollback, and `run` (both in one); `engine::intake` is the
//!   one way in for queued work and pins; `engine::scheduler`, `engine::poller` and
//!   `engine::reload` are the queue, polling and config watcher of `gantry serve`.
//! - `server`: HTTP: forge webhooks (`POST /hooks/PIPELINE`), the API, the dashboard and
//!   `/healthz`; it queues through `engine::intake` and answers, never builds.
//! - `daemon`: `gantry serve` as one library call: every task of the daemon started on a
//!   listener and stopped by one token.
//! - `cli`: the subcommands and how they print.
//! - `thread_cache`: per-thread allocation caches for the threads that answer requests,
//!   and freed pages kept during a flood of webhooks.
//! - `fuzz` (tests only): the budget of the property tests that feed random input from
//!   outside (webhooks, config files, `.dockerignore`, tag templates, HTTP requests) to
//!   the code that reads it; they sit beside that code in `fuzz_tests` modules.

pub mod build;
pub mod cli;
pub mod config;
pub mod daemon;
pub mod deploy;
pub mod engine;
#[cfg(test)]
mod fuzz;
pub mod host;
pub mod http;
pub mod registry;
pub mod run;
pub mod server;
pub mod source;
pub mod store;
pub mod thread_cache;
