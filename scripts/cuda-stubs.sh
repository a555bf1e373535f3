#!/usr/bin/env bash
# Writes link-time stub libraries for the CUDA libraries that candle links, into OUT_DIR:
#
#   scripts/cuda-stubs.sh OUT_DIR
#
# candle 0.11 builds cudarc with `dynamic-linking`, so the `cuda` build of the runtime is linked
# with -lcuda -lnvrtc -lcurand -lcublas -lcublasLt (cudart is the real libcudart.so.13 from
# NVIDIA's wheel). On a machine without a GPU driver and without the ~600 MB of cuBLAS, cuRAND
# and NVRTC, these stubs satisfy the linker, as the CUDA toolkit's own lib64/stubs/libcuda.so
# does for the driver. They are for linking only: each function is empty, and nothing may ever
# load them. The binary records only their sonames (DT_NEEDED), so at run time the dynamic loader
# finds the real libraries: libcuda.so.1 from the node's driver (mounted by the NVIDIA container
# toolkit), the others from the CUDA run-time image (docker/plugin-runtime-cuda.Dockerfile).
#
# Symbol names: every function cudarc's bindings can call (the names its `dynamic-loading` mode
# passes to dlsym, in src/<lib>/sys/mod.rs of the cudarc in Cargo.lock, all CUDA versions at
# once). Sonames and symbol versions are those of NVIDIA's CUDA 13 libraries: cuBLAS, cuBLASLt,
# cuRAND and NVRTC define each symbol under one version node named after the soname (readelf -V
# of the nvidia-cublas 13.x, nvidia-curand 10.4 and nvidia-cuda-nvrtc 13.4 wheels), so a stub
# does the same and the binary's version needs are those a link against the real ones gives;
# the driver's libcuda.so.1 gets unversioned symbols, like the toolkit's stub.
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:?usage: scripts/cuda-stubs.sh OUT_DIR}"
mkdir -p "$out"

# The cudarc source cargo uses (the one in Cargo.lock, wherever CARGO_HOME puts it).
host="$(rustc -vV | sed -n 's/^host: //p')"
cudarc="$(cargo metadata --locked --offline --format-version 1 --features bkg-plugin-runtime/cuda \
    --filter-platform "$host" |
  python3 -c 'import json, os, sys
pkgs = [p for p in json.load(sys.stdin)["packages"] if p["name"] == "cudarc"]
assert len(pkgs) == 1, f"expected one cudarc in Cargo.lock, found {len(pkgs)}"
print(os.path.dirname(pkgs[0]["manifest_path"]))')"

stub() { # MODULE LINK_NAME SONAME VERSIONED(yes|no)
  local module="$1" name="$2" soname="$3" versioned="$4" c="$out/$2.c" args=()
  grep -ohE 'load::<_F>\("[A-Za-z_][A-Za-z0-9_]*"\)' "$cudarc/src/$module/sys/mod.rs" |
    sed -E 's/.*\("(.*)"\)/void \1(void) {}/' | sort -u >"$c"
  [ -s "$c" ] || { echo "FAIL: no function names found in $cudarc/src/$module/sys/mod.rs" >&2; exit 1; }
  if [ "$versioned" = yes ]; then
    printf '%s { global: *; };\n' "$soname" >"$out/$name.map"
    args=(-Wl,--version-script="$out/$name.map")
  fi
  cc -shared -fPIC -nostdlib -o "$out/lib$name.so" -Wl,-soname,"$soname" "${args[@]}" "$c"
  echo "stub lib$name.so (soname $soname): $(wc -l <"$c") functions"
}
stub driver cuda libcuda.so.1 no
stub nvrtc nvrtc libnvrtc.so.13 yes
stub curand curand libcurand.so.10 yes
stub cublas cublas libcublas.so.13 yes
stub cublaslt cublasLt libcublasLt.so.13 yes
