# The chat service as a container image: the same binary as `cargo run --release -p chat-app`.
#
#   docker build -t chat-app .
#   docker run --rm -p 5000:5000 -e JWT_SECRET="$(openssl rand -hex 32)" \
#     -v chat-data:/var/lib/chat-app chat-app
#
# The image runs in production mode (JWT_SECRET is required), listens on 0.0.0.0:5000 and keeps
# its SQLite database in /var/lib/chat-app unless DATABASE_URL points at PostgreSQL. On SIGTERM
# (docker stop, Kubernetes) it drains: new connections are refused, every hub client gets a Close
# with allowReconnect (so it reconnects to another replica), queued messages are flushed, and
# the process exits once connections end (at most the hub's 5 s shutdown timeout later).
#
# Both base images are build arguments, so a machine without Docker Hub can build from its own
# copies (deploy/local-images/build.sh); the runtime image must have the build image's glibc or
# a newer one.
ARG RUST_IMAGE=rust:1.95-slim-bookworm
ARG RUNTIME_IMAGE=debian:bookworm-slim

FROM ${RUST_IMAGE} AS build
WORKDIR /src
# The whole workspace (less what .dockerignore leaves out): Cargo needs every member's manifest.
COPY . .
RUN cargo build --release --locked -p chat-app --bin chat-app \
 && install -D -m 0755 target/release/chat-app /out/chat-app

FROM ${RUNTIME_IMAGE}
# A fixed non-root user, so volume ownership and Kubernetes' runAsUser agree across builds.
RUN groupadd --system --gid 10001 chat \
 && useradd --system --uid 10001 --gid chat --home-dir /var/lib/chat-app --create-home \
      --shell /usr/sbin/nologin chat
COPY --from=build /out/chat-app /usr/local/bin/chat-app
USER 10001:10001
WORKDIR /var/lib/chat-app
ENV APP_ENV=production \
    LISTEN_ADDR=0.0.0.0:5000 \
    RUST_LOG=info
EXPOSE 5000
STOPSIGNAL SIGTERM
# Liveness over plain bash (no curl in the image): the port comes from LISTEN_ADDR.
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s --retries=3 \
  CMD ["bash", "-c", "exec 3<>/dev/tcp/127.0.0.1/${LISTEN_ADDR##*:} && printf 'GET /health/live HTTP/1.1\\r\\nHost: localhost\\r\\nConnection: close\\r\\n\\r\\n' >&3 && head -n 1 <&3 | grep -q ' 200 '"]
# Exec form: chat-app is PID 1 and receives SIGTERM itself.
ENTRYPOINT ["/usr/local/bin/chat-app"]
