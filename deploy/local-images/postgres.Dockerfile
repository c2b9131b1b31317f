# Stand-in for postgres:17 (see build.sh): the same POSTGRES_USER / POSTGRES_PASSWORD /
# POSTGRES_DB contract and data directory, and pg_isready for the health check.
FROM chat-app-local/debian:sid
RUN apt-get -o Acquire::Check-Valid-Until=false update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends postgresql \
 && rm -rf /var/lib/apt/lists/* \
 && ln -s /usr/lib/postgresql/*/bin/postgres /usr/lib/postgresql/*/bin/initdb /usr/local/bin/ \
 && mkdir -p /var/lib/postgresql/data /run/postgresql \
 && chown -R postgres:postgres /var/lib/postgresql /run/postgresql
COPY postgres-entrypoint.sh /usr/local/bin/
ENV PGDATA=/var/lib/postgresql/data
USER postgres
STOPSIGNAL SIGINT
ENTRYPOINT ["postgres-entrypoint.sh"]
