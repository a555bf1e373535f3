//! The invoke path's HTTP/1.1 client: one request at a time on pooled keep-alive connections to
//! plugin runtimes, written and read by the calling task itself.
//!
//! ```text
//!  checkout(addr) ─▶ write head+body (one write) ─▶ read head ─▶ read body ─▶ checkin(addr)
//!      └ idle, alive? else connect                   (content-length, chunked or until close)
//! ```
//!
//! Why not hyper's pooled client: it hands each request to the connection's own task over a
//! channel and the answer back over another, two task wake-ups per call. Behind the gateway
//! that was 8–9 µs of CPU per echo invoke, a third of what a whole nginx hop costs on the same
//! machine (docs/BENCHMARKS.md). The plugin protocol needs little of HTTP/1.1: a POST with a
//! JSON body, and an answer framed by `content-length` (what the runtime sends) or chunked.
//!
//! A connection whose exchange did not finish cleanly (error, timeout, the caller gone) is
//! dropped, never pooled, so no answer can be read by the wrong request.

use std::io::{self, Write as _};
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::http::{HeaderValue, StatusCode};
use bkg_core::wire::PROBLEM_JSON;
use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Largest answer head (status line and headers) accepted.
const MAX_HEAD_BYTES: usize = 64 * 1024;
/// Most headers an answer may carry.
const MAX_HEADERS: usize = 64;

/// Pool settings.
#[derive(Clone, Copy, Debug)]
pub struct Settings {
    /// Idle connections kept per runtime endpoint; more are closed when they come back.
    pub max_idle_per_endpoint: usize,
    /// Idle connections older than this are closed instead of reused.
    pub idle_timeout: Duration,
    pub connect_timeout: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            max_idle_per_endpoint: 256,
            idle_timeout: Duration::from_secs(60),
            connect_timeout: Duration::from_secs(5),
        }
    }
}

/// One POST to a runtime.
pub struct Call<'a> {
    /// Origin-form target, e.g. `/v1/invoke/echo`; must be printable ASCII without spaces.
    pub path: &'a str,
    /// Extra headers (request id, trace context); values must be printable ASCII.
    pub headers: &'a [(&'a str, &'a str)],
    /// JSON body.
    pub body: &'a [u8],
    /// Largest answer body accepted ([`Error::TooLarge`] above).
    pub max_response_bytes: usize,
}

/// A runtime's answer: JSON, or problem+json for errors, with what the gateway relays.
#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    /// The body is `application/problem+json`.
    pub problem: bool,
    pub retry_after: Option<HeaderValue>,
    pub body: Bytes,
}

/// Why a call failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Nothing was sent: the runtime cannot have acted on the call.
    #[error("cannot connect to {addr}: {source}")]
    Connect {
        addr: SocketAddr,
        #[source]
        source: io::Error,
    },
    #[error("connecting to {0} timed out")]
    ConnectTimeout(SocketAddr),
    #[error("the request has a header or path that is not printable ASCII")]
    InvalidRequest,
    #[error("the connection failed: {0}")]
    Io(#[source] io::Error),
    #[error("the connection closed before the answer was complete")]
    Closed,
    #[error("malformed answer: {0}")]
    Malformed(String),
    #[error("the answer is larger than {0} bytes")]
    TooLarge(usize),
}

impl Error {
    /// True when the call never left the gateway, so another instance may take it.
    pub fn never_reached(&self) -> bool {
        matches!(
            self,
            Error::Connect { .. } | Error::ConnectTimeout(_) | Error::InvalidRequest
        )
    }
}

struct Idle {
    stream: TcpStream,
    since: Instant,
}

/// Keep-alive connections to runtimes, shared by every request.
pub struct Upstream {
    settings: Settings,
    idle: Mutex<crate::FastMap<SocketAddr, Vec<Idle>>>,
}

impl Default for Upstream {
    fn default() -> Self {
        Self::new(Settings::default())
    }
}

impl Upstream {
    pub fn new(settings: Settings) -> Self {
        Self {
            settings,
            idle: Mutex::default(),
        }
    }

    /// Sends `call` to the runtime at `addr` and reads its whole answer.
    pub async fn post(&self, addr: SocketAddr, call: &Call<'_>) -> Result<Answer, Error> {
        let request = encode(addr, call)?;
        let (mut stream, mut reused) = match self.checkout(addr) {
            Some(stream) => (stream, true),
            None => (self.connect(addr).await?, false),
        };
        loop {
            match stream.write_all(&request).await {
                Ok(()) => break,
                // The runtime closed this idle connection before reading anything from it.
                Err(_) if reused => {
                    (stream, reused) = match self.checkout(addr) {
                        Some(s) => (s, true),
                        None => (self.connect(addr).await?, false),
                    };
                }
                Err(e) => return Err(Error::Io(e)),
            }
        }
        let mut buf = BytesMut::with_capacity(4096);
        let (answer, reusable) =
            read_answer(&mut stream, &mut buf, call.max_response_bytes).await?;
        if reusable && buf.is_empty() {
            self.checkin(addr, stream);
        }
        Ok(answer)
    }

    /// Closes idle connections past the idle timeout (the gateway's housekeeping calls it).
    pub fn sweep(&self) {
        let timeout = self.settings.idle_timeout;
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        idle.retain(|_, list| {
            list.retain(|c| c.since.elapsed() < timeout);
            !list.is_empty()
        });
    }

    /// Idle connections held now, over all endpoints.
    pub fn idle_connections(&self) -> usize {
        let idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        idle.values().map(Vec::len).sum()
    }

    /// The most recently used idle connection to `addr` that is still open.
    fn checkout(&self, addr: SocketAddr) -> Option<TcpStream> {
        loop {
            let conn = {
                let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
                idle.get_mut(&addr)?.pop()?
            };
            if conn.since.elapsed() >= self.settings.idle_timeout {
                continue;
            }
            // Open and quiet: nothing to read yet. Read 0 bytes (closed by the runtime) or any
            // byte (a stray answer) and the connection is unusable.
            match conn.stream.try_read(&mut [0u8; 1]) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Some(conn.stream),
                _ => continue,
            }
        }
    }

    fn checkin(&self, addr: SocketAddr, stream: TcpStream) {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        let list = idle.entry(addr).or_default();
        if list.len() < self.settings.max_idle_per_endpoint {
            list.push(Idle {
                stream,
                since: Instant::now(),
            });
        }
    }

    async fn connect(&self, addr: SocketAddr) -> Result<TcpStream, Error> {
        let stream = tokio::time::timeout(self.settings.connect_timeout, TcpStream::connect(addr))
            .await
            .map_err(|_| Error::ConnectTimeout(addr))?
            .map_err(|source| Error::Connect { addr, source })?;
        // Head and body go out in one write; the answer is awaited at once.
        stream
            .set_nodelay(true)
            .map_err(|source| Error::Connect { addr, source })?;
        Ok(stream)
    }
}

/// Every byte within `range`. No early exit, so the loop is vectorized: these checks run over
/// every header of every forwarded call.
fn all_in(s: &str, range: std::ops::RangeInclusive<u8>) -> bool {
    let (low, high) = (*range.start(), *range.end());
    s.bytes().fold(true, |ok, b| ok & (low <= b) & (b <= high))
}

/// A header name: letters, digits and dashes (all this client sends).
fn header_name(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .fold(true, |ok, b| ok & (b.is_ascii_alphanumeric() | (b == b'-')))
}

/// The request head and body, ready for one write.
fn encode(addr: SocketAddr, call: &Call<'_>) -> Result<Vec<u8>, Error> {
    if !call.path.starts_with('/') || !all_in(call.path, b'!'..=b'~') {
        return Err(Error::InvalidRequest);
    }
    let mut out = Vec::with_capacity(160 + call.body.len() + 64 * call.headers.len());
    out.extend_from_slice(b"POST ");
    out.extend_from_slice(call.path.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\nhost: ");
    put_addr(&mut out, addr);
    out.extend_from_slice(b"\r\ncontent-type: application/json\r\ncontent-length: ");
    out.extend_from_slice(itoa::Buffer::new().format(call.body.len()).as_bytes());
    out.extend_from_slice(b"\r\n");
    for (name, value) in call.headers {
        if !header_name(name) || !all_in(value, b' '..=b'~') {
            return Err(Error::InvalidRequest);
        }
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(call.body);
    Ok(out)
}

/// `ip:port` as the host header spells it (`SocketAddr`'s `Display` goes through `fmt`, which
/// showed in the invoke path's profile).
fn put_addr(out: &mut Vec<u8>, addr: SocketAddr) {
    let mut digits = itoa::Buffer::new();
    match addr {
        SocketAddr::V4(v4) => {
            for (i, octet) in v4.ip().octets().into_iter().enumerate() {
                if i > 0 {
                    out.push(b'.');
                }
                out.extend_from_slice(digits.format(octet).as_bytes());
            }
        }
        SocketAddr::V6(v6) => {
            let _ = write!(out, "[{}]", v6.ip());
        }
    }
    out.push(b':');
    out.extend_from_slice(digits.format(addr.port()).as_bytes());
}

/// Reads more bytes into `buf`; the peer closing first is [`Error::Closed`].
async fn fill(stream: &mut TcpStream, buf: &mut BytesMut) -> Result<(), Error> {
    if buf.capacity() - buf.len() < 1024 {
        buf.reserve(buf.capacity().max(4096));
    }
    match stream.read_buf(buf).await {
        Ok(0) => Err(Error::Closed),
        Ok(_) => Ok(()),
        Err(e) => Err(Error::Io(e)),
    }
}

/// How the answer's body is delimited.
enum Framing {
    Length(usize),
    Chunked,
    UntilClose,
}

/// The parsed head of an answer.
struct Head {
    status: StatusCode,
    problem: bool,
    retry_after: Option<HeaderValue>,
    framing: Framing,
    keep_alive: bool,
}

/// Reads one answer; also says whether the connection may carry another request. Leftover
/// bytes stay in `buf` (a connection with any is not reused).
async fn read_answer(
    stream: &mut TcpStream,
    buf: &mut BytesMut,
    limit: usize,
) -> Result<(Answer, bool), Error> {
    let head = loop {
        if buf.is_empty() {
            fill(stream, buf).await?;
        }
        match parse_head(buf)? {
            Some(head) if head.status.is_informational() => continue,
            Some(head) => break head,
            None if buf.len() >= MAX_HEAD_BYTES => {
                return Err(Error::Malformed(format!(
                    "the head is larger than {MAX_HEAD_BYTES} bytes"
                )));
            }
            None => fill(stream, buf).await?,
        }
    };
    let no_body = head.status == StatusCode::NO_CONTENT || head.status == StatusCode::NOT_MODIFIED;
    let (body, reusable) = match head.framing {
        _ if no_body => (Bytes::new(), head.keep_alive),
        Framing::Length(n) if n > limit => return Err(Error::TooLarge(limit)),
        Framing::Length(n) => {
            while buf.len() < n {
                fill(stream, buf).await?;
            }
            (buf.split_to(n).freeze(), head.keep_alive)
        }
        Framing::Chunked => (read_chunked(stream, buf, limit).await?, head.keep_alive),
        Framing::UntilClose => {
            loop {
                if buf.len() > limit {
                    return Err(Error::TooLarge(limit));
                }
                match fill(stream, buf).await {
                    Ok(()) => {}
                    Err(Error::Closed) => break,
                    Err(e) => return Err(e),
                }
            }
            (buf.split().freeze(), false)
        }
    };
    let answer = Answer {
        status: head.status,
        problem: head.problem,
        retry_after: head.retry_after,
        body,
    };
    Ok((answer, reusable))
}

/// Parses and consumes a complete head from `buf`; `None` when more bytes are needed.
fn parse_head(buf: &mut BytesMut) -> Result<Option<Head>, Error> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut response = httparse::Response::new(&mut headers);
    let len = match response.parse(buf) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(e) => return Err(Error::Malformed(e.to_string())),
    };
    let code = response.code.unwrap_or_default();
    let status =
        StatusCode::from_u16(code).map_err(|_| Error::Malformed(format!("status code {code}")))?;
    let mut head = Head {
        status,
        problem: false,
        retry_after: None,
        framing: Framing::UntilClose,
        // HTTP/1.0 closes unless asked not to; the runtime speaks 1.1.
        keep_alive: response.version == Some(1),
    };
    let mut length = None;
    for h in response.headers.iter() {
        let name = h.name;
        if name.eq_ignore_ascii_case("content-length") {
            let n = decimal(h.value.trim_ascii())
                .ok_or_else(|| Error::Malformed("content-length is not a number".into()))?;
            if length.is_some_and(|l| l != n) {
                return Err(Error::Malformed(
                    "conflicting content-length headers".into(),
                ));
            }
            length = Some(n);
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            let last = h.value.rsplit(|b| *b == b',').next().unwrap_or_default();
            if !last.trim_ascii().eq_ignore_ascii_case(b"chunked") {
                return Err(Error::Malformed("transfer-encoding without chunked".into()));
            }
            head.framing = Framing::Chunked;
        } else if name.eq_ignore_ascii_case("connection") {
            if h.value
                .split(|b| *b == b',')
                .any(|t| t.trim_ascii().eq_ignore_ascii_case(b"close"))
            {
                head.keep_alive = false;
            }
        } else if name.eq_ignore_ascii_case("content-type") {
            head.problem = h.value.starts_with(PROBLEM_JSON.as_bytes());
        } else if name.eq_ignore_ascii_case("retry-after") {
            head.retry_after = HeaderValue::from_bytes(h.value).ok();
        }
    }
    match (&head.framing, length) {
        // RFC 9112 §6.3: chunked wins, and the connection must not be reused.
        (Framing::Chunked, Some(_)) => head.keep_alive = false,
        (_, Some(n)) => head.framing = Framing::Length(n),
        _ => {}
    }
    if matches!(head.framing, Framing::UntilClose) {
        head.keep_alive = false;
    }
    buf.advance(len);
    Ok(Some(head))
}

/// A non-negative decimal number that fits in `usize`.
fn decimal(digits: &[u8]) -> Option<usize> {
    if digits.is_empty() {
        return None;
    }
    digits.iter().try_fold(0usize, |n, &d| {
        let digit = d.is_ascii_digit().then(|| usize::from(d - b'0'))?;
        n.checked_mul(10)?.checked_add(digit)
    })
}

/// Decodes a chunked body (trailers are read and dropped).
async fn read_chunked(
    stream: &mut TcpStream,
    buf: &mut BytesMut,
    limit: usize,
) -> Result<Bytes, Error> {
    let mut body = BytesMut::new();
    loop {
        let (consumed, size) = loop {
            match httparse::parse_chunk_size(buf) {
                Ok(httparse::Status::Complete(found)) => break found,
                Ok(httparse::Status::Partial) if buf.len() < 4096 => fill(stream, buf).await?,
                Ok(httparse::Status::Partial) | Err(_) => {
                    return Err(Error::Malformed("invalid chunk size line".into()));
                }
            }
        };
        buf.advance(consumed);
        let size = usize::try_from(size).map_err(|_| Error::TooLarge(limit))?;
        if size == 0 {
            // Trailer fields, then the empty line.
            loop {
                if let Some(end) = find_crlf(buf) {
                    let line_empty = end == 0;
                    buf.advance(end + 2);
                    if line_empty {
                        return Ok(body.freeze());
                    }
                } else if buf.len() >= MAX_HEAD_BYTES {
                    return Err(Error::Malformed("trailers too large".into()));
                } else {
                    fill(stream, buf).await?;
                }
            }
        }
        if body.len().saturating_add(size) > limit {
            return Err(Error::TooLarge(limit));
        }
        while buf.len() < size + 2 {
            fill(stream, buf).await?;
        }
        body.extend_from_slice(&buf[..size]);
        if &buf[size..size + 2] != b"\r\n" {
            return Err(Error::Malformed("chunk not followed by CRLF".into()));
        }
        buf.advance(size + 2);
    }
}

fn find_crlf(buf: &[u8]) -> Option<usize> {
    buf.windows(2).position(|w| w == b"\r\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio::net::TcpListener;

    /// A server that answers each request on a connection with the next of `answers` (raw
    /// bytes), then keeps or closes the connection; counts accepted connections.
    async fn server(
        answers: Vec<&'static [u8]>,
        close_after: bool,
    ) -> (SocketAddr, Arc<AtomicUsize>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let accepted = Arc::new(AtomicUsize::new(0));
        let count = accepted.clone();
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                count.fetch_add(1, Ordering::SeqCst);
                let answers = answers.clone();
                tokio::spawn(async move {
                    let mut seen = Vec::new();
                    for answer in answers {
                        // Read one request: head, then content-length bytes.
                        loop {
                            let mut chunk = [0u8; 4096];
                            let n = socket.read(&mut chunk).await.unwrap_or(0);
                            if n == 0 {
                                return;
                            }
                            seen.extend_from_slice(&chunk[..n]);
                            if let Some(end) = seen.windows(4).position(|w| w == b"\r\n\r\n") {
                                let head = String::from_utf8_lossy(&seen[..end]).to_lowercase();
                                let len: usize = head
                                    .lines()
                                    .find_map(|l| l.strip_prefix("content-length: "))
                                    .and_then(|v| v.parse().ok())
                                    .unwrap_or(0);
                                if seen.len() >= end + 4 + len {
                                    seen.drain(..end + 4 + len);
                                    break;
                                }
                            }
                        }
                        if socket.write_all(answer).await.is_err() {
                            return;
                        }
                    }
                    if !close_after {
                        let _ = socket.read(&mut [0u8; 1]).await;
                    }
                });
            }
        });
        (addr, accepted)
    }

    fn call(limit: usize) -> Call<'static> {
        Call {
            path: "/v1/invoke/echo",
            headers: &[("x-request-id", "r-1")],
            body: b"{\"x\":1}",
            max_response_bytes: limit,
        }
    }

    const OK: &[u8] =
        b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 7\r\n\r\n{\"x\":1}";

    #[tokio::test]
    async fn keep_alive_connections_are_reused() {
        let (addr, accepted) = server(vec![OK, OK, OK], false).await;
        let upstream = Upstream::default();
        for _ in 0..3 {
            let answer = upstream.post(addr, &call(1024)).await.expect("answer");
            assert_eq!(answer.status, StatusCode::OK);
            assert_eq!(&answer.body[..], b"{\"x\":1}");
            assert!(!answer.problem);
        }
        assert_eq!(
            accepted.load(Ordering::SeqCst),
            1,
            "one connection for three calls"
        );
        assert_eq!(upstream.idle_connections(), 1);
    }

    #[tokio::test]
    async fn a_connection_the_runtime_closed_while_idle_is_not_used() {
        // One answer per connection, then the server closes it.
        let (addr, accepted) = server(vec![OK], true).await;
        let upstream = Upstream::default();
        upstream.post(addr, &call(1024)).await.expect("first");
        tokio::time::sleep(Duration::from_millis(50)).await;
        let answer = upstream.post(addr, &call(1024)).await.expect("second");
        assert_eq!(answer.status, StatusCode::OK);
        assert_eq!(
            accepted.load(Ordering::SeqCst),
            2,
            "a fresh connection for the second"
        );
    }

    #[tokio::test]
    async fn chunked_answers_are_decoded_and_trailers_dropped() {
        const CHUNKED: &[u8] = b"HTTP/1.1 429 Too Many Requests\r\ntransfer-encoding: chunked\r\n\
            retry-after: 3\r\ncontent-type: application/problem+json\r\n\r\n\
            4\r\n{\"a\"\r\n3;ext=1\r\n:1}\r\n0\r\nx-trailer: t\r\n\r\n";
        let (addr, accepted) = server(vec![CHUNKED, OK], false).await;
        let upstream = Upstream::default();
        let answer = upstream.post(addr, &call(1024)).await.expect("answer");
        assert_eq!(answer.status, StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(&answer.body[..], b"{\"a\":1}");
        assert_eq!(answer.retry_after.expect("retry-after"), "3");
        assert!(answer.problem);
        // The connection was left clean, so it carries the next call.
        upstream.post(addr, &call(1024)).await.expect("second");
        assert_eq!(accepted.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn answers_framed_by_close_or_marked_close_are_read_and_not_reused() {
        const UNTIL_CLOSE: &[u8] = b"HTTP/1.1 200 OK\r\n\r\n{\"late\":true}";
        const MARKED: &[u8] =
            b"HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 2\r\n\r\n{}";
        for raw in [UNTIL_CLOSE, MARKED] {
            let (addr, _) = server(vec![raw], true).await;
            let upstream = Upstream::default();
            let answer = upstream.post(addr, &call(1024)).await.expect("answer");
            assert!(answer.body.starts_with(b"{"), "{:?}", answer.body);
            assert_eq!(upstream.idle_connections(), 0);
        }
    }

    #[tokio::test]
    async fn interim_answers_are_skipped() {
        const CONTINUE: &[u8] =
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}";
        let (addr, _) = server(vec![CONTINUE], false).await;
        let answer = Upstream::default()
            .post(addr, &call(1024))
            .await
            .expect("answer");
        assert_eq!(answer.status, StatusCode::OK);
        assert_eq!(&answer.body[..], b"{}");
    }

    #[tokio::test]
    async fn oversized_and_malformed_answers_are_errors() {
        const BIG: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-length: 5000\r\n\r\n";
        const BIG_CHUNKS: &[u8] =
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n10\r\n0123456789abcdef\r\n10\r\n";
        const GARBAGE: &[u8] = b"SPDY/9 200 OK\r\n\r\n";
        const BAD_LENGTH: &[u8] =
            b"HTTP/1.1 200 OK\r\ncontent-length: 99999999999999999999999\r\n\r\n";
        const SHORT: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\n{}";
        type Expect = fn(&Error) -> bool;
        let cases: [(&[u8], Expect); 5] = [
            (BIG, |e| matches!(e, Error::TooLarge(20))),
            (BIG_CHUNKS, |e| matches!(e, Error::TooLarge(20))),
            (GARBAGE, |e| matches!(e, Error::Malformed(_))),
            (BAD_LENGTH, |e| matches!(e, Error::Malformed(_))),
            (SHORT, |e| matches!(e, Error::Closed)),
        ];
        for (raw, expected) in cases {
            let (addr, _) = server(vec![raw], true).await;
            let upstream = Upstream::default();
            let error = upstream.post(addr, &call(20)).await.expect_err("refused");
            assert!(expected(&error), "{raw:?}: {error}");
            assert!(!error.never_reached(), "the request was sent: {error}");
            assert_eq!(upstream.idle_connections(), 0);
        }
    }

    #[tokio::test]
    async fn refused_connections_and_unsafe_requests_never_reach_a_runtime() {
        let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = closed.local_addr().expect("addr");
        drop(closed);
        let upstream = Upstream::default();
        let error = upstream.post(addr, &call(1024)).await.expect_err("refused");
        assert!(
            matches!(error, Error::Connect { .. }) && error.never_reached(),
            "{error}"
        );
        let (live, accepted) = server(vec![OK], false).await;
        for bad in [
            Call {
                path: "/v1/invoke/a b",
                ..call(1024)
            },
            Call {
                headers: &[("x-request-id", "a\r\nx-evil: 1")],
                ..call(1024)
            },
        ] {
            let error = upstream.post(live, &bad).await.expect_err("refused");
            assert!(matches!(error, Error::InvalidRequest), "{error}");
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 0);
    }

    #[test]
    fn content_lengths_are_plain_decimals_that_fit() {
        assert_eq!(decimal(b"42"), Some(42));
        assert_eq!(decimal(b"0"), Some(0));
        for bad in [
            &b""[..],
            b"x",
            b"-1",
            b"+1",
            b"1 2",
            b"99999999999999999999999",
        ] {
            assert_eq!(decimal(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn requests_are_one_head_and_the_body() {
        let addr: SocketAddr = "127.0.0.1:8080".parse().expect("addr");
        let bytes = encode(addr, &call(1)).expect("encode");
        assert_eq!(
            String::from_utf8(bytes).expect("utf-8"),
            "POST /v1/invoke/echo HTTP/1.1\r\nhost: 127.0.0.1:8080\r\n\
             content-type: application/json\r\ncontent-length: 7\r\nx-request-id: r-1\r\n\r\n{\"x\":1}"
        );
        for host in ["10.244.0.7:80", "[fd00::a:1]:8080", "0.0.0.0:65535"] {
            let mut out = Vec::new();
            put_addr(&mut out, host.parse().expect("addr"));
            assert_eq!(out, host.as_bytes());
        }
    }
}
