//! A real SIGTERM to a real `plugin-runtime` process with invokes in flight: every one is
//! answered, then the process exits cleanly and stops listening.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use bkg_e2e::{bin_dir, signal};
use serde_json::{Value, json};

const IN_FLIGHT: usize = 10;

/// The runtime's `bkg_runtime_invoke_in_flight` for echo.
fn in_flight(client: &reqwest::blocking::Client, addr: &str) -> f64 {
    let text = client
        .get(format!("http://{addr}/metrics"))
        .send()
        .and_then(|r| r.text())
        .unwrap_or_default();
    text.lines()
        .find(|l| l.starts_with("bkg_runtime_invoke_in_flight{"))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

#[test]
fn sigterm_answers_every_invoke_in_flight_then_exits() {
    let dir = tempfile::tempdir().expect("dir");
    let addr_file = dir.path().join("addr");
    let mut child = Command::new(bin_dir().join("plugin-runtime"))
        .args(["--plugin", "echo", "--id", "echo"])
        .args(["--listen", "127.0.0.1:0", "--addr-file"])
        .arg(&addr_file)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn plugin-runtime");
    let client = reqwest::blocking::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(60))
        .build()
        .expect("client");
    let deadline = Instant::now() + Duration::from_secs(60);
    let addr = loop {
        if let Ok(a) = std::fs::read_to_string(&addr_file)
            && client
                .get(format!("http://{a}/readyz"))
                .send()
                .is_ok_and(|r| r.status().is_success())
        {
            break a;
        }
        assert!(Instant::now() < deadline, "the runtime never became ready");
        std::thread::sleep(Duration::from_millis(20));
    };

    let calls: Vec<_> = (0..IN_FLIGHT)
        .map(|_| {
            let (client, addr) = (client.clone(), addr.clone());
            std::thread::spawn(move || {
                let r = client
                    .post(format!("http://{addr}/v1/invoke/sleep"))
                    .header("content-type", "application/json")
                    .body(r#"{"ms": 1500}"#)
                    .send()
                    .expect("an invoke in flight at SIGTERM is answered");
                (
                    r.status().as_u16(),
                    r.json::<Value>().unwrap_or(Value::Null),
                )
            })
        })
        .collect();
    // The signal goes out once every call is inside the plugin.
    while in_flight(&client, &addr) < IN_FLIGHT as f64 {
        assert!(
            Instant::now() < deadline,
            "the calls never reached the plugin"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    signal(child.id(), "TERM");
    for call in calls {
        let (status, body) = call.join().expect("caller");
        assert_eq!(status, 200, "{body}");
        assert_eq!(body, json!({"slept_ms": 1500}));
    }
    let status = loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "the runtime did not exit after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "exit status {status}");
    assert!(
        client.get(format!("http://{addr}/livez")).send().is_err(),
        "nothing listens after the drain"
    );
}
