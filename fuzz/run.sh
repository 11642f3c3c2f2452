#!/usr/bin/env bash
# Runs fuzz targets one after another for a fixed time each and prints libFuzzer's final
# stats as a Markdown table row per target.
#
#   fuzz/run.sh [SECONDS] [TARGET...]     (default: 60 seconds, every target)
#
# Corpus: fuzz/corpus/<target> (new inputs; ignored by git), read together with the
# committed seeds in fuzz/seeds/<target>. Crashes land in fuzz/artifacts/<target>/.
# Full logs: fuzz/target/fuzz-logs/<target>.log.
#
# Exits non-zero when any target failed: `cargo fuzz run` exited non-zero (a crash, leak,
# timeout or OOM stops libFuzzer with an error; so does a build failure), or the run left a
# new crash-/leak-/timeout-/oom- file in fuzz/artifacts/<target>/. Every target still runs,
# and its row is printed, before the script exits.
set -euo pipefail
cd "$(dirname "$0")/.."

secs="${1:-60}"
shift || true
targets=("$@")
if ((${#targets[@]} == 0)); then
  # Not `mapfile < <(...)`: a failing list (no nightly, no cargo-fuzz) must stop the script,
  # not leave an empty list and a run that tested nothing.
  list=$(cargo +nightly fuzz list)
  mapfile -t targets <<<"$list"
fi
if ((${#targets[@]} == 0)) || [[ -z "${targets[0]}" ]]; then
  echo "fuzz/run.sh: no fuzz targets to run" >&2
  exit 2
fi

# The crash files libFuzzer has left for target $1, one per line.
artifacts() {
  [[ -d "fuzz/artifacts/$1" ]] || return 0
  find "fuzz/artifacts/$1" -maxdepth 1 -type f \( -name 'crash-*' -o -name 'leak-*' \
    -o -name 'timeout-*' -o -name 'oom-*' \) | sort
}

logs=fuzz/target/fuzz-logs
mkdir -p "$logs"
echo "| date | target | seconds | execs | exec/s | cov | ft | findings |"
echo "|---|---|---|---|---|---|---|---|"
failed=()
for t in "${targets[@]}"; do
  mkdir -p "fuzz/corpus/$t"
  before=$(artifacts "$t")
  status=0
  nice -n 10 cargo +nightly fuzz run "$t" "fuzz/corpus/$t" "fuzz/seeds/$t" -- \
    -max_total_time="$secs" -print_final_stats=1 >"$logs/$t.log" 2>&1 || status=$?
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$logs/$t.log" | tail -n1)
  rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$logs/$t.log" | tail -n1)
  last=$(grep -E '^#[0-9]+' "$logs/$t.log" | tail -n1 || true)
  cov=$(sed -n 's/.* cov: \([0-9]*\).*/\1/p' <<<"$last")
  ft=$(sed -n 's/.* ft: \([0-9]*\).*/\1/p' <<<"$last")
  new=$(comm -13 <(echo "$before") <(artifacts "$t") | paste -sd ' ' -)
  if ((status == 0)) && [[ -z "$new" ]]; then
    findings=none
  else
    failed+=("$t")
    findings="exit $status: $(grep -m1 -E "panicked at|ERROR: libFuzzer|SUMMARY" "$logs/$t.log" || echo see log); ${new:-no new artifact}"
  fi
  echo "| $(date -u +%F) | $t | $secs | ${execs:-?} | ${rate:-?} | ${cov:-?} | ${ft:-?} | $findings |"
done
if ((${#failed[@]} > 0)); then
  echo "fuzz/run.sh: ${#failed[@]} target(s) failed: ${failed[*]} (logs in $logs/)" >&2
  exit 1
fi
