#!/usr/bin/env bash
# On the GPU machine, in one call (scripts/gpu/README.md): unpacks the kit scripts/gpu/pack.sh made
# into /tmp/bkg-gpu and runs scripts/gpu/measure.py, which writes its figures to $OUT.
#
#   scripts/gpu/measure.sh [measure.py's options]
set -euo pipefail
cd "$(dirname "$0")/../.."
KIT=/tmp/bkg-gpu
OUT="${OUT:-/tmp/bkg-gpu-out}"
rm -rf "$KIT" && mkdir -p "$KIT/minilm-f16" "$OUT"
xz -dc .gpu/plugin-runtime.xz >"$KIT/plugin-runtime"
xz -dc .gpu/bkg.xz >"$KIT/bkg"
chmod +x "$KIT/plugin-runtime" "$KIT/bkg"
tar -C "$KIT" -xJf .gpu/wrk.tar.xz
cp -r .gpu/minilm-f16/. "$KIT/minilm-f16/"
xz -d "$KIT/minilm-f16/model.safetensors.xz"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true
LD_LIBRARY_PATH="$KIT/wrk" "$KIT/wrk/wrk" --version | head -1 || true
# The runtime's CUDA libraries beyond the driver (cuBLAS, cuRAND, cudart): from the machine's
# CUDA toolkit, else from PyTorch's NVIDIA wheels.
libs=$(python3 - <<'PY'
import glob, os, site
dirs = set()
for base in ["/usr/local/cuda/lib64", "/usr/local/cuda/targets/x86_64-linux/lib"] + site.getsitepackages():
    for name in ["libcublas.so.13", "libcublasLt.so.13", "libcurand.so.10", "libcudart.so.13"]:
        for hit in glob.glob(os.path.join(base, "**", name), recursive=True):
            dirs.add(os.path.dirname(hit))
print(":".join(sorted(dirs)))
PY
)
export LD_LIBRARY_PATH="$libs${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
missing=$(ldd "$KIT/plugin-runtime" | grep 'not found' || true)
if [ -n "$missing" ]; then
  # Too big to carry (cuBLASLt alone is ~500 MB): say what is missing and where CUDA libraries are,
  # and keep the call useful with the PyTorch reference.
  echo "measure: the runtime cannot find: $missing" >&2
  find / -xdev \( -name 'libcublas*.so*' -o -name 'libcudart.so*' -o -name 'libcurand.so*' \) 2>/dev/null | head -20 >&2
  PYTHONUNBUFFERED=1 python3 scripts/gpu/measure.py --kit "$KIT" --out "$OUT" --only pytorch "$@" || true
  exit 1
fi
PYTHONUNBUFFERED=1 exec python3 scripts/gpu/measure.py --kit "$KIT" --out "$OUT" "$@"
