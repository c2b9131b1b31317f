#!/usr/bin/env bash
# Fuzzes every target in turn for SECONDS each (default 60), or only the targets named after
# it:  fuzz/run.sh [SECONDS] [TARGET...]
# Needs a nightly toolchain and cargo-fuzz (`cargo install cargo-fuzz`). Exits non-zero when a
# target crashes; the input is left in fuzz/artifacts/<target>/ (see README.md).
set -euo pipefail
cd "$(dirname "$0")"

seconds="${1:-60}"
shift $(( $# > 0 ? 1 : 0 ))

# target:max_len. Decoders get room for several records; the length prefix is a few bytes;
# a stateful script of 400 steps fits in 2 KB.
all=(
  handshake:4096
  json_decode:4096
  msgpack_decode:4096
  json_roundtrip:4096
  msgpack_roundtrip:4096
  length_prefix:64
  negotiate_query:512
  stateful:2048
  redis_payloads:4096
  websocket_frames:4096
)
if [ $# -gt 0 ]; then
  chosen=()
  for name in "$@"; do
    match=""
    for entry in "${all[@]}"; do [ "${entry%%:*}" = "$name" ] && match="$entry"; done
    [ -n "$match" ] || { echo "unknown target: $name" >&2; exit 2; }
    chosen+=("$match")
  done
else
  chosen=("${all[@]}")
fi

# Safe Rust (the crates forbid unsafe): no sanitizer, for speed; debug assertions and
# overflow checks stay on (cargo-fuzz's default build).
flags=(--sanitizer none)
cargo +nightly fuzz build "${flags[@]}"

summary=()
failed=()
for entry in "${chosen[@]}"; do
  name="${entry%%:*}"
  max_len="${entry##*:}"
  # New inputs go to a scratch corpus (git-ignored); the committed seeds are only read.
  work="corpus-work/$name"
  mkdir -p "$work" "artifacts/$name"
  log="corpus-work/$name.log"
  echo "==> $name for ${seconds}s (max_len $max_len)"
  if cargo +nightly fuzz run "${flags[@]}" "$name" "$work" "corpus/$name" -- \
      -max_total_time="$seconds" -max_len="$max_len" -timeout=10 -rss_limit_mb=2048 \
      -print_final_stats=1 >"$log" 2>&1; then
    status=ok
  else
    status=CRASH
    failed+=("$name")
    tail -n 40 "$log" >&2
  fi
  execs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' || echo "?")
  summary+=("$(printf '%-18s %-6s %12s execs' "$name" "$status" "$execs")")
done

printf '%s\n' "${summary[@]}"
if [ ${#failed[@]} -gt 0 ]; then
  echo "crashed: ${failed[*]} (inputs in fuzz/artifacts/)" >&2
  exit 1
fi
