#!/usr/bin/env bash
# Stand-ins for the Docker Hub images the deployment uses, built only from Debian packages, for a
# machine whose Docker engine cannot reach Docker Hub (deploy/smoke.sh calls this when the
# official images are neither present nor pullable). Not for production: there, use the
# official images named in the Dockerfile and docker-compose.yml.
#
#   deploy/local-images/build.sh     # builds the chat-app-local/* images listed below
#
# chat-app-local/debian:sid        debootstrap of Debian unstable (its rustc is new enough for
#                                  Cargo.lock; bookworm's and trixie's are not)
# chat-app-local/rust:sid          + rustc, cargo and a C toolchain  (stands in for rust:*-slim)
# chat-app-local/postgres:sid      + PostgreSQL, initialised from POSTGRES_* like the official image
# chat-app-local/redis:sid         + redis-server
# chat-app-local/nginx:sid         + nginx
#
# Needs root (debootstrap) and the Debian mirror (whose unstable index may be older than its
# validity window on a machine with a later clock, hence Check-Valid-Until=false). Safe to run
# again: existing images are kept.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
mirror="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
log() { printf '==> %s\n' "$*"; }
have_image() { docker image inspect "$1" >/dev/null 2>&1; }

if ! have_image chat-app-local/debian:sid; then
  command -v debootstrap >/dev/null || {
    echo "debootstrap is missing: apt-get install debootstrap" >&2
    exit 1
  }
  rootfs="$(mktemp -d /tmp/chat-app-rootfs.XXXXXX)"
  trap 'rm -rf "$rootfs"' EXIT
  log "debootstrap sid into $rootfs"
  debootstrap --variant=minbase sid "$rootfs" "$mirror" >/dev/null
  # Keep images small, as the slim images do.
  rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
  tar -C "$rootfs" -c . | docker import - chat-app-local/debian:sid >/dev/null
fi

# The build context: the Dockerfiles, the postgres entrypoint, and this machine's own
# certificate authorities (if it has any) for cargo to trust inside the rust image.
context="$(mktemp -d /tmp/chat-app-images.XXXXXX)"
trap 'rm -rf "$context" "${rootfs:-}"' EXIT
cp "$here"/*.Dockerfile "$here"/postgres-entrypoint.sh "$context"/
mkdir "$context/extra-ca"
cp /usr/local/share/ca-certificates/*.crt "$context/extra-ca/" 2>/dev/null || true
for name in rust postgres redis nginx; do
  if ! have_image "chat-app-local/$name:sid"; then
    log "building chat-app-local/$name:sid"
    docker build -t "chat-app-local/$name:sid" -f "$context/$name.Dockerfile" "$context"
  fi
done
log "local images ready"
