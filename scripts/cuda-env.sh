# Sourced, not run: puts nvcc (NVIDIA's PyPI wheels, in .tools/cuda-venv) on PATH, points CUDA_HOME
# at it and generates the link-time stub libraries, for every script that builds the `cuda`
# feature on a machine without a GPU or a system toolkit (scripts/check-cuda.sh, scripts/gpu/pack.sh).
# Sets CUDA (the toolkit version) and CUDA_COMPUTE_CAP (default 80,89,90, the image's list).
# The newest toolkit cudarc 0.19 (candle 0.11's CUDA bindings) knows; it reads `nvcc --version`.
CUDA=13.4.92
_venv=.tools/cuda-venv
[ -x "$_venv/bin/pip" ] || python3 -m venv "$_venv"
"$_venv/bin/pip" install -q --no-deps "nvidia-cuda-nvcc==$CUDA" "nvidia-cuda-runtime==$CUDA" \
  "nvidia-cuda-crt==$CUDA" "nvidia-nvvm==$CUDA" "nvidia-cuda-cuobjdump==$CUDA" \
  "nvidia-cuda-cccl==13.3.5.0.6"
_root="$("$_venv/bin/python" -c 'import nvidia, os; print(os.path.join(list(nvidia.__path__)[0], "cu13"))')"
chmod +x "$_root"/bin/* "$_root"/nvvm/bin/*
[ -e "$_root/lib/libcudart.so" ] || ln -s libcudart.so.13 "$_root/lib/libcudart.so"
export PATH="$_root/bin:$PATH" CUDA_HOME="$_root" CUDA_ROOT="$_root" CUDA_PATH="$_root"
export CUDA_COMPUTE_CAP="${CUDA_COMPUTE_CAP:-80,89,90}"
nvcc --version | tail -1
scripts/cuda-stubs.sh "$_root/lib/stubs"
unset _venv _root
