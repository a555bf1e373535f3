//! The bkg.plugin/v1 protocol, exercised on the router with the real echo plugin.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use bkg_plugin_runtime::{AppState, Config, logs::LogBuffer, router};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tower::ServiceExt;

fn config() -> Config {
    Config {
        implementation: "echo".into(),
        plugin_id: "echo".into(),
        listen: "127.0.0.1:0".parse().expect("addr"),
        addr_file: None,
        metrics_listen: None,
        plugin_config: json!({}),
        invoke_timeout: Duration::from_secs(5),
        max_concurrency: 4,
        max_queue: 4,
        max_body_bytes: 1024,
        drain_timeout: Duration::from_secs(5),
    }
}

async fn state(config: Config, ready: bool) -> AppState {
    let plugin: Arc<dyn bkg_plugin_api::Plugin> =
        bkg_plugin_runtime::create("echo").expect("echo").into();
    plugin
        .start(bkg_plugin_api::StartContext {
            plugin_id: "echo".into(),
            config: json!({}),
        })
        .await
        .expect("start");
    let state = AppState::new(config, plugin, LogBuffer::new(100));
    state.set_ready(ready);
    state
}

async fn call(
    state: &AppState,
    method: &str,
    uri: &str,
    body: &str,
) -> (StatusCode, Option<String>, Value) {
    let request = Request::builder()
        .method(method)
        .uri(uri)
        .header("x-request-id", "req-1")
        .body(Body::from(body.to_owned()))
        .expect("request");
    let response = router(state.clone())
        .oneshot(request)
        .await
        .expect("infallible");
    let status = response.status();
    let retry = response
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let bytes = response
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes();
    let value = serde_json::from_slice(&bytes)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into()));
    (status, retry, value)
}

#[tokio::test]
async fn readiness_gates_invokes() {
    let state = state(config(), false).await;
    assert_eq!(call(&state, "GET", "/livez", "").await.0, StatusCode::OK);
    assert_eq!(
        call(&state, "GET", "/readyz", "").await.0,
        StatusCode::SERVICE_UNAVAILABLE
    );
    let (status, _, body) = call(&state, "POST", "/v1/invoke/echo", "{}").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(body["type"], "https://bkg.rs/problems/not-ready");
    state.set_ready(true);
    assert_eq!(call(&state, "GET", "/readyz", "").await.0, StatusCode::OK);
    let (status, _, body) = call(&state, "POST", "/v1/invoke/echo", r#"{"a":[1,2]}"#).await;
    assert_eq!((status, body), (StatusCode::OK, json!({"a": [1, 2]})));
}

#[tokio::test]
async fn errors_are_problems_with_exact_codes() {
    let state = state(config(), true).await;
    let cases = [
        (
            "/v1/invoke/nope",
            "{}".to_owned(),
            StatusCode::NOT_FOUND,
            "unknown-capability",
        ),
        (
            "/v1/invoke/echo",
            "{oops".to_owned(),
            StatusCode::BAD_REQUEST,
            "malformed-json",
        ),
        (
            "/v1/invoke/echo",
            format!("\"{}\"", "x".repeat(2048)),
            StatusCode::PAYLOAD_TOO_LARGE,
            "body-too-large",
        ),
        (
            "/v1/invoke/fail",
            r#"{"kind":"invalid_input"}"#.to_owned(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid-input",
        ),
        (
            "/v1/invoke/fail",
            r#"{"kind":"not_ready"}"#.to_owned(),
            StatusCode::SERVICE_UNAVAILABLE,
            "not-ready",
        ),
        (
            "/v1/invoke/fail",
            "{}".to_owned(),
            StatusCode::INTERNAL_SERVER_ERROR,
            "plugin-error",
        ),
    ];
    for (uri, body, status, slug) in cases {
        let (got, _, problem) = call(&state, "POST", uri, &body).await;
        assert_eq!(got, status, "{uri} {problem:#}");
        assert_eq!(problem["type"], format!("https://bkg.rs/problems/{slug}"));
        assert_eq!(problem["request_id"], "req-1");
    }
    let (_, _, telemetry) = call(&state, "GET", "/v1/telemetry", "").await;
    assert_eq!(telemetry["request_count"], 6);
    assert_eq!(telemetry["error_count"], 6);
    assert!(
        telemetry["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("HTTP 500"))
    );
}

/// The runtime's gauge of invokes being served (running or waiting for a slot), read from its
/// `/metrics` text as a scraper would; 0 before the first invoke creates the series.
fn in_flight_gauge(metrics: &str) -> u64 {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(r#"bkg_runtime_invoke_in_flight{plugin="echo"} "#))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

// Tokio's clock is paused: it moves only when every task waits on a timer, so the 100 ms
// timeout always fires before the 2 s sleep ends, however busy the machine.
#[tokio::test(start_paused = true)]
async fn the_invoke_timeout_answers_504() {
    let mut config = config();
    config.invoke_timeout = Duration::from_millis(100);
    let state = state(config, true).await;
    let (status, _, body) = call(&state, "POST", "/v1/invoke/sleep", r#"{"ms": 2000}"#).await;
    assert_eq!(status, StatusCode::GATEWAY_TIMEOUT);
    assert!(body["detail"].as_str().is_some_and(|d| d.contains("100ms")));
}

// On a paused clock the two slow calls hold the slot and the queue place until nothing but
// their sleeps is left to run. The third call is refused while both are still in (the gauge
// read after its answer says so): it never waited for a slot.
#[tokio::test(start_paused = true)]
async fn admission_is_bounded_and_refuses_at_once() {
    let mut config = config();
    config.max_concurrency = 1;
    config.max_queue = 1;
    let state = state(config, true).await;
    let slow = || call(&state, "POST", "/v1/invoke/sleep", r#"{"ms": 400}"#);
    let gauge = || async {
        let (_, _, text) = call(&state, "GET", "/metrics", "").await;
        in_flight_gauge(text.as_str().expect("metrics text"))
    };
    let (a, b, c) = tokio::join!(slow(), slow(), async {
        // Both slow calls are in: one holds the slot, the other the queue place.
        let mut seen = 0;
        for _ in 0..10_000 {
            seen = gauge().await;
            if seen == 2 {
                break;
            }
            tokio::task::yield_now().await;
        }
        assert_eq!(seen, 2, "the two slow calls never got in");
        let answer = call(&state, "POST", "/v1/invoke/echo", "{}").await;
        (answer, gauge().await)
    });
    assert_eq!(a.0, StatusCode::OK);
    assert_eq!(b.0, StatusCode::OK);
    let ((status, retry, body), still_in) = c;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body:#}");
    assert_eq!(body["type"], "https://bkg.rs/problems/overloaded");
    assert_eq!(retry.as_deref(), Some("1"));
    assert_eq!(still_in, 2, "refused while both slow calls were still in");
}

#[tokio::test]
async fn info_metrics_and_logs_describe_the_plugin() {
    let state = state(config(), true).await;
    let (_, _, info) = call(&state, "GET", "/v1/info", "").await;
    assert_eq!(info["protocol"], "bkg.plugin/v1");
    assert_eq!(info["implementation"], "echo");
    assert_eq!(info["ready"], true);
    let ids: Vec<&str> = info["capabilities"]
        .as_array()
        .expect("capabilities")
        .iter()
        .filter_map(|c| c["id"].as_str())
        .collect();
    assert_eq!(ids, ["echo", "sleep", "fail", "config"]);
    // Twice: the second call counts on the series the first one created.
    call(&state, "POST", "/v1/invoke/echo", "{}").await;
    call(&state, "POST", "/v1/invoke/echo", "{}").await;
    call(&state, "POST", "/v1/invoke/bogus", "{}").await;
    let (status, _, load) = call(&state, "GET", "/v1/load", "").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        load,
        serde_json::json!({"in_flight": 0, "waiting": 0, "requests": 3}),
        "the autoscaler's view: every call received, none running"
    );
    let (_, _, text) = call(&state, "GET", "/metrics", "").await;
    let text = text.as_str().expect("text").to_owned();
    assert!(
        text.contains(
            r#"bkg_runtime_invoke_requests_total{plugin="echo",capability="echo",code="200"} 2"#
        ),
        "{text}"
    );
    assert!(
        text.contains(r#"capability="_unknown",code="404"} 1"#),
        "{text}"
    );
    assert!(
        text.contains("bkg_runtime_ready{plugin=\"echo\"} 1"),
        "{text}"
    );
    assert!(text.contains("process_resident_memory_bytes "), "{text}");
    assert!(
        text.contains("bkg_runtime_invoke_duration_seconds_bucket"),
        "{text}"
    );
}

/// A runtime served by `run` on loopback, as the binary does.
struct Served {
    addr: String,
    stop: tokio::sync::oneshot::Sender<()>,
    server: tokio::task::JoinHandle<Result<(), bkg_plugin_runtime::Error>>,
    client: reqwest::Client,
    _dir: tempfile::TempDir,
}

/// Starts `run` with `config` and waits until `/readyz` answers 200.
async fn serve(mut config: Config) -> Served {
    let dir = tempfile::tempdir().expect("tempdir");
    let addr_file = dir.path().join("addr");
    config.addr_file = Some(addr_file.clone());
    let (stop, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(bkg_plugin_runtime::run(
        config,
        LogBuffer::new(10),
        async move {
            let _ = stop_rx.await;
        },
    ));
    let client = reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("client");
    // Generous: the deadline only turns a hang into a failure.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let addr = loop {
        if let Ok(a) = std::fs::read_to_string(&addr_file) {
            break a;
        }
        assert!(std::time::Instant::now() < deadline, "no address file");
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    loop {
        let r = client.get(format!("http://{addr}/readyz")).send().await;
        if r.is_ok_and(|r| r.status().is_success()) {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "never ready");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Served {
        addr,
        stop,
        server,
        client,
        _dir: dir,
    }
}

#[tokio::test]
async fn the_metrics_port_serves_metrics_and_nothing_else() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let mut config = config();
    config.metrics_listen = Some(([127, 0, 0, 1], port).into());
    let Served {
        addr,
        stop,
        server,
        client,
        ..
    } = serve(config).await;
    let invoke = |base: String| {
        client
            .post(format!("http://{base}/v1/invoke/echo"))
            .body(r#"{"x": 1}"#)
            .send()
    };
    assert_eq!(invoke(addr.clone()).await.expect("invoke").status(), 200);
    let metrics_addr = format!("127.0.0.1:{port}");
    let scrape = client
        .get(format!("http://{metrics_addr}/metrics"))
        .send()
        .await
        .expect("scrape");
    assert_eq!(scrape.status(), 200);
    let text = scrape.text().await.expect("text");
    assert!(
        text.contains(
            r#"bkg_runtime_invoke_requests_total{plugin="echo",capability="echo",code="200"} 1"#
        ),
        "{text}"
    );
    for (method, path) in [
        ("POST", "/v1/invoke/echo"),
        ("GET", "/v1/info"),
        ("GET", "/v1/logs"),
        ("GET", "/readyz"),
    ] {
        let r = client
            .request(
                method.parse().expect("method"),
                format!("http://{metrics_addr}{path}"),
            )
            .body("{}")
            .send()
            .await
            .expect("answer");
        assert_eq!(r.status(), 404, "{method} {path} on the metrics port");
    }
    stop.send(()).expect("signal");
    server.await.expect("join").expect("clean exit");
    assert!(
        client
            .get(format!("http://{metrics_addr}/metrics"))
            .send()
            .await
            .is_err(),
        "the metrics port closes with the runtime"
    );
}

#[tokio::test]
async fn sigterm_drains_in_flight_invokes_before_exit() {
    let Served {
        addr,
        stop: stop_tx,
        server,
        client,
        ..
    } = serve(config()).await;
    let in_flight = tokio::spawn({
        let client = client.clone();
        let addr = addr.clone();
        async move {
            client
                .post(format!("http://{addr}/v1/invoke/sleep"))
                .body(r#"{"ms": 1000}"#)
                .send()
                .await
        }
    });
    // Stop only once the call is inside the plugin, as the runtime's own gauge shows.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let text = client
            .get(format!("http://{addr}/metrics"))
            .send()
            .await
            .expect("scrape")
            .text()
            .await
            .expect("text");
        if in_flight_gauge(&text) == 1 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the call never got in"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    stop_tx.send(()).expect("signal");
    let answer = in_flight
        .await
        .expect("join")
        .expect("in-flight call must complete");
    assert_eq!(answer.status(), 200);
    assert_eq!(
        answer.json::<Value>().await.expect("json"),
        json!({"slept_ms": 1000})
    );
    server.await.expect("join").expect("clean exit");
    // After the drain nothing listens any more.
    assert!(
        client
            .get(format!("http://{addr}/livez"))
            .send()
            .await
            .is_err()
    );
}
