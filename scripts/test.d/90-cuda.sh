#!/usr/bin/env bash
# The CUDA build of the runtime, compiled and linked here without a GPU (scripts/check-cuda.sh):
# stub libraries for the link, candle's kernels with SASS for sm_90 (the H100/H200 we run on) and
# its PTX, checked with cuobjdump in the fatbins and in the binary. One architecture keeps it
# cheap enough for every run; `make check-cuda` builds the image's three (80,89,90) and lints the
# cuda code with clippy. Last, since it is the slowest check (times: docs/IMAGES.md#cuda-build).
set -euo pipefail
cd "${BKG_REPO_ROOT:-$(dirname "$0")/../..}"
CUDA_COMPUTE_CAP="${BKG_TEST_CUDA_COMPUTE_CAP:-90}" exec scripts/check-cuda.sh --no-clippy
