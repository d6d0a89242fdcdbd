//! Integration tests: the real `gantry` binary against the real Docker engine,
//! registries and git repositories that `scripts/test-env.sh` starts.
//! Docker tests never skip: without an engine they fail.

mod bounds;
mod build;
mod buildkit;
mod common;
mod dashboard;
mod deploy;
mod full_disk;
mod hostile;
mod hosts;
mod leaks;
mod lease;
mod ownership;
mod polling;
mod proxy;
mod prune;
mod serve;
mod tasks;
mod transports;
mod validate;
