#!/usr/bin/env python3
"""Evaluates every PromQL expression of the bkg dashboards and alert rules on a live Prometheus.

Run by 60-monitoring.sh once a Prometheus scrapes the local stack:

    monitoring_check.py --prometheus URL --dashboards DIR --rules FILE --doc docs/MONITORING.md

What it checks:
- dashboards: stable uid, schemaVersion, a `datasource` variable used by every panel, query
  and variable; a unit on every panel;
- every panel target and template variable query (Grafana variables substituted with the values
  the variable queries return, built-ins with fixed durations) and, for the rules, every
  alert's condition and its signal (the condition without its final `<op> <number>`) evaluate
  without error through /api/v1/query;
- each of them returns data (a sample that is not NaN), unless it reads a metric listed in
  CLUSTER_ONLY, which a local stack cannot produce;
- every metric name they read is one the local targets export, or a CLUSTER_ONLY one;
- every alert has `for`, a severity, summary, description and a runbook_url whose anchor is a
  heading of docs/MONITORING.md; the rules loaded into that Prometheus evaluate with health ok.
Before that it proves on the same Prometheus that it reports a broken expression as an error
and a query over a missing metric as "no data", so the check can fail.

Standard library only (PyYAML for the rule file, from .tools/venv).
"""

import argparse
import json
import math
import re
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import yaml

# Metrics a local stack cannot fill, and why. An expression may return no data only when it reads
# one of these. (The operator's other series are there: 60-monitoring.sh scrapes a real
# `bkg operator` whose API server is unreachable, so they exist with value 0.)
CLUSTER_ONLY = {
    "bkg_operator_reconcile_failures_total": "no reconcile ran without an API server, so no failure series exists",
    "bkg_operator_reconcile_duration_seconds_bucket": "no reconcile ran without an API server, so its quantiles are NaN",
    "kube_pod_container_status_restarts_total": "kube-state-metrics runs only in a cluster",
    "kube_pod_container_status_ready": "kube-state-metrics runs only in a cluster",
    "kube_pod_labels": "kube-state-metrics runs only in a cluster",
    "DCGM_FI_DEV_FB_USED": "the DCGM exporter runs only on GPU nodes of a cluster",
    "DCGM_FI_DEV_FB_FREE": "the DCGM exporter runs only on GPU nodes of a cluster",
}

# Grafana's built-in variables, as a dashboard showing the last hour would set them.
BUILTINS = {
    "__rate_interval": "1m",
    "__interval_ms": "15000",
    "__interval": "15s",
    "__range_ms": "3600000",
    "__range_s": "3600",
    "__range": "1h",
}

DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
RUNBOOK_PREFIX = "https://github.com/bkg-rs/bkg/blob/main/docs/MONITORING.md#"

# --- PromQL lexing (just enough to find metric names and a trailing threshold) ----------------

AGGREGATORS = {"sum", "min", "max", "avg", "group", "stddev", "stdvar", "count", "count_values",
               "bottomk", "topk", "quantile", "limitk", "limit_ratio"}
LABEL_LIST_KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right"}
KEYWORDS = LABEL_LIST_KEYWORDS | {"bool", "and", "or", "unless", "offset", "atan2", "inf", "nan"}
COMPARISONS = {"==", "!=", ">", "<", ">=", "<="}
TOKEN = re.compile(r"""
    (?P<ws>\s+|\#[^\n]*)
  | (?P<str>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|`[^`]*`)
  | (?P<range>\[[^\]]*\])
  | (?P<num>0x[0-9a-fA-F]+|(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)
  | (?P<ident>[A-Za-z_:][A-Za-z0-9_:]*)
  | (?P<op>==|!=|>=|<=|=~|!~|[-+*/%^<>=(){},@])
""", re.VERBOSE)


class LexError(ValueError):
    pass


def lex(expr):
    """[(kind, text, start, end)] without whitespace and comments."""
    out, pos = [], 0
    while pos < len(expr):
        m = TOKEN.match(expr, pos)
        if not m:
            raise LexError(f"cannot lex {expr[pos:pos + 20]!r}")
        if m.lastgroup != "ws":
            out.append((m.lastgroup, m.group(), m.start(), m.end()))
        pos = m.end()
    return out


def metric_names(expr):
    """Metric names of the vector selectors in `expr`."""
    tokens = lex(expr)
    names, braces, i = set(), 0, 0
    while i < len(tokens):
        kind, text, _, _ = tokens[i]
        nxt = tokens[i + 1][1] if i + 1 < len(tokens) else ""
        if text == "{":
            braces += 1
        elif text == "}":
            braces -= 1
        elif kind == "ident" and braces == 0:
            if text in LABEL_LIST_KEYWORDS and nxt == "(":
                while tokens[i][1] != ")":  # skip the label list
                    i += 1
            elif text in KEYWORDS or nxt == "(" or (text in AGGREGATORS and nxt in {"by", "without"}):
                pass
            else:
                names.add(text)
        i += 1
    return names


def top_level(tokens):
    """Indices of tokens at parenthesis depth 0."""
    depth, out = 0, []
    for i, (_, text, _, _) in enumerate(tokens):
        if text in "({" and len(text) == 1:
            depth += 1
        elif text in ")}" and len(text) == 1:
            depth -= 1
        elif depth == 0:
            out.append(i)
    return out


def alert_signal(expr):
    """The alert's first clause without its final `<comparison> [bool] <number>`, or None."""
    tokens = lex(expr)
    tops = top_level(tokens)
    cut = next((i for i in tops if tokens[i][1] in {"and", "or", "unless"}), len(tokens))
    clause = tokens[:cut]
    if len(clause) < 3 or clause[-1][0] != "num":
        return None
    j = len(clause) - 2
    if clause[j][1] == "-":
        j -= 1
    if clause[j][1] == "bool":
        j -= 1
    if j <= 0 or clause[j][1] not in COMPARISONS or j not in tops:
        return None
    return expr[:clause[j][2]].strip()


# --- Prometheus HTTP API ----------------------------------------------------------------------

class Prometheus:
    def __init__(self, url):
        self.url = url.rstrip("/")

    def get(self, path, params):
        query = urllib.parse.urlencode(params, doseq=True)
        try:
            with urllib.request.urlopen(f"{self.url}{path}?{query}", timeout=30) as r:
                body = json.load(r)
        except urllib.error.HTTPError as e:
            try:
                body = json.load(e)
            except ValueError:
                return {"status": "error", "error": f"HTTP {e.code}"}
        return body

    def query(self, expr):
        """(error or None, samples: list of (labels, value))."""
        body = self.get("/api/v1/query", {"query": expr})
        if body.get("status") != "success":
            return body.get("error", "unknown error"), []
        data = body["data"]
        if data["resultType"] == "vector":
            return None, [(s["metric"], float(s["value"][1])) for s in data["result"]]
        if data["resultType"] == "scalar":
            return None, [({}, float(data["result"][1]))]
        return f"unexpected result type {data['resultType']}", []

    def label_values(self, label, match=None):
        params = {"start": time.time() - 3600, "end": time.time()}
        if match:
            params["match[]"] = match
        body = self.get(f"/api/v1/label/{urllib.parse.quote(label)}/values", params)
        if body.get("status") != "success":
            return body.get("error", "unknown error"), []
        return None, body["data"]


def has_data(samples):
    return any(not math.isnan(v) for _, v in samples)


# --- Grafana dashboards -----------------------------------------------------------------------

def walk_panels(panels):
    for p in panels:
        yield p
        yield from walk_panels(p.get("panels", []))


def substitute(expr, values):
    """Replaces $name / ${name} / [[name]] by values (built-ins first: longest names first)."""
    for name in sorted(values, key=len, reverse=True):
        v = values[name]
        expr = expr.replace("${" + name + "}", v).replace("[[" + name + "]]", v)
        expr = re.sub(r"\$" + re.escape(name) + r"(?![A-Za-z0-9_])", lambda _: v, expr)
    return expr


UNRESOLVED = re.compile(r"\$\{?[A-Za-z_][A-Za-z0-9_]*|\[\[[A-Za-z_]")


def variable_query(prom, query, regex):
    """Evaluates a Grafana Prometheus variable query: (error, [values], promql_or_description)."""
    query = query.strip()
    m = re.fullmatch(r"label_values\((.*),\s*([A-Za-z_][A-Za-z0-9_]*)\s*\)", query, re.S)
    if m:
        err, vals = prom.label_values(m.group(2), m.group(1).strip())
    elif (m := re.fullmatch(r"label_values\(\s*([A-Za-z_][A-Za-z0-9_]*)\s*\)", query)):
        err, vals = prom.label_values(m.group(1))
    elif (m := re.fullmatch(r"query_result\((.*)\)", query, re.S)):
        err, samples = prom.query(m.group(1))
        vals = []
        for labels, value in samples:
            inner = ", ".join(f'{k}="{v}"' for k, v in sorted(labels.items()) if k != "__name__")
            vals.append(f"{labels.get('__name__', '')}{{{inner}}} {value:g} {int(time.time() * 1000)}")
    else:
        return f"unsupported variable query {query!r}", []
    if err:
        return err, []
    if regex:
        pattern = re.compile(regex[1:regex.rindex("/")] if regex.startswith("/") else regex)
        picked = []
        for v in vals:
            hit = pattern.search(v)
            if hit:
                picked.append(hit.group(1) if hit.groups() else v)
        vals = picked
    return None, sorted(set(vals))


class Report:
    def __init__(self):
        self.failures = []
        self.data = []
        self.allowed_empty = []
        self.conditions = []
        self.firing = []

    def fail(self, what, why):
        self.failures.append(f"{what}: {why}")


def check_dashboard_structure(path, doc, report, seen_uids):
    name = path.name
    uid = doc.get("uid")
    if not uid or len(uid) > 40:
        report.fail(name, f"uid {uid!r} must be set and at most 40 characters")
    elif uid in seen_uids:
        report.fail(name, f"uid {uid} also used by {seen_uids[uid]}")
    seen_uids[uid] = name
    if doc.get("schemaVersion", 0) < 39:
        report.fail(name, f"schemaVersion {doc.get('schemaVersion')} < 39")
    if doc.get("id") is not None:
        report.fail(name, "id must be null (Grafana assigns it)")
    variables = doc.get("templating", {}).get("list", [])
    ds = [v for v in variables if v.get("name") == "datasource"]
    if not ds or ds[0].get("type") != "datasource" or ds[0].get("query") != "prometheus":
        report.fail(name, "needs a template variable `datasource` of type datasource, query prometheus")
    for v in variables:
        if v.get("type") == "query" and v.get("datasource") != DATASOURCE:
            report.fail(f"{name} variable {v.get('name')}", f"datasource must be {DATASOURCE}")
    ids = set()
    for p in walk_panels(doc.get("panels", [])):
        where = f"{name} › {p.get('title')!r}"
        if p.get("id") in ids:
            report.fail(where, f"duplicate panel id {p.get('id')}")
        ids.add(p.get("id"))
        g = p.get("gridPos", {})
        if not {"x", "y", "w", "h"} <= g.keys() or g["x"] + g["w"] > 24:
            report.fail(where, f"bad gridPos {g}")
        if p.get("type") == "row":
            continue
        if p.get("datasource") != DATASOURCE:
            report.fail(where, f"datasource must be {DATASOURCE}, is {p.get('datasource')}")
        if not p.get("fieldConfig", {}).get("defaults", {}).get("unit"):
            report.fail(where, "no unit in fieldConfig.defaults")
        refs = [t.get("refId") for t in p.get("targets", [])]
        if not refs or len(refs) != len(set(refs)):
            report.fail(where, f"targets need distinct refIds, have {refs}")
        for t in p.get("targets", []):
            if t.get("datasource", DATASOURCE) != DATASOURCE:
                report.fail(f"{where} {t.get('refId')}", f"target datasource must be {DATASOURCE}")
            if not t.get("expr"):
                report.fail(f"{where} {t.get('refId')}", "target without expr")


def dashboard_queries(prom, path, doc):
    """Yields (name, promql) for every target, once per combination of variable values."""
    values = dict(BUILTINS)
    choices = {}  # variable -> values
    for v in doc.get("templating", {}).get("list", []):
        if v.get("type") != "query":
            continue
        query = v.get("query")
        query = query.get("query", "") if isinstance(query, dict) else query or ""
        what = f"{path.name} › variable ${v['name']}"
        earlier = {k: c[0] for k, c in choices.items()}
        err, vals = variable_query(prom, substitute(query, {**values, **earlier}), v.get("regex", ""))
        inner = re.fullmatch(r"query_result\((.*)\)", query.strip(), re.S)
        label_match = re.fullmatch(r"label_values\((.*),\s*\w+\s*\)", query.strip(), re.S)
        metrics = metric_names(inner.group(1) if inner else label_match.group(1) if label_match else "")
        yield what, None, (err, vals, metrics)
        if vals:
            choices[v["name"]] = vals
    for p in walk_panels(doc.get("panels", [])):
        for t in p.get("targets", []):
            expr = t.get("expr") or ""
            used = [n for n in choices if re.search(r"\$\{?" + re.escape(n) + r"\b|\[\[" + re.escape(n), expr)]
            combos = [{}]
            for n in used:
                combos = [{**c, n: val} for c in combos for val in choices[n]]
            for combo in combos:
                label = ", ".join(f"${k}={v}" for k, v in combo.items())
                what = f"{path.name} › {p.get('title')} › {t.get('refId')}" + (f" [{label}]" if label else "")
                yield what, substitute(expr, {**values, **combo}), None


def evaluate(prom, what, expr, known, report, condition=False):
    """Evaluates one expression and files the outcome."""
    if UNRESOLVED.search(expr):
        report.fail(what, f"unresolved variable in {expr!r}")
        return
    try:
        names = metric_names(expr)
    except LexError as e:
        report.fail(what, str(e))
        return
    unknown = sorted(n for n in names if n not in known and n not in CLUSTER_ONLY)
    if unknown:
        report.fail(what, f"metric(s) {', '.join(unknown)} exported by no target and not cluster-only")
    err, samples = prom.query(expr)
    if err:
        report.fail(what, f"query error: {err}\n      {expr}")
        return
    if condition:
        report.conditions.append(what)
        if samples:
            report.firing.append(what)
        return
    if has_data(samples):
        report.data.append(what)
        return
    cluster = sorted(n for n in names if n in CLUSTER_ONLY)
    if cluster:
        report.allowed_empty.append(f"{what} ({', '.join(cluster)}: {CLUSTER_ONLY[cluster[0]]})")
    else:
        report.fail(what, f"returned no data{' (only NaN)' if samples else ''}\n      {expr}")


def heading_anchors(doc_path):
    anchors = set()
    for line in Path(doc_path).read_text().splitlines():
        m = re.match(r"#{1,6}\s+(.*)", line)
        if m:
            slug = re.sub(r"[^\w\- ]", "", m.group(1).strip().lower()).replace(" ", "-")
            anchors.add(slug)
    return anchors


def check_rules(prom, rules_path, doc_path, known, report):
    doc = yaml.safe_load(Path(rules_path).read_text())
    anchors = heading_anchors(doc_path)
    name = Path(rules_path).name
    alerts = set()
    for group in doc["groups"]:
        for rule in group["rules"]:
            expr = rule["expr"]
            if "record" in rule:
                evaluate(prom, f"{name} › record {rule['record']}", expr, known, report)
                continue
            alert = rule["alert"]
            alerts.add(alert)
            where = f"{name} › {alert}"
            if "for" not in rule:
                report.fail(where, "no `for:`")
            if rule.get("labels", {}).get("severity") not in {"critical", "warning", "info"}:
                report.fail(where, "severity label must be critical, warning or info")
            ann = rule.get("annotations", {})
            for key in ("summary", "description", "runbook_url"):
                if not ann.get(key):
                    report.fail(where, f"no {key} annotation")
            url = ann.get("runbook_url", "")
            if not url.startswith(RUNBOOK_PREFIX) or url[len(RUNBOOK_PREFIX):] not in anchors:
                report.fail(where, f"runbook_url {url!r} does not point at a heading of {doc_path}")
            signal = alert_signal(expr)
            if signal is None:
                report.fail(where, "the first clause must end in `<comparison> <number>`")
            else:
                evaluate(prom, f"{where} (signal)", signal, known, report)
            evaluate(prom, f"{where} (condition)", expr, known, report, condition=True)
    return alerts


def check_loaded_rules(prom, alerts, report, wait_s=20):
    """The rules Prometheus itself loaded evaluate with health ok."""
    deadline = time.time() + wait_s
    while True:
        body = prom.get("/api/v1/rules", {})
        rules = [r for g in body.get("data", {}).get("groups", []) for r in g["rules"]]
        pending = [r for r in rules if r.get("health") == "unknown"]
        if (rules and not pending) or time.time() > deadline:
            break
        time.sleep(1)
    loaded = {r["name"] for r in rules if r.get("type") == "alerting"}
    if loaded != alerts:
        report.fail("Prometheus rule_files", f"loaded alerts {sorted(loaded)} differ from the file's {sorted(alerts)}")
    for r in rules:
        if r.get("health") != "ok":
            report.fail(f"Prometheus rule {r['name']}", f"health {r.get('health')}: {r.get('lastError', '')}")
    return len(rules)


def self_test(prom, known):
    """The evaluator must be able to fail: a broken expression is an error, a missing metric
    no data, a typo an unknown metric, and the signal of an alert is what precedes its threshold."""
    problems = []
    probe = Report()
    evaluate(prom, "broken", "sum(rate(bkg_gateway_invoke_requests_total[1m])", known, probe)
    if not any(f.startswith("broken: query error") for f in probe.failures):
        problems.append("a broken expression was not reported as a query error")
    probe = Report()
    evaluate(prom, "missing", "sum(rate(bkg_gateway_no_such_series_total[1m]))", known, probe)
    if not (any("returned no data" in f for f in probe.failures)
            and any("exported by no target" in f for f in probe.failures)):
        problems.append("a query over a missing metric was not reported as no data / unknown")
    probe = Report()
    evaluate(prom, "nan", "0 / 0 * sum(bkg_gateway_plugin_up)", known, probe)
    if not any("only NaN" in f for f in probe.failures):
        problems.append("an all-NaN result was not reported")
    probe = Report()
    evaluate(prom, "unresolved", "rate(bkg_gateway_invoke_requests_total[$__nope])", known, probe)
    if not any("unresolved variable" in f for f in probe.failures):
        problems.append("an unresolved Grafana variable was not reported")
    cases = {
        "a > 0.5": "a",
        "sum by (x) (rate(m[5m])) / sum(n) > bool 1e-3 and on (x) c >= 10": "sum by (x) (rate(m[5m])) / sum(n)",
        "max by (p) (up) == 0 unless on (p) max by (p) (s{phase=~\"a|b\"}) == 1": "max by (p) (up)",
        "(a > 1) and b": None,
    }
    for expr, want in cases.items():
        if alert_signal(expr) != want:
            problems.append(f"alert_signal({expr!r}) = {alert_signal(expr)!r}, want {want!r}")
    names = metric_names('sum by (le, plugin) (rate(x_bucket{a="b"}[1m]) * on (job) group_left (plugin)'
                         ' group by (job, plugin) (y)) or label_replace(z, "p", "$1", "q", "(.*)")')
    if names != {"x_bucket", "y", "z"}:
        problems.append(f"metric_names found {sorted(names)}")
    return problems


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--prometheus", required=True)
    ap.add_argument("--dashboards", required=True, type=Path)
    ap.add_argument("--rules", required=True, type=Path)
    ap.add_argument("--doc", required=True, type=Path)
    ap.add_argument("--verbose", action="store_true", help="list every expression and its outcome")
    args = ap.parse_args()
    prom = Prometheus(args.prometheus)

    err, known = prom.label_values("__name__")
    if err or not all(any(n.startswith(p) for n in known) for p in ("bkg_gateway_", "bkg_runtime_", "bkg_candle_")):
        print(f"FAIL: Prometheus lacks gateway, runtime or Candle series to check against ({err or 'not scraped'})",
              file=sys.stderr)
        return 1
    known = set(known)
    problems = self_test(prom, known)
    if problems:
        for p in problems:
            print(f"FAIL: checker self-test: {p}", file=sys.stderr)
        return 1
    print("ok: checker self-test (broken, missing, NaN-only and unresolved queries are reported)")

    report = Report()
    seen_uids = {}
    dashboards = sorted(args.dashboards.glob("*.json"))
    if not dashboards:
        report.fail(str(args.dashboards), "no dashboards")
    for path in dashboards:
        doc = json.loads(path.read_text())
        check_dashboard_structure(path, doc, report, seen_uids)
        for what, expr, variable in dashboard_queries(prom, path, doc):
            if variable is not None:
                err, vals, metrics = variable
                unknown = sorted(n for n in metrics if n not in known and n not in CLUSTER_ONLY)
                if err:
                    report.fail(what, f"query error: {err}")
                elif unknown:
                    report.fail(what, f"metric(s) {', '.join(unknown)} exported by no target")
                elif not vals:
                    report.fail(what, "returned no values")
                else:
                    report.data.append(f"{what} = {vals}")
                continue
            evaluate(prom, what, expr, known, report)
    alerts = check_rules(prom, args.rules, args.doc, known, report)
    loaded = check_loaded_rules(prom, alerts, report)

    if args.verbose:
        for w in report.data:
            print(f"  data   {w}")
        for w in report.conditions:
            print(f"  cond   {w}{'  (active now)' if w in report.firing else ''}")
    total = len(report.data) + len(report.allowed_empty) + len(report.conditions)
    print(f"{total} expressions evaluated: {len(report.data)} returned data, "
          f"{len(report.allowed_empty)} allowed empty (cluster-only), "
          f"{len(report.conditions)} alert conditions checked for errors only "
          f"({len(report.firing)} active now, signals counted above); "
          f"{loaded} rules loaded by Prometheus with health ok")
    for w in report.allowed_empty:
        print(f"  allowed empty: {w}")
    for w in report.firing:
        print(f"  active alert condition: {w}")
    if report.failures:
        for f in report.failures:
            print(f"FAIL: {f}", file=sys.stderr)
        print(f"FAIL: {len(report.failures)} problem(s) in dashboards or rules", file=sys.stderr)
        return 1
    print("ok: every dashboard and alert expression evaluates on the local stack")
    return 0


if __name__ == "__main__":
    sys.exit(main())
