//! API keys and scopes against the real stack: the authorization matrix, keys at rest and in logs,
//! and the live WebSocket stream across a plugin restart.

use std::process::Command;
use std::time::{Duration, Instant};

use bkg_e2e::{ADMIN_KEY, Stack, bin_dir, create_key, sample_echo};
use serde_json::{Value, json};

fn call(stack: &Stack, key: Option<&str>, method: &str, path: &str, body: &str) -> u16 {
    let client = reqwest::blocking::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(30))
        .build()
        .expect("client");
    let url = format!("{}{path}", stack.url);
    let mut req = match method {
        "GET" => client.get(url),
        "DELETE" => client.delete(url),
        _ => client
            .post(url)
            .header("content-type", "application/json")
            .body(body.to_owned()),
    };
    if let Some(key) = key {
        req = req.bearer_auth(key);
    }
    let r = req.send().expect("request");
    let status = r.status().as_u16();
    if status == 401 {
        assert_eq!(
            r.headers()
                .get("www-authenticate")
                .and_then(|v| v.to_str().ok()),
            Some("Bearer realm=\"bkg\"")
        );
    }
    status
}

#[test]
fn every_endpoint_answers_exactly_by_scope_and_keys_stay_secret() {
    let dir = tempfile::tempdir().expect("dir");
    std::fs::write(dir.path().join("echo.yaml"), sample_echo()).expect("manifest");
    let keys_file = dir.path().join("keys").join("keys.yaml");
    let read = create_key(&keys_file, "reader", "read");
    let invoke = create_key(&keys_file, "invoker", "invoke");
    let narrow = create_key(&keys_file, "sleeper", "invoke:echo/sleep");
    let admin = create_key(&keys_file, "operator", "admin");
    let mut stack = Stack::start_with(dir, &[]);
    stack.wait_running("echo");

    // (method, path, body, expected for: none, bad, read, invoke, narrow, admin)
    let echo = r#"{"capability":"echo","payload":{}}"#;
    let sleep = r#"{"capability":"sleep","payload":{"ms":1}}"#;
    let matrix: &[(&str, &str, &str, [u16; 6])] = &[
        ("GET", "/healthz", "", [200, 200, 200, 200, 200, 200]),
        // Key ids and plugin names: only on the metrics listener, never on the API port.
        ("GET", "/metrics", "", [404, 404, 404, 404, 404, 404]),
        ("GET", "/api/whoami", "", [401, 401, 200, 200, 200, 200]),
        ("GET", "/api/plugins", "", [401, 401, 200, 403, 403, 200]),
        (
            "GET",
            "/api/plugins/echo",
            "",
            [401, 401, 200, 403, 403, 200],
        ),
        (
            "GET",
            "/api/plugins/echo/telemetry",
            "",
            [401, 401, 200, 403, 403, 200],
        ),
        (
            "GET",
            "/api/plugins/echo/logs",
            "",
            [401, 401, 200, 403, 403, 200],
        ),
        (
            "POST",
            "/api/plugins/echo/invoke",
            echo,
            [401, 401, 403, 200, 403, 200],
        ),
        (
            "POST",
            "/api/plugins/echo/invoke",
            sleep,
            [401, 401, 403, 200, 200, 200],
        ),
        (
            "POST",
            "/api/plugins/echo/config",
            r#"{"greeting":"hi"}"#,
            [401, 401, 403, 403, 403, 200],
        ),
        (
            "POST",
            "/api/plugins/echo/restart",
            "",
            [401, 401, 403, 403, 403, 202],
        ),
        (
            "POST",
            "/api/plugins/echo/stop",
            "",
            [401, 401, 403, 403, 403, 202],
        ),
        (
            "POST",
            "/api/plugins/echo/start",
            "",
            [401, 401, 403, 403, 403, 202],
        ),
        ("GET", "/api/keys", "", [401, 401, 403, 403, 403, 200]),
        (
            "POST",
            "/api/keys",
            r#"{"id":"matrix","scopes":["read"]}"#,
            [401, 401, 403, 403, 403, 201],
        ),
        (
            "DELETE",
            "/api/keys/matrix",
            "",
            [401, 401, 403, 403, 403, 204],
        ),
    ];
    let keys = [
        None,
        Some("bkg_notAKeyAtAll000000000000000000000000000"),
        Some(read.as_str()),
        Some(invoke.as_str()),
        Some(narrow.as_str()),
        Some(admin.as_str()),
    ];
    for (method, path, body, expected) in matrix {
        for (key, want) in keys.iter().zip(expected) {
            if *method == "POST" && path.ends_with("invoke") {
                stack.wait_running("echo");
            }
            let got = call(&stack, *key, method, path, body);
            assert_eq!(got, *want, "{method} {path} with key {key:?}");
        }
    }
    let who: Value = reqwest::blocking::Client::new()
        .get(format!("{}/api/whoami", stack.url))
        .bearer_auth(&narrow)
        .send()
        .expect("whoami")
        .json()
        .expect("json");
    assert_eq!(
        who,
        json!({"key_id": "sleeper", "scopes": ["invoke:echo/sleep"]})
    );

    // At rest only hashes; in the logs, neither keys nor hashes of them.
    let at_rest = std::fs::read_to_string(stack.dir.path().join("keys/keys.yaml")).expect("keys");
    let output = stack.drain_output().join("\n");
    for key in [&read, &invoke, &narrow, &admin, &ADMIN_KEY.to_owned()] {
        assert!(!at_rest.contains(key.as_str()), "plaintext key at rest");
        assert!(!output.contains(key.as_str()), "key in the host's output");
    }
    assert_eq!(at_rest.matches("sha256:").count(), 4);
    let (_, logs) = stack.get("/api/plugins/echo/logs?lines=1000");
    assert!(
        !logs.to_string().contains("bkg_"),
        "a key reached the plugin logs"
    );

    // Per-key usage is counted by key id, on the metrics listener only: the API port
    // answers `/metrics` without a key with a plain 404 that names no key.
    let metrics = reqwest::blocking::get(format!("{}/metrics", stack.metrics_url))
        .expect("metrics")
        .text()
        .expect("text");
    assert!(
        metrics.contains(r#"bkg_gateway_api_key_requests_total{key_id="sleeper"}"#),
        "{metrics}"
    );
    let api_port = reqwest::blocking::get(format!("{}/metrics", stack.url)).expect("metrics");
    assert_eq!(api_port.status().as_u16(), 404);
    let text = api_port.text().expect("text");
    for id in ["sleeper", "reader", "invoker", "operator", "key_id"] {
        assert!(!text.contains(id), "{id} on the API port: {text}");
    }
}

#[test]
fn a_new_key_in_the_file_works_without_a_restart() {
    let dir = tempfile::tempdir().expect("dir");
    std::fs::write(dir.path().join("echo.yaml"), sample_echo()).expect("manifest");
    let keys_file = dir.path().join("keys").join("keys.yaml");
    let stack = Stack::start_with(dir, &[]);
    let late = create_key(&keys_file, "late", "read");
    // Generous: the deadline only turns a hang into a failure.
    let deadline = Instant::now() + Duration::from_secs(60);
    while call(&stack, Some(&late), "GET", "/api/plugins", "") != 200 {
        assert!(Instant::now() < deadline, "the key file was not reloaded");
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn without_any_key_bkg_up_generates_an_admin_key_once() {
    let dir = tempfile::tempdir().expect("dir");
    std::fs::write(dir.path().join("echo.yaml"), sample_echo()).expect("manifest");
    let keys_file = dir.path().join("k.yaml");
    let run = |expect_new: bool| {
        let mut child = Command::new(bin_dir().join("bkg"))
            .args(["up", "--port", "0", "--plugins"])
            .arg(dir.path())
            .arg("--keys-file")
            .arg(&keys_file)
            .env_remove("BKG_API_KEY")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("spawn");
        let mut out = std::io::BufReader::new(child.stdout.take().expect("stdout"));
        let mut text = String::new();
        loop {
            let mut line = String::new();
            if std::io::BufRead::read_line(&mut out, &mut line).unwrap_or(0) == 0 {
                break;
            }
            text.push_str(&line);
            if line.contains("New admin key:") {
                break;
            }
        }
        let _ = child.kill();
        let _ = child.wait();
        // Every start, not only the first, names the key file and how to add an admin key.
        assert!(text.contains("gateway listening on http://"), "{text}");
        let file = keys_file.display().to_string();
        assert!(
            text.lines()
                .any(|l| l.starts_with("API keys: ") && l.contains(&file)),
            "{text}"
        );
        assert!(
            text.lines().any(|l| l.starts_with("New admin key: ")
                && l.contains("apikey create")
                && l.contains("--scopes admin")
                && l.ends_with(&format!("--keys-file {file}"))),
            "{text}"
        );
        assert_eq!(
            text.contains("generated an admin key"),
            expect_new,
            "{text}"
        );
        text.split_whitespace()
            .find(|w| w.starts_with("bkg_"))
            .map(str::to_owned)
    };
    let key = run(true).expect("a key is printed");
    let stored = std::fs::read_to_string(&keys_file).expect("stored");
    assert!(!stored.contains(&key) && stored.contains("sha256:"));
    assert_eq!(run(false), None, "the key is printed only once");
}

#[test]
fn the_websocket_streams_telemetry_and_logs_across_a_restart() {
    let stack = Stack::start(&[("echo.yaml", &sample_echo())]);
    stack.wait_running("echo");
    let host = stack.url.trim_start_matches("http://").to_owned();

    // Without a key the upgrade is refused.
    let request = tungstenite::client::IntoClientRequest::into_client_request(format!(
        "ws://{host}/ws/plugins/echo"
    ))
    .expect("request");
    match tungstenite::connect(request) {
        Err(tungstenite::Error::Http(response)) => assert_eq!(response.status(), 401),
        other => panic!("expected 401, got {:?}", other.map(|_| ())),
    }

    let mut request = tungstenite::client::IntoClientRequest::into_client_request(format!(
        "ws://{host}/ws/plugins/echo"
    ))
    .expect("request");
    request.headers_mut().insert(
        "sec-websocket-protocol",
        format!("bkg.v1, bkg.bearer.{ADMIN_KEY}")
            .parse()
            .expect("header"),
    );
    let (mut socket, response) = tungstenite::connect(request).expect("websocket");
    assert_eq!(
        response
            .headers()
            .get("sec-websocket-protocol")
            .and_then(|v| v.to_str().ok()),
        Some("bkg.v1")
    );
    if let tungstenite::stream::MaybeTlsStream::Plain(tcp) = socket.get_ref() {
        tcp.set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
    }
    let mut next = |what: &str, pred: &dyn Fn(&Value) -> bool| -> Value {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(tungstenite::Message::Text(text)) = socket.read() {
                let msg: Value = serde_json::from_str(&text).expect("json message");
                if pred(&msg) {
                    return msg;
                }
            }
        }
        panic!("no {what} message");
    };
    let t = next("telemetry", &|m| m["type"] == "telemetry");
    assert_eq!(t["plugin_id"], "echo");
    // A call produces a log line that streams in.
    assert_eq!(stack.invoke("echo", "sleep", json!({"ms": 1})).status, 200);
    next("log line", &|m| {
        m["type"] == "log"
            && m["message"]
                .as_str()
                .is_some_and(|s| s.contains("sleeping"))
    });

    // Restart the plugin: the same stream reports it going down and coming back.
    let before = stack.wait_running("echo")["instances"][0]["pid"].clone();
    assert_eq!(stack.post("/api/plugins/echo/restart", "").status, 202);
    next("status running after restart", &|m| {
        m["type"] == "status"
            && m["plugin"]["status"] == "running"
            && m["plugin"]["instances"][0]["pid"] != before
    });
    next("supervisor log", &|m| {
        m["type"] == "log" && m["stream"] == "supervisor"
    });
    let t = next("telemetry after restart", &|m| {
        m["type"] == "telemetry" && m["replicas"] == 1
    });
    assert!(t["uptime_secs"].as_u64().is_some());
}

#[test]
fn a_rate_limit_refuses_with_429_and_retry_after_per_key_and_capability() {
    let dir = tempfile::tempdir().expect("dir");
    let manifest = sample_echo().replace(
        "  capabilities:\n",
        "  rateLimit: {requestsPerSecond: 1, burst: 2}\n  capabilities:\n",
    );
    assert!(manifest.contains("rateLimit: {requestsPerSecond: 1, burst: 2}"));
    std::fs::write(dir.path().join("echo.yaml"), manifest).expect("manifest");
    let keys_file = dir.path().join("keys").join("keys.yaml");
    let other = create_key(&keys_file, "other", "invoke");
    let stack = Stack::start_with(dir, &[]);
    stack.wait_running("echo");
    let scrape = || {
        reqwest::blocking::get(format!("{}/metrics", stack.metrics_url))
            .expect("metrics")
            .text()
            .expect("text")
    };
    let before = scrape();
    for capability in ["echo", "sleep"] {
        let zero = format!(
            "bkg_gateway_rate_limited_requests_total{{plugin=\"echo\",capability=\"{capability}\"}} 0"
        );
        assert!(
            before.contains(&zero),
            "declared capabilities start at 0: {before}"
        );
    }

    // The burst of 2 passes, then calls are refused. A slow machine may earn a call back
    // (one a second) while it sends them, so count rather than expect the third to fail.
    let started = Instant::now();
    let mut admitted = 0u64;
    let refused = loop {
        let r = stack.invoke("echo", "echo", json!({"i": admitted}));
        if r.status != 200 {
            break r;
        }
        admitted += 1;
        assert!(admitted <= 100, "no call refused");
    };
    let earned = started.elapsed().as_secs() + 1;
    assert!(
        (2..=2 + earned).contains(&admitted),
        "{admitted} calls admitted in {earned} s or less at 1 a second after a burst of 2"
    );
    assert_eq!(refused.status, 429, "{:#}", refused.body);
    assert_eq!(refused.content_type, "application/problem+json");
    assert_eq!(refused.body["type"], "https://bkg.rs/problems/rate-limited");
    let wait: u64 = refused
        .retry_after
        .as_deref()
        .expect("Retry-After on a 429")
        .parse()
        .expect("Retry-After in seconds");
    assert!((1..=2).contains(&wait), "Retry-After {wait}");
    assert!(
        refused.body["detail"]
            .as_str()
            .is_some_and(|d| d.contains("1 times per second (burst 2)")),
        "{:#}",
        refused.body
    );

    // Another key has its own bucket; the sample's own limit on `sleep` (burst 20) is untouched.
    assert_eq!(
        call(
            &stack,
            Some(&other),
            "POST",
            "/api/plugins/echo/invoke",
            r#"{"capability":"echo","payload":{}}"#
        ),
        200
    );
    assert_eq!(
        stack.invoke("echo", "sleep", json!({"ms": 0})).status,
        200,
        "capability sleep overrides the plugin's limit"
    );

    // The bucket refills at one call per second: a client that waits what Retry-After said
    // is admitted (waiting that long is the point here, not a guess at how long work takes).
    std::thread::sleep(Duration::from_secs(wait));
    assert_eq!(
        stack.invoke("echo", "echo", json!({"i": "again"})).status,
        200
    );

    let metrics = scrape();
    assert!(
        metrics.contains(
            "bkg_gateway_rate_limited_requests_total{plugin=\"echo\",capability=\"echo\"} 1"
        ),
        "{metrics}"
    );
}

/// The status of a WebSocket upgrade to `path` with `key` in the browser's subprotocol form
/// (none: no key at all): 101 when the stream opened.
fn ws_status(host: &str, path: &str, key: Option<&str>) -> u16 {
    let mut request =
        tungstenite::client::IntoClientRequest::into_client_request(format!("ws://{host}{path}"))
            .expect("request");
    if let Some(key) = key {
        request.headers_mut().insert(
            "sec-websocket-protocol",
            format!("bkg.v1, bkg.bearer.{key}").parse().expect("header"),
        );
    }
    match tungstenite::connect(request) {
        Ok((mut socket, response)) => {
            let _ = socket.close(None);
            response.status().as_u16()
        }
        Err(tungstenite::Error::Http(response)) => response.status().as_u16(),
        Err(e) => panic!("{path}: {e}"),
    }
}

#[test]
fn websocket_streams_answer_exactly_by_scope() {
    let dir = tempfile::tempdir().expect("dir");
    std::fs::write(dir.path().join("echo.yaml"), sample_echo()).expect("manifest");
    let keys_file = dir.path().join("keys").join("keys.yaml");
    let read = create_key(&keys_file, "reader", "read");
    let invoke = create_key(&keys_file, "invoker", "invoke");
    let narrow = create_key(&keys_file, "echoer", "invoke:echo");
    let admin = create_key(&keys_file, "operator", "admin");
    let stack = Stack::start_with(dir, &[]);
    stack.wait_running("echo");
    let host = stack.url.trim_start_matches("http://").to_owned();
    let wrong = "bkg_notAKey0123456789abcdefghijklmnopqrstuv";
    // Streams are reads: `read` or `admin`; invoke keys may not watch plugins.
    let keys: [(&str, Option<&str>, u16); 6] = [
        ("no key", None, 401),
        ("a wrong key", Some(wrong), 401),
        ("read", Some(&read), 101),
        ("invoke", Some(&invoke), 403),
        ("invoke:echo", Some(&narrow), 403),
        ("admin", Some(&admin), 101),
    ];
    for path in ["/ws/plugins/echo", "/ws/plugins"] {
        for (who, key, expected) in keys {
            assert_eq!(ws_status(&host, path, key), expected, "{who} on {path}");
        }
    }
    // An unknown plugin's stream is a 404 for a key that may read.
    assert_eq!(ws_status(&host, "/ws/plugins/nope", Some(&read)), 404);
}

/// `/api/keys` on the real binary: a key made through the API invokes at once, shows in the list
/// without its secret, is refused after revoke, and one whose `expires_at` has passed (the file
/// edited by hand, picked up by the reloader) gets 401 saying it expired.
#[test]
fn keys_made_through_the_api_work_at_once_and_stop_when_revoked_or_expired() {
    let dir = tempfile::tempdir().expect("dir");
    std::fs::write(dir.path().join("echo.yaml"), sample_echo()).expect("manifest");
    let stack = Stack::start_with(dir, &[]);
    stack.wait_running("echo");
    let client = reqwest::blocking::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(30))
        .build()
        .expect("client");
    let create = |id: &str, extra: Value| -> String {
        let mut body = json!({"id": id, "scopes": ["invoke:echo"]});
        body.as_object_mut()
            .expect("object")
            .extend(extra.as_object().expect("object").clone());
        let r = client
            .post(format!("{}/api/keys", stack.url))
            .bearer_auth(ADMIN_KEY)
            .json(&body)
            .send()
            .expect("create");
        assert_eq!(r.status().as_u16(), 201);
        let made: Value = r.json().expect("json");
        made["key"].as_str().expect("key").to_owned()
    };
    let invoke = |key: &str| -> (u16, Value) {
        let r = client
            .post(format!("{}/api/plugins/echo/invoke", stack.url))
            .bearer_auth(key)
            .json(&json!({"capability": "echo", "payload": {"x": 1}}))
            .send()
            .expect("invoke");
        (r.status().as_u16(), r.json().unwrap_or(Value::Null))
    };

    let key = create("made-here", json!({}));
    assert_eq!(invoke(&key), (200, json!({"x": 1})), "in force at once");
    let list = client
        .get(format!("{}/api/keys", stack.url))
        .bearer_auth(ADMIN_KEY)
        .send()
        .expect("list")
        .text()
        .expect("text");
    assert!(list.contains("\"made-here\""), "{list}");
    assert!(
        !list.contains(&key) && !list.contains(ADMIN_KEY) && !list.contains("sha256:"),
        "{list}"
    );
    let r = client
        .delete(format!("{}/api/keys/made-here", stack.url))
        .bearer_auth(ADMIN_KEY)
        .send()
        .expect("revoke");
    assert_eq!(r.status().as_u16(), 204);
    assert_eq!(invoke(&key).0, 401, "revoked");

    let soon = create("short-lived", json!({"expires_at": "2099-01-01T00:00:00Z"}));
    assert_eq!(invoke(&soon).0, 200);
    let keys_file = stack.dir.path().join("keys").join("keys.yaml");
    let text = std::fs::read_to_string(&keys_file).expect("key file");
    std::fs::write(
        &keys_file,
        text.replace("2099-01-01T00:00:00Z", "2001-01-01T00:00:00Z"),
    )
    .expect("write");
    let deadline = Instant::now() + Duration::from_secs(20);
    let (status, problem) = loop {
        let (status, problem) = invoke(&soon);
        if status != 200 || Instant::now() > deadline {
            break (status, problem);
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(status, 401, "{problem}");
    assert!(
        problem["detail"]
            .as_str()
            .is_some_and(|d| d.contains("expired")),
        "{problem}"
    );
}
