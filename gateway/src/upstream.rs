//! The invoke path's HTTP/1.1 client: hyper's client connections (`hyper::client::conn::http1`)
//! to plugin runtimes, each driven by a task of its own, pooled here per runtime address.
//!
//! ```text
//!  checkout(addr) ─▶ ready ─▶ try_send_request ─▶ answer ─▶ body (bounded) ─▶ checkin(addr)
//!      └ idle and open? else connect + handshake (spawns the connection's task)
//! ```
//!
//! hyper does all the HTTP: writing the request, parsing the answer's head, content-length,
//! chunked (trailers dropped) and close-delimited bodies, interim 1xx answers, keep-alive. What is
//! ours is the pool (hyper-util's `legacy::Client` adds a connector, a pool with its own locking
//! and a checkout future per call; behind the gateway that was 8–9 µs of CPU per echo invoke) and
//! the mapping of hyper's errors to what the gateway answers. Against the hand-written client
//! this replaced, hyper's connection costs about 3 µs of gateway CPU per invoke and a longer p99
//! under saturation (docs/BENCHMARKS.md); polling the connection in the calling task instead of
//! its own task measured no better. A streamed answer can be relayed the same way later: its
//! body is hyper's `Incoming`.
//!
//! A connection whose exchange did not finish cleanly (error, timeout, the caller gone) is
//! dropped, never pooled, so no answer can be read by the wrong request.

use std::io;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::http::{HeaderName, HeaderValue, Method, Request, StatusCode, Uri, header};
use bkg_core::wire::PROBLEM_JSON;
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

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

/// A runtime's answer whose body is relayed as it arrives ([`Upstream::post_stream`]).
pub struct Streamed {
    pub status: StatusCode,
    /// The body is `application/problem+json` (an error before the stream started).
    pub problem: bool,
    pub retry_after: Option<HeaderValue>,
    pub body: StreamBody,
}

/// The body of a streamed answer, holding its connection open while it is read.
pub struct StreamBody {
    body: hyper::body::Incoming,
    _conn: http1::SendRequest<Body>,
}

impl http_body::Body for StreamBody {
    type Data = Bytes;
    type Error = Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, Error>>> {
        std::pin::Pin::new(&mut self.body)
            .poll_frame(cx)
            .map_err(Error::from_hyper)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }
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
    Io(#[source] hyper::Error),
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

    /// What a failure of hyper's means here.
    fn from_hyper(e: hyper::Error) -> Self {
        if e.is_parse() || e.is_parse_status() {
            return Error::Malformed(e.to_string());
        }
        if e.is_incomplete_message() || e.is_closed() || e.is_canceled() {
            return Error::Closed;
        }
        // A body cut short (fewer bytes than its content-length, an unfinished chunk).
        let mut source = std::error::Error::source(&e);
        while let Some(cause) = source {
            if cause
                .downcast_ref::<io::Error>()
                .is_some_and(|io| io.kind() == io::ErrorKind::UnexpectedEof)
            {
                return Error::Closed;
            }
            source = cause.source();
        }
        Error::Io(e)
    }
}

type Body = Full<Bytes>;

/// One keep-alive connection: hyper's handle for requests; its connection future runs on a
/// task of its own.
struct Conn {
    sender: http1::SendRequest<Body>,
    since: Instant,
}

impl Conn {
    /// The runtime has not closed it (the connection's task ends when it does).
    fn usable(&self) -> bool {
        !self.sender.is_closed()
    }
}

/// Keep-alive connections to runtimes, shared by every request.
pub struct Upstream {
    settings: Settings,
    idle: Mutex<crate::FastMap<SocketAddr, Vec<Conn>>>,
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
        let (conn, response) = self.send(addr, call).await?;
        let (parts, body) = response.into_parts();
        let limit = call.max_response_bytes;
        let declared = parts
            .headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|n| n > limit as u64) {
            return Err(Error::TooLarge(limit));
        }
        let body = Limited::new(body, limit)
            .collect()
            .await
            .map_err(|e| match e.downcast::<hyper::Error>() {
                Ok(e) => Error::from_hyper(*e),
                Err(e) if e.is::<http_body_util::LengthLimitError>() => Error::TooLarge(limit),
                Err(e) => Error::Malformed(e.to_string()),
            })?
            .to_bytes();
        if conn.usable() {
            self.checkin(addr, conn);
        }
        let problem = is_problem(&parts.headers);
        Ok(Answer {
            status: parts.status,
            problem,
            retry_after: parts.headers.get(header::RETRY_AFTER).cloned(),
            body,
        })
    }

    /// Sends `call` to the runtime at `addr` and hands back the answer's head with its body
    /// unread: hyper's `Incoming`, whose frames the caller relays as they arrive (a streamed
    /// invoke). The connection goes with the body and closes when it is dropped, so a client
    /// that goes away closes the runtime's connection, which cancels the plugin's stream. It is
    /// not pooled again: a stream lasts seconds, and a fresh connection costs microseconds.
    pub async fn post_stream(&self, addr: SocketAddr, call: &Call<'_>) -> Result<Streamed, Error> {
        let (conn, response) = self.send(addr, call).await?;
        let (parts, body) = response.into_parts();
        let problem = is_problem(&parts.headers);
        Ok(Streamed {
            status: parts.status,
            problem,
            retry_after: parts.headers.get(header::RETRY_AFTER).cloned(),
            body: StreamBody {
                body,
                _conn: conn.sender,
            },
        })
    }

    /// Writes `call` on a pooled or new connection and waits for the answer's head.
    async fn send(
        &self,
        addr: SocketAddr,
        call: &Call<'_>,
    ) -> Result<(Conn, hyper::Response<hyper::body::Incoming>), Error> {
        let mut request = build(addr, call)?;
        loop {
            let (mut conn, reused) = match self.checkout(addr) {
                Some(conn) => (conn, true),
                None => (self.connect(addr).await?, false),
            };
            // The connection's task takes the next request once it has finished the last one.
            if conn.sender.ready().await.is_err() {
                if reused {
                    continue;
                }
                return Err(Error::Closed);
            }
            let sent = conn.sender.try_send_request(request);
            match sent.await {
                Ok(response) => return Ok((conn, response)),
                // A pooled connection could not take it (closed while idle): nothing was
                // written, so another connection may.
                Err(mut e) if reused && e.message().is_some() => {
                    request = e.take_message().ok_or(Error::Closed)?;
                }
                Err(e) => return Err(Error::from_hyper(e.into_error())),
            }
        }
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

    /// The most recently used idle connection to `addr` that can carry a request.
    fn checkout(&self, addr: SocketAddr) -> Option<Conn> {
        loop {
            let conn = {
                let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
                idle.get_mut(&addr)?.pop()?
            };
            if conn.since.elapsed() < self.settings.idle_timeout && conn.usable() {
                return Some(conn);
            }
        }
    }

    fn checkin(&self, addr: SocketAddr, mut conn: Conn) {
        conn.since = Instant::now();
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        let list = idle.entry(addr).or_default();
        if list.len() < self.settings.max_idle_per_endpoint {
            list.push(conn);
        }
    }

    async fn connect(&self, addr: SocketAddr) -> Result<Conn, Error> {
        let stream = tokio::time::timeout(self.settings.connect_timeout, TcpStream::connect(addr))
            .await
            .map_err(|_| Error::ConnectTimeout(addr))?
            .map_err(|source| Error::Connect { addr, source })?;
        // The request goes out in one write; the answer is awaited at once.
        stream
            .set_nodelay(true)
            .map_err(|source| Error::Connect { addr, source })?;
        let (sender, driver) = http1::Builder::new()
            .handshake(TokioIo::new(stream))
            .await
            .map_err(|e| Error::Connect {
                addr,
                source: io::Error::other(e),
            })?;
        tokio::spawn(async move {
            let _ = driver.await;
        });
        Ok(Conn {
            sender,
            since: Instant::now(),
        })
    }
}

/// The request hyper writes: the call's path, `host`, JSON content type and length, and the
/// call's headers, each checked so nothing can be injected.
fn build(addr: SocketAddr, call: &Call<'_>) -> Result<Request<Body>, Error> {
    if !call.path.starts_with('/') {
        return Err(Error::InvalidRequest);
    }
    let uri = Uri::try_from(call.path).map_err(|_| Error::InvalidRequest)?;
    let mut request = Request::new(Full::new(Bytes::copy_from_slice(call.body)));
    *request.method_mut() = Method::POST;
    *request.uri_mut() = uri;
    let headers = request.headers_mut();
    let host = HeaderValue::try_from(addr.to_string()).map_err(|_| Error::InvalidRequest)?;
    headers.insert(header::HOST, host);
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(call.body.len()));
    for (name, value) in call.headers {
        let name = HeaderName::try_from(*name).map_err(|_| Error::InvalidRequest)?;
        let value = HeaderValue::from_str(value).map_err(|_| Error::InvalidRequest)?;
        headers.insert(name, value);
    }
    Ok(request)
}

/// The runtime answered with a problem document (`application/problem+json`).
fn is_problem(headers: &axum::http::HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(PROBLEM_JSON.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    /// A server that answers each request on a connection with the next of `answers` (raw
    /// bytes), then keeps or closes the connection; counts accepted connections.
    async fn server(
        answers: Vec<&'static [u8]>,
        close_after: bool,
    ) -> (SocketAddr, Arc<AtomicUsize>) {
        let (addr, accepted, _closed) = counted_server(answers, close_after).await;
        (addr, accepted)
    }

    /// [`server`], also counting the connections it has closed (dropped its socket).
    async fn counted_server(
        answers: Vec<&'static [u8]>,
        close_after: bool,
    ) -> (SocketAddr, Arc<AtomicUsize>, Arc<AtomicUsize>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let accepted = Arc::new(AtomicUsize::new(0));
        let closed = Arc::new(AtomicUsize::new(0));
        let count = accepted.clone();
        let count_closed = closed.clone();
        tokio::spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                count.fetch_add(1, Ordering::SeqCst);
                let answers = answers.clone();
                let closed = CountOnDrop(count_closed.clone());
                tokio::spawn(async move {
                    // Locals drop in reverse order: the socket closes, then the count moves.
                    let _closed = closed;
                    let mut socket = socket;
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
        (addr, accepted, closed)
    }

    /// Adds one to its counter when dropped.
    struct CountOnDrop(Arc<AtomicUsize>);

    impl Drop for CountOnDrop {
        fn drop(&mut self) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
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
        let (addr, accepted, closed) = counted_server(vec![OK], true).await;
        let upstream = Upstream::default();
        upstream.post(addr, &call(1024)).await.expect("first");
        // The server has closed its end (on loopback the FIN is queued to us by then).
        let deadline = Instant::now() + Duration::from_secs(60);
        while closed.load(Ordering::SeqCst) == 0 {
            assert!(Instant::now() < deadline, "the server never closed");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
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
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n10\r\n0123456789abcdef\r\n10\r\n0123456789abcdef\r\n";
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

    /// A streamed answer's frames reach the caller while the runtime is still writing, and
    /// dropping the body closes the runtime's connection (how a stream is cancelled).
    #[tokio::test]
    async fn streamed_frames_arrive_as_written_and_dropping_the_body_closes_the_connection() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (next_tx, mut next_rx) = tokio::sync::mpsc::channel::<()>(1);
        let server = tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.expect("accept");
            let mut seen = Vec::new();
            while !seen.ends_with(b"{\"x\":1}") {
                let mut chunk = [0u8; 4096];
                let n = socket.read(&mut chunk).await.expect("read");
                assert!(n > 0, "closed early");
                seen.extend_from_slice(&chunk[..n]);
            }
            socket
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-type: application/x-ndjson\r\ntransfer-encoding: chunked\r\n\r\nd\r\n{\"text\":\"a\"}\n\r\n")
                .await
                .expect("first line");
            // The second line only once the caller has seen the first.
            next_rx.recv().await;
            socket
                .write_all(b"d\r\n{\"text\":\"b\"}\n\r\n")
                .await
                .expect("second line");
            // Then nothing more: the caller drops the body; the connection must close.
            let mut rest = [0u8; 64];
            tokio::time::timeout(Duration::from_secs(60), socket.read(&mut rest))
                .await
                .expect("the gateway closed the connection")
                .unwrap_or(0)
        });
        let upstream = Upstream::default();
        let streamed = upstream
            .post_stream(addr, &call(1024))
            .await
            .expect("answer");
        assert_eq!(streamed.status, StatusCode::OK);
        assert!(!streamed.problem);
        let mut body = streamed.body;
        let first = body.frame().await.expect("frame").expect("data");
        assert_eq!(
            first.data_ref().map(|d| &d[..]),
            Some(&b"{\"text\":\"a\"}\n"[..])
        );
        next_tx.send(()).await.expect("server waits");
        let second = body.frame().await.expect("frame").expect("data");
        assert_eq!(
            second.data_ref().map(|d| &d[..]),
            Some(&b"{\"text\":\"b\"}\n"[..])
        );
        drop(body);
        assert_eq!(
            server.await.expect("server"),
            0,
            "EOF: the connection was closed"
        );
        assert_eq!(
            upstream.idle_connections(),
            0,
            "a stream's connection is not pooled"
        );
    }

    #[tokio::test]
    async fn the_request_carries_host_type_length_and_the_calls_headers() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let head = tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.expect("accept");
            let mut seen = Vec::new();
            while !seen.ends_with(b"{\"x\":1}") {
                let mut chunk = [0u8; 4096];
                let n = socket.read(&mut chunk).await.expect("read");
                assert!(n > 0, "closed early");
                seen.extend_from_slice(&chunk[..n]);
            }
            socket.write_all(OK).await.expect("answer");
            String::from_utf8(seen).expect("utf-8").to_lowercase()
        });
        Upstream::default()
            .post(addr, &call(1024))
            .await
            .expect("answer");
        let head = head.await.expect("server");
        assert!(
            head.starts_with("post /v1/invoke/echo http/1.1\r\n"),
            "{head}"
        );
        for line in [
            format!("host: {addr}\r\n"),
            "content-type: application/json\r\n".into(),
            "content-length: 7\r\n".into(),
            "x-request-id: r-1\r\n".into(),
        ] {
            assert!(head.contains(&line), "{line:?} in {head}");
        }
    }
}
