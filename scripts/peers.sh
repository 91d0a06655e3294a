#!/usr/bin/env bash
# idem against its peers in one server process: builds bench/peers (a crate outside idem's
# workspace that depends on the peers as published on crates.io) and runs scripts/load.sh's
# wrk scenarios against it: plain, then a miss (a fresh key per request) and a replay (one key)
# through idem and through the `idempotent` crate's middleware, on one handler, with ratios to
# plain measured in the same run.
#
#   scripts/peers.sh [load.sh options: --duration 10 --warmup 3 --rounds 3 --connections 32 --csv FILE]
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/idem-target}"
# The peers need a newer Rust than idem declares: build with the toolchain at hand.
cargo build --quiet --release --ignore-rust-version --manifest-path bench/peers/Cargo.toml
exec scripts/load.sh --server-bin "$CARGO_TARGET_DIR/release/idem-peers-bench" \
  --scenarios "plain:/plain miss:/idem replay:/idem peer-miss:/peer peer-replay:/peer" "$@"
