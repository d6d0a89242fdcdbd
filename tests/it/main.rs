//! Integration tests: the real `gantry` binary against the real Docker engine,
//! registries and git repositories that `scripts/test-env.sh` starts.
//! Docker tests never skip: without an engine they fail.

mod accessories;
mod bounds;
mod build;
mod buildkit;
mod chaos;
mod common;
mod container_spec;
mod dashboard;
mod deploy;
mod engine_transports;
mod full_disk;
mod hostile;
mod hosts;
mod images;
mod leaks;
mod lease;
mod outages;
mod output;
mod ownership;
mod packaging;
mod polling;
mod proxy;
mod prune;
mod pulls;
mod registries;
mod replicas;
mod serve;
mod serve_api;
mod state;
mod swarm;
mod tasks;
mod transports;
mod validate;
