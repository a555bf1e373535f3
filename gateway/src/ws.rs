//! Live streams: `WS /ws/plugins/{id}` (one plugin) and `WS /ws/plugins` (all, for the dashboard).
//!
//! Messages are JSON objects with a `type`:
//! - `telemetry`: the plugin's aggregated telemetry, every second;
//! - `log`: one new log line (`plugin_id`, `ts`, `stream`, `message`);
//! - `status`: the plugin's PluginInfo whenever its status, readiness, instances or last error
//!   change.
//!
//! The stream reads from the backend, not from one runtime, so it survives plugin restarts.

use std::collections::HashMap;
use std::time::Duration;

use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use bkg_core::wire::LogLine;
use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};

use crate::AppState;
use crate::problem::ApiError;

/// Subprotocol the server speaks; browsers also offer `bkg.bearer.<key>` to authenticate.
pub const PROTOCOL: &str = "bkg.v1";
/// Prefix of the subprotocol that carries the API key.
pub const BEARER_PREFIX: &str = "bkg.bearer.";

pub async fn one(
    ws: WebSocketUpgrade,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Response {
    if state.backend.get(&id).await.is_none() {
        return ApiError::UnknownPlugin(id).into_response();
    }
    ws.protocols([PROTOCOL])
        .on_upgrade(move |socket| stream(socket, state, Some(id)))
}

pub async fn all(ws: WebSocketUpgrade, State(state): State<AppState>) -> Response {
    ws.protocols([PROTOCOL])
        .on_upgrade(move |socket| stream(socket, state, None))
}

#[derive(Default)]
struct Tracker {
    last_log: Option<LogLine>,
    last_status: Option<Value>,
}

/// Lines of `lines` that come after `last` (all of them if `last` rolled out of the window).
fn new_lines(lines: Vec<LogLine>, last: Option<&LogLine>) -> Vec<LogLine> {
    match last.and_then(|l| lines.iter().rposition(|x| x == l)) {
        Some(i) => lines.into_iter().skip(i + 1).collect(),
        None => lines,
    }
}

async fn stream(socket: WebSocket, state: AppState, only: Option<String>) {
    let (mut tx, mut rx) = socket.split();
    let mut trackers: HashMap<String, Tracker> = HashMap::new();
    let mut fast = tokio::time::interval(Duration::from_millis(250));
    let mut slow = tokio::time::interval(Duration::from_secs(1));
    let mut first = true;
    loop {
        let mut out: Vec<Value> = Vec::new();
        tokio::select! {
            msg = rx.next() => match msg {
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return,
                Some(Ok(_)) => continue,
            },
            _ = fast.tick() => {
                let views = match &only {
                    Some(id) => state.backend.get(id).await.into_iter().collect(),
                    None => state.backend.list().await,
                };
                for view in views {
                    let id = view.plugin.id().to_owned();
                    let tracker = trackers.entry(id.clone()).or_default();
                    let info = crate::api::info(&state, &view).await;
                    let instances: Vec<_> = info.instances.iter().map(|i| (i.pid, &i.state, i.restarts)).collect();
                    let status = json!([info.status, info.replicas, info.ready_replicas, info.last_error, info.enabled, instances, info.scale_history.last().map(|e| &e.time)]);
                    if tracker.last_status.as_ref() != Some(&status) {
                        tracker.last_status = Some(status);
                        out.push(json!({"type": "status", "plugin": info}));
                    }
                    if let Ok(lines) = state.backend.logs(&id, 200).await {
                        // A new subscriber gets recent history, not the whole ring.
                        let fresh = new_lines(lines, tracker.last_log.as_ref());
                        let skip = if first { fresh.len().saturating_sub(20) } else { 0 };
                        if let Some(last) = fresh.last() {
                            tracker.last_log = Some(last.clone());
                        }
                        for line in fresh.into_iter().skip(skip) {
                            out.push(json!({
                                "type": "log", "plugin_id": id, "ts": line.ts,
                                "stream": line.stream, "message": line.message,
                            }));
                        }
                    }
                }
                first = false;
            }
            _ = slow.tick() => {
                let views = match &only {
                    Some(id) => state.backend.get(id).await.into_iter().collect(),
                    None => state.backend.list().await,
                };
                for view in views {
                    let t = crate::telemetry::aggregate(&state, &view).await;
                    let mut msg = serde_json::to_value(t).unwrap_or_default();
                    if let Some(obj) = msg.as_object_mut() {
                        obj.insert("type".into(), json!("telemetry"));
                    }
                    out.push(msg);
                }
            }
        }
        for msg in out {
            if tx
                .send(Message::Text(msg.to_string().into()))
                .await
                .is_err()
            {
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(m: &str) -> LogLine {
        LogLine {
            ts: "t".into(),
            stream: "stdout".into(),
            message: m.into(),
        }
    }

    #[test]
    fn only_lines_after_the_last_sent_are_new() {
        let lines = vec![line("a"), line("b"), line("c")];
        let msgs = |v: Vec<LogLine>| v.into_iter().map(|l| l.message).collect::<Vec<_>>();
        assert_eq!(msgs(new_lines(lines.clone(), Some(&line("b")))), ["c"]);
        assert_eq!(
            msgs(new_lines(lines.clone(), Some(&line("c")))),
            Vec::<String>::new()
        );
        assert_eq!(
            msgs(new_lines(lines.clone(), Some(&line("gone")))),
            ["a", "b", "c"]
        );
        assert_eq!(msgs(new_lines(lines, None)), ["a", "b", "c"]);
    }
}
