//! A bounded ring of log lines, shared by the runtime (its own lines) and the local supervisor
//! (each child's captured output), so logs never grow without bound.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use crate::LogLine;

/// The last `capacity` log lines, with a sequence number so followers can ask for what is new.
#[derive(Clone, Debug)]
pub struct LogRing {
    inner: Arc<Mutex<Ring>>,
}

#[derive(Debug)]
struct Ring {
    lines: VecDeque<LogLine>,
    capacity: usize,
    /// Count of lines ever pushed; the newest line has sequence `next - 1`.
    next: u64,
}

impl LogRing {
    pub fn new(capacity: usize) -> Self {
        let capacity = capacity.max(1);
        Self {
            inner: Arc::new(Mutex::new(Ring {
                lines: VecDeque::with_capacity(capacity.min(4096)),
                capacity,
                next: 0,
            })),
        }
    }

    /// Keeps one line stamped with `ts` (RFC 3339), dropping the oldest when full.
    pub fn push(&self, ts: String, stream: &str, message: &str) {
        let mut ring = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if ring.lines.len() == ring.capacity {
            ring.lines.pop_front();
        }
        ring.lines.push_back(LogLine {
            ts,
            stream: stream.to_owned(),
            message: message.to_owned(),
        });
        ring.next += 1;
    }

    /// The newest `n` lines, oldest first.
    pub fn tail(&self, n: usize) -> Vec<LogLine> {
        let ring = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let skip = ring.lines.len().saturating_sub(n);
        ring.lines.iter().skip(skip).cloned().collect()
    }

    /// Lines pushed after sequence `after` (those still kept), and the sequence to ask from next.
    pub fn since(&self, after: u64) -> (Vec<LogLine>, u64) {
        let ring = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let first_kept = ring.next - ring.lines.len() as u64;
        let skip = after.saturating_sub(first_kept) as usize;
        (ring.lines.iter().skip(skip).cloned().collect(), ring.next)
    }

    /// Sequence number the next pushed line will get.
    pub fn cursor(&self) -> u64 {
        self.inner.lock().unwrap_or_else(|e| e.into_inner()).next
    }
}

/// Renders a JSON log line from a bkg process (`{"level","message","target",…}`) as one
/// readable line; anything else is returned unchanged.
pub fn render(line: &str) -> String {
    let Ok(serde_json::Value::Object(map)) = serde_json::from_str::<serde_json::Value>(line) else {
        return line.to_owned();
    };
    let text = |k: &str| map.get(k).and_then(|v| v.as_str()).unwrap_or_default();
    let mut out = format!("{:<5} {}", text("level"), text("message"));
    for (key, value) in &map {
        if matches!(key.as_str(), "level" | "message" | "target" | "timestamp") {
            continue;
        }
        match value.as_str() {
            Some(s) => out.push_str(&format!(" {key}={s}")),
            None => out.push_str(&format!(" {key}={value}")),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ring_keeps_the_newest_lines_and_follows_by_sequence() {
        let ring = LogRing::new(3);
        for i in 0..5 {
            ring.push(String::new(), "stdout", &format!("line {i}"));
        }
        let msgs = |v: Vec<LogLine>| v.into_iter().map(|l| l.message).collect::<Vec<_>>();
        assert_eq!(msgs(ring.tail(10)), ["line 2", "line 3", "line 4"]);
        assert_eq!(msgs(ring.tail(1)), ["line 4"]);
        let (new, next) = ring.since(3);
        assert_eq!(msgs(new), ["line 3", "line 4"]);
        assert_eq!(next, 5);
        // A follower that fell behind gets what is still kept.
        assert_eq!(msgs(ring.since(0).0), ["line 2", "line 3", "line 4"]);
        assert!(ring.since(5).0.is_empty());
    }

    #[test]
    fn json_lines_render_readably() {
        let line = r#"{"timestamp":"t","level":"INFO","message":"sleeping","request_id":"r1","ms":20,"target":"x"}"#;
        assert_eq!(render(line), "INFO  sleeping ms=20 request_id=r1");
        assert_eq!(render("plain text"), "plain text");
    }
}
