#!/usr/bin/env bash
# In-process benchmarks (divan): the engine's cost per request, fingerprinting next to plain
# SHA-256, store operations, and memory per record. Prints divan's tables and writes the
# medians to bench/inprocess.csv (benchmark, median in µs).
#
#   scripts/inprocess.sh [--samples 300]
set -euo pipefail
cd "$(dirname "$0")/.."
samples=300
[[ "${1:-}" == --samples ]] && samples=$2
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/idem-target}"
mkdir -p bench
out=bench/inprocess.csv
echo "benchmark,median_us" > "$out"
for bench in engine fingerprint store; do
  # The engine's benches run 100 requests per sample, so that work the store batches (moka's
  # maintenance, its table clean-ups under eviction) falls inside the samples.
  extra=(); [[ "$bench" == engine ]] && extra=(--sample-size 100)
  # The engine as users build it by default: without `metrics`, whose cost the guide's observability chapter gives apart.
  features=(--all-features); [[ "$bench" == engine ]] && features=()
  cargo bench --quiet -p idem-runtime "${features[@]}" --bench "$bench" -- --sample-count "$samples" "${extra[@]}" | tee >(cat >&2) |
    awk -v bench="$bench" -F'│' '
      # Rows: "├─ name   fastest │ slowest │ median │ mean │ samples │ iters". Rows of a
      # function with arguments nest under it and start with "│": "│  ├─ 4096   fastest │ …".
      /[├╰]─/ {
        nested = ($0 ~ /^[│ ]/)
        col = ($0 ~ /^│/) ? 4 : 3
        line = $0; sub(/^[│ ]*[├╰]─ */, "", line); split(line, first, /  +/); name = first[1]
        median = $col; gsub(/^ +| +$/, "", median)
        if (median == "") { group = name; next }
        if (nested) name = group "/" name
        split(median, m, " "); v = m[1]; unit = m[2]
        if (unit == "ns") v = v / 1000; else if (unit == "ms") v = v * 1000; else if (unit == "s") v = v * 1e6
        printf "%s/%s,%.3f\n", bench, name, v
      }' >> "$out"
done
cargo bench --quiet -p idem-runtime --bench record_memory | tee bench/record_memory.txt
echo "medians written to $out" >&2
