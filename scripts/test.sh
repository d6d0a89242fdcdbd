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

# Screenshots the dashboard tests take of every page (test artifacts).
export GANTRY_TEST_ARTIFACTS="${GANTRY_TEST_ARTIFACTS:-$PWD/target/test-artifacts}"

# --no-tests=warn: a run (or a filter in "$@") that selects no tests is not a failure.
status=0
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --all-targets --no-fail-fast --no-tests=warn "$@" || status=$?
else
  cargo test --all-targets --no-fail-fast "$@" || status=$?
fi
if [ -d "$GANTRY_TEST_ARTIFACTS" ]; then
  echo "test artifacts in $GANTRY_TEST_ARTIFACTS:"
  find "$GANTRY_TEST_ARTIFACTS" -type f | sort | sed 's/^/  /'
fi
exit "$status"
