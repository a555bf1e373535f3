#!/usr/bin/env bash
# Compiles the CUDA build of the runtime (cargo feature `cuda`, which the CPU build never needs)
# on a machine without a GPU or a system CUDA toolkit: nvcc, cicc, ptxas and the CUDA headers
# come from NVIDIA's PyPI wheels into .tools/cuda-venv. candle's kernels are compiled by nvcc
# for CUDA_COMPUTE_CAP (default 80, Ampere) and our `cfg(feature = "cuda")` code type-checks.
# Nothing is linked: libcuda, cuBLAS and cuRAND come with the GPU node and the CUDA image.
#
#   scripts/check-cuda.sh                 # ≈ 10 min on 2 cores, nearly all of it nvcc
#   CUDA_COMPUTE_CAP=90 scripts/check-cuda.sh
set -euo pipefail
cd "$(dirname "$0")/.."
# The newest toolkit cudarc 0.19 (candle 0.11's CUDA bindings) knows; it reads `nvcc --version`.
CUDA=13.4.92
VENV=.tools/cuda-venv
[ -x "$VENV/bin/pip" ] || python3 -m venv "$VENV"
"$VENV/bin/pip" install -q --no-deps "nvidia-cuda-nvcc==$CUDA" "nvidia-cuda-runtime==$CUDA" \
  "nvidia-cuda-crt==$CUDA" "nvidia-nvvm==$CUDA" "nvidia-cuda-cccl==13.3.5.0.6"
ROOT="$("$VENV/bin/python" -c 'import nvidia, os; print(os.path.join(list(nvidia.__path__)[0], "cu13"))')"
chmod +x "$ROOT"/bin/* "$ROOT"/nvvm/bin/*
[ -e "$ROOT/lib/libcudart.so" ] || ln -s libcudart.so.13 "$ROOT/lib/libcudart.so"
export PATH="$ROOT/bin:$PATH" CUDA_HOME="$ROOT" CUDA_ROOT="$ROOT" CUDA_PATH="$ROOT"
export CUDA_COMPUTE_CAP="${CUDA_COMPUTE_CAP:-80}"
nvcc --version | tail -1
# Clippy checks what `cargo check` would, and lints our cuda code paths too; one pass, since
# each of the two would run candle's nvcc build script again.
cargo clippy --locked -p bkg-plugin-runtime -p bkg-plugin-candle --features bkg-plugin-runtime/cuda \
  --all-targets -- -D warnings
echo "ok: the cuda feature compiles (CUDA $CUDA, sm_$CUDA_COMPUTE_CAP); it has not run on a GPU here"
