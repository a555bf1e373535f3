//! The runtime's own log lines: written to stdout and kept in a bounded ring for `/v1/logs`.

use std::io::Write;

/// The last lines this process logged.
pub type LogBuffer = bkg_wire::logs::LogRing;

fn now() -> String {
    jiff::Timestamp::now().to_string()
}

/// A `tracing_subscriber` writer that tees every formatted event to stdout and the buffer.
#[derive(Clone)]
pub struct TeeWriter {
    buffer: LogBuffer,
}

impl TeeWriter {
    pub fn new(buffer: LogBuffer) -> Self {
        Self { buffer }
    }
}

/// One event's bytes, flushed as whole lines when dropped.
pub struct EventWriter {
    buffer: LogBuffer,
    bytes: Vec<u8>,
}

impl Write for EventWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.bytes.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for EventWriter {
    fn drop(&mut self) {
        let mut out = std::io::stdout().lock();
        // A closed stdout must not take the runtime down: the ring still has the line.
        let _ = out.write_all(&self.bytes);
        let _ = out.flush();
        let text = String::from_utf8_lossy(&self.bytes);
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            self.buffer.push(now(), "stdout", line);
        }
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for TeeWriter {
    type Writer = EventWriter;

    fn make_writer(&'a self) -> Self::Writer {
        EventWriter {
            buffer: self.buffer.clone(),
            bytes: Vec::with_capacity(256),
        }
    }
}
