//! Autoscaling on `bkg up`: a plugin at zero replicas wakes on a burst and answers every call,
//! grows under sustained load, returns to zero when idle, and holds calls no longer than its
//! activation timeout (nor more of them than its bound).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bkg_e2e::{ADMIN_KEY, Stack, sample_echo};
use serde_json::{Value, json};

/// The sample echo, autoscaled: 0 to 4 replicas, quick to scale down for the test.
fn autoscaled_echo(extra: &str) -> String {
    sample_echo()
        .replace(
            "rateLimit: {requestsPerSecond: 10, burst: 20}",
            "rateLimit: {requestsPerSecond: 100000, burst: 100000}",
        )
        .replace(
        "  replicas: 1\n",
        &format!(
            "  rateLimit: {{requestsPerSecond: 100000, burst: 100000}}\n  scaling:\n    minReplicas: 0\n    maxReplicas: 4\n    target: 2\n    scaleDownDelaySeconds: 2\n    scaleToZeroAfterSeconds: 3\n{extra}"
        ),
    )
}

fn client() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(60))
        .build()
        .expect("client")
}

fn invoke(client: &reqwest::blocking::Client, url: &str, n: usize) -> (u16, Value, Option<String>) {
    call(
        client,
        url,
        json!({"capability": "echo", "payload": {"n": n}}),
    )
}

fn call(
    client: &reqwest::blocking::Client,
    url: &str,
    body: Value,
) -> (u16, Value, Option<String>) {
    let r = client
        .post(format!("{url}/api/plugins/echo/invoke"))
        .bearer_auth(ADMIN_KEY)
        .json(&body)
        .send()
        .expect("invoke");
    let status = r.status().as_u16();
    let retry_after = r
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    (status, r.json().unwrap_or(Value::Null), retry_after)
}

fn live_instances(p: &Value) -> usize {
    p["instances"]
        .as_array()
        .map_or(0, |a| a.iter().filter(|i| i["state"] != "stopping").count())
}

fn metric(stack: &Stack, name: &str) -> f64 {
    let text = reqwest::blocking::get(format!("{}/metrics", stack.metrics_url))
        .expect("metrics")
        .text()
        .expect("text");
    text.lines()
        .filter(|l| l.starts_with(name) && l.contains("plugin=\"echo\""))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[test]
fn from_zero_a_burst_is_answered_load_adds_replicas_and_idle_returns_to_zero() {
    from_zero_and_back("gateway");
}

/// The same with the signal a cluster uses: every replica's `/v1/load`, summed.
#[test]
fn the_replicas_own_load_signal_scales_the_same_way() {
    from_zero_and_back("runtimes");
}

fn from_zero_and_back(signal: &str) {
    let stack = Stack::start_env(
        &[("echo.yaml", &autoscaled_echo(""))],
        &[("BKG_AUTOSCALE_SIGNAL", signal)],
    );
    // minReplicas 0: nothing runs until the first call.
    let p = stack.wait_plugin("echo", "at zero replicas", |p| {
        p["status"] == "running" && p["replicas"] == 0 && live_instances(p) == 0
    });
    assert_eq!(p["scaling_owner"], "autoscaler", "{p:#}");
    assert_eq!(p["scaling"]["max_replicas"], 4, "{p:#}");

    // A burst of 64 at zero replicas: every call is held, then answered.
    let url = stack.url.clone();
    let burst: Vec<_> = (0..64)
        .map(|n| {
            let url = url.clone();
            std::thread::spawn(move || invoke(&client(), &url, n))
        })
        .collect();
    for (n, call) in burst.into_iter().enumerate() {
        let (status, body, _) = call.join().expect("caller");
        assert_eq!(status, 200, "call {n}: {body}");
        assert_eq!(body["n"], n, "call {n} got its own answer");
    }
    assert!(
        metric(&stack, "bkg_gateway_activation_duration_seconds_count") >= 1.0,
        "held calls are measured"
    );

    // Sustained load: more replicas than one.
    let stop = Arc::new(AtomicBool::new(false));
    let failed = Arc::new(AtomicUsize::new(0));
    let load: Vec<_> = (0..24)
        .map(|_| {
            let (url, stop, failed) = (url.clone(), stop.clone(), failed.clone());
            std::thread::spawn(move || {
                let client = client();
                while !stop.load(Ordering::Relaxed) {
                    // Calls that take a while, as inference does: in flight at the gateway
                    // and inside the runtimes alike.
                    let (status, body, _) = call(
                        &client,
                        &url,
                        json!({"capability": "sleep", "payload": {"ms": 20}}),
                    );
                    if status != 200 && failed.fetch_add(1, Ordering::Relaxed) < 3 {
                        eprintln!("failed call: {status} {body}");
                    }
                }
            })
        })
        .collect();
    let grown = stack.wait_plugin("echo", "scaled above one replica", |p| {
        p["replicas"].as_i64().unwrap_or(0) > 1 && p["ready_replicas"].as_i64().unwrap_or(0) > 1
    });
    stop.store(true, Ordering::Relaxed);
    for t in load {
        t.join().expect("load thread");
    }
    assert_eq!(
        failed.load(Ordering::Relaxed),
        0,
        "no call failed while scaling up"
    );
    println!(
        "signal {signal}, under load: {} replicas wanted, {} ready",
        grown["replicas"], grown["ready_replicas"]
    );

    // Idle: back to zero, every process gone.
    let idle = Instant::now();
    stack.wait_plugin("echo", "back at zero replicas", |p| {
        p["replicas"] == 0
            && live_instances(p) == 0
            && p["instances"].as_array().is_some_and(Vec::is_empty)
    });
    println!("back to zero {:?} after the load stopped", idle.elapsed());
    // And it wakes again.
    let (status, body, _) = invoke(&client(), &url, 7);
    assert_eq!(status, 200, "{body}");
}

#[test]
fn a_held_call_past_the_activation_timeout_gets_503_and_past_the_bound_429() {
    // Replicas of this manifest never become ready (a configuration error), so held calls
    // wait out the activation timeout.
    let manifest = autoscaled_echo(
        "    activationTimeoutSeconds: 2\n    maxHeldRequests: 3\n  env:\n    - {name: BKG_MAX_QUEUE, value: lots}\n",
    );
    let stack = Stack::start(&[("echo.yaml", &manifest)]);
    stack.wait_plugin("echo", "known", |p| p["replicas"] == 0);
    let url = stack.url.clone();
    let calls: Vec<_> = (0..6)
        .map(|n| {
            let url = url.clone();
            std::thread::spawn(move || invoke(&client(), &url, n))
        })
        .collect();
    let answers: Vec<_> = calls
        .into_iter()
        .map(|c| c.join().expect("caller"))
        .collect();
    let timed_out: Vec<_> = answers.iter().filter(|(s, _, _)| *s == 503).collect();
    let refused: Vec<_> = answers.iter().filter(|(s, _, _)| *s == 429).collect();
    assert_eq!(timed_out.len(), 3, "{answers:?}");
    assert_eq!(refused.len(), 3, "{answers:?}");
    for (_, body, retry_after) in &timed_out {
        assert!(retry_after.is_some(), "503 carries Retry-After: {body}");
        assert_eq!(
            body["type"], "https://bkg.rs/problems/plugin-unavailable",
            "{body}"
        );
        assert!(
            body["detail"]
                .as_str()
                .unwrap_or("")
                .contains("activationTimeoutSeconds"),
            "{body}"
        );
    }
    for (_, body, retry_after) in &refused {
        assert!(retry_after.is_some(), "429 carries Retry-After: {body}");
        assert!(
            body["detail"]
                .as_str()
                .unwrap_or("")
                .contains("maxHeldRequests"),
            "{body}"
        );
    }
}

#[test]
fn scaling_with_replicas_or_min_above_max_is_refused_with_the_field() {
    let both = sample_echo().replace(
        "  replicas: 1\n",
        "  replicas: 1\n  scaling: {minReplicas: 3, maxReplicas: 2}\n",
    );
    let mut stack = Stack::start(&[("echo.yaml", &both)]);
    let out = stack.wait_for_output("spec.scaling.minReplicas", Duration::from_secs(30));
    assert!(out.contains("spec.replicas"), "{out}");
    let p = stack.wait_plugin("echo", "in phase error", |p| p["status"] == "error");
    assert!(
        p["last_error"]
            .as_str()
            .unwrap_or("")
            .contains("above spec.scaling.maxReplicas"),
        "{p:#}"
    );
}
