//! The runtime's HTTP listeners: hyper's HTTP/1.1 server with a header-read timeout and a cap on
//! open connections, drained on shutdown (axum's `serve` offers neither limit).
//!
//! The runtime is reached only by the gateway (loopback locally, a NetworkPolicy on a cluster),
//! whose pool keeps at most 256 idle connections per instance, so the cap is a backstop against a
//! misbehaving peer, not a tuning knob. At the cap, accept waits and the kernel's backlog holds
//! the newcomers. A connection must complete a request head within the timeout, counted from
//! when the runtime starts waiting for one (so also an idle keep-alive bound).

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};

/// Limits of a listener.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    pub max_connections: u32,
    pub header_read_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_connections: 4096,
            header_read_timeout: Duration::from_secs(30),
        }
    }
}

/// Serves `app` on `listener` until `stop` turns true, then stops accepting, lets every
/// connection finish the request it is serving (hyper's graceful shutdown) and returns when the
/// last one has closed.
pub(crate) async fn serve(
    listener: TcpListener,
    app: Router,
    mut stop: watch::Receiver<bool>,
    limits: Limits,
) {
    let slots = Arc::new(Semaphore::new(limits.max_connections as usize));
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout);
    loop {
        let slot = tokio::select! {
            slot = slots.clone().acquire_owned() => match slot {
                Ok(slot) => slot,
                Err(_) => break,
            },
            () = stopped(&mut stop) => break,
        };
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // Out of file descriptors and the like: keep serving, try again shortly.
                    tracing::warn!(error = %e, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = stopped(&mut stop) => break,
        };
        let _ = stream.set_nodelay(true);
        let conn =
            http.serve_connection(TokioIo::new(stream), TowerToHyperService::new(app.clone()));
        let mut stop = stop.clone();
        tokio::spawn(async move {
            let _slot = slot;
            let mut conn = std::pin::pin!(conn);
            tokio::select! {
                _ = conn.as_mut() => return,
                () = stopped(&mut stop) => {}
            }
            conn.as_mut().graceful_shutdown();
            let _ = conn.await;
        });
    }
    drop(listener);
    // Every connection task holds a slot until it ends.
    let _ = slots.acquire_many(limits.max_connections).await;
}

/// Resolves once `stop` is true (or its sender is gone).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// At the cap a newcomer waits in the backlog; a connection that never completes its head
    /// is closed at the header-read timeout, which lets the newcomer in. (Paused clock: tokio
    /// moves it to the timeout once everything waits.)
    #[tokio::test(start_paused = true)]
    async fn a_stalled_head_is_closed_and_makes_room_at_the_cap() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let app = Router::new().route("/livez", axum::routing::get(|| async { "ok" }));
        let (stop_tx, stop_rx) = watch::channel(false);
        let limits = Limits {
            max_connections: 1,
            header_read_timeout: Duration::from_secs(30),
        };
        let server = tokio::spawn(serve(listener, app, stop_rx, limits));

        let mut stalled = tokio::net::TcpStream::connect(addr).await.expect("connect");
        stalled
            .write_all(b"GET /livez HTTP/1.1\r\nhost: x\r\nx-slow: ")
            .await
            .expect("half a head");
        let mut newcomer = tokio::net::TcpStream::connect(addr).await.expect("connect");
        newcomer
            .write_all(b"GET /livez HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
            .await
            .expect("request");
        let mut answer = String::new();
        newcomer.read_to_string(&mut answer).await.expect("answer");
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        // The stalled one was closed by then (hyper may answer 408 first).
        let mut rest = Vec::new();
        let _ = stalled.read_to_end(&mut rest).await;

        stop_tx.send(true).expect("stop");
        server.await.expect("drained");
    }
}
