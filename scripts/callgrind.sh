#!/usr/bin/env bash
# Instructions per request, counted by valgrind's callgrind: the same count whatever else the
# machine is doing. Runs the `instructions` bench driver (idem-runtime/benches/instructions.rs)
# once per kind of request — N requests through a real Router after a warm-up, counting only
# the function that sends them — and prints, per kind, the instructions and
# allocations per request and what the engine adds to the plain handler's.
#
# valgrind hides the CPU's SHA extensions, so SHA-256 runs in software under it (about 3 400
# instructions a block, against about 150 cycles natively with the extensions). Each figure is
# therefore given twice: all instructions, and the instructions outside SHA-256 plus the
# number of SHA-256 blocks compressed, which is what to compare with a native run.
#
#   scripts/callgrind.sh [--requests 2000] [--kinds "plain miss replay mismatch conflict"]
#                        [--out DIR] [--csv FILE]
#
# The callgrind profiles of the measured requests stay in DIR (default bench/callgrind):
# `callgrind_annotate --inclusive=yes DIR/replay.out` shows where a replay's instructions go.
set -euo pipefail
cd "$(dirname "$0")/.."

requests=2000 kinds="plain miss miss-full replay mismatch conflict" out=bench/callgrind csv=""
while [[ $# -gt 0 ]]; do
  case "$1" in
    --requests) requests=$2; shift 2 ;;
    --kinds) kinds=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    --csv) csv=$2; shift 2 ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
done

if ! command -v valgrind >/dev/null; then
  echo "installing valgrind (Debian package)" >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq valgrind >/dev/null 2>&1 \
    || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq valgrind >/dev/null; }
fi

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/idem-target}"
# Release code with line tables (the `profiling` profile), so that profiles name functions and
# lines.
driver=$(cargo bench --profile profiling --no-run --message-format=json -p idem-runtime --bench instructions 2>/dev/null |
  python3 -c 'import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m["target"]["name"] == "instructions" and m.get("executable"):
        print(m["executable"])')
mkdir -p "$out"

# Per request: the instructions inside the measured function, those of SHA-256 compression,
# and the allocations (calls to malloc and calloc). callgrind dumps its counts when the measured
# function is entered, so the profile it writes last holds the measured requests (and the
# driver's exit, which frees but allocates nothing).
count() { # kind requests
  valgrind --tool=callgrind --callgrind-out-file="$out/$1.out" --dump-before='*measured_requests*' \
    "$driver" "$1" "$2" 2>/dev/null
  rm -f "$out/$1.out.1"
  local allocations
  allocations=$(python3 -c '
import re, sys
names, callee, calls = {}, None, 0
for line in open(sys.argv[1], errors="replace"):
    m = re.match(r"(c?)fn=\((\d+)\)(?: (.*))?$", line.rstrip("\n"))
    if m:
        if m.group(3):
            names[m.group(2)] = m.group(3)
        callee = names.get(m.group(2)) if m.group(1) else None
    elif line.startswith("calls="):
        if callee in ("malloc", "calloc"):
            calls += int(line[6:].split()[0])
        callee = None
print(f"{calls / int(sys.argv[2]):.1f}")' "$out/$1.out" "$2")
  local measured
  measured=$(callgrind_annotate --inclusive=yes --threshold=100 --auto=no "$out/$1.out" |
    awk '/::measured_requests/ { gsub(",", "", $1); if ($1 + 0 > max + 0) max = $1 + 0 } END { print max }')
  callgrind_annotate --inclusive=no --threshold=100 --auto=no "$out/$1.out" |
    awk -v n="$2" -v measured="$measured" -v allocations="$allocations" '
      /sha2::sha256::compress256/ { gsub(",", "", $1); sha += $1 }
      END { printf "%.0f %.0f %s\n", measured / n, sha / n, allocations }'
}

read -r block _ _ < <(count sha256-block 10000)
printf 'callgrind: %s requests per kind after a warm-up; one SHA-256 block = %s instructions in software\n' "$requests" "$block"
printf '%-10s %14s %12s %16s %12s %14s %14s\n' kind "instr/request" "beyond plain" "without SHA-256" "beyond plain" "SHA-256 blocks" "allocations"
[[ -n "$csv" ]] && echo "kind,instructions,beyond_plain,instructions_without_sha256,beyond_plain_without_sha256,sha256_blocks,sha256_blocks_beyond_plain,allocations,allocations_beyond_plain" > "$csv"
plain_total="" plain_rest="" plain_blocks="" plain_allocations=""
for kind in plain $kinds; do
  [[ "$kind" == plain && -n "$plain_total" ]] && continue
  read -r total sha allocations < <(count "$kind" "$requests")
  rest=$((total - sha))
  blocks=$(awk -v s="$sha" -v b="$block" 'BEGIN { printf "%.1f", s / b }')
  if [[ -z "$plain_total" ]]; then
    plain_total=$total plain_rest=$rest plain_blocks=$blocks plain_allocations=$allocations
  fi
  beyond=$((total - plain_total)) beyond_rest=$((rest - plain_rest))
  beyond_blocks=$(awk -v a="$blocks" -v b="$plain_blocks" 'BEGIN { printf "%.1f", a - b }')
  beyond_allocations=$(awk -v a="$allocations" -v b="$plain_allocations" 'BEGIN { printf "%.1f", a - b }')
  printf '%-10s %14s %12s %16s %12s %14s %14s\n' "$kind" "$total" "$beyond" "$rest" "$beyond_rest" \
    "$blocks (+$beyond_blocks)" "$allocations (+$beyond_allocations)"
  [[ -n "$csv" ]] && echo "$kind,$total,$beyond,$rest,$beyond_rest,$blocks,$beyond_blocks,$allocations,$beyond_allocations" >> "$csv"
done
exit 0
