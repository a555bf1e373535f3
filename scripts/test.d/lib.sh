# Sourced by the checks that start a local stack (not run by `make checks`: not executable).

# Copies config/plugins/echo.yaml to DEST with a limit of 1/s (burst 1) on its `fail`
# capability, so a second call in a second is answered 429 and the rate-limit series fill.
echo_with_fail_limit() { # DEST
  python3 - config/plugins/echo.yaml "$1" <<'PY'
import sys, yaml
doc = yaml.safe_load(open(sys.argv[1]))
for cap in doc["spec"]["capabilities"]:
    if cap["id"] == "fail":
        cap["rateLimit"] = {"requestsPerSecond": 1, "burst": 1}
yaml.safe_dump(doc, open(sys.argv[2], "w"))
PY
}

# Writes to DEST a Plugin `llm`: the Candle plugin serving the tiny random-weight Llama with a
# chat template from its testdata, for the token series (chat and completions stream).
llm_manifest() { # DEST
  cat >"$1" <<YAML
apiVersion: bkg.rs/v1alpha1
kind: Plugin
metadata: {name: llm}
spec:
  implementation: candle
  capabilities: [{id: chat, streaming: true}, {id: completions, streaming: true}]
  config:
    model: {path: $PWD/plugins/candle/testdata/tiny/llama-chat}
    dtype: f32
YAML
}

# Streams one chat completion from `llm` through /v1 (SSE) and checks it ended with [DONE].
# Needs \$url and api().
llm_chat_stream() {
  api -N "$url/v1/chat/completions" -d '{"model":"llm","messages":[{"role":"user","content":"Hello"}],"max_tokens":6,"temperature":0,"ignore_eos":true,"stream":true,"stream_options":{"include_usage":true}}' \
    | grep -q '^data: \[DONE\]' || { echo "FAIL: the llm chat stream did not end with [DONE]" >&2; exit 1; }
}
