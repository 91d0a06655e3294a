#!/usr/bin/env bash
# Instructions per request, counted by valgrind's callgrind: the same count whatever else the
# machine is doing. Runs the `instructions` bench driver (idem-runtime/benches/instructions.rs)
# once per kind of request — N requests through a real Router after a warm-up, callgrind
# counting only the function that sends them — and prints, per kind, the instructions per
# request and what the engine adds to the plain handler.
#
# valgrind hides the CPU's SHA extensions, so SHA-256 runs in software under it (about 3 400
# instructions a block, against about 150 cycles natively with the extensions). Each figure is
# therefore given twice: all instructions, and the instructions outside SHA-256 plus the
# number of SHA-256 blocks compressed, which is what to compare with a native run.
#
#   scripts/callgrind.sh [--requests 2000] [--kinds "plain miss replay mismatch conflict"]
#                        [--out DIR] [--csv FILE]
#
# The callgrind profiles stay in DIR (default bench/callgrind): `callgrind_annotate
# --inclusive=yes DIR/replay.out` shows where a replay's instructions go.
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

# Instructions inside the measured function, and those of SHA-256 compression, per request.
count() { # kind requests
  valgrind --tool=callgrind --callgrind-out-file="$out/$1.out" --toggle-collect='*measured_requests*' \
    "$driver" "$1" "$2" 2>/dev/null
  callgrind_annotate --inclusive=no --threshold=100 --auto=no "$out/$1.out" |
    awk -v n="$2" '
      /PROGRAM TOTALS/ { gsub(",", "", $1); total = $1 }
      /sha2::sha256::compress256/ { gsub(",", "", $1); sha += $1 }
      END { printf "%.0f %.0f\n", total / n, sha / n }'
}

read -r block _ < <(count sha256-block 10000)
printf 'callgrind: %s requests per kind after a warm-up; one SHA-256 block = %s instructions in software\n' "$requests" "$block"
printf '%-10s %14s %12s %16s %12s %14s\n' kind "instr/request" "beyond plain" "without SHA-256" "beyond plain" "SHA-256 blocks"
[[ -n "$csv" ]] && echo "kind,instructions,beyond_plain,instructions_without_sha256,beyond_plain_without_sha256,sha256_blocks,sha256_blocks_beyond_plain" > "$csv"
plain_total="" plain_rest="" plain_blocks=""
for kind in plain $kinds; do
  [[ "$kind" == plain && -n "$plain_total" ]] && continue
  read -r total sha < <(count "$kind" "$requests")
  rest=$((total - sha))
  blocks=$(awk -v s="$sha" -v b="$block" 'BEGIN { printf "%.1f", s / b }')
  if [[ -z "$plain_total" ]]; then plain_total=$total plain_rest=$rest plain_blocks=$blocks; fi
  beyond=$((total - plain_total)) beyond_rest=$((rest - plain_rest))
  beyond_blocks=$(awk -v a="$blocks" -v b="$plain_blocks" 'BEGIN { printf "%.1f", a - b }')
  printf '%-10s %14s %12s %16s %12s %14s\n' "$kind" "$total" "$beyond" "$rest" "$beyond_rest" "$blocks (+$beyond_blocks)"
  [[ -n "$csv" ]] && echo "$kind,$total,$beyond,$rest,$beyond_rest,$blocks,$beyond_blocks" >> "$csv"
done
exit 0
