# syntax=docker/dockerfile:1
# Reproducible build (--locked, pinned toolchain), tiny non-root runtime with only the binary.
# The build stage runs exactly what tests/run.sh runs in CI: `cargo build --release --locked`.
#
# Build arguments (defaults are what a release uses):
#   BUILD_IMAGE    the Rust toolchain image of the build stage
#   RUNTIME_IMAGE  the runtime base: glibc + CA certificates + user 65532, no shell
#   BINARY_FROM    the image the binary is copied from, at /src/target/release/accessgate:
#                  `build` (the build stage below) or an image holding a binary built elsewhere
#                  (tests/node builds one from the host's `cargo build --release --locked`;
#                  the build stage is then unused and skipped, its base never pulled)
# The default BINARY_FROM=build relies on `FROM ${ARG}` naming an earlier stage, which
# Docker's BuildKit resolves; buildah <= 1.28 (podman 4.3) does not: there, build in two steps,
#   buildah bud --target build -t accessgate-build . &&
#   buildah bud --build-arg BINARY_FROM=localhost/accessgate-build .
ARG BUILD_IMAGE=docker.io/library/rust:1.95-bookworm
ARG RUNTIME_IMAGE=gcr.io/distroless/cc-debian12:nonroot
ARG BINARY_FROM=build

FROM ${BUILD_IMAGE} AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY examples ./examples
RUN cargo build --release --locked && strip target/release/accessgate

FROM ${BINARY_FROM} AS binary

# distroless/cc: glibc + CA certificates (JWKS over https), no shell, uid 65532.
FROM ${RUNTIME_IMAGE}
COPY --from=binary /src/target/release/accessgate /usr/local/bin/accessgate
USER 65532:65532
EXPOSE 8080 9090
ENTRYPOINT ["/usr/local/bin/accessgate"]
CMD ["run"]
