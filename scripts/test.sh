#!/usr/bin/env bash
# Full test run: bring up the loopback test environment, then run every Rust
# test target against it. Extra arguments go to the test runner.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

bash scripts/test-env.sh

STATE="${GANTRY_TEST_ENV_DIR:-/var/lib/gantry-test-env}"
# shellcheck source=/dev/null
source "$STATE/env"

# In CI a missing Docker must fail the Docker tests, not silently skip them.
export GANTRY_REQUIRE_DOCKER=1

# --no-tests=warn: a run (or a filter in "$@") that selects no tests is not a failure.
if cargo nextest --version >/dev/null 2>&1; then
  exec cargo nextest run --all-targets --no-fail-fast --no-tests=warn "$@"
else
  exec cargo test --all-targets --no-fail-fast "$@"
fi
