# syntax=docker/dockerfile:1
# trialflow as a container: an optimised build in a Rust image, run from a slim Debian image
# as a non-root user with the data directory as a volume. compose.yaml shows the scale-out shape.
#   docker build -t trialflow .
#   docker run -p 3000:3000 -v trialflow-data:/data trialflow serve --demo

FROM rust:1.95-bookworm AS build
WORKDIR /src
# The same build path as ./scripts/run.sh --release: wasm target, wasm-opt from npm, the workspace xtask.
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target,id=trialflow-target \
    bash -c 'source scripts/lib.sh && ensure_rust_tools && ensure_wasm_opt && build_site --release' \
    && mkdir -p /out \
    && cp target/release/trialflow /out/trialflow \
    && cp -r target/release/site /out/site

FROM debian:bookworm-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --home-dir /data --shell /usr/sbin/nologin trialflow \
    && mkdir -p /data && chown trialflow:trialflow /data
COPY --from=build /out/trialflow /app/trialflow
COPY --from=build /out/site /app/site
ENV PATH=/app:$PATH \
    TRIALFLOW_DATA_DIR=/data \
    TRIALFLOW_ADDR=0.0.0.0:3000 \
    TRIALFLOW_SITE_ROOT=/app/site
USER trialflow
VOLUME /data
EXPOSE 3000
# Worker containers serve no HTTP: compose turns this check off for them.
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
    CMD ["trialflow", "healthcheck"]
ENTRYPOINT ["trialflow"]
CMD ["serve"]
