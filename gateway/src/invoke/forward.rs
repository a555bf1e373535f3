//! Sending an invoke to one of the plugin's ready instances and relaying the answer.
//!
//! A call that never reached a runtime (connection refused) is retried once on another ready
//! instance; one that did reach it is never retried, since the plugin may have acted on it.

use std::fmt::Write as _;
use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use bkg_core::Phase;
use bkg_core::wire::PROBLEM_JSON;
use tracing::Instrument;

use super::trace::Trace;
use crate::AppState;
use crate::backend::Route;
use crate::problem::ApiError;
use crate::upstream;

/// Why a plugin has no ready instance, as a 503.
pub async fn unavailable(state: &AppState, id: &str) -> ApiError {
    let Some(view) = state.backend.get(id).await else {
        return ApiError::UnknownPlugin(id.to_owned());
    };
    let status = view.plugin.status.as_ref();
    let phase = status.and_then(|s| s.phase).unwrap_or(Phase::Starting);
    let detail = match phase {
        Phase::Stopped | Phase::Stopping => format!("plugin {id:?} is {phase}; start it first"),
        Phase::Error => format!(
            "plugin {id:?} is in phase error: {}",
            status
                .and_then(|s| s.last_error.clone())
                .unwrap_or_default()
        ),
        _ => format!("plugin {id:?} has no ready instance yet"),
    };
    ApiError::Unavailable {
        detail,
        retry_after: Some(1),
    }
}

/// How the answer is relayed.
pub(super) enum Mode {
    /// Read whole (bounded), then relayed; its tokens charged to the payer, if any.
    Whole(Option<super::stream::Payer>),
    /// From `/v1/invoke/{capability}/stream`, relayed frame by frame through the meter.
    Stream(super::stream::Meter),
}

/// Sends the payload to a ready instance and relays its answer.
pub(super) async fn forward(
    state: &AppState,
    route: &Route,
    trace: &Trace,
    capability: &str,
    payload: &[u8],
    request_id: &str,
    mode: Mode,
) -> Result<Response, ApiError> {
    let id = route.plugin.id();
    let endpoints = &route.endpoints;
    if endpoints.is_empty() {
        return Err(Box::pin(unavailable(state, id)).await);
    }
    let timeout = Duration::from_secs(u64::from(route.plugin.spec.resources.timeout_seconds));
    let start = state.round_robin.fetch_add(1, Ordering::Relaxed);
    let (mut meter, payer) = match mode {
        Mode::Whole(payer) => (None, payer),
        Mode::Stream(meter) => (Some(meter), None),
    };
    let path = if meter.is_some() {
        format!("/v1/invoke/{}/stream", PathSegment(capability))
    } else {
        format!("/v1/invoke/{}", PathSegment(capability))
    };
    // At most two attempts, each on a different instance.
    let attempts = endpoints.len().min(2);
    let mut last_error = String::new();
    for attempt in 0..attempts {
        let endpoint = endpoints[(start + attempt) % endpoints.len()];
        let (span, traceparent) = trace.forward(capability, endpoint, attempt);
        let headers = [
            (crate::REQUEST_ID, request_id),
            (bkg_trace::w3c::TRACEPARENT, traceparent.as_str()),
        ];
        let call = upstream::Call {
            path: &path,
            headers: if traceparent.is_empty() {
                &headers[..1]
            } else {
                &headers
            },
            body: payload,
            max_response_bytes: state.config.max_response_bytes,
        };
        if let Some(m) = meter.take() {
            // The runtime answers 504 itself when the stream does not start in time; the stream
            // then runs as long as the plugin yields (its length is bounded by max_tokens).
            let sent = tokio::time::timeout(
                timeout + Duration::from_secs(2),
                state.upstream.post_stream(endpoint, &call).instrument(span),
            )
            .await;
            match sent {
                Ok(Ok(streamed)) => return relay_stream(state, streamed, m).await,
                Ok(Err(e)) if e.never_reached() => {
                    tracing::warn!(plugin = id, %endpoint, error = %e, "instance unreachable; trying another");
                    last_error = e.to_string();
                    meter = Some(m);
                    continue;
                }
                Ok(Err(e)) => {
                    return Err(ApiError::BadGateway(format!(
                        "plugin {id:?} failed to answer: {}",
                        error_chain(&e)
                    )));
                }
                Err(_elapsed) => {
                    return Err(ApiError::Timeout {
                        plugin: id.to_owned(),
                        secs: timeout.as_secs(),
                    });
                }
            }
        }
        // The runtime answers 504 itself at the timeout; this margin only catches a hung one.
        let sent = tokio::time::timeout(
            timeout + Duration::from_secs(2),
            state.upstream.post(endpoint, &call).instrument(span),
        )
        .await;
        match sent {
            Ok(Ok(answer)) => {
                if let Some(payer) = &payer
                    && answer.status.is_success()
                {
                    super::stream::charge_whole(state, id, payer, &answer.body);
                }
                return Ok(relay(answer));
            }
            Ok(Err(e)) if e.never_reached() => {
                tracing::warn!(plugin = id, %endpoint, error = %e, "instance unreachable; trying another");
                last_error = e.to_string();
            }
            Ok(Err(upstream::Error::TooLarge(limit))) => {
                return Err(ApiError::BadGateway(format!(
                    "the plugin's answer is larger than {limit} bytes"
                )));
            }
            Ok(Err(e)) => {
                return Err(ApiError::BadGateway(format!(
                    "plugin {id:?} failed to answer: {}",
                    error_chain(&e)
                )));
            }
            Err(_elapsed) => {
                return Err(ApiError::Timeout {
                    plugin: id.to_owned(),
                    secs: timeout.as_secs(),
                });
            }
        }
    }
    Err(ApiError::Unavailable {
        detail: format!("no instance of plugin {id:?} could be reached: {last_error}"),
        retry_after: Some(1),
    })
}

/// A path segment, percent-encoded where it is not an RFC 3986 unreserved character.
struct PathSegment<'a>(&'a str);

impl std::fmt::Display for PathSegment<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for b in self.0.bytes() {
            if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
                f.write_char(char::from(b))?;
            } else {
                write!(f, "%{b:02X}")?;
            }
        }
        Ok(())
    }
}

/// A streamed answer as the client's: an error before the stream (problem+json) read whole
/// and relayed as such; a stream relayed as it comes (NDJSON), through the meter.
async fn relay_stream(
    state: &AppState,
    streamed: upstream::Streamed,
    meter: super::stream::Meter,
) -> Result<Response, ApiError> {
    use http_body_util::BodyExt;
    let limit = state.config.max_response_bytes;
    if !streamed.status.is_success() {
        let body = http_body_util::Limited::new(streamed.body, limit)
            .collect()
            .await
            .map_err(|e| ApiError::BadGateway(format!("the plugin's error answer: {e}")))?
            .to_bytes();
        return Ok(relay(upstream::Answer {
            status: streamed.status,
            problem: streamed.problem,
            retry_after: streamed.retry_after,
            body,
        }));
    }
    let body = super::stream::Metered::new(streamed.body, meter, limit);
    let mut out = Response::new(axum::body::Body::new(body));
    let headers = out.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/x-ndjson"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    Ok(out)
}

/// An error with its sources, `a: b: c` (the top-level messages alone say little).
pub(super) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// The runtime's answer as the client's: its status and body, problem+json kept as such.
fn relay(answer: upstream::Answer) -> Response {
    let content_type = if answer.problem {
        PROBLEM_JSON
    } else {
        "application/json"
    };
    let mut out = (answer.status, answer.body).into_response();
    out.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    if let Some(v) = answer.retry_after {
        out.headers_mut().insert(header::RETRY_AFTER, v);
    }
    out
}
