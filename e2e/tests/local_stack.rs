//! `bkg up` as a real process with real plugin-runtime children, driven over loopback HTTP.

use std::time::{Duration, Instant};

use bkg_e2e::{Stack, alive, sample_echo, signal};
use serde_json::{Value, json};

fn pid_of(plugin: &Value) -> u32 {
    plugin["instances"][0]["pid"]
        .as_u64()
        .expect("instance pid") as u32
}

fn assert_problem(r: &bkg_e2e::Response, status: u16, slug: &str) {
    assert_eq!(r.status, status, "body: {:#}", r.body);
    assert_eq!(r.content_type, "application/problem+json");
    assert_eq!(
        r.body["type"],
        format!("https://bkg.rs/problems/{slug}"),
        "body: {:#}",
        r.body
    );
    assert_eq!(r.body["status"], status);
    assert!(r.body["detail"].as_str().is_some_and(|d| !d.is_empty()));
    assert!(r.request_id.is_some(), "every answer carries x-request-id");
    assert_eq!(r.body["request_id"].as_str(), r.request_id.as_deref());
}

#[test]
fn echo_is_invoked_through_the_gateway_and_bad_input_is_refused() {
    let echo = sample_echo().replace("timeoutSeconds: 10", "timeoutSeconds: 1");
    let mut stack = Stack::start(&[("echo.yaml", &echo)]);
    stack.wait_for_output("echo ready at http://", Duration::from_secs(20));

    let (status, list) = stack.get("/api/plugins");
    assert_eq!(status, 200);
    assert_eq!(list[0]["id"], "echo");
    assert_eq!(list[0]["status"], "running");
    assert_eq!(list[0]["capabilities"][0]["id"], "echo");

    let ok = || {
        let r = stack.invoke("echo", "echo", json!({"x": 1}));
        assert_eq!((r.status, r.body.clone()), (200, json!({"x": 1})));
    };
    ok();

    // Malformed JSON.
    let r = stack.post("/api/plugins/echo/invoke", "{\"capability\": ");
    assert_problem(&r, 400, "malformed-json");
    ok();
    // A missing field, named.
    let r = stack.post("/api/plugins/echo/invoke", r#"{"payload": {}}"#);
    assert_problem(&r, 400, "bad-request");
    assert!(
        r.body["detail"]
            .as_str()
            .unwrap_or_default()
            .contains("capability")
    );
    ok();
    // A payload that violates the capability's input schema, located by pointer.
    let r = stack.invoke("echo", "sleep", json!({"ms": "soon"}));
    assert_problem(&r, 400, "invalid-payload");
    assert_eq!(r.body["errors"][0]["field"], "/ms");
    ok();
    let r = stack.invoke("echo", "sleep", json!({}));
    assert_problem(&r, 400, "invalid-payload");
    assert!(
        r.body["errors"][0]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("ms")
    );
    ok();
    // A 10 MB body.
    let big = format!(
        r#"{{"capability":"echo","payload":{{"blob":"{}"}}}}"#,
        "a".repeat(10 * 1024 * 1024)
    );
    let (status, body) = bkg_e2e::post_raw(&stack.url, "/api/plugins/echo/invoke", big.as_bytes());
    assert_eq!(status, 413, "{body}");
    assert!(body.contains("body-too-large"), "{body}");
    ok();
    // Unknown plugin and capability.
    let r = stack.invoke("nope", "echo", json!({}));
    assert_problem(&r, 404, "unknown-plugin");
    let r = stack.invoke("echo", "nope", json!({}));
    assert_problem(&r, 404, "unknown-capability");
    ok();
    // Plugin errors keep their kind; the runtime keeps serving.
    let r = stack.invoke(
        "echo",
        "fail",
        json!({"kind": "invalid_input", "message": "no"}),
    );
    assert_problem(&r, 422, "invalid-input");
    let r = stack.invoke("echo", "fail", json!({"kind": "overloaded"}));
    assert_problem(&r, 429, "overloaded");
    assert_eq!(r.retry_after.as_deref(), Some("1"));
    let r = stack.invoke("echo", "fail", json!({}));
    assert_problem(&r, 500, "plugin-error");
    ok();
    // The manifest's timeout (1 s, not the sample's 10 s) turns a long call into 504: the
    // answer names the limit that fired.
    let r = stack.invoke("echo", "sleep", json!({"ms": 60_000}));
    assert_problem(&r, 504, "invoke-timeout");
    assert!(
        r.body["detail"]
            .as_str()
            .is_some_and(|d| d.ends_with("did not answer within 1s")),
        "{:#}",
        r.body
    );
    let r = stack.invoke("echo", "sleep", json!({"ms": 10}));
    assert_eq!((r.status, r.body), (200, json!({"slept_ms": 10})));

    // Telemetry and logs describe the real process.
    let (status, t) = stack.get("/api/plugins/echo/telemetry");
    assert_eq!(status, 200);
    assert!(t["request_count"].as_u64().unwrap_or(0) >= 8, "{t:#}");
    assert!(t["error_count"].as_u64().unwrap_or(0) >= 4, "{t:#}");
    assert!(t["memory_mb"].as_f64().unwrap_or(0.0) > 1.0, "{t:#}");
    assert_eq!(t["replicas"], 1);
    let (status, logs) = stack.get("/api/plugins/echo/logs?lines=50");
    assert_eq!(status, 200);
    let text = logs["lines"].to_string();
    assert!(text.contains("invoke timed out"), "{text}");
    let (status, body) = stack.get("/api/plugins/echo/logs?lines=zero");
    assert_eq!(status, 400, "{body:#}");
    let (status, _) = stack.get("/healthz");
    assert_eq!(status, 200);
}

#[test]
fn a_killed_runtime_is_restarted_and_lifecycle_calls_work() {
    let stack = Stack::start(&[("echo.yaml", &sample_echo())]);
    let first = stack.wait_running("echo");
    let pid = pid_of(&first);

    // Kill the runtime: the supervisor restarts it with a new process.
    signal(pid, "KILL");
    let restarted = stack.wait_plugin("echo", "restarted", |p| {
        p["status"] == "running" && p["instances"][0]["restarts"] == 1
    });
    assert_ne!(pid_of(&restarted), pid);
    assert!(
        restarted["last_error"]
            .as_str()
            .unwrap_or_default()
            .contains("signal 9"),
        "{restarted:#}"
    );
    assert_eq!(
        stack.invoke("echo", "echo", json!({"y": 2})).body,
        json!({"y": 2})
    );

    // Stop: no process, 503 on invoke.
    let pid = pid_of(&restarted);
    let r = stack.post("/api/plugins/echo/stop", "");
    assert_eq!(r.status, 202);
    stack.wait_plugin("echo", "stopped", |p| p["status"] == "stopped");
    assert!(!alive(pid), "stopped plugin's process {pid} still runs");
    let r = stack.invoke("echo", "echo", json!({}));
    assert_eq!(r.status, 503);
    assert_eq!(r.retry_after.as_deref(), Some("1"));

    // Start again.
    assert_eq!(stack.post("/api/plugins/echo/start", "").status, 202);
    let started = stack.wait_running("echo");
    assert_eq!(
        stack.invoke("echo", "echo", json!({"z": 3})).body,
        json!({"z": 3})
    );

    // Restart replaces the process.
    let before = pid_of(&started);
    assert_eq!(stack.post("/api/plugins/echo/restart", "").status, 202);
    let after = stack.wait_plugin("echo", "restarted", |p| {
        p["status"] == "running" && p["instances"][0]["pid"].as_u64() != Some(u64::from(before))
    });
    assert!(!alive(before));

    // A config change rolls out to a fresh process that sees it.
    let r = stack.post("/api/plugins/echo/config", r#"{"greeting": "bonjour"}"#);
    assert_eq!(r.status, 200, "{:#}", r.body);
    assert_eq!(r.body["config"], json!({"greeting": "bonjour"}));
    stack.wait_plugin("echo", "reconfigured", |p| {
        p["status"] == "running" && p["instances"][0]["pid"] != after["instances"][0]["pid"]
    });
    let r = stack.invoke("echo", "config", json!({}));
    assert_eq!(r.body, json!({"greeting": "bonjour"}));
    let r = stack.post("/api/plugins/echo/config", "[1, 2]");
    assert_eq!(r.status, 400);
    let r = stack.post("/api/plugins/nope/stop", "");
    assert_eq!(r.status, 404);
}

#[test]
fn manifests_are_hot_swapped_and_typos_are_named() {
    let mut stack = Stack::start(&[("echo.yaml", &sample_echo())]);
    stack.wait_running("echo");

    // Add a second plugin while the host runs.
    let second = sample_echo()
        .replace("name: echo\n", "name: echo-two\n")
        .replace("greeting: hello", "greeting: two");
    std::fs::write(stack.manifest_path("two.yaml"), &second).expect("write");
    stack.wait_running("echo-two");
    assert_eq!(
        stack.invoke("echo-two", "config", json!({})).body,
        json!({"greeting": "two"})
    );

    // Change it: the new spec rolls out.
    std::fs::write(
        stack.manifest_path("two.yaml"),
        second.replace("greeting: two", "greeting: deux"),
    )
    .expect("write");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let r = stack.invoke("echo-two", "config", json!({}));
        if r.body == json!({"greeting": "deux"}) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "changed manifest never rolled out"
        );
        std::thread::sleep(Duration::from_millis(100));
    }

    // A typo: the field is named, the last valid version keeps serving.
    std::fs::write(
        stack.manifest_path("two.yaml"),
        second.replace("capabilities:", "capabilites:"),
    )
    .expect("write");
    let p = stack.wait_plugin("echo-two", "flagged", |p| {
        p["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("spec.capabilites"))
    });
    assert!(
        p["last_error"]
            .as_str()
            .unwrap_or_default()
            .contains("did you mean \"capabilities\"?"),
        "{p:#}"
    );
    stack.wait_for_output("spec.capabilites", Duration::from_secs(30));
    assert_eq!(
        stack.invoke("echo-two", "echo", json!({"k": 1})).body,
        json!({"k": 1})
    );

    // A config its implementation's schema refuses: named before anything starts, and the
    // last valid version keeps serving.
    let pid_before = pid_of(&stack.wait_running("echo-two"));
    std::fs::write(
        stack.manifest_path("two.yaml"),
        second.replace("greeting: two", "startupDelayMs: soon"),
    )
    .expect("write");
    let p = stack.wait_plugin("echo-two", "flagged", |p| {
        p["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("spec.config.startupDelayMs"))
    });
    assert_eq!(p["status"], "running", "{p:#}");
    // Said apart from instance errors, so the UI can say an older version runs.
    assert!(
        p["manifest_error"]
            .as_str()
            .is_some_and(|e| e.contains("spec.config.startupDelayMs")),
        "{p:#}"
    );
    stack.wait_for_output("spec.config.startupDelayMs", Duration::from_secs(30));
    assert_eq!(pid_of(&p), pid_before, "no new instance was started: {p:#}");
    assert_eq!(
        stack.invoke("echo-two", "config", json!({})).body,
        json!({"greeting": "deux"}),
        "the last valid version serves"
    );

    // A new file with a typo shows up in phase error, naming the field.
    let bad = sample_echo()
        .replace("name: echo\n", "name: echo-bad\n")
        .replace("timeoutSeconds: 10", "timeoutSecond: 10");
    std::fs::write(stack.manifest_path("bad.yaml"), bad).expect("write");
    let p = stack.wait_plugin("echo-bad", "error", |p| p["status"] == "error");
    assert!(
        p["last_error"]
            .as_str()
            .unwrap_or_default()
            .contains("spec.resources.timeoutSecond"),
        "{p:#}"
    );
    assert_eq!(stack.invoke("echo-bad", "echo", json!({})).status, 503);
    assert_eq!(stack.post("/api/plugins/echo-bad/start", "").status, 409);

    // A valid manifest again: the error is gone.
    std::fs::write(stack.manifest_path("two.yaml"), &second).expect("write");
    let p = stack.wait_plugin("echo-two", "fixed", |p| p["manifest_error"].is_null());
    assert!(p["last_error"].is_null(), "{p:#}");

    // Remove the file: the plugin and its process go away.
    let pid = pid_of(&stack.wait_running("echo-two"));
    std::fs::remove_file(stack.manifest_path("two.yaml")).expect("remove");
    let deadline = Instant::now() + Duration::from_secs(30);
    while stack.get("/api/plugins/echo-two").0 != 404 {
        assert!(Instant::now() < deadline, "removed plugin still listed");
        std::thread::sleep(Duration::from_millis(50));
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    while alive(pid) {
        assert!(
            Instant::now() < deadline,
            "removed plugin's process {pid} still runs"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // The first plugin was never disturbed.
    assert_eq!(
        stack.invoke("echo", "echo", json!({"still": true})).body,
        json!({"still": true})
    );
}

#[test]
fn a_config_error_puts_the_plugin_in_phase_error_without_a_crash_loop() {
    // A config the schema accepts and the plugin still refuses at start (exit 78).
    let bad = sample_echo().replace("greeting: hello", "startupError: refused on purpose");
    let stack = Stack::start(&[("echo.yaml", &bad)]);
    let p = stack.wait_plugin("echo", "error", |p| p["status"] == "error");
    let error = p["last_error"].as_str().unwrap_or_default();
    assert!(error.contains("status 78"), "{p:#}");
    assert!(error.contains("refused on purpose"), "{p:#}");
    // A crash loop would restart it after the first backoff. Let a second plugin crash after
    // this one failed and wait for its restart: its backoff started later and is just as long,
    // so by the time it has come back, a restart of the first would have happened too.
    let two = sample_echo().replace("name: echo\n", "name: echo-two\n");
    std::fs::write(stack.manifest_path("two.yaml"), two).expect("write");
    let pid = pid_of(&stack.wait_running("echo-two"));
    signal(pid, "KILL");
    stack.wait_plugin("echo-two", "restarted after its backoff", |p| {
        p["status"] == "running"
            && p["instances"][0]["restarts"] == 1
            && p["instances"][0]["pid"].as_u64() != Some(u64::from(pid))
    });
    let (_, p) = stack.get("/api/plugins/echo");
    assert_eq!(p["status"], "error", "{p:#}");
    assert_eq!(
        p["instances"][0]["restarts"], 1,
        "no restarts after a config error: {p:#}"
    );
}

#[test]
fn sigterm_stops_every_child_and_the_host() {
    let two = sample_echo().replace("replicas: 1", "replicas: 2");
    let mut stack = Stack::start(&[("echo.yaml", &two)]);
    let p = stack.wait_plugin("echo", "fully ready", |p| p["ready_replicas"] == 2);
    let pids: Vec<u32> = p["instances"]
        .as_array()
        .expect("instances")
        .iter()
        .map(|i| i["pid"].as_u64().expect("pid") as u32)
        .collect();
    assert_eq!(pids.len(), 2);
    // Calls are served with two replicas behind the gateway.
    for i in 0..20 {
        assert_eq!(stack.invoke("echo", "echo", json!({"i": i})).status, 200);
    }
    let (_, t) = stack.get("/api/plugins/echo/telemetry");
    assert_eq!(t["replicas"], 2);
    let status = stack.terminate();
    assert!(status.success(), "bkg up exited with {status}");
    for pid in pids {
        assert!(!alive(pid), "child {pid} outlived bkg up");
    }
}
