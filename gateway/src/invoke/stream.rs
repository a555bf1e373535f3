//! A streamed invoke's answer: the runtime's NDJSON relayed frame by frame, watched on the way.
//!
//! ```text
//!  runtime ─▶ hyper Incoming ─▶ Metered (each frame passed on as it arrives; complete lines
//!             parsed on the side: first {"text"} → time to first token, the next ones →
//!             inter-token latency, the last {"usage"} → tokens per plugin and key)
//!        ─▶ client (NDJSON), or openai::chat's SSE for /v1
//! ```
//!
//! Only the line being read is held, never the stream. The in-flight guard rides in the body,
//! so the gauge counts a stream until it ends or the client goes away; dropping the body drops
//! the runtime's connection, which cancels the plugin's sequence. A connection that fails
//! mid-stream ends it with the protocol's last line, `{"error": <problem>}` (502).

use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Instant;

use bkg_core::wire::{Problem, ProblemKind};
use bytes::Bytes;
use http_body::{Body, Frame};

use crate::AppState;
use crate::metrics::InFlight;
use crate::tokens::{self, Usage};
use crate::upstream::StreamBody;

/// Splits a byte stream into lines, holding only the unfinished one.
pub(crate) struct Lines {
    partial: Vec<u8>,
    limit: usize,
}

impl Lines {
    pub fn new(limit: usize) -> Self {
        Self {
            partial: Vec::new(),
            limit,
        }
    }

    /// Calls `line` for each line `chunk` completes (without its `\n`); `Err(limit)` when an
    /// unfinished line grows past `limit` bytes.
    pub fn feed(&mut self, chunk: &[u8], mut line: impl FnMut(&[u8])) -> Result<(), usize> {
        let mut rest = chunk;
        while let Some(end) = rest.iter().position(|b| *b == b'\n') {
            if self.partial.is_empty() {
                line(&rest[..end]);
            } else {
                self.partial.extend_from_slice(&rest[..end]);
                line(&self.partial);
                self.partial.clear();
            }
            rest = &rest[end + 1..];
        }
        self.partial.extend_from_slice(rest);
        if self.partial.len() > self.limit {
            return Err(self.limit);
        }
        Ok(())
    }

    /// The last line when the stream ended without a `\n` after it.
    pub fn finish(&mut self) -> Option<Vec<u8>> {
        let rest = std::mem::take(&mut self.partial);
        (!rest.iter().all(u8::is_ascii_whitespace)).then_some(rest)
    }
}

/// One line of a streamed invoke, as far as the gateway looks into it.
#[derive(Debug, PartialEq)]
pub(crate) enum Event {
    /// A value with generated text.
    Text(String),
    /// The last value: why generation stopped, and the tokens used.
    Last {
        finish_reason: Option<String>,
        usage: Option<Usage>,
    },
    /// The stream failed: the problem the runtime (or the gateway) reported.
    Error(Problem),
    /// Any other value (a plugin's own stream shape).
    Other,
}

impl Event {
    pub fn parse(line: &[u8]) -> Self {
        #[derive(serde::Deserialize)]
        struct Line {
            text: Option<String>,
            finish_reason: Option<String>,
            usage: Option<Usage>,
            error: Option<Problem>,
        }
        match serde_json::from_slice::<Line>(line) {
            Ok(Line {
                error: Some(problem),
                ..
            }) => Event::Error(problem),
            Ok(Line {
                text: Some(text), ..
            }) => Event::Text(text),
            Ok(Line {
                finish_reason,
                usage,
                ..
            }) if finish_reason.is_some() || usage.is_some() => Event::Last {
                finish_reason,
                usage,
            },
            _ => Event::Other,
        }
    }
}

/// Who pays for a call's tokens: the key and its limit.
#[derive(Clone, Debug)]
pub(crate) struct Payer {
    pub key: String,
    pub tokens_per_minute: Option<u32>,
}

/// Records an answer's tokens: the key's usage and limit clock, and the token counters.
pub(crate) fn charge(state: &AppState, plugin: &str, payer: &Payer, usage: Usage) {
    state
        .tokens
        .charge(&payer.key, payer.tokens_per_minute, usage, Instant::now());
    state.metrics.observe_tokens(plugin, &payer.key, usage);
}

/// What a stream's lines tell the metrics and the ledger.
pub(crate) struct Meter {
    pub state: AppState,
    pub plugin: String,
    /// The key to charge; `None` for a capability that is not metered in tokens.
    pub payer: Option<Payer>,
    pub started: Instant,
    pub last_text: Option<Instant>,
    /// Held, never read: the gauge goes down when the stream's body is dropped.
    #[allow(dead_code)]
    pub in_flight: InFlight,
}

impl Meter {
    fn observe(&mut self, event: &Event) {
        match event {
            Event::Text(_) => {
                let now = Instant::now();
                match self.last_text {
                    None => self
                        .state
                        .metrics
                        .observe_first_token(&self.plugin, now - self.started),
                    Some(last) => self
                        .state
                        .metrics
                        .observe_inter_token(&self.plugin, now - last),
                }
                self.last_text = Some(now);
            }
            Event::Last {
                usage: Some(usage), ..
            } => {
                if let Some(payer) = &self.payer {
                    charge(&self.state, &self.plugin, payer, *usage);
                }
            }
            _ => {}
        }
    }
}

/// The runtime's stream as the client's body: frames passed on as they come.
pub(crate) struct Metered {
    inner: StreamBody,
    lines: Lines,
    meter: Meter,
    done: bool,
}

impl Metered {
    pub fn new(inner: StreamBody, meter: Meter, max_line: usize) -> Self {
        Self {
            inner,
            lines: Lines::new(max_line),
            meter,
            done: false,
        }
    }

    /// Ends the stream with the protocol's error line.
    fn fail(
        &mut self,
        detail: String,
    ) -> Poll<Option<Result<Frame<Bytes>, std::convert::Infallible>>> {
        self.done = true;
        let problem = Problem::new(502, ProblemKind::BadGateway, "Bad gateway", detail);
        let mut line =
            serde_json::to_vec(&serde_json::json!({ "error": problem })).unwrap_or_default();
        line.push(b'\n');
        Poll::Ready(Some(Ok(Frame::data(Bytes::from(line)))))
    }
}

impl Body for Metered {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        if self.done {
            return Poll::Ready(None);
        }
        let this = &mut *self;
        match ready!(Pin::new(&mut this.inner).poll_frame(cx)) {
            Some(Ok(frame)) => {
                let Some(data) = frame.data_ref() else {
                    // Trailers: the protocol has none to relay.
                    return Poll::Ready(Some(Ok(Frame::data(Bytes::new()))));
                };
                let meter = &mut this.meter;
                if let Err(limit) = this.lines.feed(data, |l| meter.observe(&Event::parse(l))) {
                    return this.fail(format!(
                        "a line of the plugin's stream is longer than {limit} bytes"
                    ));
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Some(Err(e)) => this.fail(format!(
                "the plugin's stream broke off: {}",
                super::forward::error_chain(&e)
            )),
            None => {
                this.done = true;
                if let Some(last) = this.lines.finish() {
                    this.meter.observe(&Event::parse(&last));
                }
                Poll::Ready(None)
            }
        }
    }
}

/// The tokens of a whole answer, charged when the capability is metered.
pub(crate) fn charge_whole(state: &AppState, plugin: &str, payer: &Payer, body: &[u8]) {
    if let Some(usage) = tokens::usage_of(body) {
        charge(state, plugin, payer, usage);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_split_across_frames_and_a_long_one_is_refused() {
        let mut lines = Lines::new(8);
        let mut seen = Vec::new();
        for chunk in [&b"{\"a\""[..], b":1}\n{\"b\":2}\n{", b"}"] {
            lines
                .feed(chunk, |l| {
                    seen.push(String::from_utf8_lossy(l).into_owned())
                })
                .expect("short lines");
        }
        assert_eq!(seen, ["{\"a\":1}", "{\"b\":2}"]);
        assert_eq!(lines.finish().as_deref(), Some(&b"{}"[..]));
        assert_eq!(lines.feed(b"0123456789", |_| {}), Err(8));
    }

    #[test]
    fn events_of_the_protocol_are_told_apart() {
        assert_eq!(Event::parse(br#"{"text":"He"}"#), Event::Text("He".into()));
        assert_eq!(
            Event::parse(
                br#"{"finish_reason":"length","usage":{"prompt_tokens":4,"completion_tokens":2,"total_tokens":6},"model":"m"}"#
            ),
            Event::Last {
                finish_reason: Some("length".into()),
                usage: Some(Usage {
                    prompt_tokens: 4,
                    completion_tokens: 2
                }),
            }
        );
        let Event::Error(p) = Event::parse(
            br#"{"error":{"type":"https://bkg.rs/problems/invalid-input","title":"Invalid input","status":422,"detail":"x"}}"#,
        ) else {
            panic!("an error line");
        };
        assert_eq!(p.status, 422);
        assert_eq!(Event::parse(br#"{"value":1}"#), Event::Other);
        assert_eq!(Event::parse(b"not json"), Event::Other);
    }
}
