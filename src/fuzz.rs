//! The budget of the property tests: how many random inputs each one runs, and for
//! how long.
//!
//! The property tests sit beside the code they check, in `fuzz_tests` modules (input
//! from outside: webhooks, config files, `.dockerignore`, image references and tag
//! templates, the HTTP API). Each calls `check` with a proptest strategy and a property.
//! In the test suite each runs `DEFAULT_CASES` inputs (a few seconds for all of them);
//! `scripts/fuzz.sh` sets `GANTRY_FUZZ_CASES` and `GANTRY_FUZZ_SECONDS` to run far more
//! for a bounded time. A failing input is shrunk by proptest and shown; it then becomes
//! a plain regression test beside the code it broke, so the suite keeps it for good.
//!
//! Test-only: nothing here is compiled into gantry.

use std::fmt::Debug;
use std::time::{Duration, Instant};

use proptest::strategy::Strategy;
use proptest::test_runner::{Config, TestCaseResult, TestError, TestRunner};

/// Inputs per property in the test suite when `GANTRY_FUZZ_CASES` is not set: enough to
/// catch a property that breaks often, few enough that all of them add seconds, not minutes.
pub const DEFAULT_CASES: u64 = 256;
/// Inputs per proptest run; between runs the time budget is looked at.
const CASES_PER_ROUND: u64 = 1_000;

/// Runs `property` on inputs from `strategy` until `GANTRY_FUZZ_CASES` inputs ran or
/// `GANTRY_FUZZ_SECONDS` passed, and panics with the smallest failing input proptest
/// finds. Prints `fuzz NAME: N inputs in T s` (shown with `--nocapture`).
pub fn check<S>(name: &str, strategy: S, property: impl Fn(S::Value) -> TestCaseResult)
where
    S: Strategy,
    S::Value: Debug,
{
    let cases = variable("GANTRY_FUZZ_CASES")
        .unwrap_or(DEFAULT_CASES)
        .max(1);
    let budget = variable("GANTRY_FUZZ_SECONDS").map(Duration::from_secs);
    let started = Instant::now();
    let mut done = 0;
    while done < cases && budget.is_none_or(|budget| started.elapsed() < budget) {
        let round = (cases - done).min(CASES_PER_ROUND);
        let config = Config {
            // The value of `round` is at most `CASES_PER_ROUND`, which fits.
            cases: u32::try_from(round).unwrap_or(u32::MAX),
            // Failures become regression tests by hand, not files beside the sources.
            failure_persistence: None,
            ..Config::default()
        };
        let mut runner = TestRunner::new(config);
        match runner.run(&strategy, &property) {
            Ok(()) => done += round,
            Err(TestError::Fail(reason, input)) => {
                panic!(
                    "fuzz {name}: failed after {done}+ inputs: {reason}\nminimal input: {input:#?}"
                )
            }
            Err(TestError::Abort(reason)) => panic!("fuzz {name}: aborted: {reason}"),
        }
    }
    eprintln!(
        "fuzz {name}: {done} inputs in {:.1} s",
        started.elapsed().as_secs_f64()
    );
}

fn variable(name: &str) -> Option<u64> {
    let text = std::env::var(name).ok()?;
    match text.trim().parse() {
        Ok(value) => Some(value),
        Err(_) => panic!("{name}={text:?} is not a number"),
    }
}
