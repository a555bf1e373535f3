//! Log lines for every bkg process: the `tracing-subscriber` fmt layer with span fields that
//! are formatted once and appended to, never parsed back.
//!
//! tracing-subscriber's `JsonFields` re-parses a span's JSON and serializes it again each time a
//! field is recorded after the span opened (`trace_id`, `http.response.status_code`): that was
//! a seventh of the runtime's CPU per echo invoke (`perf record`, 41 µs per invoke). Fields named
//! `otel.*` only steer the OpenTelemetry exporter (span name and kind) and are left out of log
//! lines in both formats.

use std::fmt::{self, Write as _};

use tracing::field::{Field, Visit};
use tracing::span;
use tracing_subscriber::field::{RecordFields, VisitOutput};
use tracing_subscriber::fmt::format::{DefaultVisitor, Writer};
use tracing_subscriber::fmt::{FormatFields, FormattedFields, MakeWriter};
use tracing_subscriber::registry::LookupSpan;

/// The fmt layer every bkg binary logs with: JSON lines (one object per event, the fields of
/// every open span under `spans`) or human-readable text, to `writer`.
pub fn log_layer<S, W>(
    json: bool,
    ansi: bool,
    writer: W,
) -> Box<dyn tracing_subscriber::Layer<S> + Send + Sync>
where
    S: tracing::Subscriber + for<'span> LookupSpan<'span>,
    W: for<'writer> MakeWriter<'writer> + Send + Sync + 'static,
{
    let fmt = tracing_subscriber::fmt::layer().with_writer(writer);
    if json {
        Box::new(
            fmt.json()
                .flatten_event(true)
                .with_current_span(false)
                .with_span_list(true)
                .fmt_fields(JsonSpanFields),
        )
    } else {
        Box::new(fmt.with_ansi(ansi).fmt_fields(TextSpanFields))
    }
}

/// Whether a field belongs in log lines.
fn logged(field: &Field) -> bool {
    !field.name().starts_with("otel.")
}

/// Span fields as one JSON object, `{"plugin":"echo","request_id":"…"}`, which the JSON event
/// formatter embeds in each line. A field recorded later is spliced in before the closing brace.
#[derive(Clone, Copy, Debug, Default)]
pub struct JsonSpanFields;

impl<'writer> FormatFields<'writer> for JsonSpanFields {
    fn format_fields<R: RecordFields>(
        &self,
        mut writer: Writer<'writer>,
        fields: R,
    ) -> fmt::Result {
        let mut body = String::new();
        fields.record(&mut JsonVisitor::new(&mut body, true));
        write!(writer, "{{{body}}}")
    }

    fn add_fields(
        &self,
        current: &'writer mut FormattedFields<Self>,
        fields: &span::Record<'_>,
    ) -> fmt::Result {
        let text = &mut current.fields;
        if text.pop() != Some('}') {
            // Not written by `format_fields` (never the case): start the object afresh.
            text.clear();
            text.push('{');
        }
        let empty = text.len() == 1;
        fields.record(&mut JsonVisitor::new(text, empty));
        text.push('}');
        Ok(())
    }
}

/// Writes `"name":value` pairs, comma-separated.
struct JsonVisitor<'a> {
    out: &'a mut String,
    first: bool,
}

impl<'a> JsonVisitor<'a> {
    fn new(out: &'a mut String, first: bool) -> Self {
        Self { out, first }
    }

    /// Starts a pair and returns where its value goes, or `None` for a field left out.
    fn key(&mut self, field: &Field) -> Option<&mut String> {
        if !logged(field) {
            return None;
        }
        if !self.first {
            self.out.push(',');
        }
        self.first = false;
        push_json_string(self.out, field.name());
        self.out.push(':');
        Some(self.out)
    }
}

impl Visit for JsonVisitor<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        if let Some(out) = self.key(field) {
            push_json_string(out, value);
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if let Some(out) = self.key(field) {
            out.push('"');
            let _ = write!(Escaped(out), "{value:?}");
            out.push('"');
        }
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        if let Some(out) = self.key(field) {
            let _ = write!(out, "{value}");
        }
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        if let Some(out) = self.key(field) {
            let _ = write!(out, "{value}");
        }
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        if let Some(out) = self.key(field) {
            if value.is_finite() {
                let _ = write!(out, "{value}");
            } else {
                out.push_str("null");
            }
        }
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        if let Some(out) = self.key(field) {
            out.push_str(if value { "true" } else { "false" });
        }
    }
}

fn push_json_string(out: &mut String, value: &str) {
    out.push('"');
    let _ = Escaped(out).write_str(value);
    out.push('"');
}

/// Escapes what it is given for the inside of a JSON string.
struct Escaped<'a>(&'a mut String);

impl fmt::Write for Escaped<'_> {
    /// Copies runs that need no escape in one go: pushing char by char was a tenth of the
    /// runtime's instructions per invoke (span fields are formatted when the span opens).
    fn write_str(&mut self, s: &str) -> fmt::Result {
        // Most values (ids, names) need no escape; this test has no early exit, so it is
        // vectorized.
        if !s.bytes().fold(false, |dirty, b| {
            dirty | (b < 0x20 || b == b'"' || b == b'\\')
        }) {
            self.0.push_str(s);
            return Ok(());
        }
        let mut clean = 0;
        for (i, b) in s.bytes().enumerate() {
            let escape = match b {
                b'"' => "\\\"",
                b'\\' => "\\\\",
                b'\n' => "\\n",
                b'\r' => "\\r",
                b'\t' => "\\t",
                0..0x20 => "",
                _ => continue,
            };
            // Every escaped byte is ASCII, so `i` is on a character boundary.
            self.0.push_str(&s[clean..i]);
            if escape.is_empty() {
                write!(self.0, "\\u{b:04x}")?;
            } else {
                self.0.push_str(escape);
            }
            clean = i + 1;
        }
        self.0.push_str(&s[clean..]);
        Ok(())
    }
}

/// Span fields as `name=value` text, as tracing-subscriber's default, without `otel.*`.
#[derive(Clone, Copy, Debug, Default)]
pub struct TextSpanFields;

impl<'writer> FormatFields<'writer> for TextSpanFields {
    fn format_fields<R: RecordFields>(&self, writer: Writer<'writer>, fields: R) -> fmt::Result {
        let mut visitor = DefaultVisitor::new(writer, true);
        fields.record(&mut Logged(&mut visitor));
        visitor.finish()
    }
}

/// Passes on only the fields that belong in log lines.
struct Logged<'a, V>(&'a mut V);

impl<V: Visit> Visit for Logged<'_, V> {
    fn record_str(&mut self, field: &Field, value: &str) {
        if logged(field) {
            self.0.record_str(field, value);
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if logged(field) {
            self.0.record_debug(field, value);
        }
    }
}

/// Log output captured in memory, for the tests of this crate.
#[cfg(test)]
#[derive(Clone, Default)]
pub(crate) struct Buffer(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

#[cfg(test)]
impl Buffer {
    /// Everything written so far.
    pub(crate) fn text(&self) -> String {
        String::from_utf8(self.0.lock().expect("lock").clone()).expect("utf-8")
    }
}

#[cfg(test)]
impl std::io::Write for Buffer {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("lock").extend_from_slice(bytes);
        Ok(bytes.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracing_subscriber::layer::SubscriberExt;

    /// The lines `emit` logs through [`log_layer`].
    fn lines(json: bool, emit: impl Fn()) -> Vec<String> {
        let buffer = Buffer::default();
        let sink = buffer.clone();
        let subscriber =
            tracing_subscriber::registry().with(log_layer(json, false, move || sink.clone()));
        tracing::subscriber::with_default(subscriber, emit);
        buffer.text().lines().map(str::to_owned).collect()
    }

    fn request_with_late_fields() {
        let span = tracing::info_span!(
            "invoke",
            otel.name = "POST /v1/invoke/echo",
            plugin = "echo",
            capability = %"say \"hi\"\n\\ grüße\u{1b}→",
            attempt = 2_u64,
            ratio = 0.5_f64,
            cached = false,
            trace_id = tracing::field::Empty,
            http.response.status_code = tracing::field::Empty,
        );
        span.record("trace_id", "4bf92f3577b34da6a3ce929d0e0e4736");
        span.record("http.response.status_code", 200_u64);
        span.in_scope(|| tracing::info!("done"));
    }

    #[test]
    fn json_lines_carry_every_span_field_including_ones_recorded_later() {
        let lines = lines(true, request_with_late_fields);
        assert_eq!(lines.len(), 1, "{lines:?}");
        let line: serde_json::Value = serde_json::from_str(&lines[0]).expect("one JSON object");
        let span = &line["spans"][0];
        assert_eq!(
            span,
            &serde_json::json!({
                "name": "invoke",
                "plugin": "echo",
                "capability": "say \"hi\"\n\\ grüße\u{1b}→",
                "attempt": 2,
                "ratio": 0.5,
                "cached": false,
                "trace_id": "4bf92f3577b34da6a3ce929d0e0e4736",
                "http.response.status_code": 200,
            }),
            "{}",
            lines[0]
        );
        assert_eq!(line["message"], "done");
    }

    #[test]
    fn a_span_without_fields_and_control_characters_stay_valid_json() {
        let lines = lines(true, || {
            let outer = tracing::info_span!("outer");
            outer.in_scope(|| {
                let inner = tracing::info_span!("inner", note = tracing::field::Empty);
                inner.record("note", "bell\u{7}");
                inner.in_scope(|| tracing::info!("x"));
            });
        });
        let line: serde_json::Value = serde_json::from_str(&lines[0]).expect("JSON");
        assert_eq!(line["spans"][0], serde_json::json!({"name": "outer"}));
        assert_eq!(line["spans"][1]["note"], "bell\u{7}");
    }

    #[test]
    fn text_lines_leave_out_exporter_fields() {
        // The capability's newline splits the text line; read it whole.
        let line = &lines(false, request_with_late_fields).join("\n");
        assert!(line.contains("plugin=\"echo\""), "{line}");
        assert!(
            line.contains("trace_id=\"4bf92f3577b34da6a3ce929d0e0e4736\""),
            "{line}"
        );
        assert!(line.contains("http.response.status_code=200"), "{line}");
        assert!(!line.contains("otel"), "{line}");
    }
}
