//! Text generation through the real `bkg up`, driven by the official `openai` Python client
//! (installed by scripts/setup.sh into .tools/venv) against the Candle plugin serving the tiny
//! random-weight Llama with a chat template (plugins/candle/testdata/tiny/llama-chat):
//!
//! - a streamed chat completion arrives as several chunks whose text is the whole answer's
//!   under greedy decoding, with usage (`stream_options.include_usage`);
//! - `/v1/completions` works; bad input raises `BadRequestError` naming `param`;
//! - a client that goes away mid-stream frees its slot in the gateway and the runtime;
//! - a key with a `tokens_per_minute` limit gets `RateLimitError`, and `GET /api/keys` shows
//!   its usage;
//! - `POST /api/plugins/{id}/invoke/stream` relays NDJSON, and the token metrics count.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use bkg_e2e::{ADMIN_KEY, Stack, python_with_openai, repo_root};
use serde_json::{Value, json};

const CLIENT: &str = r#"
import json, sys
import openai

url, key, tpm_key = sys.argv[1:4]
client = openai.OpenAI(base_url=url + "/v1", api_key=key, max_retries=0, timeout=120)
msgs = [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "Name a colour."}]
# Greedy, a fixed length: ignore_eos keeps the random-weight model from stopping early.
greedy = dict(temperature=0, max_tokens=12, extra_body={"ignore_eos": True})
out = {}
whole = client.chat.completions.create(model="llm", messages=msgs, **greedy)
out["whole"] = whole.model_dump()
chunks = client.chat.completions.create(
    model="llm", messages=msgs, stream=True, stream_options={"include_usage": True}, **greedy
)
out["chunks"] = [c.model_dump() for c in chunks]
done = client.completions.create(model="llm", prompt="Once upon a time", **greedy)
out["completion"] = done.model_dump()
streamed = client.completions.create(model="llm", prompt="Once upon a time", stream=True, **greedy)
out["completion_chunks"] = [c.model_dump() for c in streamed]

def raised(call):
    try:
        call()
        return "no error"
    except openai.APIStatusError as e:
        return {"class": type(e).__name__, "status": e.status_code, "code": e.code, "param": e.param,
                "message": e.message}

chat = client.chat.completions.create
out["unknown_role"] = raised(lambda: chat(model="llm", messages=[{"role": "robot", "content": "hi"}]))
out["max_tokens_0"] = raised(lambda: chat(model="llm", messages=msgs, max_tokens=0))
out["too_long"] = raised(lambda: chat(model="llm", messages=[{"role": "user", "content": "colour " * 400}]))
out["n_2"] = raised(lambda: chat(model="llm", messages=msgs, n=2))
out["stream_too_long"] = raised(lambda: list(chat(model="llm", stream=True,
    messages=[{"role": "user", "content": "colour " * 400}])))

limited = openai.OpenAI(base_url=url + "/v1", api_key=tpm_key, max_retries=0, timeout=120)
out["tpm_first"] = limited.chat.completions.create(model="llm", messages=msgs, **greedy).usage.model_dump()
out["tpm_second"] = raised(lambda: limited.chat.completions.create(model="llm", messages=msgs, **greedy))

# A client that goes away mid-stream: two chunks, then the connection closes.
stream = client.chat.completions.create(
    model="llm", messages=msgs, stream=True, temperature=0, max_tokens=200, extra_body={"ignore_eos": True}
)
seen = 0
for _ in stream:
    seen += 1
    if seen == 2:
        break
stream.close()
out["abandoned_after"] = seen
print(json.dumps(out))
"#;

/// A gauge's value in a Prometheus exposition, or 0 when the series is not there yet.
fn gauge(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0)
}

fn metrics(stack: &Stack) -> String {
    reqwest::blocking::get(format!("{}/metrics", stack.metrics_url))
        .expect("scrape")
        .text()
        .expect("text")
}

#[test]
fn the_openai_python_client_chats_streams_and_gets_its_errors() {
    let python = python_with_openai();
    let model = repo_root().join("plugins/candle/testdata/tiny/llama-chat");
    assert!(
        model.join("model.safetensors").is_file(),
        "{} missing",
        model.display()
    );
    let manifest = format!(
        "apiVersion: bkg.rs/v1alpha1\nkind: Plugin\nmetadata: {{name: llm}}\nspec:\n  implementation: candle\n  capabilities: [{{id: chat, streaming: true}}, {{id: completions, streaming: true}}]\n  config:\n    model: {{path: {}}}\n    dtype: f32\n",
        model.display()
    );
    let stack = Stack::start(&[("llm.yaml", &manifest)]);
    let plugin = stack.wait_plugin("llm", "running", |p| {
        p["status"] == "running" || p["status"] == "error"
    });
    assert_eq!(plugin["status"], "running", "{plugin:#}");

    // A key limited to 20 tokens a minute, made through the API.
    let made = stack.post(
        "/api/keys",
        json!({"id": "tpm", "scopes": ["invoke:llm"], "tokens_per_minute": 20}).to_string(),
    );
    assert_eq!(made.status, 201, "{:#}", made.body);
    assert_eq!(made.body["tokens_per_minute"], 20, "{:#}", made.body);
    let tpm_key = made.body["key"].as_str().expect("key").to_owned();

    // Hang guard: the client gets a deadline; a stuck run is killed, not waited for.
    let mut child = Command::new(&python)
        .args(["-c", CLIENT, &stack.url, ADMIN_KEY, &tpm_key])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .stdin(Stdio::null())
        .spawn()
        .expect("python");
    let deadline = Instant::now() + Duration::from_secs(300);
    while child.try_wait().expect("wait").is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("the openai client did not finish within 300 s");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let out = child.wait_with_output().expect("output");
    assert!(
        out.status.success(),
        "the openai client failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let got: Value = serde_json::from_slice(&out.stdout).expect("client output");

    // The whole answer in OpenAI's shape.
    let whole = &got["whole"];
    assert_eq!(whole["object"], "chat.completion", "{whole:#}");
    assert!(
        whole["id"]
            .as_str()
            .is_some_and(|i| i.starts_with("chatcmpl-"))
    );
    let choice = &whole["choices"][0];
    assert_eq!(choice["message"]["role"], "assistant");
    assert_eq!(choice["finish_reason"], "length", "{whole:#}");
    let text = choice["message"]["content"].as_str().expect("content");
    assert!(!text.is_empty(), "{whole:#}");
    let usage = &whole["usage"];
    assert_eq!(usage["completion_tokens"], 12, "{whole:#}");
    let prompt_tokens = usage["prompt_tokens"].as_u64().expect("prompt tokens");
    assert!(prompt_tokens > 0);
    assert_eq!(usage["total_tokens"], prompt_tokens + 12);

    // The stream: several chunks, one id, the same text, usage last.
    let chunks = got["chunks"].as_array().expect("chunks");
    let contents: Vec<&str> = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .filter(|t| !t.is_empty())
        .collect();
    assert!(contents.len() >= 2, "several content chunks: {chunks:#?}");
    assert_eq!(
        contents.concat(),
        text,
        "greedy: streamed text = whole text"
    );
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    assert!(chunks.iter().all(|c| c["id"] == chunks[0]["id"]
        && c["created"] == chunks[0]["created"]
        && c["object"] == "chat.completion.chunk"));
    let last = chunks.last().expect("a chunk");
    assert_eq!(last["choices"], json!([]), "{last:#}");
    assert_eq!(
        &last["usage"], usage,
        "the stream's usage is the whole answer's"
    );
    let finish: Vec<&Value> = chunks
        .iter()
        .filter_map(|c| c["choices"][0].get("finish_reason"))
        .filter(|f| !f.is_null())
        .collect();
    assert_eq!(finish, [&json!("length")]);

    // Completions, whole and streamed, agree.
    let completion = &got["completion"];
    assert_eq!(completion["object"], "text_completion", "{completion:#}");
    assert_eq!(completion["usage"]["completion_tokens"], 12);
    let streamed: String = got["completion_chunks"]
        .as_array()
        .expect("chunks")
        .iter()
        .filter_map(|c| c["choices"][0]["text"].as_str())
        .collect();
    assert_eq!(
        streamed,
        completion["choices"][0]["text"].as_str().unwrap_or("-")
    );

    // Bad input: 400 naming the parameter, whole or before a stream starts.
    for (case, param) in [
        ("unknown_role", "messages"),
        ("max_tokens_0", "max_tokens"),
        ("too_long", "messages"),
        ("n_2", "n"),
        ("stream_too_long", "messages"),
    ] {
        let e = &got[case];
        assert_eq!(e["class"], "BadRequestError", "{case}: {e:#}");
        assert_eq!(e["param"], param, "{case}: {e:#}");
    }

    // The token limit: the first call passes and uses more than 20 tokens, the next waits.
    assert!(got["tpm_first"]["total_tokens"].as_u64().unwrap_or(0) > 20);
    let e = &got["tpm_second"];
    assert_eq!(e["class"], "RateLimitError", "{e:#}");
    assert_eq!(e["code"], "rate_limit_exceeded", "{e:#}");
    let (_, keys) = stack.get("/api/keys");
    let tpm = keys
        .as_array()
        .expect("keys")
        .iter()
        .find(|k| k["id"] == "tpm")
        .expect("the tpm key")
        .clone();
    assert_eq!(tpm["tokens_per_minute"], 20, "{tpm:#}");
    assert_eq!(tpm["usage"]["completion_tokens"], 12, "{tpm:#}");
    assert_eq!(tpm["usage"]["prompt_tokens"], prompt_tokens, "{tpm:#}");

    // The abandoned stream frees its slot: the gateway's in-flight gauge and the plugin's
    // active sequences go back to 0.
    assert_eq!(got["abandoned_after"], 2);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let in_flight = gauge(
            &metrics(&stack),
            r#"bkg_gateway_invoke_in_flight{plugin="llm"} "#,
        );
        let (_, telemetry) = stack.get("/api/plugins/llm/telemetry");
        let generating = telemetry["extra"]["generating"].as_u64();
        if in_flight == 0.0 && generating == Some(0) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "still in flight: gateway {in_flight}, plugin {generating:?}: {telemetry:#}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }

    // The generic streamed invoke: NDJSON lines as the runtime writes them.
    let http = reqwest::blocking::Client::new();
    let response = http
        .post(format!("{}/api/plugins/llm/invoke/stream", stack.url))
        .bearer_auth(ADMIN_KEY)
        .json(&json!({"capability": "completions", "payload": {"prompt": "Hi", "max_tokens": 4, "temperature": 0, "ignore_eos": true}}))
        .send()
        .expect("stream");
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "application/x-ndjson");
    let lines: Vec<Value> = BufReader::new(response)
        .lines()
        .map(|l| serde_json::from_str(&l.expect("line")).expect("json line"))
        .collect();
    assert!(
        lines[..lines.len() - 1]
            .iter()
            .all(|l| l["text"].is_string()),
        "{lines:#?}"
    );
    assert_eq!(lines.last().expect("last")["usage"]["completion_tokens"], 4);

    // Tokens and token latencies in the gateway's metrics.
    let text = metrics(&stack);
    assert!(
        gauge(
            &text,
            r#"bkg_gateway_tokens_total{plugin="llm",kind="completion"} "#
        ) >= 12.0 * 5.0,
        "{text}"
    );
    assert!(
        gauge(
            &text,
            r#"bkg_gateway_api_key_tokens_total{key_id="tpm",kind="completion"} "#
        ) == 12.0
    );
    assert!(
        gauge(
            &text,
            r#"bkg_gateway_time_to_first_token_seconds_count{plugin="llm"} "#
        ) >= 3.0
    );
    assert!(
        gauge(
            &text,
            r#"bkg_gateway_inter_token_latency_seconds_count{plugin="llm"} "#
        ) >= 2.0
    );
}
