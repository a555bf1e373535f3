# syntax=docker/dockerfile:1.10
#
# ghcr.io/bkg-rs/bkg: the `bkg` binary (`bkg operator`, `bkg gateway`) with the built admin UI,
# which the gateway serves at `/` (BKG_UI_DIR). Build from the repository root with BuildKit:
#
#   DOCKER_BUILDKIT=1 docker build -f docker/bkg.Dockerfile -t ghcr.io/bkg-rs/bkg:0.1.0 .
#
# Base images are pinned by tag, not digest: the checks run offline, where no registry can be
# asked for a digest. Release CI should resolve each tag once and pin `@sha256:…` (see docs/IMAGES.md).
# Checked by scripts/test.d/35-dockerfiles.sh (hadolint and dockerfile_check.py); never built there.

# --- admin UI: Angular, built once for every platform (the output is plain JS/CSS/HTML) ---------
FROM --platform=$BUILDPLATFORM docker.io/library/node:20.20.2-bookworm-slim AS ui
ENV NG_CLI_ANALYTICS=false NO_UPDATE_NOTIFIER=1 npm_config_fund=false npm_config_audit=false
WORKDIR /src/admin-ui
# Dependencies first, so a source edit does not reinstall node_modules.
COPY admin-ui/package.json admin-ui/package-lock.json ./
RUN --mount=type=cache,id=bkg-npm,target=/root/.npm,sharing=locked \
    npm ci --no-audit --no-fund --loglevel=error
COPY admin-ui/ ./
# Writes /src/admin-ui/dist/admin-ui/browser (angular.json sets no outputPath), as scripts/ui.sh does.
RUN npx ng build --configuration production \
 && test -f /src/admin-ui/dist/admin-ui/browser/index.html

# --- the bkg binary: Debian 12 toolchain, so its glibc matches the distroless Debian 12 base -----
FROM docker.io/library/rust:1.95.0-slim-bookworm AS build
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
# The target dir is a cache mount, so the binary is copied out of it in the same step.
RUN --mount=type=cache,id=bkg-cargo-registry,target=/usr/local/cargo/registry,sharing=locked \
    --mount=type=cache,id=bkg-cargo-git,target=/usr/local/cargo/git,sharing=locked \
    --mount=type=cache,id=bkg-target-bookworm,target=/src/target,sharing=locked \
    cargo build --release --locked -p bkg --bin bkg \
 && install -D -m 0755 /src/target/release/bkg /out/bkg

# --- run time: glibc, libgcc and CA certificates; no shell, no package manager ------------------
FROM gcr.io/distroless/cc-debian12:nonroot
ARG VERSION=0.1.0
ARG REVISION=unknown
LABEL org.opencontainers.image.title="bkg" \
      org.opencontainers.image.description="bkg operator and gateway (with the admin UI) for ML plugins on Kubernetes" \
      org.opencontainers.image.source="https://github.com/bkg-rs/bkg" \
      org.opencontainers.image.url="https://github.com/bkg-rs/bkg" \
      org.opencontainers.image.documentation="https://github.com/bkg-rs/bkg/blob/main/docs/IMAGES.md" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.vendor="bkg-rs" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}"
COPY --from=build /out/bkg /usr/local/bin/bkg
COPY --from=ui /src/admin-ui/dist/admin-ui/browser/ /usr/share/bkg/ui/
# Read by `bkg gateway` (and `bkg up`); `bkg operator` has no UI and ignores it.
ENV BKG_UI_DIR=/usr/share/bkg/ui
# distroless `nonroot` (65532), spelled as numbers so runAsNonRoot can verify it.
USER 65532:65532
# 43119: gateway (REST, WebSocket, UI, /metrics, /healthz). 9090: operator /metrics, /livez, /readyz.
EXPOSE 43119 9090
# No HEALTHCHECK: there is no shell or curl to run one; Kubernetes probes hit /healthz (gateway)
# and /livez, /readyz (operator) directly.
ENTRYPOINT ["/usr/local/bin/bkg"]
# The chart passes `operator` or `gateway …`; bare `docker run` prints the commands.
CMD ["--help"]
