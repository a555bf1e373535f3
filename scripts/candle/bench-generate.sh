#!/usr/bin/env bash
# Text generation: tokens/s and time to first token at 1, 8 and 32 concurrent streams, bkg's
# candle plugin (continuous batching) against PyTorch `transformers` generate on the same model
# and prompts, in the same run. Prints JSON lines; docs/BENCHMARKS.md records a run.
#
#   scripts/candle/bench-generate.sh                    # PYTHON: a python with torch + transformers
#   STREAMS=1,8,32 NEW_TOKENS=64 PROMPT_LEN=64 THREADS=2 REPEAT=1 scripts/candle/bench-generate.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
THREADS="${THREADS:-2}" STREAMS="${STREAMS:-1,8,32}" NEW_TOKENS="${NEW_TOKENS:-64}" REPEAT="${REPEAT:-1}" PROMPT_LEN="${PROMPT_LEN:-64}"
PYTHON="${PYTHON:-python3}"
MODEL="${MODEL:-${TMPDIR:-/tmp}/bkg-bench-lm}"
export RAYON_NUM_THREADS="$THREADS" OMP_NUM_THREADS="$THREADS"
"$PYTHON" -c 'import torch, transformers' 2>/dev/null || {
  echo "bench-generate: $PYTHON lacks torch/transformers (PYTHON=/path/to/venv/bin/python)" >&2; exit 1; }
[ -f "$MODEL/model.safetensors" ] || "$PYTHON" scripts/candle/bench_generate.py make "$MODEL"
cargo build -q --release --locked -p bkg-plugin-candle --bin generate-bench
BENCH="${CARGO_TARGET_DIR:-target}/release/generate-bench"
echo "# machine: $(nproc) cores, $(lscpu | sed -n 's/^Model name: *//p'), threads=$THREADS, loadavg $(cut -d' ' -f1-3 /proc/loadavg)"
echo "# model: SmolLM2-135M-shaped Llama, random weights; $PROMPT_LEN-token prompts; $NEW_TOKENS new tokens per stream, greedy"
for dtype in f32 bf16; do
  "$BENCH" --model-dir "$MODEL" --prompts "$MODEL/prompts.json" --streams "$STREAMS" \
    --new-tokens "$NEW_TOKENS" --dtype "$dtype" --repeat "$REPEAT" --prompt-len "$PROMPT_LEN"
done
"$PYTHON" scripts/candle/bench_generate.py run "$MODEL" --streams "$STREAMS" \
  --new-tokens "$NEW_TOKENS" --threads "$THREADS" --repeat "$REPEAT" --prompt-len "$PROMPT_LEN"
