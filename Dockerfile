# syntax=docker/dockerfile:1
# upcase in a container: built in a full Rust image, shipped in distroless
# (glibc and CA certificates, no shell, no package manager), as a non-root
# user. Untested here: this machine has no Docker engine (see the README).
#   docker build -t upcase:0.1.0 .
#   docker run --rm -p 12000:12000/tcp -p 12000:12000/udp upcase:0.1.0

FROM rust:1.95-bookworm AS build
WORKDIR /src
# Dependencies first, in their own layer, so that a source change does not
# rebuild them.
COPY Cargo.toml Cargo.lock ./
RUN mkdir src benches && echo 'fn main() {}' > src/main.rs && touch src/lib.rs \
    && echo 'fn main() {}' > benches/transform.rs \
    && cargo build --release --locked --bin upcase \
    && rm -rf src benches
COPY src src
# Cargo.toml names the benchmark, so its file must exist to build at all.
COPY benches benches
RUN touch src/main.rs src/lib.rs \
    && cargo build --release --locked --bin upcase \
    && strip target/release/upcase

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /src/target/release/upcase /usr/local/bin/upcase
# 65532: distroless' "nonroot".
USER 65532:65532
EXPOSE 12000/tcp 12000/udp 9100/tcp
ENTRYPOINT ["/usr/local/bin/upcase"]
# Metrics on all interfaces inside the container, for Prometheus.
CMD ["server", "--metrics", "0.0.0.0:9100"]
