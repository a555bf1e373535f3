//! Connection hygiene: how many connections the gateway keeps, which it gives up first, and how
//! it leaves them at shutdown.
//!
//! ```text
//!  accept ─▶ Connections::open (slot, in accept order) ─▶ hyper http1 (header-read timeout)
//!     ▲            │ at the cap: the oldest idle connection is closed to make room;
//!     │            │ none idle: accept waits (the kernel's backlog holds the newcomers)
//!     └─ freed ◀───┘ a slot is freed when its connection ends
//! ```
//!
//! - **Header-read timeout** (hyper's own): a connection must deliver a complete request head
//!   within `header_read_timeout` of the gateway starting to wait for it. That wait starts when
//!   the connection is accepted and again after every answer on a kept-alive connection, so the
//!   same bound is the keep-alive idle timeout. A slow-loris client is closed after it.
//! - **Cap** (`max_connections`, by default half the file descriptors left after a reserve, so
//!   each client connection can have an upstream one): the cap is never exceeded. At the cap,
//!   the oldest *idle* connection (no request being served: never sent one, sent half a head,
//!   or kept alive between requests) is closed for each new one. A connection serving a request
//!   is never closed for room, so floods of keyless idle or half-sent connections cannot keep
//!   keyed invokes or health checks out: a newcomer always finds an idle one to replace.
//! - **Drain** ([`Connections::drain`]): the listener is closed, every answer from then on
//!   carries `Connection: close`, a request already read is answered, and connections that
//!   stay idle are closed after `drain_grace`, so a client that sent a request just before the
//!   close gets an answer or a clean close, not a reset.
//! - The soft `RLIMIT_NOFILE` is raised to the hard limit at start ([`raise_fd_limit`]).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use parking_lot::Mutex;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use tokio::io::AsyncWrite;
use tokio::sync::Notify;

/// Limits on client connections.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Open client connections at most; `None`: derived from the file-descriptor limit.
    pub max_connections: Option<usize>,
    /// Time to deliver a request head, from when the gateway waits for one (also the
    /// keep-alive idle timeout).
    pub header_read_timeout: Duration,
    /// At shutdown, how long an idle connection stays open for a request already on its way.
    pub drain_grace: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_connections: None,
            header_read_timeout: Duration::from_secs(10),
            drain_grace: Duration::from_millis(500),
        }
    }
}

/// File descriptors kept back from client connections: listeners, key and manifest files, the
/// children's pipes, log files.
const FD_RESERVE: u64 = 128;

/// The connection cap for a file-descriptor limit: half of what is left after the reserve,
/// since every client connection may hold one upstream connection too.
pub fn cap_for_fd_limit(nofile: u64) -> usize {
    let usable = nofile.saturating_sub(FD_RESERVE) / 2;
    usize::try_from(usable.max(16)).unwrap_or(usize::MAX)
}

/// Raises the soft limit on open files to the hard limit; returns the soft limit now in force.
pub fn raise_fd_limit() -> u64 {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) => limit,
        Err(e) => {
            tracing::warn!(error = %e, "could not raise the open-files limit");
            fd_limit()
        }
    }
}

/// The soft limit on open files now in force.
pub fn fd_limit() -> u64 {
    rlimit::getrlimit(rlimit::Resource::NOFILE)
        .map(|(soft, _)| soft)
        .unwrap_or(1024)
}

/// The open client connections.
pub(crate) struct Connections {
    cap: usize,
    slots: Mutex<Slots>,
    /// Signalled whenever a slot is freed.
    freed: Notify,
    draining: AtomicBool,
    next_id: AtomicU64,
    open: Gauge,
    evicted: Counter,
}

#[derive(Default)]
struct Slots {
    /// By accept order: the first idle one is the one that has been open longest.
    by_id: BTreeMap<u64, Arc<Slot>>,
    /// Slots not yet asked to close; what the cap counts.
    live: usize,
}

/// One connection's bookkeeping, shared by its task and the registry.
pub(crate) struct Slot {
    /// Requests being served on it (the service future has not finished).
    busy: AtomicU32,
    /// Asked to close (for room); not counted against the cap any more.
    evicted: AtomicBool,
    close: Notify,
}

impl Connections {
    pub(crate) fn new(cap: usize, open: Gauge, evicted: Counter) -> Self {
        Self {
            cap: cap.max(1),
            slots: Mutex::default(),
            freed: Notify::new(),
            draining: AtomicBool::new(false),
            next_id: AtomicU64::new(0),
            open,
            evicted,
        }
    }

    /// Makes room for one more connection: returns at once below the cap; at the cap, asks
    /// the oldest idle connection to close and returns; with none idle, waits until a slot is
    /// freed.
    pub(crate) async fn room(&self) {
        loop {
            let freed = self.freed.notified();
            {
                let mut slots = self.slots.lock();
                if slots.live < self.cap {
                    return;
                }
                let oldest_idle = slots
                    .by_id
                    .values()
                    .find(|s| {
                        s.busy.load(Ordering::Acquire) == 0 && !s.evicted.load(Ordering::Relaxed)
                    })
                    .cloned();
                if let Some(slot) = oldest_idle {
                    slot.evicted.store(true, Ordering::Relaxed);
                    slots.live -= 1;
                    drop(slots);
                    slot.close.notify_one();
                    self.evicted.inc();
                    return;
                }
            }
            freed.await;
        }
    }

    /// Registers an accepted connection; the guard frees its slot when dropped.
    pub(crate) fn open(self: &Arc<Self>) -> SlotGuard {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let slot = Arc::new(Slot {
            busy: AtomicU32::new(0),
            evicted: AtomicBool::new(false),
            close: Notify::new(),
        });
        {
            let mut slots = self.slots.lock();
            slots.by_id.insert(id, slot.clone());
            slots.live += 1;
        }
        self.open.inc();
        SlotGuard {
            connections: self.clone(),
            id,
            slot,
        }
    }

    /// From now on every answer carries `Connection: close`.
    pub(crate) fn drain(&self) {
        self.draining.store(true, Ordering::Release);
    }

    pub(crate) fn draining(&self) -> bool {
        self.draining.load(Ordering::Acquire)
    }

    #[cfg(test)]
    fn live(&self) -> usize {
        self.slots.lock().live
    }
}

/// A connection's place in [`Connections`]; frees it on drop.
pub(crate) struct SlotGuard {
    connections: Arc<Connections>,
    id: u64,
    slot: Arc<Slot>,
}

impl SlotGuard {
    /// Resolves when the connection is asked to close to make room.
    pub(crate) async fn evicted(&self) {
        self.slot.close.notified().await
    }

    /// Marks a request as being served until the returned guard drops (with the answer's
    /// body, once it is written: see [`AnswerBody`]).
    pub(crate) fn busy(&self) -> BusyGuard {
        self.slot.busy.fetch_add(1, Ordering::AcqRel);
        BusyGuard(self.slot.clone())
    }

    /// A request is being served or its answer written: the connection must not be dropped.
    pub(crate) fn is_busy(&self) -> bool {
        self.slot.busy.load(Ordering::Acquire) > 0
    }
}

impl Drop for SlotGuard {
    fn drop(&mut self) {
        {
            let mut slots = self.connections.slots.lock();
            if let Some(slot) = slots.by_id.remove(&self.id)
                && !slot.evicted.load(Ordering::Relaxed)
            {
                slots.live -= 1;
            }
        }
        self.connections.open.dec();
        self.connections.freed.notify_waiters();
    }
}

/// A request in service on a connection.
pub(crate) struct BusyGuard(Arc<Slot>);

/// An answer's body that keeps its connection marked busy until hyper has written it and drops
/// it, so a connection is only ever dropped between requests.
pub(crate) struct AnswerBody {
    inner: axum::body::Body,
    _busy: BusyGuard,
}

impl AnswerBody {
    pub(crate) fn wrap(
        response: axum::response::Response,
        busy: BusyGuard,
    ) -> axum::response::Response {
        response.map(|inner| axum::body::Body::new(AnswerBody { inner, _busy: busy }))
    }
}

impl http_body::Body for AnswerBody {
    type Data = bytes::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        std::pin::Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for BusyGuard {
    fn drop(&mut self) {
        self.0.busy.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A client connection's socket, which answers hyper's own parse-error responses (400, 414 and
/// 431, written by hyper with an empty body before it closes the connection) with problem+json,
/// as every other error of the gateway is answered.
///
/// hyper has no hook for those answers, so this recognises the one shape hyper writes for them:
/// an error status line whose head carries no `content-type` (every answer of ours has one).
/// It looks only at the first bytes of a write; nothing of the client's is parsed here.
pub(crate) struct ClientIo {
    inner: tokio::net::TcpStream,
    /// Our replacement for hyper's error answer, and how much of it is written.
    replacement: Option<(Vec<u8>, usize)>,
    /// After the replacement: hyper's remaining bytes for the closing connection are dropped.
    replaced: bool,
}

impl ClientIo {
    pub(crate) fn new(inner: tokio::net::TcpStream) -> Self {
        Self {
            inner,
            replacement: None,
            replaced: false,
        }
    }

    /// Writes our replacement out; `Ready(Ok(()))` once all of it is written.
    fn poll_replacement(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        use std::task::Poll;
        while let Some((bytes, written)) = &mut self.replacement {
            if *written == bytes.len() {
                self.replacement = None;
                self.replaced = true;
                break;
            }
            match std::pin::Pin::new(&mut self.inner).poll_write(cx, &bytes[*written..]) {
                Poll::Ready(Ok(0)) => {
                    return Poll::Ready(Err(std::io::ErrorKind::WriteZero.into()));
                }
                Poll::Ready(Ok(n)) => *written += n,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            }
        }
        Poll::Ready(Ok(()))
    }
}

/// The problem+json answer standing in for hyper's bodiless parse-error answer in `head`.
fn parse_error_answer(head: &[u8]) -> Option<Vec<u8>> {
    use bkg_core::wire::ProblemKind;
    let (status, kind, title, detail): (u16, ProblemKind, &str, &str) =
        if head.starts_with(b"HTTP/1.1 400 ") {
            (
                400,
                ProblemKind::BadRequest,
                "Bad request",
                "the request is not valid HTTP/1.1",
            )
        } else if head.starts_with(b"HTTP/1.1 414 ") {
            (
                414,
                ProblemKind::UriTooLong,
                "URI too long",
                "the request target is longer than the gateway accepts",
            )
        } else if head.starts_with(b"HTTP/1.1 431 ") {
            (
                431,
                ProblemKind::HeadersTooLarge,
                "Request header fields too large",
                "the request head is larger than the gateway accepts",
            )
        } else {
            return None;
        };
    let end = head
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or(head.len());
    let has_content_type = head[..end]
        .split(|&b| b == b'\n')
        .any(|line| line.len() >= 13 && line[..13].eq_ignore_ascii_case(b"content-type:"));
    if has_content_type {
        return None;
    }
    let reason = axum::http::StatusCode::from_u16(status)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or(title);
    let body = serde_json::to_vec(&bkg_core::wire::Problem::new(status, kind, title, detail))
        .unwrap_or_default();
    let mut answer = format!(
        "HTTP/1.1 {status} {reason}\r\ncontent-type: {}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        bkg_core::wire::PROBLEM_JSON,
        body.len()
    )
    .into_bytes();
    answer.extend_from_slice(&body);
    Some(answer)
}

impl tokio::io::AsyncRead for ClientIo {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl tokio::io::AsyncWrite for ClientIo {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        let this = &mut *self;
        if this.replacement.is_none() && !this.replaced {
            match parse_error_answer(buf) {
                Some(answer) => this.replacement = Some((answer, 0)),
                None => return std::pin::Pin::new(&mut this.inner).poll_write(cx, buf),
            }
        }
        this.poll_replacement(cx).map_ok(|()| buf.len())
    }

    fn poll_write_vectored(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> std::task::Poll<std::io::Result<usize>> {
        let this = &mut *self;
        let total = bufs.iter().map(|b| b.len()).sum();
        if this.replacement.is_none() && !this.replaced {
            let first = bufs
                .iter()
                .find(|b| !b.is_empty())
                .map(|b| &b[..])
                .unwrap_or(&[]);
            match parse_error_answer(first) {
                Some(answer) => this.replacement = Some((answer, 0)),
                None => return std::pin::Pin::new(&mut this.inner).poll_write_vectored(cx, bufs),
            }
        }
        this.poll_replacement(cx).map_ok(|()| total)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn connections(cap: usize) -> Arc<Connections> {
        Arc::new(Connections::new(cap, Gauge::default(), Counter::default()))
    }

    #[tokio::test]
    async fn below_the_cap_there_is_room_at_once() {
        let c = connections(2);
        c.room().await;
        let _a = c.open();
        c.room().await;
        let _b = c.open();
        assert_eq!(c.live(), 2);
    }

    #[tokio::test]
    async fn at_the_cap_the_oldest_idle_connection_is_asked_to_close() {
        let c = connections(3);
        let a = c.open();
        let _a_busy = a.busy();
        let b = c.open();
        let _c = c.open();
        c.room().await;
        // `a` is serving a request, so `b` (the oldest idle one) goes.
        tokio::time::timeout(Duration::from_secs(30), b.evicted())
            .await
            .expect("the oldest idle connection is asked to close");
        assert_eq!(c.live(), 2, "an evicted connection no longer counts");
        assert_eq!(c.evicted.get(), 1);
        // Its slot is freed when its task ends; the count does not go below.
        drop(b);
        assert_eq!(c.live(), 2);
        assert_eq!(c.open.get(), 2);
    }

    #[tokio::test]
    async fn with_every_connection_busy_room_waits_for_one_to_end() {
        let c = connections(1);
        let a = c.open();
        let busy = a.busy();
        let waiting = tokio::spawn({
            let c = c.clone();
            async move { c.room().await }
        });
        tokio::task::yield_now().await;
        assert!(
            !waiting.is_finished(),
            "no room while the one connection serves"
        );
        drop(busy);
        drop(a);
        tokio::time::timeout(Duration::from_secs(30), waiting)
            .await
            .expect("room once the connection ended")
            .expect("task");
    }

    #[test]
    fn hypers_bodiless_parse_errors_become_problems() {
        let hyper =
            b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-length: 0\r\ndate: x\r\n\r\n";
        let answer = parse_error_answer(hyper).expect("replaced");
        let text = String::from_utf8(answer).expect("utf-8");
        let (head, body) = text.split_once("\r\n\r\n").expect("head and body");
        assert!(
            head.starts_with("HTTP/1.1 431 Request Header Fields Too Large\r\n"),
            "{head}"
        );
        assert!(
            head.contains("content-type: application/problem+json"),
            "{head}"
        );
        assert!(
            head.contains(&format!("content-length: {}", body.len())),
            "{head}"
        );
        let problem: serde_json::Value = serde_json::from_str(body).expect("json");
        assert_eq!(problem["status"], 431);
        assert_eq!(problem["type"], "https://bkg.rs/problems/headers-too-large");
        // Our own answers carry a content type and pass untouched.
        let ours = b"HTTP/1.1 400 Bad Request\r\ncontent-type: application/problem+json\r\ncontent-length: 2\r\n\r\n{}";
        assert!(parse_error_answer(ours).is_none());
        assert!(parse_error_answer(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n").is_none());
    }

    #[test]
    fn the_cap_leaves_a_reserve_and_room_for_upstream_connections() {
        assert_eq!(cap_for_fd_limit(1024), 448);
        assert_eq!(cap_for_fd_limit(1_048_576), 524_224);
        assert_eq!(cap_for_fd_limit(100), 16);
    }
}
