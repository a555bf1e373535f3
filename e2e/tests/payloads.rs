//! Payloads end to end: what a client writes is what the echo plugin answers, byte for byte
//! (numbers no `f64` can hold included), and the gateway and the plugins agree on what an
//! integer is (JSON Schema's rule: a number with a zero fractional part).

use bkg_e2e::{Stack, sample_echo};
use serde_json::json;

/// POSTs `body` to echo's invoke route and returns the status and the answer's text.
fn invoke_text(stack: &Stack, body: String) -> (u16, String) {
    let r = stack
        .http
        .post(format!("{}/api/plugins/echo/invoke", stack.url))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .expect("invoke");
    let status = r.status().as_u16();
    (status, r.text().expect("text"))
}

#[test]
fn echo_returns_the_payload_exactly_and_integers_follow_json_schema() {
    let stack = Stack::start(&[("echo.yaml", &sample_echo())]);
    stack.wait_running("echo");

    let written = r#"{"big": 123456789012345678901234567890123456789012345678901234567890, "zero": -0, "more": [-0.0, 1.50, 1e3, 0.1e-400, "\u00e9"]}"#;
    let (status, text) = invoke_text(
        &stack,
        format!(r#"{{"capability": "echo", "payload": {written}}}"#),
    );
    assert_eq!(status, 200, "{text}");
    assert_eq!(text, written);

    // `1.0` is an integer for the gateway's schema check, and so for the plugin.
    for ms in ["1.0", "1", "1e0", "10.000"] {
        let (status, text) = invoke_text(
            &stack,
            format!(r#"{{"capability": "sleep", "payload": {{"ms": {ms}}}}}"#),
        );
        assert_eq!(status, 200, "{ms}: {text}");
        let slept: serde_json::Value = serde_json::from_str(&text).expect("json");
        assert!(slept["slept_ms"].is_u64(), "{text}");
    }
    let r = stack.invoke("echo", "sleep", json!({"ms": 1.5}));
    assert_eq!(r.status, 400, "{:#}", r.body);
    assert_eq!(r.body["errors"][0]["field"], "/ms");
}
