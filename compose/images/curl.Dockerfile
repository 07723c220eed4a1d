# curlimages/curl for the offline development stack (compose/up.sh): Debian's curl on the Debian
# base that compose/up.sh makes with mmdebstrap (with sh, tar, gzip and sha256sum, which
# compose/seed.sh needs). With internet access, `docker compose up` pulls the official image.
FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends curl \
 && rm -rf /var/lib/apt/lists/*
ENTRYPOINT ["curl"]
