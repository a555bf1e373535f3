#!/usr/bin/env bash
# Packs what issue 15's GPU measurement needs into .gpu/ (ignored by git), small enough to travel
# with the working tree to a GPU machine in one call (64 MiB in all; scripts/gpu/README.md):
#
#   .gpu/plugin-runtime.xz   the runtime built here with `--features cuda` (release, stripped),
#                            SASS for CUDA_COMPUTE_CAP (default 90: the H100 and H200), linked
#                            against stub CUDA libraries; the GPU machine's driver and CUDA
#                            libraries are loaded at run time
#   .gpu/bkg.xz              the CPU build of `bkg` (gateway and `bkg up`), release, stripped
#   .gpu/wrk.tar.xz          wrk and the shared libraries it needs beyond libc
#   .gpu/minilm-f16/         all-MiniLM-L6-v2 (scripts/setup.sh's copy) with its weights as f16,
#                            the same shapes and file size (45 MB), but only the word-embedding rows
#                            of the tokens the benchmark inputs (and measure.py's probe) contain are
#                            kept; the other 30,363 rows are zeros, so model.safetensors.xz is 20
#                            instead of 39 MB and the kit fits. Every measured input gives exactly
#                            the real model's output, and the work per input is the same
#                            (a row lookup); PyTorch reads the same file.
#
#   scripts/gpu/pack.sh      # then, on the GPU machine: scripts/gpu/measure.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
KIT=.gpu
MODEL="${BKG_TEST_MINILM_DIR:-$PWD/.tools/all-MiniLM-L6-v2}"
[ -f "$MODEL/model.safetensors" ] || scripts/setup.sh run
command -v wrk >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null; }
rm -rf "$KIT" && mkdir -p "$KIT"

# The CUDA runtime. The toolchain and stub libraries come from scripts/cuda-env.sh.
export CUDA_COMPUTE_CAP="${CUDA_COMPUTE_CAP:-90}"
(
  . scripts/cuda-env.sh
  cargo build --locked --release -p bkg-plugin-runtime --features cuda
)
cp target/release/plugin-runtime "$KIT/plugin-runtime"
# Put the CPU runtime back where the benchmarks expect it (nothing recompiles: both builds are kept).
cargo build --locked --release -p bkg -p bkg-plugin-runtime
cp target/release/bkg "$KIT/bkg"
strip "$KIT/plugin-runtime" "$KIT/bkg"
readelf -d "$KIT/plugin-runtime" | grep -q 'libcuda.so.1' || { echo "pack: $KIT/plugin-runtime does not link libcuda" >&2; exit 1; }
xz -T0 -6 "$KIT/plugin-runtime" "$KIT/bkg"

# wrk with its libraries (not libc's), found by ldd.
mkdir "$KIT/wrk"
cp "$(command -v wrk)" "$KIT/wrk/"
ldd "$(command -v wrk)" | awk '/=> \// {print $3}' | grep -Ev '/(libc|libm|libpthread|libdl|librt|libgcc_s)\.so' \
  | xargs -r -I{} cp -L {} "$KIT/wrk/"
tar -C "$KIT" -cJf "$KIT/wrk.tar.xz" wrk && rm -rf "$KIT/wrk"

# The model with f16 weights (half the bytes; the runtime runs it as f16 or converts to bf16).
mkdir "$KIT/minilm-f16"
(cd "$MODEL" && find . -type f ! -name model.safetensors ! -name '*.md' ! -name '.git*' ! -name '*.onnx' \
  ! -path './onnx/*' ! -path './openvino/*' -print0 | xargs -0 -I{} cp --parents {} "$OLDPWD/$KIT/minilm-f16/")
.tools/cuda-venv/bin/pip install -q "tokenizers==0.23.3"
.tools/cuda-venv/bin/python - "$MODEL/model.safetensors" "$KIT/minilm-f16/model.safetensors" \
  "$MODEL/tokenizer.json" plugins/candle/testdata/bench_inputs.json <<'PY'
# safetensors: an 8-byte header length, a JSON header, then the tensors' bytes; f32 → f16
# (round to nearest even, struct's 'e'), other dtypes copied. Word-embedding rows of tokens no
# benchmark input uses become zeros (see the top of this script).
import json, struct, sys
from tokenizers import Tokenizer
src, dst, tokenizer, inputs = sys.argv[1:]
tok = Tokenizer.from_file(tokenizer)
sets = json.load(open(inputs))
texts = sets["short"] + sets["long"] + ["ready?"]
keep = {i for e in tok.encode_batch(texts) for i in e.ids}
keep |= {tok.token_to_id(t) for t in ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]}
WORDS = "embeddings.word_embeddings.weight"
data = open(src, "rb").read()
n = struct.unpack("<Q", data[:8])[0]
header = json.loads(data[8:8 + n])
body = data[8 + n:]
out_header, chunks, at = {}, [], 0
for name, t in sorted(((k, v) for k, v in header.items() if k != "__metadata__"), key=lambda kv: kv[1]["data_offsets"][0]):
    a, b = t["data_offsets"]
    raw = body[a:b]
    if name == WORDS:
        width = 4 * t["shape"][1]
        raw = b"".join(raw[r * width:(r + 1) * width] if r in keep else bytes(width) for r in range(t["shape"][0]))
        print(f"pack: {len(keep)} of {t['shape'][0]} word-embedding rows kept", file=sys.stderr)
    if t["dtype"] == "F32":
        count = len(raw) // 4
        raw = struct.pack(f"<{count}e", *struct.unpack(f"<{count}f", raw))
        t = {**t, "dtype": "F16"}
    out_header[name] = {**t, "data_offsets": [at, at + len(raw)]}
    chunks.append(raw)
    at += len(raw)
if "__metadata__" in header:
    out_header["__metadata__"] = header["__metadata__"]
text = json.dumps(out_header, separators=(",", ":")).encode()
text += b" " * (-len(text) % 8)
with open(dst, "wb") as f:
    f.write(struct.pack("<Q", len(text)) + text + b"".join(chunks))
PY
xz -T0 -6 "$KIT/minilm-f16/model.safetensors"

kit=$(du -cb "$KIT" | tail -1 | cut -f1)
tree=$( { git ls-files -z; git ls-files -z --others --exclude-standard; } | xargs -0 -r du -cb 2>/dev/null | awk '/\ttotal$/ {s += $1} END {print s}')
echo "pack: $KIT is $((kit / 1024 / 1024)) MiB, the working tree $((tree / 1024 / 1024)) MiB, together $(((kit + tree) / 1024 / 1024)) of 64 MiB"
ls -la "$KIT"
[ $((kit + tree)) -le $((64 * 1024 * 1024)) ] || { echo "pack: too large to travel in one call" >&2; exit 1; }
