# For those who build with Docker; `make image` builds the same image without a container
# runtime (hack/image.sh). Build: docker build -t pipeline-healer .
FROM rust:1.88-bookworm AS build
WORKDIR /src
COPY . .
# A static binary: it runs on distroless/static with nothing else in the image.
RUN RUSTFLAGS="-C target-feature=+crt-static" \
    cargo build --release --locked --target x86_64-unknown-linux-gnu --bin pipeline-healer

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /src/target/x86_64-unknown-linux-gnu/release/pipeline-healer /usr/local/bin/pipeline-healer
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/pipeline-healer"]
CMD ["run"]
