# syntax=docker/dockerfile:1.10
#
# ghcr.io/bkg-rs/plugin-runtime:<version>-cuda: the plugin runtime with the Candle plugin on
# NVIDIA GPUs (cargo feature `cuda` of bkg-plugin-runtime, forwarded to bkg-plugin-candle/cuda).
# The operator picks it for Plugins with spec.resources.gpu. Build from the repository root with
# BuildKit (no GPU is needed to build; CUDA_COMPUTE_CAP lists the GPUs to compile kernels for):
#
#   DOCKER_BUILDKIT=1 docker build -f docker/plugin-runtime-cuda.Dockerfile \
#     --build-arg CUDA_COMPUTE_CAP=80,89,90 -t ghcr.io/bkg-rs/plugin-runtime:0.1.0-cuda .
#
# Base images are pinned by tag, not digest: the checks run offline, where no registry can be
# asked for a digest. Release CI should resolve each tag once and pin `@sha256:…` (see docs/IMAGES.md).
# The nvidia/cuda builder and base must carry the same CUDA version: cudarc takes its bindings from
# the toolkit it builds against, and the binary links the run-time image's libcublas/libnvrtc.
# Checked by scripts/test.d/35-dockerfiles.sh (hadolint and dockerfile_check.py); never built there.

# The official Rust toolchain, copied into the CUDA builder below (rustc needs glibc >= 2.17 only,
# so the Debian-built toolchain runs on Ubuntu 24.04).
FROM docker.io/library/rust:1.95.0-slim-bookworm AS rust-toolchain

# --- build: CUDA 12.9 toolkit (nvcc for candle's kernels, libcuda stub and cuBLAS to link) -------
FROM docker.io/nvidia/cuda:12.9.1-devel-ubuntu24.04 AS build
# C/C++ compilers: nvcc's host compiler for candle's kernels, and cc for ring (rustls).
# DL3008 (unpinned apt versions) is ignored: these are build-only tools from the archive of the
# pinned base tag, and Ubuntu keeps only the newest update of each package, so exact pins would
# break the build at the next security update without changing what ships in the run-time image.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates gcc g++ libc6-dev \
 && rm -rf /var/lib/apt/lists/*
COPY --from=rust-toolchain /usr/local/rustup /usr/local/rustup
COPY --from=rust-toolchain /usr/local/cargo /usr/local/cargo
ENV RUSTUP_HOME=/usr/local/rustup \
    CARGO_HOME=/usr/local/cargo \
    PATH=/usr/local/cargo/bin:$PATH
# Compute capabilities of the target GPUs: 80 A100, 89 L4/L40S, 90 H100/H200. candle's kernels
# (vendor/candle-kernels) carry SASS for each, so a pod starts without JIT-compiling them, and PTX
# for the newest, which the driver JIT-compiles for newer GPUs. scripts/check-cuda.sh builds with
# the same list. Without it the build runs nvidia-smi, which a builder lacks.
ARG CUDA_COMPUTE_CAP=80,89,90
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
# The target dir is a cache mount (its own: another toolchain and glibc than the Debian builds),
# so the binary is copied out of it in the same step.
RUN --mount=type=cache,id=bkg-cargo-registry,target=/usr/local/cargo/registry,sharing=locked \
    --mount=type=cache,id=bkg-cargo-git,target=/usr/local/cargo/git,sharing=locked \
    --mount=type=cache,id=bkg-target-cuda,target=/src/target,sharing=locked \
    CUDA_COMPUTE_CAP="$CUDA_COMPUTE_CAP" \
    cargo build --release --locked -p bkg-plugin-runtime --bin plugin-runtime --features cuda \
 && install -D -m 0755 /src/target/release/plugin-runtime /out/plugin-runtime \
 && install -d -m 0755 /out/cache/models

# --- run time: CUDA 12.9 user-space libraries (cuBLAS, cuRAND, NVRTC); the driver (libcuda) is
# mounted from the node by the NVIDIA container toolkit. This base is Ubuntu and keeps its shell
# and apt: NVIDIA ships these libraries only as distro packages, and lifting them into distroless
# by hand (with their loader config) would be a fragile copy of a ~2 GB tree. We still install
# nothing, run nothing as root, and run as a non-root numeric user on a read-only root filesystem.
FROM docker.io/nvidia/cuda:12.9.1-runtime-ubuntu24.04
ARG VERSION=0.1.0
ARG REVISION=unknown
ARG CUDA_COMPUTE_CAP=80,89,90
LABEL org.opencontainers.image.title="bkg-plugin-runtime-cuda" \
      org.opencontainers.image.description="bkg plugin runtime with the Candle plugin on NVIDIA CUDA 12.9 (compute capabilities ${CUDA_COMPUTE_CAP}); NVIDIA's CUDA EULA applies to the base layers" \
      org.opencontainers.image.source="https://github.com/bkg-rs/bkg" \
      org.opencontainers.image.url="https://github.com/bkg-rs/bkg" \
      org.opencontainers.image.documentation="https://github.com/bkg-rs/bkg/blob/main/docs/IMAGES.md" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.vendor="bkg-rs" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.base.name="docker.io/nvidia/cuda:12.9.1-runtime-ubuntu24.04"
COPY --from=build /out/plugin-runtime /usr/local/bin/plugin-runtime
# Owned by the run-time user, so a fresh named volume mounted here is writable too.
COPY --from=build --chown=65532:65532 /out/cache/ /var/cache/bkg/
# Models are downloaded into the Hugging Face cache at run time: keep it on a volume (the operator
# mounts `model-cache` here, an emptyDir or a PVC). Same path as MODEL_CACHE_DIR in the operator.
# The driver's JIT cache goes there too (the default, $HOME/.nv, is on the read-only root): only
# a GPU missing from CUDA_COMPUTE_CAP JIT-compiles the PTX, and then once per volume.
ENV HF_HOME=/var/cache/bkg/models \
    CUDA_CACHE_PATH=/var/cache/bkg/models/cuda-jit-cache \
    BKG_LISTEN=0.0.0.0:8080
VOLUME ["/var/cache/bkg/models"]
# Same uid/gid as the CPU image and the operator's pod securityContext; no passwd entry is needed.
USER 65532:65532
EXPOSE 8080 9090
# No HEALTHCHECK: Kubernetes probes hit /livez and /readyz (as for the CPU image).
ENTRYPOINT ["/usr/local/bin/plugin-runtime"]
CMD ["--plugin", "echo"]
