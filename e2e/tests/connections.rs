//! Connection hygiene of the real gateway (`bkg up`): a flood of keyless idle and half-sent
//! connections beyond the cap does not keep keyed invokes or health checks out and leaves no
//! memory behind; parse errors are problems; SIGTERM answers every request already sent.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bkg_e2e::{ADMIN_KEY, Stack, sample_echo};
use serde_json::{Value, json};

fn authority(stack: &Stack) -> String {
    stack.url.trim_start_matches("http://").to_owned()
}

/// Resident memory of a process, in KiB.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .expect("VmRSS")
}

/// One sample of a gateway metric (without labels) from `/metrics`.
fn metric(stack: &Stack, name: &str) -> f64 {
    let text = stack
        .http
        .get(format!("{}/metrics", stack.metrics_url))
        .send()
        .expect("metrics")
        .text()
        .expect("text");
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {name} in /metrics"))
}

/// Waits (polling, with a deadline that only guards against hangs) until `pred` holds.
fn wait_until(what: &str, mut pred: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !pred() {
        assert!(Instant::now() < deadline, "never: {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Opens `n` connections without a key: half send nothing, half half a request head.
fn flood_of(target: &str, n: usize) -> Vec<TcpStream> {
    (0..n)
        .map(|i| {
            let mut s = TcpStream::connect(target).expect("connect");
            if i % 2 == 1 {
                s.write_all(b"POST /api/plugins/echo/invoke HTTP/1.1\r\nhost: x\r\nx-slow: ")
                    .expect("half a head");
            }
            s
        })
        .collect()
}

#[test]
fn a_keyless_flood_beyond_the_cap_does_not_keep_keyed_calls_out_and_is_released() {
    const CAP: usize = 900;
    const FLOOD: usize = 1200;
    // This process holds the flood's sockets.
    rlimit::increase_nofile_limit(4096).expect("open-files limit");
    // A header-read timeout far beyond the test's deadlines: answers during the flood can
    // only come from making room at the cap, not from the flood timing out.
    let cap = CAP.to_string();
    let stack = Stack::start_env(
        &[("echo.yaml", &sample_echo())],
        &[
            ("BKG_MAX_CONNECTIONS", &cap),
            ("BKG_HEADER_READ_TIMEOUT_SECS", "600"),
        ],
    );
    stack.wait_running("echo");
    let pid = stack.child.id();
    for _ in 0..200 {
        assert_eq!(stack.invoke("echo", "echo", json!({"warm": 1})).status, 200);
    }
    // A first flood, closed again, warms what the gateway keeps for reuse (the allocator's
    // pages, tokio's task slabs) before the baseline is taken.
    let target = authority(&stack);
    drop(flood_of(&target, FLOOD));
    wait_until("the warm-up flood's connections are gone", || {
        metric(&stack, "bkg_gateway_connections") <= 2.0
    });
    let baseline = rss_kib(pid);

    let flood = flood_of(&target, FLOOD);
    wait_until("the gateway holds connections up to its cap", || {
        metric(&stack, "bkg_gateway_connections") >= (CAP - 10) as f64
    });
    let during = rss_kib(pid);

    // A fresh client (new connections) with a key is served, and so is a health check.
    let fresh = reqwest::blocking::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(60))
        .build()
        .expect("client");
    let started = Instant::now();
    let health = fresh
        .get(format!("{}/healthz", stack.url))
        .send()
        .expect("healthz during the flood");
    let health_took = started.elapsed();
    assert_eq!(health.status(), 200);
    let started = Instant::now();
    let invoked = fresh
        .post(format!("{}/api/plugins/echo/invoke", stack.url))
        .bearer_auth(ADMIN_KEY)
        .json(&json!({"capability": "echo", "payload": {"during": "flood"}}))
        .send()
        .expect("keyed invoke during the flood");
    let invoke_took = started.elapsed();
    assert_eq!(invoked.status(), 200);
    let body: Value = invoked.json().expect("json");
    assert_eq!(body["during"], "flood", "{body}");
    // Connections asked to close for room may take a moment to end.
    let held = metric(&stack, "bkg_gateway_connections");
    assert!(held <= (CAP + 10) as f64, "the cap holds: {held} open");
    assert!(metric(&stack, "bkg_gateway_connections_evicted_total") >= 1.0);
    println!(
        "flood of {FLOOD} at a cap of {CAP}: healthz {health_took:?}, keyed invoke {invoke_took:?}; RSS {baseline} KiB before, {during} KiB during"
    );

    drop(flood);
    // Every socket, task and buffer of the flood is released: the gauge counts connections
    // from accept until their task has dropped them.
    wait_until("the flood's connections are gone", || {
        metric(&stack, "bkg_gateway_connections") <= 2.0
    });
    // Memory returns to the baseline. mimalloc hands freed pages back to the kernel lazily, on
    // a later allocation of the thread that freed them, once its purge delay (10 ms) passed;
    // so the gateway keeps serving health checks while this waits: from 4 threads at once, on
    // a new connection each, so that every worker thread (not only the one a kept-alive
    // connection lives on) accepts, allocates and purges. The deadline only guards a hang.
    let churn = reqwest::blocking::Client::builder()
        .no_proxy()
        .pool_max_idle_per_host(0)
        .timeout(Duration::from_secs(60))
        .build()
        .expect("client");
    let health = format!("{}/healthz", stack.url);
    let deadline = Instant::now() + Duration::from_secs(90);
    let margin = 4 * 1024; // KiB
    let mut after = rss_kib(pid);
    while after > baseline + margin && Instant::now() < deadline {
        std::thread::scope(|s| {
            for _ in 0..4 {
                s.spawn(|| {
                    for _ in 0..10 {
                        let _ = churn.get(&health).send();
                    }
                });
            }
        });
        std::thread::sleep(Duration::from_millis(100));
        after = rss_kib(pid);
    }
    println!("RSS after the flood closed: {after} KiB (baseline {baseline} KiB)");
    assert!(
        after <= baseline + margin,
        "RSS {after} KiB after the flood, baseline {baseline} KiB: the flood's memory was kept"
    );
}

/// Sends `request` on a new connection and returns the whole answer (the server closes).
fn raw(stack: &Stack, request: &[u8]) -> (String, Value) {
    let mut s = TcpStream::connect(authority(stack)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    let _ = s.write_all(request);
    let mut answer = Vec::new();
    let _ = s.read_to_end(&mut answer);
    let text = String::from_utf8_lossy(&answer).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    (
        head.to_owned(),
        serde_json::from_str(body).unwrap_or(Value::Null),
    )
}

#[test]
fn parser_level_errors_and_a_missing_host_are_problems() {
    let stack = Stack::start(&[]);
    let cases: [(&str, Vec<u8>, u16); 3] = [
        (
            "garbage request line",
            b"GET\x01 / HTTP/1.1\r\nhost: x\r\n\r\n".to_vec(),
            400,
        ),
        (
            "a head larger than the gateway reads",
            [
                b"GET /healthz HTTP/1.1\r\nhost: x\r\nx-big: ".as_slice(),
                &vec![b'a'; 512 * 1024],
                b"\r\n\r\n",
            ]
            .concat(),
            431,
        ),
        (
            "HTTP/1.1 without Host",
            b"GET /healthz HTTP/1.1\r\nconnection: close\r\n\r\n".to_vec(),
            400,
        ),
    ];
    for (what, request, status) in cases {
        let (head, problem) = raw(&stack, &request);
        assert!(
            head.starts_with(&format!("HTTP/1.1 {status} ")),
            "{what}: {head}"
        );
        assert!(
            head.to_ascii_lowercase()
                .contains("content-type: application/problem+json"),
            "{what}: {head}"
        );
        assert_eq!(problem["status"], status, "{what}: {problem}");
        assert!(
            problem["detail"].as_str().is_some_and(|d| !d.is_empty()),
            "{what}: {problem}"
        );
    }
    // HTTP/1.0 needs no Host.
    let (head, _) = raw(&stack, b"GET /healthz HTTP/1.0\r\n\r\n");
    assert!(
        head.starts_with("HTTP/1.0 200") || head.starts_with("HTTP/1.1 200"),
        "{head}"
    );
}

/// What one client saw while the gateway shut down.
#[derive(Default, Debug)]
struct Seen {
    answered: usize,
    /// Requests written on a connection that then ended without an answer, or was reset.
    lost: Vec<String>,
    refused: usize,
}

/// Reads one answer: status, and whether the server will close the connection after it.
fn read_answer(reader: &mut BufReader<TcpStream>) -> std::io::Result<Option<(u16, bool)>> {
    let mut line = String::new();
    if reader.read_line(&mut line)? == 0 {
        return Ok(None);
    }
    let status = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let (mut length, mut close) = (0usize, false);
    loop {
        let mut header = String::new();
        reader.read_line(&mut header)?;
        let header = header.trim_end().to_ascii_lowercase();
        if header.is_empty() {
            break;
        }
        if let Some(v) = header.strip_prefix("content-length:") {
            length = v.trim().parse().unwrap_or(0);
        }
        if header == "connection: close" {
            close = true;
        }
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body)?;
    Ok(Some((status, close)))
}

#[test]
fn sigterm_answers_every_request_already_sent() {
    // No rate limit: every refusal would be a lost answer here.
    let dir = tempfile::tempdir().expect("dir");
    let echo = sample_echo().replace("rateLimit: {requestsPerSecond: 10, burst: 20}", "");
    std::fs::write(dir.path().join("echo.yaml"), echo).expect("manifest");
    let mut stack = Stack::start_with(dir, &["--rate-limit-rps", "0"]);
    stack.wait_running("echo");
    let target = authority(&stack);
    let answered = Arc::new(AtomicUsize::new(0));
    let results = Arc::new(Mutex::new(Vec::new()));
    let body = r#"{"capability":"sleep","payload":{"ms":20}}"#;
    let request = format!(
        "POST /api/plugins/echo/invoke HTTP/1.1\r\nhost: {target}\r\nauthorization: Bearer {ADMIN_KEY}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    let clients: Vec<_> = (0..20)
        .map(|_| {
            let (target, request) = (target.clone(), request.clone());
            let (answered, results) = (answered.clone(), results.clone());
            std::thread::spawn(move || {
                let mut seen = Seen::default();
                'connect: loop {
                    let Ok(stream) = TcpStream::connect(&target) else {
                        seen.refused += 1;
                        break;
                    };
                    stream
                        .set_read_timeout(Some(Duration::from_secs(60)))
                        .expect("timeout");
                    let mut writer = stream.try_clone().expect("clone");
                    let mut reader = BufReader::new(stream);
                    loop {
                        if let Err(e) = writer.write_all(request.as_bytes()) {
                            seen.lost.push(format!("write: {e}"));
                            break 'connect;
                        }
                        match read_answer(&mut reader) {
                            Ok(Some((status, close))) => {
                                if status != 200 {
                                    seen.lost.push(format!("status {status}"));
                                }
                                seen.answered += 1;
                                answered.fetch_add(1, Ordering::Relaxed);
                                if close {
                                    continue 'connect;
                                }
                            }
                            Ok(None) => {
                                seen.lost.push("closed without an answer".into());
                                break 'connect;
                            }
                            Err(e) => {
                                seen.lost.push(format!("read: {e}"));
                                break 'connect;
                            }
                        }
                    }
                }
                results.lock().expect("results").push(seen);
            })
        })
        .collect();
    wait_until("clients are being served", || {
        answered.load(Ordering::Relaxed) >= 200
    });
    let status = stack.terminate();
    assert!(status.success(), "bkg up exited with {status}");
    for client in clients {
        client.join().expect("client thread");
    }
    let results = results.lock().expect("results");
    let lost: Vec<_> = results.iter().flat_map(|s| s.lost.clone()).collect();
    let total: usize = results.iter().map(|s| s.answered).sum();
    println!(
        "SIGTERM under 20 clients: {total} answered, {} refused after the close, {} lost",
        results.iter().map(|s| s.refused).sum::<usize>(),
        lost.len()
    );
    assert!(
        lost.is_empty(),
        "requests lost at shutdown: {:?}",
        &lost[..lost.len().min(10)]
    );
    assert_eq!(results.len(), 20);
    assert!(
        results.iter().all(|s| s.refused == 1),
        "every client ends refused at the closed listener"
    );
}
