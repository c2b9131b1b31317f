# Stand-in for rust:*-slim: Debian's own Rust toolchain (see build.sh). extra-ca/ holds the
# building machine's own certificate authorities (build.sh copies them), for machines whose
# way out to crates.io re-signs TLS.
FROM chat-app-local/debian:sid
RUN apt-get -o Acquire::Check-Valid-Until=false update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      rustc cargo gcc libc6-dev ca-certificates \
 && rm -rf /var/lib/apt/lists/*
COPY extra-ca/ /usr/local/share/ca-certificates/
RUN update-ca-certificates >/dev/null
