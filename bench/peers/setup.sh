#!/bin/sh
# Installs the peer servers signalr-bench compares against into a scratch directory outside the
# repository: aiosignalr (Python, from PyPI) in a virtualenv and socket.io (Node, from npm).
# Nothing installed here is committed; only our small server scripts live in bench/peers.
#
#   sh bench/peers/setup.sh            # into ${SIGNALR_BENCH_PEERS:-${TMPDIR:-/tmp}/signalr-bench-peers}
set -eu
dir="${SIGNALR_BENCH_PEERS:-${TMPDIR:-/tmp}/signalr-bench-peers}"
mkdir -p "$dir"
echo "peers go to $dir"

if command -v python3 >/dev/null 2>&1; then
    python3 -m venv "$dir/venv"
    "$dir/venv/bin/pip" install --quiet --upgrade pip
    "$dir/venv/bin/pip" install --quiet aiosignalr
    "$dir/venv/bin/python" -c 'import aiosignalr.server' && touch "$dir/aiosignalr.ok"
    echo "aiosignalr: installed"
else
    echo "aiosignalr: skipped (no python3)"
fi

if command -v npm >/dev/null 2>&1; then
    (cd "$dir" && { [ -f package.json ] || npm init -y >/dev/null; } && npm install --silent socket.io@4)
    [ -d "$dir/node_modules/socket.io" ] && touch "$dir/socketio.ok"
    echo "socket.io: installed"
else
    echo "socket.io: skipped (no npm)"
fi
