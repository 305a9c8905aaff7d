# tokengate in a container: built with a pinned Rust toolchain from Cargo.lock
# (`--locked`, the command CI runs in .ci/run), run as a non-root user on a
# distroless image (glibc and libgcc, no shell, no package manager, no curl:
# the health check is the binary's own `tokengate healthcheck`).
#
#   docker build -t tokengate .
#   docker run --rm -p 8080:8080 -p 8081:8081 \
#     -e TOKENGATE_REDIS_URL=redis://redis.internal:6379 \
#     -e TOKENGATE_ADMIN_KEY="$(head -c 24 /dev/urandom | base64)" \
#     -e TOKENGATE_PROXY_UPSTREAM=http://api.internal:3000 \
#     tokengate
#
# The image's config is deploy/docker/tokengate.toml (every listener on
# 0.0.0.0); it needs TOKENGATE_REDIS_URL and TOKENGATE_ADMIN_KEY. How to
# change it: docs/guide/deployment.md.

# The toolchain CI tests with (rust-version in Cargo.toml is 1.89; this
# builds the same code with the compiler the test suite ran on).
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin tokengate

# Debian 12's glibc, as the build stage's; the `nonroot` tag runs as uid 65532.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /src/target/release/tokengate /usr/local/bin/tokengate
COPY deploy/docker/tokengate.toml /etc/tokengate/tokengate.toml
ENV TOKENGATE_CONFIG=/etc/tokengate/tokengate.toml
USER 65532:65532
# The quick start's ports: proxy, admin (health, metrics), forward-auth.
EXPOSE 8080 8081 8082
# GET /healthz on the config's admin listener; the check gives up by itself
# after 5 s, before Docker's timeout.
HEALTHCHECK --interval=15s --timeout=10s --start-period=10s --retries=3 \
  CMD ["/usr/local/bin/tokengate", "healthcheck"]
# SIGTERM drains in-flight requests for [server] shutdown_grace (30 s):
# give `docker stop` more than that (`docker stop -t 40`, or
# stop_grace_period: 40s in compose).
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/tokengate"]
CMD ["serve"]
