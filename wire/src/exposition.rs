//! Prometheus exposition formats. Our registries encode OpenMetrics 1.0; Prometheus asks for it
//! in its `Accept` header, and everyone else (curl, `promtool check metrics`, older scrapers)
//! gets the classic text format 0.0.4 derived from it.
//!
//! The two differ only in metadata: OpenMetrics names a counter family without `_total` and
//! has `# UNIT` and `# EOF` lines; in 0.0.4 the `# HELP`/`# TYPE` lines name the sample
//! (`x_total`), `info` is a gauge and there is no end marker.

/// Media type of OpenMetrics text.
pub const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
/// Media type of the classic Prometheus text format.
pub const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// True when the `Accept` header asks for OpenMetrics.
pub fn wants_openmetrics(accept: Option<&str>) -> bool {
    accept.is_some_and(|a| a.contains("application/openmetrics-text"))
}

/// Picks the format by `Accept`: returns the content type and the body.
pub fn negotiate(accept: Option<&str>, openmetrics: String) -> (&'static str, String) {
    if wants_openmetrics(accept) {
        (OPENMETRICS, openmetrics)
    } else {
        (PROMETHEUS_TEXT, to_prometheus_text(&openmetrics))
    }
}

/// Rewrites OpenMetrics text as Prometheus text format 0.0.4.
pub fn to_prometheus_text(openmetrics: &str) -> String {
    let mut kinds = std::collections::HashMap::new();
    for line in openmetrics.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ")
            && let Some((name, kind)) = rest.split_once(' ')
        {
            kinds.insert(name.to_owned(), kind.to_owned());
        }
    }
    let mut out = String::with_capacity(openmetrics.len());
    for line in openmetrics.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        let meta = line
            .strip_prefix("# HELP ")
            .map(|r| ("HELP", r))
            .or_else(|| line.strip_prefix("# TYPE ").map(|r| ("TYPE", r)));
        let Some((what, rest)) = meta else {
            out.push_str(line);
            out.push('\n');
            continue;
        };
        let (name, tail) = rest.split_once(' ').unwrap_or((rest, ""));
        let (name, tail) = match kinds.get(name).map(String::as_str) {
            Some("counter") => (format!("{name}_total"), tail.to_owned()),
            Some("info") if what == "TYPE" => (format!("{name}_info"), "gauge".to_owned()),
            Some("info") => (format!("{name}_info"), tail.to_owned()),
            Some("unknown") if what == "TYPE" => (name.to_owned(), "untyped".to_owned()),
            _ => (name.to_owned(), tail.to_owned()),
        };
        out.push_str(&format!("# {what} {name} {tail}\n"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const OPENMETRICS_TEXT: &str = "\
# HELP bkg_requests Requests by code.
# TYPE bkg_requests counter
bkg_requests_total{code=\"200\"} 3
# HELP bkg_duration_seconds Time taken.
# TYPE bkg_duration_seconds histogram
# UNIT bkg_duration_seconds seconds
bkg_duration_seconds_sum 0.5
bkg_duration_seconds_count 1
bkg_duration_seconds_bucket{le=\"+Inf\"} 1
# HELP bkg_up Up.
# TYPE bkg_up gauge
bkg_up 1
# EOF
";

    #[test]
    fn counters_are_named_by_their_sample_and_openmetrics_only_lines_go() {
        let text = to_prometheus_text(OPENMETRICS_TEXT);
        assert!(text.contains("# HELP bkg_requests_total Requests by code.\n"));
        assert!(text.contains("# TYPE bkg_requests_total counter\n"));
        assert!(text.contains("bkg_requests_total{code=\"200\"} 3\n"));
        assert!(text.contains("# TYPE bkg_duration_seconds histogram\n"));
        assert!(text.contains("# TYPE bkg_up gauge\n"));
        assert!(!text.contains("# EOF"));
        assert!(!text.contains("# UNIT"));
    }

    #[test]
    fn prometheus_gets_openmetrics_when_it_asks() {
        let accept = "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5";
        let (kind, body) = negotiate(Some(accept), OPENMETRICS_TEXT.to_owned());
        assert_eq!(kind, OPENMETRICS);
        assert!(body.ends_with("# EOF\n"));
        let (kind, body) = negotiate(None, OPENMETRICS_TEXT.to_owned());
        assert_eq!(kind, PROMETHEUS_TEXT);
        assert!(!body.contains("# EOF"));
    }
}
