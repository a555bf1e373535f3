#!/usr/bin/env bash
# The image Dockerfiles (docker/*.Dockerfile), checked statically: this machine has no Docker
# engine, so nothing here builds them.
#   1. hadolint (pinned, scripts/setup.sh) at failure threshold `style`, so every finding fails;
#      the few ignores are inline, each with its reason. FROM images only from docker.io and
#      gcr.io, and the OCI labels present and well-formed.
#   2. dockerfile_check.py: COPY sources exist and get past .dockerignore, --from stages exist and
#      make the path, cargo packages/binaries/features exist (cargo metadata), every workspace
#      member and [patch] crate is copied, final stages run as a numeric non-root USER with an
#      exec ENTRYPOINT.
#   3. Both refuse broken copies of the real files, naming the fault. A few seconds.
set -euo pipefail
cd "${BKG_REPO_ROOT:-$(dirname "$0")/../..}"
HADOLINT_VERSION=2.15.1
command -v hadolint >/dev/null || { echo "hadolint missing: run scripts/setup.sh" >&2; exit 1; }
hadolint --version | grep -qF " $HADOLINT_VERSION" \
  || { echo "hadolint is not $HADOLINT_VERSION ($(hadolint --version)): run scripts/setup.sh" >&2; exit 1; }
tmp="$(mktemp -d)"; trap 'rm -rf "$tmp"' EXIT

dockerfiles=(docker/*.Dockerfile)
[ "${#dockerfiles[@]}" -eq 3 ] || { echo "FAIL: expected 3 Dockerfiles, found: ${dockerfiles[*]}" >&2; exit 1; }

lint() {
  hadolint --no-color --failure-threshold style \
    --trusted-registry docker.io --trusted-registry gcr.io \
    --require-label org.opencontainers.image.title:text \
    --require-label org.opencontainers.image.description:text \
    --require-label org.opencontainers.image.source:url \
    --require-label org.opencontainers.image.licenses:spdx \
    --require-label org.opencontainers.image.version:text \
    --require-label org.opencontainers.image.revision:text \
    "$@"
}
cargo metadata --no-deps --format-version 1 --offline >"$tmp/metadata.json"
check() { python3 scripts/test.d/dockerfile_check.py --context . --metadata "$tmp/metadata.json" "$@"; }

# 1, 2. The real files.
lint "${dockerfiles[@]}"
echo "ok: hadolint $HADOLINT_VERSION (threshold style) passes ${dockerfiles[*]}"
check "${dockerfiles[@]}"

# 3. Broken copies, written to $tmp. Each replaces one string of a real Dockerfile (the
#    replacement must apply) and must be refused with a message containing the expected text.
mutate() { # SRC OLD NEW DEST
  python3 - "$@" <<'PY'
import sys
src, old, new, dest = sys.argv[1:]
text = open(src).read()
if old not in text:
    sys.exit(f"FAIL: the negative test's anchor {old!r} is no longer in {src}")
open(dest, "w").write(text.replace(old, new, 1))
PY
}
refused() { # TOOL NAME EXPECTED   (TOOL: lint or check; reads $tmp/NAME.Dockerfile)
  local out
  if out="$("$1" "$tmp/$2.Dockerfile" 2>&1)"; then
    echo "FAIL: $1 accepted the broken Dockerfile $2" >&2; exit 1
  fi
  grep -qF -- "$3" <<<"$out" || { printf 'FAIL: %s refused %s without naming %q:\n%s\n' "$1" "$2" "$3" "$out" >&2; exit 1; }
}

# The copies pass unchanged, so each refusal below is the mutation's doing.
for f in "${dockerfiles[@]}"; do cp "$f" "$tmp/$(basename "$f")"; done
check "$tmp"/*.Dockerfile >/dev/null

RT=docker/plugin-runtime.Dockerfile BKG=docker/bkg.Dockerfile CUDA=docker/plugin-runtime-cuda.Dockerfile
cases=( # name | source | replace | with | the refusal names
  "missing|$RT|COPY trace/ trace/|COPY tracing/ trace/|COPY source tracing/ does not exist"
  "ignored|$RT|COPY Cargo.toml Cargo.lock ./|COPY Cargo.toml Cargo.lock .ci/run ./|COPY source .ci/run is excluded by .dockerignore"
  "untracked|$BKG|COPY admin-ui/ ./|COPY admin-ui/node_modules/ ./|COPY source admin-ui/node_modules/ does not exist"
  "member|$RT|COPY e2e/ e2e/|COPY e2e/src/ e2e/src/|e2e/Cargo.toml is not copied to /src/e2e/Cargo.toml"
  "patch|$BKG|COPY vendor/ vendor/|COPY vendor/candle-kernels/src/ vendor/candle-kernels/src/|vendor/candle-kernels/Cargo.toml is not copied"
  "stage|$BKG|COPY --from=ui |COPY --from=web |COPY --from=web: no stage web defined"
  "stagepath|$BKG|COPY --from=build /out/bkg |COPY --from=build /out/bkgd |stage build makes no such path"
  "cachepath|$BKG|COPY --from=build /out/bkg |COPY --from=build /src/target/release/bkg |/src/target is a cache mount"
  "rootuser|$RT|USER 65532:65532|USER root|USER root is not numeric"
  "uid0|$CUDA|USER 65532:65532|USER 0:0|USER 0:0 is root"
  "nouser|$RT|USER 65532:65532|EXPOSE 8081|sets no USER"
  "package|$RT|-p bkg-plugin-runtime|-p bkg-runtime|cargo build -p bkg-runtime: no such package"
  "binary|$BKG|--bin bkg |--bin bkgctl |cargo build --bin bkgctl: no binary bkgctl"
  "feature|$CUDA|--features cuda|--features gpu|cargo build --features gpu: none of bkg-plugin-runtime"
  "unlocked|$RT|cargo build --release --locked|cargo build --release|cargo build without --locked"
  "entrypoint|$RT|ENTRYPOINT [\"/usr/local/bin/plugin-runtime\"]|ENTRYPOINT [\"/usr/local/bin/bkg-plugin-runtime\"]|ENTRYPOINT /usr/local/bin/bkg-plugin-runtime is not copied"
  "version|$BKG|ARG VERSION=0.1.0|ARG VERSION=0.2.0|ARG VERSION=0.2.0, but the crates built here are version 0.1.0"
)
for c in "${cases[@]}"; do
  IFS='|' read -r name src old new expected <<<"$c"
  mutate "$src" "$old" "$new" "$tmp/$name.Dockerfile"
  refused check "$name" "$expected"
done
# A Dockerfile's own <name>.dockerignore replaces the root one (BuildKit's rule).
cp "$RT" "$tmp/own.Dockerfile"
{ cat .dockerignore; echo trace; } >"$tmp/own.Dockerfile.dockerignore"
refused check own "COPY source trace/ is excluded by .dockerignore"
echo "ok: dockerfile_check.py refuses $(( ${#cases[@]} + 1 )) broken Dockerfiles, each naming the fault"

# hadolint's threshold and ignores bite: `latest`, a dropped inline ignore, a bad licence label.
mutate "$RT" "cc-debian12:nonroot" "cc-debian12:latest" "$tmp/latest.Dockerfile"
refused lint latest DL3007
mutate "$CUDA" "# hadolint ignore=DL3008" "" "$tmp/noignore.Dockerfile"
refused lint noignore DL3008
mutate "$BKG" 'licenses="Apache-2.0"' 'licenses="Apache 2"' "$tmp/licence.Dockerfile"
refused lint licence DL3054
mutate "$RT" "FROM gcr.io/distroless" "FROM quay.io/distroless" "$tmp/registry.Dockerfile"
refused lint registry DL3026
echo "ok: hadolint refuses 4 broken Dockerfiles"
