#!/usr/bin/env bash
# The deployment for real: builds the image, brings docker-compose.yml up (PostgreSQL, Redis,
# two chat-app replicas, nginx) and drives it through the load balancer with the official
# @microsoft/signalr client (deploy/smoke/smoke.mjs): users register, connect over WebSockets,
# Server-Sent Events and long polling, land on both replicas, and every one of them receives
# a message sent on one; then replica 1 gets SIGTERM and its clients reconnect to replica 2.
#
#   deploy/smoke.sh          # needs a Docker engine, docker compose (or docker-compose),
#                            # node and npm; takes the stack down afterwards
#   KEEP=1 deploy/smoke.sh   # leaves it running (docker compose -p chat-app-smoke down -v)
#   SKIP_BUILD=1 deploy/smoke.sh   # reuses the chat-app:latest image instead of rebuilding
#
# Secrets are generated for the run (a throwaway env file); nothing is published beyond
# 127.0.0.1. Where the official base images are neither present nor pullable (no Docker Hub),
# stand-ins are built from Debian packages by deploy/local-images/build.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
log() { printf '==> %s\n' "$*"; }
project=chat-app-smoke

if docker compose version >/dev/null 2>&1; then
  compose_cmd=(docker compose)
elif command -v docker-compose >/dev/null; then
  compose_cmd=(docker-compose)
else
  echo "smoke: needs docker compose or docker-compose" >&2
  exit 1
fi
docker info >/dev/null 2>&1 || { echo "smoke: no Docker engine answers (start dockerd)" >&2; exit 1; }

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
random_hex() { od -An -N"$1" -tx1 /dev/urandom | tr -d ' \n'; }

env_file="$(mktemp /tmp/chat-app-smoke-env.XXXXXX)"
lb_port="$(free_port)"
{
  echo "JWT_SECRET=$(random_hex 32)"
  echo "POSTGRES_PASSWORD=$(random_hex 24)"
  echo "LB_PUBLISH=127.0.0.1:$lb_port"
  echo "SMOKE_REPLICA_1_PORT=$(free_port)"
  echo "SMOKE_REPLICA_2_PORT=$(free_port)"
  echo "RUST_LOG=warn"
} > "$env_file"

# The official images, or stand-ins when Docker Hub cannot be reached.
official=(rust:1.95-slim-bookworm debian:bookworm-slim postgres:17 redis:7 nginx:1.27)
have_official=1
for image in "${official[@]}"; do
  docker image inspect "$image" >/dev/null 2>&1 && continue
  if ! timeout 60 docker pull -q "$image" >/dev/null 2>&1; then
    have_official=0
    break
  fi
done
if [ "$have_official" = 0 ]; then
  log "Docker Hub images unavailable: using stand-ins built from Debian packages"
  deploy/local-images/build.sh
  cat >> "$env_file" <<VARS
RUST_IMAGE=chat-app-local/rust:sid
RUNTIME_IMAGE=chat-app-local/debian:sid
POSTGRES_IMAGE=chat-app-local/postgres:sid
REDIS_IMAGE=chat-app-local/redis:sid
NGINX_IMAGE=chat-app-local/nginx:sid
VARS
fi
set -a
# shellcheck disable=SC1090
. "$env_file"
set +a

compose() { "${compose_cmd[@]}" -p "$project" --env-file "$env_file" -f docker-compose.yml -f deploy/smoke.compose.yml "$@"; }
cleanup() {
  status=$?
  if [ "$status" != 0 ]; then
    log "failed: the stack's last log lines"
    compose logs --tail=30 2>&1 || true
  fi
  if [ -z "${KEEP:-}" ]; then
    log "taking the stack down"
    compose down -v --remove-orphans >/dev/null 2>&1 || true
  fi
  rm -f "$env_file"
  exit "$status"
}
trap cleanup EXIT

if [ -n "${SKIP_BUILD:-}" ]; then
  log "using the chat-app:latest image already built (SKIP_BUILD)"
else
  log "building the image (docker build, the Dockerfile at the top)"
  started=$SECONDS
  docker build -q -t chat-app:latest --build-arg "RUST_IMAGE=${RUST_IMAGE:-rust:1.95-slim-bookworm}" \
    --build-arg "RUNTIME_IMAGE=${RUNTIME_IMAGE:-debian:bookworm-slim}" . >/dev/null
  log "image built in $((SECONDS - started)) s"
fi
log "image size: $(docker image inspect -f '{{.Size}}' chat-app:latest | awk '{printf "%.1f MB", $1/1e6}')"

log "bringing the stack up"
compose up -d --no-build >/dev/null 2>&1 || { compose up -d --no-build; exit 1; }
for _ in $(seq 1 120); do
  code="$(python3 -c "import urllib.request,sys
try: print(urllib.request.urlopen('http://127.0.0.1:$lb_port/health/ready', timeout=2).status)
except Exception as e: print(getattr(e, 'code', 0))")"
  [ "$code" = 200 ] && break
  sleep 1
done
[ "$code" = 200 ] || { echo "smoke: the load balancer never answered ready" >&2; exit 1; }
compose ps

suite=conformance-tests/node
if [ ! -d "$suite/node_modules/@microsoft/signalr" ]; then
  log "installing the official client (npm ci in $suite)"
  (cd "$suite" && npm ci --no-audit --no-fund --loglevel=error)
fi
log "driving the stack through the load balancer at http://127.0.0.1:$lb_port"
SMOKE_LB="http://127.0.0.1:$lb_port" \
  SMOKE_REPLICAS="http://127.0.0.1:$SMOKE_REPLICA_1_PORT,http://127.0.0.1:$SMOKE_REPLICA_2_PORT" \
  SMOKE_STOP_REPLICA_1="${compose_cmd[*]} -p $project --env-file $env_file -f docker-compose.yml -f deploy/smoke.compose.yml stop chat-app-1" \
  node deploy/smoke/smoke.mjs
exit_code="$(docker inspect -f '{{.State.ExitCode}}' "$(compose ps -q chat-app-1)")"
log "chat-app-1 exited with status $exit_code after SIGTERM"
[ "$exit_code" = 0 ] || { echo "smoke: chat-app-1 did not shut down cleanly" >&2; exit 1; }
log "smoke test passed"
