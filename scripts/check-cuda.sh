#!/usr/bin/env bash
# Builds and links the CUDA build of the runtime (cargo feature `cuda`, which the CPU build never
# needs) on a machine without a GPU or a system CUDA toolkit, and checks what it carries:
#
#   scripts/check-cuda.sh               # CUDA_COMPUTE_CAP=80,89,90 (the image's list), and clippy
#   CUDA_COMPUTE_CAP=90 scripts/check-cuda.sh --no-clippy    # what `make test` runs (90-cuda.sh)
#
# 1. nvcc, cicc, ptxas, cuobjdump, the CUDA headers and libcudart.so.13 come from NVIDIA's PyPI
#    wheels into .tools/cuda-venv.
# 2. Stub libcuda.so.1, libcublas.so.13, libcublasLt.so.13, libcurand.so.10 and libnvrtc.so.13
#    (scripts/cuda-stubs.sh) go into the toolkit's lib/stubs, where cudarc's build script points
#    the linker. They are for linking only: the binary records their sonames, and at run time the
#    real libraries are loaded, libcuda from the GPU node's driver and the rest from the CUDA
#    image (docker/plugin-runtime-cuda.Dockerfile, which links the real ones at build time).
# 3. `cargo build --workspace --features bkg-plugin-runtime/cuda` (the debug build `make build`
#    makes, so only candle and our crates above it compile again): candle's kernels
#    (vendor/candle-kernels) become fatbins with SASS for each CUDA_COMPUTE_CAP and PTX for the
#    newest, and the binary is linked. It is copied to target/cuda/plugin-runtime and the CPU
#    binary is put back in target/debug (cargo copies it out again; nothing recompiles).
# 4. Checks, each failing the script: the binary's NEEDED entries name the CUDA sonames and its
#    RUNPATH no stub directory; each run-time kernel module's fatbin (cuobjdump) has SASS for every
#    listed architecture and PTX for the newest, and its bytes are in the binary; the statically
#    linked MoE/GGUF kernels in the binary have SASS for every architecture too.
# 5. Without --no-clippy, clippy -D warnings over the runtime and the Candle plugin with `cuda`.
#
# Nothing runs on a GPU here. Times on 2 cores: docs/IMAGES.md#cuda-build.
set -euo pipefail
cd "$(dirname "$0")/.."
clippy=yes
case "${1:-}" in
  --no-clippy) clippy=no ;;
  "") ;;
  *) echo "usage: scripts/check-cuda.sh [--no-clippy]" >&2; exit 2 ;;
esac
# 1 and 2: the toolkit from the wheels and the stub libraries.
. scripts/cuda-env.sh

# 3. Build and link; cargo's JSON messages name the binary and the kernels' build directory.
tmp="$(mktemp -d)"
restore() { # the CPU build's binary back in target/debug, whatever happened
  cargo build --locked --workspace -q || echo "WARN: could not restore the CPU build in target/debug" >&2
  rm -rf "$tmp"
}
trap restore EXIT
start=$SECONDS
cargo build --locked --workspace --features bkg-plugin-runtime/cuda \
  --message-format json-render-diagnostics >"$tmp/build.json"
echo "built and linked in $((SECONDS - start)) s (CUDA_COMPUTE_CAP=$CUDA_COMPUTE_CAP)"
read -r bin kernels < <(python3 - "$tmp/build.json" <<'PY'
import json, sys
bin = out = None
for line in open(sys.argv[1]):
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m["target"]["name"] == "plugin-runtime" \
            and m.get("executable"):
        bin = m["executable"]
    if m.get("reason") == "build-script-executed" and "candle-kernels" in m["package_id"]:
        out = m["out_dir"]
assert bin and out, "cargo reported no plugin-runtime binary or no candle-kernels build"
print(bin, out)
PY
)
mkdir -p target/cuda
cp "$bin" target/cuda/plugin-runtime
bin=target/cuda/plugin-runtime

# 4. What the binary links and carries.
python3 - "$bin" "$kernels" "$CUDA_COMPUTE_CAP" "$tmp" <<'PY'
import glob, os, re, struct, subprocess, sys
binary, kernels, caps, tmp = sys.argv[1:]
archs = sorted({int(c.strip().removeprefix("sm_").replace(".", "")) for c in re.split(r"[,; ]+", caps) if c.strip()})
fail = []
dynamic = subprocess.run(["readelf", "-d", binary], check=True, capture_output=True, text=True).stdout
needed = re.findall(r"\(NEEDED\)\s+Shared library: \[(.+)\]", dynamic)
print("NEEDED:", " ".join(needed))
# The linker keeps only libraries the binary calls into (--as-needed): candle reaches cuBLASLt
# through cuBLAS and compiles nothing with NVRTC, so neither is a NEEDED entry of its own.
for lib in ["libcuda.so.1", "libcublas.so.13", "libcurand.so.10", "libcudart.so.13"]:
    if lib not in needed:
        fail.append(f"{binary} does not link {lib}")
for path in re.findall(r"\((?:RUNPATH|RPATH)\)\s+Library r(?:un)?path: \[(.+)\]", dynamic):
    if "stubs" in path:
        fail.append(f"{binary} has RUNPATH {path}: it would load the link-time stubs")

def listing(path):
    out = subprocess.run(["cuobjdump", "--list-elf", "--list-ptx", path], check=True,
                         capture_output=True, text=True).stdout
    return (sorted({int(a) for a in re.findall(r"ELF file .*\.sm_(\d+)\.cubin", out)}),
            sorted({int(a) for a in re.findall(r"PTX file .*\.sm_(\d+)\.ptx", out)}))

def show(name, sass, ptx):
    print(f"{name:32} SASS sm_{', sm_'.join(map(str, sass))}; PTX compute_{', compute_'.join(map(str, ptx))}")

# The kernel modules candle-kernels built (all 11), as cuobjdump reads them.
modules = sorted(glob.glob(os.path.join(kernels, "*.fatbin")))
if len(modules) != 11:
    fail.append(f"{kernels}: {len(modules)} kernel fatbins, expected candle's 11 modules")
for fatbin in modules:
    sass, ptx = listing(fatbin)
    show(f"built {os.path.basename(fatbin)}", sass, ptx)
    if sass != archs or ptx != archs[-1:]:
        fail.append(f"{fatbin}: SASS for {sass} and PTX for {ptx}, expected SASS {archs}, PTX {archs[-1:]}")

# The fatbins in the binary itself: each starts with a 16-byte header (magic 0xBA55ED50, version
# 1, header size 16, size of the rest), whether the linker put it in .nv_fatbin (the statically
# linked MoE/GGUF kernels) or include_bytes! in .rodata (the modules above that candle's code
# reaches; the linker drops the ones this binary never loads).
data = open(binary, "rb").read()
embedded, at = [], data.find(b"\x50\xed\x55\xba")
while at >= 0:
    version, header, size = struct.unpack_from("<HHQ", data, at + 4)
    if version == 1 and header == 16 and at + 16 + size <= len(data):
        blob = data[at:at + 16 + size]
        path = os.path.join(tmp, f"embedded-{len(embedded)}.fatbin")
        open(path, "wb").write(blob)
        names = [os.path.basename(m) for m in modules if open(m, "rb").read() == blob]
        embedded.append((path, names[0] if names else "linked (MoE/GGUF)"))
    at = data.find(b"\x50\xed\x55\xba", at + 1)
found = {name for _, name in embedded}
print(f"{binary}: {len(embedded)} fatbins; kernel modules in it: {', '.join(sorted(n for n in found if n.endswith('.fatbin')))}")
if not any(n.endswith(".fatbin") for n in found) or "linked (MoE/GGUF)" not in found:
    fail.append(f"{binary}: expected candle's kernel modules and its linked kernels among its fatbins")
for path, name in embedded:
    sass, ptx = listing(path)
    if sass != archs:
        fail.append(f"{binary}: a fatbin ({name}) has SASS for {sass}, expected {archs}")
for name in sorted(found):
    sass, ptx = listing(next(p for p, n in embedded if n == name))
    show(f"in binary: {name}", sass, ptx)
for f in fail:
    print("FAIL:", f, file=sys.stderr)
sys.exit(1 if fail else 0)
PY
echo "ok: $bin links the CUDA runtime (stubs) and carries SASS for sm_${CUDA_COMPUTE_CAP//,/, sm_} (CUDA $CUDA); it has not run on a GPU here"

# 5. Clippy checks our cuda code paths (a check build: candle's kernels are not compiled again).
if [ "$clippy" = yes ]; then
  cargo clippy --locked -p bkg-plugin-runtime -p bkg-plugin-candle --features bkg-plugin-runtime/cuda \
    --all-targets -- -D warnings
  echo "ok: clippy -D warnings with the cuda feature"
fi
