//! W3C Trace Context (`traceparent`) without spans, for hot paths that export no traces.
//!
//! A process that exports no spans still has to continue its caller's trace and pass it on, so
//! that log lines on both sides of a hop carry one trace id. Building `tracing` spans for that
//! alone cost the gateway about a third of its instructions per echo invoke (callgrind: span
//! creation, field formatting for the log layer, enter/exit, close). [`TraceParent`] is the
//! same information as two integers and a flag byte.

use std::fmt;

use http::HeaderMap;
use opentelemetry::trace::{SpanId, TraceFlags, TraceId};
use opentelemetry_sdk::trace::{IdGenerator, RandomIdGenerator};

/// The `traceparent` header name.
pub const TRACEPARENT: &str = "traceparent";

/// One position in a trace: the trace, the span that is the parent of whatever comes next, and
/// the sampling flag.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TraceParent {
    pub trace_id: TraceId,
    pub span_id: SpanId,
    pub flags: TraceFlags,
}

impl TraceParent {
    /// The caller's position from its `traceparent` header, or the root of a new, sampled
    /// trace when it sent none (or one that is not valid).
    pub fn continue_from(headers: &HeaderMap) -> Self {
        Self::from_headers(headers).map_or_else(Self::root, |caller| caller.child())
    }

    /// The caller's position, when it sent a valid `traceparent`.
    pub fn from_headers(headers: &HeaderMap) -> Option<Self> {
        headers
            .get(TRACEPARENT)
            .and_then(|v| v.to_str().ok())
            .and_then(Self::parse)
    }

    /// A new trace.
    pub fn root() -> Self {
        let ids = RandomIdGenerator::default();
        Self {
            trace_id: ids.new_trace_id(),
            span_id: ids.new_span_id(),
            flags: TraceFlags::SAMPLED,
        }
    }

    /// A new span in the same trace, whose parent is this one.
    pub fn child(&self) -> Self {
        Self {
            span_id: RandomIdGenerator::default().new_span_id(),
            ..*self
        }
    }

    /// Parses a `traceparent` value (W3C Trace Context level 1, §3.2).
    ///
    /// Version `00` must be exactly 55 characters. A later version may append fields after a
    /// dash, which are ignored; `ff` is never valid. All-zero trace or span ids are invalid.
    pub fn parse(value: &str) -> Option<Self> {
        let v = value.trim().as_bytes();
        if v.len() < 55 || v[2] != b'-' || v[35] != b'-' || v[52] != b'-' {
            return None;
        }
        let version = hex_u128(&v[0..2])?;
        if version == 0xff || (version == 0 && v.len() != 55) || (v.len() > 55 && v[55] != b'-') {
            return None;
        }
        let trace_id = hex_u128(&v[3..35])?;
        let span_id = u64::try_from(hex_u128(&v[36..52])?).ok()?;
        let flags = u8::try_from(hex_u128(&v[53..55])?).ok()?;
        if trace_id == 0 || span_id == 0 {
            return None;
        }
        Some(Self {
            trace_id: TraceId::from(trace_id),
            span_id: SpanId::from(span_id),
            // Only the sampled bit is defined; the others are passed on as zero.
            flags: TraceFlags::new(flags) & TraceFlags::SAMPLED,
        })
    }
}

/// Lower-case hex digits only, as the spec requires.
fn hex_u128(digits: &[u8]) -> Option<u128> {
    digits.iter().try_fold(0u128, |acc, &d| {
        let n = match d {
            b'0'..=b'9' => d - b'0',
            b'a'..=b'f' => d - b'a' + 10,
            _ => return None,
        };
        Some((acc << 4) | u128::from(n))
    })
}

impl TraceParent {
    /// The `traceparent` value, `00-<trace id>-<span id>-<flags>`, without going through
    /// `fmt` (this runs on every invoke).
    pub fn encode(&self) -> [u8; 55] {
        let mut out = [b'-'; 55];
        out[..2].copy_from_slice(b"00");
        put_hex(
            &mut out[3..35],
            u128::from_be_bytes(self.trace_id.to_bytes()),
        );
        put_hex(
            &mut out[36..52],
            u128::from(u64::from_be_bytes(self.span_id.to_bytes())),
        );
        put_hex(&mut out[53..55], u128::from(self.flags.to_u8()));
        out
    }
}

/// A trace id as its 32 lower-case hex digits, without `fmt` or an allocation.
pub fn trace_id_hex(trace_id: TraceId) -> [u8; 32] {
    let mut out = [0; 32];
    put_hex(&mut out, u128::from_be_bytes(trace_id.to_bytes()));
    out
}

/// Writes the low `out.len()` hex digits of `n`, lower case.
fn put_hex(out: &mut [u8], mut n: u128) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for slot in out.iter_mut().rev() {
        *slot = DIGITS[(n & 0xf) as usize];
        n >>= 4;
    }
}

/// The `traceparent` value.
impl fmt::Display for TraceParent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let bytes = self.encode();
        f.write_str(std::str::from_utf8(&bytes).map_err(|_| fmt::Error)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CALLER: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn a_caller_is_continued_in_its_trace_with_a_new_span() {
        let mut headers = HeaderMap::new();
        headers.insert(TRACEPARENT, CALLER.parse().expect("header"));
        let here = TraceParent::continue_from(&headers);
        let text = here.to_string();
        assert!(
            text.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"),
            "{text}"
        );
        assert!(text.ends_with("-01"), "{text}");
        assert!(!text.contains("00f067aa0ba902b7"), "a new span id: {text}");
        assert_eq!(text.len(), 55);
        assert_eq!(
            text,
            format!("00-{}-{}-01", here.trace_id, here.span_id),
            "the same digits as OpenTelemetry's own formatting"
        );
        assert_eq!(TraceParent::parse(&text), Some(here), "round trip");
        assert_eq!(
            trace_id_hex(here.trace_id),
            *b"4bf92f3577b34da6a3ce929d0e0e4736"
        );
    }

    #[test]
    fn without_a_valid_caller_a_new_sampled_trace_starts() {
        let a = TraceParent::continue_from(&HeaderMap::new());
        let b = TraceParent::continue_from(&HeaderMap::new());
        assert_ne!(a.trace_id, b.trace_id);
        assert_eq!(a.flags, TraceFlags::SAMPLED);
        let mut headers = HeaderMap::new();
        headers.insert(TRACEPARENT, "00-zz-bad".parse().expect("header"));
        assert_ne!(
            TraceParent::continue_from(&headers).trace_id,
            TraceId::INVALID
        );
    }

    #[test]
    fn values_the_spec_rejects_are_rejected() {
        for bad in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        ] {
            assert_eq!(TraceParent::parse(bad), None, "{bad:?}");
        }
        // A later version may carry more fields.
        let future = "cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-what-ever";
        assert!(TraceParent::parse(future).is_some());
        // Unknown flag bits are not passed on.
        let flags = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-ff";
        assert_eq!(
            TraceParent::parse(flags).map(|t| t.flags),
            Some(TraceFlags::SAMPLED)
        );
    }
}
