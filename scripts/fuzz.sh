#!/usr/bin/env bash
# Runs the property tests ("fuzz tests") with many inputs each, for a bounded time.
#
#   bash scripts/fuzz.sh                     # every target, 1,000,000 inputs or 120 s per property
#   bash scripts/fuzz.sh -s 30 -n 100000 webhook yaml
#   bash scripts/fuzz.sh --release           # an optimised build: several times the inputs per second
#
# Targets: webhook yaml config dockerignore reference template server. Each runs its
# properties one after another and prints, per property, the inputs run, the time and
# the result (ok, FAILED with the smallest failing input, or HANG when it outlived its
# time by a minute). An input of `config` (a directory of files loaded) or `server` (a
# request through the router and a real store) costs several times one of the others:
# their properties get `SLOW_TARGET_TIME` times the seconds. Temporary files go to
# /dev/shm when there is one, so that writing them costs no disk.
# The exit status is 1 when any property failed or hung.
set -uo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

cases=1000000
seconds=120
profile=()
targets=()
while [ $# -gt 0 ]; do
  case "$1" in
    -n) cases="$2"; shift 2 ;;
    -s) seconds="$2"; shift 2 ;;
    --release) profile=(--release); shift ;;
    -h|--help) sed -n '2,16p' "$0"; exit 0 ;;
    *) targets+=("$1"); shift ;;
  esac
done

declare -A modules=(
  [webhook]=source::webhook::fuzz_tests::
  [yaml]=config::yaml::fuzz_tests::
  [config]=config::fuzz_tests::
  [dockerignore]=build::dockerignore::fuzz_tests::
  [reference]=config::reference::fuzz_tests::
  [template]=config::template::fuzz_tests::
  [server]=server::fuzz_tests::
)
# With `--release` on a shared 2-core machine, `config` ran about 4,900 inputs a second
# and `server` about 7,200 (10^6 in 203 s and 138 s): three times the default 120 s
# lets both reach 10^6 inputs in one run of the defaults, with room to spare.
SLOW_TARGET_TIME=3
declare -A slow=([config]=1 [server]=1)
if [ ${#targets[@]} -eq 0 ]; then
  targets=(webhook yaml config dockerignore reference template server)
fi
for target in "${targets[@]}"; do
  if [ -z "${modules[$target]:-}" ]; then
    echo "unknown target \`$target\` (known: ${!modules[*]})" >&2
    exit 2
  fi
done

export CARGO_BUILD_JOBS="${CARGO_BUILD_JOBS:-1}"
[ ! -d /dev/shm ] || [ ! -w /dev/shm ] || export TMPDIR=/dev/shm
binary=$(cargo test "${profile[@]}" --lib --no-run --message-format=json 2>/dev/null |
  sed -n 's/.*"executable":"\([^"]*\)".*/\1/p' | tail -1)
if [ -z "$binary" ]; then
  echo "the library's test binary did not build; run \`cargo test --lib --no-run\` to see why" >&2
  exit 2
fi

status=0
printf '%-58s %12s %9s  %s\n' property inputs seconds result
for target in "${targets[@]}"; do
  module=${modules[$target]}
  budget=$seconds
  [ -z "${slow[$target]:-}" ] || budget=$((seconds * SLOW_TARGET_TIME))
  # Each property by itself, so that one's time and inputs are its own.
  mapfile -t properties < <("$binary" --list "$module" 2>/dev/null | sed -n 's/: test$//p' | grep "^$module")
  for property in "${properties[@]}"; do
    log=$(mktemp)
    start=$(date +%s.%N)
    GANTRY_FUZZ_CASES=$cases GANTRY_FUZZ_SECONDS=$budget \
      timeout $((budget + 60)) "$binary" --exact "$property" --nocapture --test-threads=1 >"$log" 2>&1
    code=$?
    elapsed=$(awk -v start="$start" -v end="$(date +%s.%N)" 'BEGIN { print end - start }')
    inputs=$(sed -n 's/.*fuzz .*: \([0-9]*\) inputs in .*/\1/p' "$log" | tail -1)
    case $code in
      0) result=ok ;;
      124) result=HANG; status=1 ;;
      *) result=FAILED; status=1 ;;
    esac
    printf '%-58s %12s %9.1f  %s\n' "$property" "${inputs:--}" "$elapsed" "$result"
    if [ "$result" != ok ]; then
      grep -A40 "fuzz .*failed\|panicked" "$log" | head -60 | sed 's/^/    /'
    fi
    rm -f "$log"
  done
done
exit "$status"
