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
