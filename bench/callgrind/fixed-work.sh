#!/usr/bin/env bash
# Server instructions per message, repeatable: runs `signalr-bench serve ours` under callgrind
# for K and for 2K units of fixed work and prints the difference divided by the extra work, so
# start-up, connection set-up and shutdown cancel out.
#   bench/callgrind/fixed-work.sh [BENCH_BINARY]
# Needs valgrind, node, and `npm ci` in conformance-tests/node.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
bin=${1:-$here/../../target/release/signalr-bench}
run() { # N K MODE -> total Ir of the server
  local out log pid port
  out=$(mktemp) log=$(mktemp)
  valgrind --tool=callgrind --callgrind-out-file="$out" "$bin" serve ours >"$log" 2>/dev/null &
  pid=$!
  for _ in $(seq 1 300); do grep -q LISTENING "$log" && break; sleep 0.1; done
  port=$(awk '/LISTENING/ {print $2}' "$log")
  node "$here/fixed-work.mjs" "$port" "$1" "$2" "$3"
  kill -TERM "$pid"; wait "$pid" 2>/dev/null || true
  awk '/^totals:/ {print $2}' "$out"
  rm -f "$out" "$log"
}
per() { # N K MODE UNITS_PER_K
  local a b
  a=$(run "$1" "$2" "$3"); b=$(run "$1" $(($2 * 2)) "$3")
  echo $(((b - a) / $4))
}
echo "echo json, instructions per message: $(per 10 200 echo 2000)"
echo "broadcast to 100, instructions per delivery: $(per 100 50 broadcast 5000)"
