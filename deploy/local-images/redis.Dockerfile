# Stand-in for redis:7 (see build.sh). Compose gives the command line. Like the official
# image, the server is not in protected mode: it is reached from the other containers, on a
# network of their own.
FROM chat-app-local/debian:sid
RUN apt-get -o Acquire::Check-Valid-Until=false update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends redis-server \
 && rm -rf /var/lib/apt/lists/* \
 && printf '#!/bin/sh\nexec /usr/bin/redis-server "$@" --protected-mode no\n' > /usr/local/bin/redis-server \
 && chmod +x /usr/local/bin/redis-server
USER redis
CMD ["redis-server"]
