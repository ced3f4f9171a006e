# Builds the `insights` binary. The bench crate is not built: it is not part of the product.
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p insights-cli

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates && rm -rf /var/lib/apt/lists/*
COPY --from=build /src/target/release/insights /usr/local/bin/insights
USER 65534
ENTRYPOINT ["/usr/local/bin/insights"]
