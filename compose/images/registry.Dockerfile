# registry:2 for the offline development stack (compose/up.sh): Debian's docker-registry (Docker
# Distribution 2.8) on the Debian base that compose/up.sh makes with mmdebstrap, configured like
# the official image (filesystem storage in /var/lib/registry, port 5000, REGISTRY_* variables
# override the file). With internet access, `docker compose up` pulls the official image instead.
FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends docker-registry \
 && rm -rf /var/lib/apt/lists/*
COPY registry-config.yml /etc/docker/registry/config.yml
VOLUME ["/var/lib/registry"]
EXPOSE 5000
ENTRYPOINT ["/usr/bin/docker-registry"]
CMD ["serve", "/etc/docker/registry/config.yml"]
