#!/usr/bin/env bash
# Mutation testing of the pure core: cargo-mutants (from crates.io, cached) mutates every
# function under src/core/ (not the test fixtures) and runs the lib's unit tests against each
# mutant. A mutant the tests do not notice is a behaviour nothing pins: it gets a test, or a
# line in bench/mutants-survivors.md saying why it is equivalent. Not a test: it reports.
#
#   bench/mutants.sh                 every mutant (~770; 10-30 s each on two shared cores)
#   bench/mutants.sh --shard 2/8     one eighth of them (any cargo-mutants option passes on)
#   bench/mutants.sh --list          the mutants, without running them
#
# The outcome goes to target/bench-report/mutants/ (mutants.out/: caught.txt, missed.txt,
# timeout.txt, unviable.txt, outcomes.json; summary.txt: the counts). A shard writes to
# target/bench-report/mutants/shard-K-of-N/; MUTANTS_REPORT names another directory (e.g. for a
# rerun of only the missed ones: `MUTANTS_REPORT=... bench/mutants.sh --re 'REGEX'`).
# MUTANTS_TIMEOUT: seconds one cargo call of a mutant may take (default 120: the unit tests
# take ~10 s, so a mutant still running then loops). PROPTEST_CASES (default 32 here, 256 in `cargo test`):
# proptests run once per mutant, and most mutants are caught by the plain unit tests.
set -euo pipefail
cd "$(dirname "$0")/.."

version=27.1.0
root="${HOME:?}/.cache/accessgate/cargo-mutants"
if [ ! -x "$root/bin/cargo-mutants" ]; then
  nice -n 19 cargo install --locked --root "$root" "cargo-mutants@$version" >&2
fi
mutants=("$root/bin/cargo-mutants" mutants)

out="${MUTANTS_REPORT:-target/bench-report/mutants}"
args=("$@")
for ((i = 0; i < ${#args[@]}; i++)); do
  case "${args[i]}" in
    --shard) shard="${args[i + 1]:-}" ;;
    --shard=*) shard="${args[i]#--shard=}" ;;
  esac
done
[ -n "${shard:-}" ] && out="$out/shard-${shard%/*}-of-${shard#*/}"
mkdir -p "$out"

# The copy cargo-mutants builds in uses this target directory, so its dependencies are built
# once (the first run), and each mutant rebuilds only accessgate. Not `target/` itself: any
# `cargo` command there during the run would hold its lock and time the mutants out.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target/mutants}"
export PROPTEST_CASES="${PROPTEST_CASES:-32}"
select=(--file 'src/core/**' --exclude src/core/fixtures.rs)

if [[ " ${args[*]} " == *" --list "* ]]; then
  exec "${mutants[@]}" "${select[@]}" "${args[@]}"
fi

started=$(date +%s)
status=0
# `--lib` on every cargo call: a trailing `-- --lib` reaches only `cargo test`, and the build
# before it would compile every integration test for each mutant.
nice -n 19 "${mutants[@]}" "${select[@]}" \
  --cargo-arg=--lib --timeout "${MUTANTS_TIMEOUT:-120}" --output "$out" "${args[@]}" || status=$?
# 0: all caught, 2: some missed, 3: some timed out; anything else is a failed run (4: the
# unmutated tree fails its tests).
case "$status" in 0 | 2 | 3) ;; *) echo "mutants.sh: cargo-mutants exited $status" >&2; exit "$status" ;; esac

count() { if [ -s "$out/mutants.out/$1.txt" ]; then wc -l <"$out/mutants.out/$1.txt"; else echo 0; fi; }
caught=$(count caught) missed=$(count missed) unviable=$(count unviable) timeout=$(count timeout)
viable=$((caught + missed + timeout))
{
  echo "mutants of src/core/ (unit tests${shard:+, shard $shard}), $(($(date +%s) - started)) s"
  echo "total $((viable + unviable)): caught $caught, missed $missed, timeout $timeout, unviable $unviable"
  if ((viable)); then
    # Viable: it built. A timeout is not counted as caught.
    awk -v c="$caught" -v v="$viable" 'BEGIN { printf "caught %.1f%% of %d viable mutants\n", 100 * c / v, v }'
  fi
  if ((missed)); then echo "missed:"; sed 's/^/  /' "$out/mutants.out/missed.txt"; fi
} | tee "$out/summary.txt"
