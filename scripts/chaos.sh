#!/usr/bin/env bash
# The kill -9 campaign (not part of the suite, which runs a short one): pushes to a real
# repository, each sent to `gantry serve` as a signed GitHub webhook, while the daemon
# is killed with SIGKILL at random moments and started again; then the checks of
# tests/it/chaos.rs (every 2xx a stored run, every run an outcome, the newest commit
# running, nothing renamed aside, no lease held) and its summary.
#
#   bash scripts/chaos.sh            # 100 pushes
#   bash scripts/chaos.sh 300        # another number of pushes
#   GANTRY_CHAOS_SEED=N bash scripts/chaos.sh   # replay a campaign (its seed is printed)
# Traffic goes to loopback only: the daemon, the local engine, the registry.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

pushes="${1:-100}"
case "$pushes" in '' | *[!0-9]* | 0) echo "usage: $0 [PUSHES]" >&2; exit 2 ;; esac

bash scripts/test-env.sh >/dev/null
# shellcheck source=/dev/null
source "${GANTRY_TEST_ENV_DIR:-/var/lib/gantry-test-env}/env"
export GANTRY_REQUIRE_DOCKER=1 GANTRY_CHAOS_PUSHES="$pushes"

log=$(mktemp "${TMPDIR:-/tmp}/gantry-chaos.XXXXXX")
trap 'rm -f "$log"' EXIT
status=0
cargo nextest run --test it chaos:: --no-capture --no-tests=fail >"$log" 2>&1 || status=$?
grep -E '^chaos' "$log" || true
if [ "$status" -ne 0 ]; then
  echo "chaos: FAILED; the test's output:" >&2
  tail -n 60 "$log" >&2
fi
exit "$status"
