# Stand-in for nginx:1.27 (see build.sh): the configuration is mounted at /etc/nginx/nginx.conf.
FROM chat-app-local/debian:sid
RUN apt-get -o Acquire::Check-Valid-Until=false update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends nginx-light \
 && rm -rf /var/lib/apt/lists/*
STOPSIGNAL SIGQUIT
CMD ["nginx", "-g", "daemon off;"]
