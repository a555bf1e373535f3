# syntax=docker/dockerfile:1.10
#
# ghcr.io/bkg-rs/plugin-runtime: the CPU plugin runtime (`plugin-runtime`, crate bkg-plugin-runtime)
# with every compiled-in plugin (echo, candle, rustyface, brainml). The operator runs it with
# `--plugin <implementation> --id <name>` and mounts the model cache, config and /tmp.
# Build from the repository root with BuildKit:
#
#   DOCKER_BUILDKIT=1 docker build -f docker/plugin-runtime.Dockerfile -t ghcr.io/bkg-rs/plugin-runtime:0.1.0 .
#
# Base images are pinned by tag, not digest: the checks run offline, where no registry can be
# asked for a digest. Release CI should resolve each tag once and pin `@sha256:…` (see docs/IMAGES.md).
# Checked by scripts/test.d/35-dockerfiles.sh (hadolint and dockerfile_check.py); never built there.

# --- build: Debian 12 toolchain, so its glibc matches the distroless Debian 12 base -------------
FROM docker.io/library/rust:1.95.0-slim-bookworm AS build
# The plugins compiled in (cargo features of bkg-plugin-runtime): `--build-arg PLUGINS=echo`
# makes an echo-only image without Candle.
ARG PLUGINS=echo,candle,rustyface,brainml
WORKDIR /src
# Every workspace member and [patch] crate (vendor/) must be present for cargo to load the
# workspace (checked by dockerfile_check.py against `cargo metadata` and Cargo.toml).
COPY Cargo.toml Cargo.lock ./
COPY core/ core/
COPY wire/ wire/
COPY supervisor/ supervisor/
COPY operator/ operator/
COPY gateway/ gateway/
COPY plugin-runtime/ plugin-runtime/
COPY plugins/ plugins/
COPY trace/ trace/
COPY cli/ cli/
COPY e2e/ e2e/
COPY vendor/ vendor/
# The target dir is a cache mount, so the binary is copied out of it in the same step. The model
# cache directory is made here because the run-time image has no shell to make it.
RUN --mount=type=cache,id=bkg-cargo-registry,target=/usr/local/cargo/registry,sharing=locked \
    --mount=type=cache,id=bkg-cargo-git,target=/usr/local/cargo/git,sharing=locked \
    --mount=type=cache,id=bkg-target-bookworm,target=/src/target,sharing=locked \
    cargo build --release --locked -p bkg-plugin-runtime --bin plugin-runtime \
      --no-default-features --features "${PLUGINS}" \
 && install -D -m 0755 /src/target/release/plugin-runtime /out/plugin-runtime \
 && install -d -m 0755 /out/cache/models

# --- run time: glibc, libgcc and CA certificates (model downloads); no shell, no package manager -
FROM gcr.io/distroless/cc-debian12:nonroot
ARG VERSION=0.1.0
ARG REVISION=unknown
LABEL org.opencontainers.image.title="bkg-plugin-runtime" \
      org.opencontainers.image.description="bkg plugin runtime (CPU): hosts one plugin (echo, candle embeddings, rustyface face detection, brainml ONNX models) behind the bkg.plugin/v1 HTTP protocol" \
      org.opencontainers.image.source="https://github.com/bkg-rs/bkg" \
      org.opencontainers.image.url="https://github.com/bkg-rs/bkg" \
      org.opencontainers.image.documentation="https://github.com/bkg-rs/bkg/blob/main/docs/IMAGES.md" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.vendor="bkg-rs" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}"
COPY --from=build /out/plugin-runtime /usr/local/bin/plugin-runtime
# Owned by the run-time user, so a fresh named volume mounted here is writable too.
COPY --from=build --chown=65532:65532 /out/cache/ /var/cache/bkg/
# Models are downloaded into the Hugging Face cache at run time: keep it on a volume (the operator
# mounts `model-cache` here, an emptyDir or a PVC) so restarts do not download again. Same path as
# MODEL_CACHE_DIR in operator/src/k8s/build.rs.
ENV HF_HOME=/var/cache/bkg/models \
    BKG_LISTEN=0.0.0.0:8080
VOLUME ["/var/cache/bkg/models"]
# distroless `nonroot` (65532), spelled as numbers so runAsNonRoot can verify it; the operator
# runs the pod as the same uid/gid.
USER 65532:65532
# bkg.plugin/v1 protocol, /livez, /readyz and /metrics all on one port (HTTP_PORT in the operator).
EXPOSE 8080 9090
# No HEALTHCHECK: there is no shell or curl to run one; Kubernetes probes hit /livez and /readyz.
ENTRYPOINT ["/usr/local/bin/plugin-runtime"]
# The operator replaces these with `--plugin <implementation> --id <name>`; bare `docker run`
# serves the echo plugin.
CMD ["--plugin", "echo"]
