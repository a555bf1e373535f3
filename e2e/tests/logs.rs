//! What the gateway writes to its log when a plugin fails many invokes: the first few one by one,
//! then one line with the count, not one WARN line per failure.

use std::time::Duration;

use bkg_e2e::{Stack, sample_echo};
use serde_json::json;

#[test]
fn a_burst_of_failures_logs_a_few_lines_and_one_count() {
    const FAILURES: usize = 300;
    let dir = tempfile::tempdir().expect("dir");
    // No rate limit on `fail`: every call must reach the plugin and fail there.
    let echo = sample_echo().replace("rateLimit: {requestsPerSecond: 10, burst: 20}", "");
    std::fs::write(dir.path().join("echo.yaml"), echo).expect("manifest");
    let mut stack = Stack::start_with(dir, &["--rate-limit-rps", "0"]);
    stack.wait_running("echo");
    for _ in 0..FAILURES {
        let r = stack.invoke("echo", "fail", json!({"kind": "failed"}));
        assert_eq!(r.status, 500, "{}", r.body);
    }
    // The summary comes when the 10 s window closes (the housekeeping tick runs every 2 s).
    let summary = stack.wait_for_output("more failed invokes of echo", Duration::from_secs(60));
    let one_by_one = stack
        .seen
        .iter()
        .filter(|l| l.contains("plugin answered an error"))
        .count();
    println!("{FAILURES} failures: {one_by_one} lines one by one, then: {summary}");
    assert!(
        (1..=10).contains(&one_by_one),
        "{one_by_one} lines for {FAILURES} failures"
    );
    assert!(
        summary.contains(&format!("{} more failed invokes", FAILURES - one_by_one)),
        "the count covers every failure not logged: {summary}"
    );
}
