#!/usr/bin/env python3
"""Writes the bkg Grafana dashboards (bkg-*.json next to this file).

The JSON is committed; this script is the source of truth for it, so panels stay consistent
(one datasource variable on every panel, units everywhere, stable uids, a 24-column grid).
Edit here, run `python3 generate.py`, commit both. `--check` fails when the JSON drifted
(scripts/test.d/60-monitoring.sh runs it).

Label conventions the queries rely on (docs/MONITORING.md, "Labels the queries expect"):
gateway series carry `plugin`; runtime series without a plugin label (process_*, bkg_candle_*)
get it by joining bkg_runtime_ready{plugin} on (job, instance); Kubernetes series are joined
through kube_pod_labels.
"""

import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
DS = {"type": "prometheus", "uid": "${datasource}"}
SCHEMA_VERSION = 39
RATE = "$__rate_interval"

# Adds `plugin` (and restricts to bkg runtimes) for series a runtime exports without it.
RUNTIME = "on (job, instance) group_left (plugin) group by (job, instance, plugin) (bkg_runtime_ready{sel})"


def runtime_join(sel=""):
    return RUNTIME.format(sel=sel)


def pod_plugin(sel=""):
    """kube_pod_labels of plugin pods, with the plugin id as label `plugin`."""
    extra = f", {sel}" if sel else ""
    return (
        "max by (namespace, pod, plugin) (label_replace("
        f'kube_pod_labels{{label_app_kubernetes_io_name="bkg-plugin"{extra}}}, '
        '"plugin", "$1", "label_app_kubernetes_io_instance", "(.+)"))'
    )


def gpu_used(sel=""):
    """DCGM framebuffer memory (MiB) of plugin pods, with `plugin`."""
    return f'DCGM_FI_DEV_FB_USED{{container="runtime"}} * on (namespace, pod) group_left (plugin) {pod_plugin(sel)}'


def restarts(window, sel=""):
    """Runtime container restarts of plugin pods over `window`, with `plugin`."""
    return (f'increase(kube_pod_container_status_restarts_total{{container="runtime"}}[{window}])'
            f" * on (namespace, pod) group_left (plugin) {pod_plugin(sel)}")


def target(expr, legend="", ref="A", instant=False):
    t = {
        "datasource": DS,
        "editorMode": "code",
        "expr": expr,
        "legendFormat": legend or "__auto",
        "range": not instant,
        "instant": instant,
        "refId": ref,
    }
    return t


def targets(*specs):
    """specs: (expr, legend) pairs; refIds A, B, C… in order."""
    return [target(e, l, chr(ord("A") + i)) for i, (e, l) in enumerate(specs)]


def thresholds(*steps):
    out = [{"color": "green", "value": None}]
    out += [{"color": c, "value": v} for v, c in steps]
    return {"mode": "absolute", "steps": out}


def timeseries(title, description, unit, tgts, w=12, h=8, stack=False, max_=None, links=None):
    defaults = {
        "unit": unit,
        "min": 0,
        "color": {"mode": "palette-classic"},
        "custom": {
            "drawStyle": "line",
            "lineWidth": 1,
            "fillOpacity": 30 if stack else 10,
            "showPoints": "never",
            "spanNulls": False,
            "stacking": {"mode": "normal" if stack else "none", "group": "A"},
        },
        "thresholds": thresholds(),
    }
    if max_ is not None:
        defaults["max"] = max_
    if links:
        defaults["links"] = links
    return {
        "type": "timeseries",
        "title": title,
        "description": description,
        "datasource": DS,
        "fieldConfig": {"defaults": defaults, "overrides": []},
        "options": {
            "legend": {"displayMode": "table", "placement": "bottom", "showLegend": True, "calcs": ["mean", "max", "lastNotNull"]},
            "tooltip": {"mode": "multi", "sort": "desc"},
        },
        "targets": tgts,
        "_size": (w, h),
    }


def stat(title, description, unit, tgts, w=6, h=4, mappings=None, steps=(), text_mode="auto"):
    return {
        "type": "stat",
        "title": title,
        "description": description,
        "datasource": DS,
        "fieldConfig": {
            "defaults": {
                "unit": unit,
                "mappings": mappings or [],
                "color": {"mode": "thresholds"},
                "thresholds": thresholds(*steps),
            },
            "overrides": [],
        },
        "options": {
            "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
            "colorMode": "background" if mappings else "value",
            "graphMode": "none",
            "justifyMode": "auto",
            "orientation": "auto",
            "textMode": text_mode,
            "wideLayout": True,
        },
        "targets": tgts,
        "_size": (w, h),
    }


UP_MAPPINGS = [
    {"type": "value", "options": {"0": {"text": "down", "color": "red", "index": 0}, "1": {"text": "up", "color": "green", "index": 1}}}
]


def row(title):
    return {"type": "row", "title": title, "collapsed": False, "panels": [], "_size": (24, 1)}


def layout(panels):
    """Assigns ids and gridPos left to right, wrapping at 24 columns."""
    x = y = line_h = 0
    for i, p in enumerate(panels, start=1):
        w, h = p.pop("_size")
        if p["type"] == "row" or x + w > 24:
            x, y = 0, y + line_h
            line_h = 0
        p["id"] = i
        p["gridPos"] = {"h": h, "w": w, "x": x, "y": y}
        x += w
        line_h = max(line_h, h)
        if p["type"] == "row":
            x, y, line_h = 0, y + h, 0
    return panels


DATASOURCE_VAR = {
    "name": "datasource",
    "label": "Data source",
    "type": "datasource",
    "query": "prometheus",
    "current": {},
    "hide": 0,
    "includeAll": False,
    "multi": False,
    "options": [],
    "refresh": 1,
    "regex": "",
    "skipUrlSync": False,
}


def query_var(name, label, query, regex="", multi=False):
    return {
        "name": name,
        "label": label,
        "type": "query",
        "datasource": DS,
        "definition": query,
        "query": query,
        "current": {},
        "hide": 0,
        "includeAll": multi,
        "multi": multi,
        "options": [],
        "refresh": 2,
        "regex": regex,
        "sort": 1,
        "skipUrlSync": False,
    }


def dashboard(uid, title, description, panels, variables=()):
    return {
        "id": None,
        "uid": uid,
        "title": title,
        "description": description,
        "tags": ["bkg"],
        "timezone": "browser",
        "editable": True,
        "graphTooltip": 1,
        "fiscalYearStartMonth": 0,
        "liveNow": False,
        "refresh": "30s",
        "schemaVersion": SCHEMA_VERSION,
        "version": 1,
        "time": {"from": "now-1h", "to": "now"},
        "timepicker": {},
        "annotations": {
            "list": [
                {
                    "builtIn": 1,
                    "datasource": {"type": "grafana", "uid": "-- Grafana --"},
                    "enable": True,
                    "hide": True,
                    "iconColor": "rgba(0, 211, 255, 1)",
                    "name": "Annotations & Alerts",
                    "type": "dashboard",
                }
            ]
        },
        "links": [
            {"type": "dashboards", "tags": ["bkg"], "asDropdown": True, "title": "bkg dashboards",
             "includeVars": False, "keepTime": True, "icon": "external link", "targetBlank": False}
        ],
        "templating": {"list": [DATASOURCE_VAR, *variables]},
        "panels": layout(panels),
    }


# Shared expressions ---------------------------------------------------------------------------

def invoke_rate(sel, by):
    return f"sum by ({by}) (rate(bkg_gateway_invoke_requests_total{{{sel}}}[{RATE}]))"


def error_ratio(sel, by):
    """5xx over all answers; 0 (not "no data") for a capability without errors."""
    five = f'{sel}, code=~"5.."' if sel else 'code=~"5.."'
    return (
        f"(sum by ({by}) (rate(bkg_gateway_invoke_requests_total{{{five}}}[{RATE}]))"
        f" or {invoke_rate(sel, by)} * 0)"
        f" / {invoke_rate(sel, by)}"
    )


def rate_limited(sel, by):
    return (
        f"sum by ({by}) (rate(bkg_gateway_rate_limited_requests_total{{{sel}}}[{RATE}]))"
        f" or {invoke_rate(sel, by)} * 0"
    )


def quantiles(metric, sel, by, legend, qs=(0.5, 0.95, 0.99)):
    by_le = f"{by}, le" if by else "le"
    return [
        (f"histogram_quantile({q}, sum by ({by_le}) (rate({metric}_bucket{{{sel}}}[{RATE}])))",
         f"p{round(q * 100)} {legend}".strip())
        for q in qs
    ]


DRILL_DOWN = [{
    "title": "Open the plugin drill-down",
    "url": "/d/bkg-plugin/bkg-plugin?var-plugin=${__field.labels.plugin}&${datasource:queryparam}&${__url_time_range}",
}]


# Dashboards -----------------------------------------------------------------------------------

def overview():
    pc = "plugin, capability"
    panels = [
        row("Plugins"),
        stat("Plugins per phase", "How many plugins are in each lifecycle phase (the gateway's view).", "short",
             targets(("sum by (phase) (max by (plugin, phase) (bkg_gateway_plugin_phase))", "{{phase}}")), w=12),
        stat("Plugin up", "1 when the plugin has at least one ready instance.", "none",
             targets(("max by (plugin) (bkg_gateway_plugin_up)", "{{plugin}}")), w=12, mappings=UP_MAPPINGS),
        timeseries("Ready runtime instances", "Runtime processes or pods reporting bkg_runtime_ready 1, per plugin.", "short",
                   targets(("sum by (plugin) (bkg_runtime_ready)", "{{plugin}}")), w=24, h=6),
        row("Scaling"),
        timeseries("Replicas wanted by the autoscaler", "The count bkg's autoscaler wants, per plugin with spec.scaling (inFlight; cpu locally).", "short",
                   targets(("max by (plugin) (bkg_gateway_desired_replicas)", "{{plugin}}")), w=8),
        timeseries("Held invokes", "Invokes the gateway holds while a plugin has no ready replica (scale from zero).", "short",
                   targets(("sum by (plugin) (bkg_gateway_held_requests)", "{{plugin}}")), w=8),
        timeseries("Activation latency p50 / p99", "How long held invokes waited for a replica, over every activation since the gateway started (activations are rare, so no rate window).", "s",
                   targets(*[(f"histogram_quantile({q}, sum by (le, plugin) (bkg_gateway_activation_duration_seconds_bucket))", f"{{{{plugin}}}} p{int(q * 100)}")
                             for q in (0.5, 0.99)]), w=8),
        row("Invokes"),
        timeseries("Invoke rate", "Invokes answered by the gateway per second, per plugin and capability.", "reqps",
                   targets((invoke_rate("", pc), "{{plugin}}/{{capability}}")), links=DRILL_DOWN),
        timeseries("Answers by status code", "Every invoke answer per second by HTTP status code.", "reqps",
                   targets((invoke_rate("", "code"), "{{code}}")), stack=True),
        timeseries("Error ratio (5xx)", "Share of invokes answered 5xx (plugin failures, 502/503/504), per plugin and capability.",
                   "percentunit", targets((error_ratio("", pc), "{{plugin}}/{{capability}}")), max_=1, links=DRILL_DOWN),
        timeseries("Refusals (4xx)",
                   "Client-side refusals per second: schema violations (400), unknown plugin or capability"
                   " (404, plugin _unknown), plugin refusals (422), rate limits (429).", "reqps",
                   targets((invoke_rate('code=~"4.."', "plugin, capability, code"), "{{plugin}}/{{capability}} {{code}}"))),
        timeseries("Latency p50 / p95 / p99", "Time the gateway took to answer an invoke, per plugin and capability.", "s",
                   targets(*quantiles("bkg_gateway_invoke_duration_seconds", "", pc, "{{plugin}}/{{capability}}")), w=24),
        timeseries("Rate-limited invokes", "Invokes refused with 429 by the gateway's rate limiter, per second.", "reqps",
                   targets((f"sum by ({pc}) (rate(bkg_gateway_rate_limited_requests_total[{RATE}]))", "{{plugin}}/{{capability}}")), w=8),
        timeseries("Invokes in flight", "Invokes the gateway is serving now, per plugin.", "short",
                   targets(("sum by (plugin) (bkg_gateway_invoke_in_flight)", "{{plugin}}")), w=8),
        timeseries("Requests per API key", "Authenticated API requests (all routes) per second, by key id.", "reqps",
                   targets((f"sum by (key_id) (rate(bkg_gateway_api_key_requests_total[{RATE}]))", "{{key_id}}")), w=8),
        row("Text generation"),
        timeseries("Tokens per second", "Prompt and completion tokens of generation answers (whole and streamed) per second, per plugin, as the plugins report their usage.", "short",
                   targets((f"sum by (plugin, kind) (rate(bkg_gateway_tokens_total[{RATE}]))", "{{plugin}} {{kind}}")), w=8, links=DRILL_DOWN),
        timeseries("Time to first token p50 / p99", "From the gateway taking a streamed call to relaying its first text, per plugin.", "s",
                   targets(*quantiles("bkg_gateway_time_to_first_token_seconds", "", "plugin", "{{plugin}}", qs=(0.5, 0.99))), w=8),
        timeseries("Inter-token latency p50 / p99", "Time between two texts of a stream the gateway relays, per plugin.", "s",
                   targets(*quantiles("bkg_gateway_inter_token_latency_seconds", "", "plugin", "{{plugin}}", qs=(0.5, 0.99))), w=8),
        timeseries("Generation calls in flight", "Calls (open streams included, until they end or their client goes away) the gateway is serving now, for plugins that generate tokens.", "short",
                   targets(("sum by (plugin) (bkg_gateway_invoke_in_flight) and on (plugin) sum by (plugin) (bkg_gateway_tokens_total)", "{{plugin}}")), w=12),
        timeseries("Tokens per API key", "Prompt plus completion tokens per second by key id (what tokens_per_minute limits).", "short",
                   targets((f"sum by (key_id) (rate(bkg_gateway_api_key_tokens_total[{RATE}]))", "{{key_id}}")), w=12),
        row("Resources"),
        timeseries("CPU per plugin", "CPU time of all runtimes of a plugin (1 = one core).", "percentunit",
                   targets((f"sum by (plugin) (rate(process_cpu_seconds_total[{RATE}]) * {runtime_join()})", "{{plugin}}")), w=8),
        timeseries("Resident memory per plugin", "Resident set size of all runtimes of a plugin.", "bytes",
                   targets((f"sum by (plugin) (process_resident_memory_bytes * {runtime_join()})", "{{plugin}}")), w=8),
        timeseries("GPU memory used per plugin", "Framebuffer memory used by plugin pods (DCGM exporter with pod mapping; empty without it).", "mbytes",
                   targets((f"sum by (plugin) ({gpu_used()})", "{{plugin}}")), w=8),
        timeseries("Runtime container restarts", "Restarts of plugin pods' runtime container over the last 15 minutes (kube-state-metrics; cluster mode).", "short",
                   targets((f"sum by (plugin) ({restarts('15m')})", "{{plugin}}")), w=24, h=6),
        row("Operator"),
        timeseries("Reconciles and failures", "Reconcile runs per second, and failed ones by error category (cluster mode).", "ops",
                   targets((f"sum(rate(bkg_operator_reconciliations_total[{RATE}]))", "reconciles"),
                           (f"sum by (category) (rate(bkg_operator_reconcile_failures_total[{RATE}]))", "failed: {{category}}")), w=8),
        timeseries("Reconcile duration", "How long one reconcile takes.", "s",
                   targets(*quantiles("bkg_operator_reconcile_duration_seconds", "", "", "", qs=(0.5, 0.99))), w=8),
        timeseries("Status writes", "Plugin status updates written per second (steady state writes none).", "ops",
                   targets((f"sum(rate(bkg_operator_status_writes_total[{RATE}]))", "status writes")), w=4),
        stat("Leaders", "Operator replicas holding the leader Lease (should be 1).", "short",
             targets(("sum(bkg_operator_leader)", "leaders")), w=4, h=8, steps=((2, "red"),)),
    ]
    return dashboard("bkg-overview", "bkg / Overview",
                     "Every plugin behind the bkg gateway: status, traffic, errors, latency, resources and the operator.",
                     panels)


def plugin():
    sel = 'plugin="$plugin"'
    pod_sel = 'label_app_kubernetes_io_instance="$plugin"'
    rt = runtime_join("{" + sel + "}")
    panels = [
        row("Status"),
        stat("Up", "At least one ready instance (gateway view).", "none",
             targets((f"max(bkg_gateway_plugin_up{{{sel}}})", "up")), mappings=UP_MAPPINGS),
        stat("Phase", "The plugin's lifecycle phase.", "none",
             targets((f"max by (phase) (bkg_gateway_plugin_phase{{{sel}}}) == 1", "{{phase}}")), text_mode="name"),
        stat("Ready instances", "Runtimes of this plugin reporting ready.", "short",
             targets((f"sum(bkg_runtime_ready{{{sel}}})", "ready"))),
        stat("Since last start", "Uptime of the most recently (re)started runtime.", "s",
             targets((f"min(time() - (process_start_time_seconds * {rt}))", "uptime"))),
        row("Invokes"),
        timeseries("Invoke rate by capability and code", "Invokes answered by the gateway per second.", "reqps",
                   targets((invoke_rate(sel, "capability, code"), "{{capability}} {{code}}")), stack=True),
        timeseries("Error ratio (5xx) by capability", "Share of invokes answered 5xx.", "percentunit",
                   targets((error_ratio(sel, "capability"), "{{capability}}")), max_=1),
        timeseries("Gateway latency p50 / p95 / p99", "Time the gateway took to answer, by capability.", "s",
                   targets(*quantiles("bkg_gateway_invoke_duration_seconds", sel, "capability", "{{capability}}"))),
        timeseries("Runtime latency p50 / p99", "Time the runtime took to answer (the gap to the gateway's figure is routing, validation and transport).", "s",
                   targets(*quantiles("bkg_runtime_invoke_duration_seconds", sel, "capability", "{{capability}}", qs=(0.5, 0.99)))),
        timeseries("Rate-limited invokes", "Invokes refused with 429 by the gateway's rate limiter (0 for capabilities never limited).", "reqps",
                   targets((rate_limited(sel, "capability"), "{{capability}}")), w=8),
        timeseries("In flight", "Invokes being served now, at the gateway and inside the runtimes.", "short",
                   targets((f"sum(bkg_gateway_invoke_in_flight{{{sel}}})", "gateway"),
                           (f"sum(bkg_runtime_invoke_in_flight{{{sel}}})", "runtimes")), w=8),
        timeseries("Runtime answers by code", "Invokes answered by the runtimes per second (after the gateway's checks).", "reqps",
                   targets((f"sum by (capability, code) (rate(bkg_runtime_invoke_requests_total{{{sel}}}[{RATE}]))", "{{capability}} {{code}}")), w=8),
        row("Resources"),
        timeseries("CPU per instance", "CPU time per runtime (1 = one core).", "percentunit",
                   targets((f"rate(process_cpu_seconds_total[{RATE}]) * {rt}", "{{instance}}"))),
        timeseries("Resident memory per instance", "Resident set size per runtime.", "bytes",
                   targets((f"process_resident_memory_bytes * {rt}", "{{instance}}"))),
        timeseries("Container restarts", "Restarts of this plugin's runtime containers in the dashboard's time range (kube-state-metrics; cluster mode).", "short",
                   targets((f"sum by (pod) ({restarts('$__range', pod_sel)})", "{{pod}}"))),
        timeseries("GPU memory used", "Framebuffer memory per GPU of this plugin's pods (DCGM exporter; empty without it).", "mbytes",
                   targets((gpu_used(pod_sel), "{{pod}} GPU {{gpu}}"))),
    ]
    return dashboard("bkg-plugin", "bkg / Plugin",
                     "One plugin in detail: status, invokes per capability at the gateway and in the runtime, resources per instance.",
                     panels,
                     [query_var("plugin", "Plugin", "label_values(bkg_gateway_plugin_up, plugin)")])


def candle():
    sel = 'plugin=~"$plugin"'
    rt = runtime_join("{" + sel + "}")

    def joined(metric):
        return f"{metric} * {rt}"

    def hq(metric, legend, qs):
        return [
            (f"histogram_quantile({q}, sum by (plugin, le) (rate({metric}_bucket[{RATE}]) * {rt}))", f"p{round(q * 100)} {legend}")
            for q in qs
        ]

    panels = [
        row("Throughput"),
        timeseries("Inputs embedded", "Texts embedded per second.", "short",
                   targets((f"sum by (plugin) (rate(bkg_candle_embedded_inputs_total[{RATE}]) * {rt})", "{{plugin}}")), w=8),
        timeseries("Inputs rejected", "Texts refused because the batching queue was full, per second.", "short",
                   targets((f"sum by (plugin) (rate(bkg_candle_rejected_inputs_total[{RATE}]) * {rt})", "{{plugin}}")), w=8),
        timeseries("Forward passes", "Batches run through the model per second.", "ops",
                   targets((f"sum by (plugin) (rate(bkg_candle_inference_duration_seconds_count[{RATE}]) * {rt})", "{{plugin}}")), w=8),
        row("Batching"),
        timeseries("Batch size", "Inputs per forward pass: median, p95 and mean.", "short",
                   targets(*hq("bkg_candle_batch_size", "{{plugin}}", (0.5, 0.95)),
                           (f"sum by (plugin) (rate(bkg_candle_batch_size_sum[{RATE}]) * {rt})"
                            f" / sum by (plugin) (rate(bkg_candle_batch_size_count[{RATE}]) * {rt})", "mean {{plugin}}")), w=8),
        timeseries("Tokens per batch", "Tokens per forward pass without padding: median and p95.", "short",
                   targets(*hq("bkg_candle_batch_tokens", "{{plugin}}", (0.5, 0.95))), w=8),
        timeseries("Queue depth", "Inputs waiting for a batch, per instance.", "short",
                   targets((joined("bkg_candle_queue_depth"), "{{plugin}} {{instance}}")), w=8),
        row("Latency"),
        timeseries("Inference latency", "Wall time of one forward pass including pooling.", "s",
                   targets(*hq("bkg_candle_inference_duration_seconds", "{{plugin}}", (0.5, 0.95, 0.99)))),
        timeseries("Embed latency at the gateway", "What callers see for the embedding capabilities: queueing, batching and inference.", "s",
                   targets(*quantiles("bkg_gateway_invoke_duration_seconds", sel + ', capability=~"model.infer|embeddings"',
                                      "plugin, capability", "{{plugin}}/{{capability}}", qs=(0.5, 0.99)))),
        timeseries("Resident memory", "Resident set size per Candle runtime (model weights and batch activations).", "bytes",
                   targets((joined("process_resident_memory_bytes"), "{{plugin}} {{instance}}"))),
        timeseries("GPU memory used", "Framebuffer memory of Candle pods (DCGM exporter with pod mapping; empty on CPU or without it).", "mbytes",
                   targets((gpu_used(), "{{plugin}} {{pod}} GPU {{gpu}}"))),
    ]
    # A plugin is a Candle embeddings plugin when its runtime has run embedding batches (a Candle
    # plugin serving a causal LM exports the series too, but never fills them).
    plugins = ("query_result(group by (plugin) (bkg_runtime_ready and on (job, instance)"
               " (bkg_candle_batch_size_count > 0)))")
    return dashboard("bkg-candle", "bkg / Candle embeddings",
                     "Candle plugins: dynamic batching, queue, forward-pass latency and memory.",
                     panels,
                     [query_var("plugin", "Plugin", plugins, regex='/plugin="([^"]+)"/', multi=True)])


DASHBOARDS = {"bkg-overview.json": overview, "bkg-plugin.json": plugin, "bkg-candle.json": candle}


def render(build):
    return json.dumps(build(), indent=2) + "\n"


def main(argv):
    check = "--check" in argv
    stale = []
    for name, build in DASHBOARDS.items():
        path = HERE / name
        text = render(build)
        if check:
            if not path.exists() or path.read_text() != text:
                stale.append(name)
        else:
            path.write_text(text)
    if stale:
        print(f"dashboards out of date: {', '.join(stale)}; run python3 {Path(__file__).name}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
