//! One invoke is one trace: the gateway and the runtime export their spans over OTLP/HTTP
//! (protobuf, the default protocol) to a receiver in this test, joined by W3C `traceparent`.
//! Log lines inside the invoke carry the same trace id, request id, plugin and capability,
//! also when nothing is exported and the gateway's invoke path carries W3C ids without spans.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bkg_e2e::{Stack, sample_echo};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use prost::Message;
use serde_json::{Value, json};

#[derive(Clone, Debug)]
struct ReceivedSpan {
    service: String,
    name: String,
    kind: i32,
    trace_id: String,
    span_id: String,
    parent_span_id: String,
    attributes: HashMap<String, String>,
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A minimal OTLP/HTTP receiver: `POST /v1/traces` with a protobuf body, answered 200.
fn start_receiver() -> (String, Arc<Mutex<Vec<ReceivedSpan>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    let spans = Arc::new(Mutex::new(Vec::new()));
    let sink = spans.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming().map_while(Result::ok) {
            let sink = sink.clone();
            std::thread::spawn(move || serve_connection(stream, &sink));
        }
    });
    (url, spans)
}

fn serve_connection(stream: std::net::TcpStream, sink: &Mutex<Vec<ReceivedSpan>>) {
    let mut writer = stream.try_clone().expect("clone");
    let mut reader = BufReader::new(stream);
    loop {
        let mut request_line = String::new();
        if reader.read_line(&mut request_line).unwrap_or(0) == 0 {
            return;
        }
        let mut length = 0usize;
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line).unwrap_or(0) == 0 {
                return;
            }
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            if let Some((k, v)) = line.split_once(':')
                && k.eq_ignore_ascii_case("content-length")
            {
                length = v.trim().parse().unwrap_or(0);
            }
        }
        let mut body = vec![0; length];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        assert!(
            request_line.starts_with("POST /v1/traces "),
            "unexpected OTLP request {request_line:?}"
        );
        let request = ExportTraceServiceRequest::decode(body.as_slice()).expect("OTLP protobuf");
        let mut out = sink.lock().expect("lock");
        for resource_spans in request.resource_spans {
            let service = resource_spans
                .resource
                .iter()
                .flat_map(|r| r.attributes.iter())
                .find(|a| a.key == "service.name")
                .and_then(|a| a.value.as_ref()?.value.as_ref())
                .map(|v| match v {
                    AnyValue::StringValue(s) => s.clone(),
                    other => format!("{other:?}"),
                })
                .unwrap_or_default();
            for span in resource_spans.scope_spans.into_iter().flat_map(|s| s.spans) {
                let attributes = span
                    .attributes
                    .iter()
                    .map(|a| {
                        let value = match a.value.as_ref().and_then(|v| v.value.as_ref()) {
                            Some(AnyValue::StringValue(s)) => s.clone(),
                            Some(AnyValue::IntValue(i)) => i.to_string(),
                            Some(other) => format!("{other:?}"),
                            None => String::new(),
                        };
                        (a.key.clone(), value)
                    })
                    .collect();
                out.push(ReceivedSpan {
                    service: service.clone(),
                    name: span.name,
                    kind: span.kind,
                    trace_id: hex(&span.trace_id),
                    span_id: hex(&span.span_id),
                    parent_span_id: hex(&span.parent_span_id),
                    attributes,
                });
            }
        }
        drop(out);
        let _ = writer.write_all(
            b"HTTP/1.1 200 OK\r\ncontent-type: application/x-protobuf\r\ncontent-length: 0\r\n\r\n",
        );
    }
}

/// OTLP span kinds.
const SERVER: i32 = 2;
const CLIENT: i32 = 3;

#[test]
fn one_invoke_is_one_trace_across_gateway_and_runtime() {
    let (endpoint, spans) = start_receiver();
    let mut stack = Stack::start_env(
        &[("echo.yaml", &sample_echo())],
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
            ("OTEL_BSP_SCHEDULE_DELAY", "100"),
            ("BKG_LOG_FORMAT", "json"),
        ],
    );
    stack.wait_running("echo");

    assert_eq!(invoke_failing(&stack, None), 500);

    // Wait for the gateway's request span and the runtime's server span of this request.
    let deadline = Instant::now() + Duration::from_secs(20);
    let (gateway_request, runtime_invoke, all) = loop {
        let all = spans.lock().expect("lock").clone();
        let gateway_request = all.iter().find(|s| {
            s.service == "bkg-gateway"
                && s.kind == SERVER
                && s.attributes.get("request_id").map(String::as_str) == Some("trace-e2e-1")
        });
        let runtime_invoke = all.iter().find(|s| {
            s.service == "bkg-plugin-runtime"
                && s.kind == SERVER
                && s.attributes.get("request_id").map(String::as_str) == Some("trace-e2e-1")
        });
        if let (Some(g), Some(r)) = (gateway_request, runtime_invoke) {
            break (g.clone(), r.clone(), all);
        }
        assert!(
            Instant::now() < deadline,
            "spans of the invoke never arrived; received: {all:#?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    };

    let trace_id = gateway_request.trace_id.clone();
    assert_eq!(trace_id.len(), 32);
    assert_eq!(
        runtime_invoke.trace_id, trace_id,
        "the runtime's span is in the gateway's trace"
    );
    assert_eq!(gateway_request.name, "POST /api/plugins/{id}/invoke");
    assert_eq!(runtime_invoke.name, "POST /v1/invoke/fail");
    assert_eq!(runtime_invoke.attributes["plugin"], "echo");
    assert_eq!(runtime_invoke.attributes["capability"], "fail");

    // The chain: request (server) → invoke → forward (client) → runtime invoke (server).
    let in_trace: Vec<&ReceivedSpan> = all.iter().filter(|s| s.trace_id == trace_id).collect();
    let forward = in_trace
        .iter()
        .find(|s| s.service == "bkg-gateway" && s.kind == CLIENT)
        .expect("the gateway's client span");
    assert_eq!(runtime_invoke.parent_span_id, forward.span_id);
    let invoke = in_trace
        .iter()
        .find(|s| s.span_id == forward.parent_span_id)
        .expect("the forward span's parent");
    assert_eq!(invoke.name, "invoke");
    assert_eq!(invoke.attributes["plugin"], "echo");
    assert_eq!(invoke.attributes["capability"], "fail");
    assert_eq!(invoke.parent_span_id, gateway_request.span_id);
    assert!(
        in_trace.len() >= 4,
        "request, invoke, forward and the runtime's span: {in_trace:#?}"
    );

    assert_logs_carry(&mut stack, &trace_id);
}

#[test]
fn without_an_exporter_the_callers_trace_still_reaches_the_runtime_and_the_logs() {
    let mut stack = Stack::start_env(
        &[("echo.yaml", &sample_echo())],
        &[("BKG_LOG_FORMAT", "json")],
    );
    stack.wait_running("echo");
    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let caller = format!("00-{trace_id}-00f067aa0ba902b7-01");
    assert_eq!(invoke_failing(&stack, Some(&caller)), 500);
    // The runtime continued the caller's trace, and both log lines name it.
    assert_logs_carry(&mut stack, trace_id);
}

/// Invokes `fail` (a plugin error, so both sides log a line) as request `trace-e2e-1`.
fn invoke_failing(stack: &Stack, traceparent: Option<&str>) -> u16 {
    let mut request = stack
        .http
        .post(format!("{}/api/plugins/echo/invoke", stack.url))
        .header("x-request-id", "trace-e2e-1")
        .header("content-type", "application/json")
        .body(
            json!({"capability": "fail", "payload": {"kind": "failed", "message": "boom"}})
                .to_string(),
        );
    if let Some(traceparent) = traceparent {
        request = request.header("traceparent", traceparent);
    }
    request.send().expect("invoke").status().as_u16()
}

/// Logs are JSON and carry plugin, capability, request id and trace id: the runtime's line
/// about the failure (the logs API renders JSON lines as `LEVEL message key=value…`) and the
/// gateway's own.
fn assert_logs_carry(stack: &mut Stack, trace_id: &str) {
    let (_, logs) = stack.get("/api/plugins/echo/logs?lines=200");
    let runtime_line = logs["lines"]
        .as_array()
        .expect("lines")
        .iter()
        .filter_map(|l| l["message"].as_str())
        .find(|l| l.starts_with("ERROR invoke failed"))
        .unwrap_or_else(|| panic!("no 'invoke failed' line in {logs:#}"));
    for field in [
        format!("\"trace_id\":\"{trace_id}\""),
        "\"request_id\":\"trace-e2e-1\"".to_owned(),
        "\"plugin\":\"echo\"".to_owned(),
        "\"capability\":\"fail\"".to_owned(),
    ] {
        assert!(
            runtime_line.contains(&field),
            "{field} missing in {runtime_line}"
        );
    }
    // The gateway writes the line as the answer goes out, and its output reaches this test
    // through a reader thread: wait for it (the deadline only guards against a hang).
    let line = stack.wait_for_output(
        "\"message\":\"plugin answered an error\"",
        std::time::Duration::from_secs(30),
    );
    let gateway_line: Value =
        serde_json::from_str(&line).expect("the gateway's JSON log line about the 500");
    assert_log_carries(&gateway_line, trace_id);
}

/// The fields of the line's open spans include the ids of this invoke.
fn assert_log_carries(line: &Value, trace_id: &str) {
    let mut fields = serde_json::Map::new();
    for span in line["spans"].as_array().into_iter().flatten() {
        if let Some(object) = span.as_object() {
            fields.extend(object.clone());
        }
    }
    assert_eq!(fields.get("trace_id"), Some(&json!(trace_id)), "{line:#}");
    assert_eq!(
        fields.get("request_id"),
        Some(&json!("trace-e2e-1")),
        "{line:#}"
    );
    assert_eq!(fields.get("plugin"), Some(&json!("echo")), "{line:#}");
    assert_eq!(fields.get("capability"), Some(&json!("fail")), "{line:#}");
}
