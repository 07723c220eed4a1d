# outpost container image: build with the Rust toolchain, run on slim Debian as a non-root user.
#
#   docker build -t outpost .
#   docker run -p 5000:5000 -v outpost-data:/var/lib/outpost \
#     -v "$PWD/config.yaml:/etc/outpost/config.yaml:ro" outpost
#
# The image carries a minimal /etc/outpost/config.yaml (`outpost: {}`: the defaults), with which
# outpost refuses to serve 0.0.0.0: mount your own, with client authentication
# (`outpost.auth.htpasswd` or `outpost.tls.clientCa`) or `outpost.auth.anonymous: true`; mount your own
# (Palette user-data, OS-pack values, `outpost:` settings) over it.

FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p outpost --bin outpost \
 && cp target/release/outpost /usr/local/bin/outpost

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --user-group --home-dir /var/lib/outpost --shell /usr/sbin/nologin outpost \
 && mkdir -p /etc/outpost /var/lib/outpost \
 && printf 'outpost: {}\n' > /etc/outpost/config.yaml \
 && chown outpost:outpost /var/lib/outpost
COPY --from=build /usr/local/bin/outpost /usr/local/bin/outpost
USER outpost
VOLUME ["/var/lib/outpost"]
EXPOSE 5000
ENTRYPOINT ["outpost"]
CMD ["serve", "--config", "/etc/outpost/config.yaml", "--listen", "0.0.0.0:5000", "--data-dir", "/var/lib/outpost"]
