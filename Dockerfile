# Builds the `insights` binary. The bench crate is not built: it is not part of the product.
# Tags are pinned to full versions so a rebuild gets the same toolchain and base; bump them
# deliberately.
FROM rust:1.95.0-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p insights-cli --bin insights

FROM debian:12.13-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 insights \
    && useradd --system --uid 10001 --gid insights --no-create-home --shell /usr/sbin/nologin insights
COPY --from=build /src/target/release/insights /usr/local/bin/insights
# A numeric user, so Kubernetes' runAsNonRoot can verify it without resolving names.
USER 10001:10001
# Health, readiness, metrics and dashboard of `insights work` (INSIGHTS_HTTP_BIND).
EXPOSE 9090
# The image has no curl: the binary GETs its own /healthz (2 s bound) and exits 0 or 1.
# Containers of other commands (migrate, enqueue, mock-llm) should disable it.
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
    CMD ["/usr/local/bin/insights", "healthcheck"]
ENTRYPOINT ["/usr/local/bin/insights"]
