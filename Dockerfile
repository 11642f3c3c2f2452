# syntax=docker/dockerfile:1
# Reproducible build (--locked, pinned toolchain), tiny non-root runtime with only the binary.
# The build stage runs exactly what tests/run.sh runs in CI: `cargo build --release --locked`.
FROM docker.io/library/rust:1.95-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY examples ./examples
RUN cargo build --release --locked && strip target/release/accessgate

# distroless/cc: glibc + CA certificates (JWKS over https), no shell, uid 65532.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /src/target/release/accessgate /usr/local/bin/accessgate
USER 65532:65532
EXPOSE 8080 9090
ENTRYPOINT ["/usr/local/bin/accessgate"]
CMD ["run"]
