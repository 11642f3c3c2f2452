#!/usr/bin/env bash
# Runs fuzz targets one after another for a fixed time each and prints libFuzzer's final
# stats as a Markdown table row per target.
#
#   fuzz/run.sh [SECONDS] [TARGET...]     (default: 60 seconds, every target)
#
# Corpus: fuzz/corpus/<target> (new inputs; ignored by git), read together with the
# committed seeds in fuzz/seeds/<target>. Crashes land in fuzz/artifacts/<target>/.
# Full logs: fuzz/target/fuzz-logs/<target>.log.
set -euo pipefail
cd "$(dirname "$0")/.."

secs="${1:-60}"
shift || true
targets=("$@")
if ((${#targets[@]} == 0)); then
  mapfile -t targets < <(cargo +nightly fuzz list)
fi

logs=fuzz/target/fuzz-logs
mkdir -p "$logs"
echo "| date | target | seconds | execs | exec/s | cov | ft | findings |"
echo "|---|---|---|---|---|---|---|---|"
for t in "${targets[@]}"; do
  mkdir -p "fuzz/corpus/$t"
  status=0
  nice -n 10 cargo +nightly fuzz run "$t" "fuzz/corpus/$t" "fuzz/seeds/$t" -- \
    -max_total_time="$secs" -print_final_stats=1 >"$logs/$t.log" 2>&1 || status=$?
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$logs/$t.log" | tail -n1)
  rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$logs/$t.log" | tail -n1)
  last=$(grep -E '^#[0-9]+' "$logs/$t.log" | tail -n1 || true)
  cov=$(sed -n 's/.* cov: \([0-9]*\).*/\1/p' <<<"$last")
  ft=$(sed -n 's/.* ft: \([0-9]*\).*/\1/p' <<<"$last")
  if ((status == 0)); then
    findings=none
  else
    findings="exit $status: $(grep -m1 -E "panicked at|ERROR: libFuzzer|SUMMARY" "$logs/$t.log" || echo see log); $(grep -m1 -o 'artifact_prefix.*Test unit written to [^ ]*' "$logs/$t.log" | sed 's/.*written to //' || true)"
  fi
  echo "| $(date -u +%F) | $t | $secs | ${execs:-?} | ${rate:-?} | ${cov:-?} | ${ft:-?} | $findings |"
done
