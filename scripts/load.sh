#!/usr/bin/env bash
# Whole-server load benchmark: wrk against examples/bench_server on loopback, server and load
# generator pinned to different cores. Runs plain, idem miss (a fresh key per request) and idem
# replay (one key), each after a warm-up, and prints requests/s, p50 and p99 latency, the ratio
# to plain, the server's CPU time per request (user + kernel, from /proc) and its peak RSS.
#
# The machine is shared and noisy: the scenarios run interleaved, --rounds times, and each
# figure is the median over the rounds.
#
#   scripts/load.sh [--duration 10] [--warmup 3] [--rounds 3] [--connections 32]
#                   [--store memory|redis://HOST:PORT|postgres://USER@HOST:PORT/DB]
#                   [--profile release|dev] [--csv FILE]
#                   [--server-bin PATH --scenarios "NAME:PATH ..."]
#
# --server-bin runs another server (taking --addr) instead of building examples/bench_server,
# with the given scenarios: each NAME ends in plain, miss or replay (`peer-miss`), which says
# what it sends; the first one is the plain scenario the ratios are taken against.
#
# With a PostgreSQL store the handlers insert the order in a transaction: plain opens and
# commits its own, miss and replay go through idem's (`Tx`), which commits the record with it.
set -euo pipefail
cd "$(dirname "$0")/.."

duration=10 warmup=3 rounds=3 connections=32 store=memory profile=release csv="" server_bin="" scenario_list=""
while [[ $# -gt 0 ]]; do
  case "$1" in
    --duration) duration=$2; shift 2 ;;
    --warmup) warmup=$2; shift 2 ;;
    --rounds) rounds=$2; shift 2 ;;
    --connections) connections=$2; shift 2 ;;
    --store) store=$2; shift 2 ;;
    --profile) profile=$2; shift 2 ;;
    --csv) csv=$2; shift 2 ;;
    --server-bin) server_bin=$2; shift 2 ;;
    --scenarios) scenario_list=$2; shift 2 ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
done

if ! command -v wrk >/dev/null; then
  echo "installing wrk (Debian package)" >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null 2>&1 \
    || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null; }
fi

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/idem-target}"
flag=(); dir=debug
[[ "$profile" == release ]] && { flag=(--release); dir=release; }
if [[ -z "$server_bin" ]]; then
  cargo build --quiet "${flag[@]}" --example bench_server
  server_bin="$CARGO_TARGET_DIR/$dir/examples/bench_server"
fi

cores=$(nproc)
server_core=0 client_core=$(( cores > 1 ? 1 : 0 ))
port=$(( 20000 + RANDOM % 20000 ))
server_args=(--addr "127.0.0.1:$port")
[[ -z "$scenario_list" ]] && server_args+=(--store "$store")
taskset -c "$server_core" "$server_bin" "${server_args[@]}" > /dev/null &
server_pid=$!
trap 'kill $server_pid 2>/dev/null || true; wait $server_pid 2>/dev/null || true; rm -rf "$lua_dir"' EXIT
lua_dir=$(mktemp -d)
for _ in $(seq 1 100); do
  (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
  sleep 0.05
done

common='wrk.method = "POST"
wrk.body = "{\"item\":\"book\",\"qty\":1}"
wrk.headers["Content-Type"] = "application/json"
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("RESULT %d %d %d %d %d\n", summary.requests, summary.duration,
    latency:percentile(50), latency:percentile(99), e.connect + e.read + e.write + e.status + e.timeout))
end
'
# plain carries a key too, so that every scenario sends the same bytes. A UUIDv4: a UUIDv7 carries
# the time it was minted, and one minted long ago would be refused as past its lifetime (412).
printf '%s\nwrk.headers["Idempotency-Key"] = "0190d6a4-0000-4000-8000-000000000000"\n' "$common" > "$lua_dir/plain.lua"
printf '%s\n%s\n' "$common" 'local n = 0
local run = tostring(os.time()) .. "-" .. tostring(math.random(1, 1000000000))
request = function()
  n = n + 1
  wrk.headers["Idempotency-Key"] = run .. "-" .. n
  return wrk.format()
end' > "$lua_dir/miss.lua"

# One request with the replay scenario's key, alone, before it runs: the record may have been
# evicted by the misses in between (the default store keeps 100 000), and the first of 32
# concurrent requests would run the handler while the others got 409.
# Each replay scenario has a key of its own (the scenarios may share one store, and one key on
# two routes is a mismatch): the last digits are the scenario's name's length and checksum.
replay_key() { # name
  printf '0190d6a4-0000-4000-8000-%012d' "$(printf '%s' "$1" | cksum | awk '{ print $1 % 1000000000000 }')"
}
prime() { # name path
  local body='{"item":"book","qty":1}'
  printf '%s\nwrk.headers["Idempotency-Key"] = "%s"\n' "$common" "$(replay_key "$1")" > "$lua_dir/$1.lua"
  exec 4<>"/dev/tcp/127.0.0.1/$port"
  printf 'POST %s HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nIdempotency-Key: %s\r\nContent-Length: %s\r\nConnection: close\r\n\r\n%s' \
    "$2" "$(replay_key "$1")" "${#body}" "$body" >&4
  cat <&4 > /dev/null
  exec 4<&-
}

run() { # name path seconds
  local script="$lua_dir/${1##*-}.lua"
  [[ "$1" == *replay ]] && prime "$1" "$2" && script="$lua_dir/$1.lua"
  taskset -c "$client_core" wrk -t1 -c"$connections" -d"${3}s" --timeout 5s -s "$script" \
    "http://127.0.0.1:$port$2" | awk '/^RESULT/ {print $2, $3, $4, $5, $6}'
}

printf 'load benchmark: %s s per scenario and round, %s rounds, after %s s warm-up, %s connections, store %s, %s build, server on core %s, wrk on core %s\n' \
  "$duration" "$rounds" "$warmup" "$connections" "$store" "$profile" "$server_core" "$client_core"
scenarios=(plain:/plain miss:/idem replay:/idem)
[[ "$store" == postgres://* || "$store" == postgresql://* ]] &&
  scenarios=(plain:/plain-tx miss:/idem-tx replay:/idem-tx tiered-replay:/idem-tx-tiered)
[[ -n "$scenario_list" ]] && read -r -a scenarios <<< "$scenario_list"
if [[ "$warmup" != 0 ]]; then
  for scenario in "${scenarios[@]}"; do run "${scenario%%:*}" "${scenario#*:}" "$warmup" > /dev/null; done
fi
# The server's own CPU time (user and kernel, in clock ticks) from /proc: per request it says
# what each scenario costs the server, whatever else the machine is doing.
cpu_ticks() { awk '{ print $14, $15 }' "/proc/$server_pid/stat"; }
tick=$(getconf CLK_TCK)
declare -A rps_of p50_of p99_of user_of sys_of
for _ in $(seq 1 "$rounds"); do
  for scenario in "${scenarios[@]}"; do
    name=${scenario%%:*} path=${scenario#*:}
    read -r user0 sys0 < <(cpu_ticks)
    read -r requests micros p50 p99 errors < <(run "$name" "$path" "$duration")
    read -r user1 sys1 < <(cpu_ticks)
    if [[ "$errors" != 0 ]]; then echo "wrk reported $errors errors for $name" >&2; exit 1; fi
    rps_of[$name]+="$(awk -v r="$requests" -v d="$micros" 'BEGIN { printf "%.0f", r / (d / 1e6) }') "
    p50_of[$name]+="$p50 "
    p99_of[$name]+="$p99 "
    user_of[$name]+="$(awk -v t=$((user1 - user0)) -v r="$requests" -v hz="$tick" 'BEGIN { printf "%.2f", t / hz * 1e6 / r }') "
    sys_of[$name]+="$(awk -v t=$((sys1 - sys0)) -v r="$requests" -v hz="$tick" 'BEGIN { printf "%.2f", t / hz * 1e6 / r }') "
  done
done
median() { tr ' ' '\n' | grep -v '^$' | sort -n | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
printf '%-12s %12s %10s %10s %8s %18s\n' scenario "requests/s" "p50 ms" "p99 ms" ratio "server µs/req u+s"
[[ -n "$csv" ]] && echo "scenario,requests_per_s,p50_ms,p99_ms,ratio_to_plain,errors,server_user_us,server_sys_us" > "$csv"
first=${scenarios[0]}
plain_rps=$(median <<< "${rps_of[${first%%:*}]}")
for scenario in "${scenarios[@]}"; do
  name=${scenario%%:*}
  rps=$(median <<< "${rps_of[$name]}")
  ratio=$(awk -v a="$rps" -v b="$plain_rps" 'BEGIN { printf "%.3f", a / b }')
  p50ms=$(awk -v u="$(median <<< "${p50_of[$name]}")" 'BEGIN { printf "%.3f", u / 1000 }')
  p99ms=$(awk -v u="$(median <<< "${p99_of[$name]}")" 'BEGIN { printf "%.3f", u / 1000 }')
  user=$(median <<< "${user_of[$name]}") sys=$(median <<< "${sys_of[$name]}")
  printf '%-12s %12.0f %10s %10s %8s %18s\n' "$name" "$rps" "$p50ms" "$p99ms" "$ratio" "$user + $sys"
  [[ -n "$csv" ]] && echo "$name,$rps,$p50ms,$p99ms,$ratio,0,$user,$sys" >> "$csv"
done
peak_kib=$(awk '/VmHWM/ {print $2}' "/proc/$server_pid/status")
printf 'server peak RSS: %s MiB\n' "$(awk -v k="$peak_kib" 'BEGIN { printf "%.1f", k / 1024 }')"
[[ -n "$csv" ]] && echo "peak_rss_kib,$peak_kib,,,,,," >> "$csv"
exit 0
