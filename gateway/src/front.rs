//! What stands in front of the handlers: the connection loop, the dispatch of invokes past the
//! router, and the router's request-id and authorization middleware.
//!
//! ```text
//!  accept ─▶ HTTP/1.1 connection ─▶ Gateway ─┬─ POST /api/plugins/{id}/invoke[/stream] ─▶ invoke::serve
//!                                            └─ anything else ─▶ axum Router (request id,
//!                                                 authorization, handlers, admin UI)
//! ```

use std::convert::Infallible;
use std::future::Future;
use std::io::ErrorKind;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use bkg_core::wire::{PROBLEM_JSON, Problem};
use tracing::Instrument;

use crate::auth::{Principal, Refusal};
use crate::conn::{AnswerBody, ClientIo};
use crate::problem::ApiError;
use crate::{AppState, REQUEST_ID, invoke, openai, ws};

/// The gateway as one service: invokes straight to [`invoke::serve`], the rest to the router.
#[derive(Clone)]
pub struct Gateway {
    state: AppState,
    router: Router,
}

impl Gateway {
    pub(crate) fn new(state: AppState, router: Router) -> Self {
        Self { state, router }
    }
}

type BoxFuture = Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>;

impl<B> tower::Service<axum::http::Request<B>> for Gateway
where
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<axum::BoxError>,
{
    type Response = Response;
    type Error = Infallible;
    type Future = BoxFuture;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: axum::http::Request<B>) -> BoxFuture {
        self.dispatch(req)
    }
}

impl Gateway {
    /// Routes one request; `&self`, so the connection loop need not clone the gateway per call.
    fn dispatch<B>(&self, req: axum::http::Request<B>) -> BoxFuture
    where
        B: http_body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<axum::BoxError>,
    {
        if let Some((id, stream)) = invoke::target(&req).map(|(id, s)| (id.to_owned(), s)) {
            return Box::pin(invoke::serve(self.state.clone(), id, stream, req));
        }
        // The OpenAI-compatible routes: their own error shape, so past the router as well.
        if let Some(endpoint) = openai::Endpoint::of(req.method(), req.uri().path()) {
            let state = self.state.clone();
            return match endpoint {
                openai::Endpoint::Embeddings
                | openai::Endpoint::Rerank
                | openai::Endpoint::ChatCompletions
                | openai::Endpoint::Completions => {
                    Box::pin(invoke::serve_entry(state, invoke::Entry::V1(endpoint), req))
                }
                _ => Box::pin(async move {
                    let (parts, _) = req.into_parts();
                    Ok(openai::serve_other(state, endpoint, &parts.headers).await)
                }),
            };
        }
        Box::pin(tower::Service::call(&mut self.router.clone(), req))
    }
}

/// Serves the gateway on `listener` until `shutdown` resolves, then drains: connections already
/// in the listen backlog are taken in, the listener is closed, every answer says
/// `Connection: close`, idle connections are closed after the drain grace, and this returns
/// when the last connection has ended. WebSockets, once upgraded, leave the connection loop and
/// end with their own streams. Limits and their reasons: [`crate::conn`].
pub(crate) async fn serve_connections(
    listener: tokio::net::TcpListener,
    gateway: Gateway,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let connections = gateway.state.connections.clone();
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(());
    let mut shutdown = std::pin::pin!(shutdown);
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(gateway.state.config.connections.header_read_timeout);
    loop {
        tokio::select! {
            () = connections.room() => {}
            () = &mut shutdown => break,
        }
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                // The client gave up before we took its connection.
                Err(e) if matches!(
                    e.kind(),
                    ErrorKind::ConnectionAborted | ErrorKind::ConnectionReset
                ) => continue,
                Err(e) => {
                    // Out of file descriptors and the like: keep serving the open connections
                    // and try again shortly.
                    tracing::warn!(error = %e, "accepting a connection failed");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        spawn_connection(stream, &gateway, &http, stop_rx.clone());
    }
    connections.drain();
    // Clients whose connections the kernel has completed are answered, not reset by the close.
    while let Some(Ok((stream, _))) = futures::FutureExt::now_or_never(listener.accept()) {
        spawn_connection(stream, &gateway, &http, stop_rx.clone());
    }
    drop(listener);
    drop(stop_rx);
    // Every connection task holds a receiver; this resolves when the last one has finished.
    let _ = stop_tx.send(());
    stop_tx.closed().await;
    Ok(())
}

/// Serves one client connection on its own task until it ends, is evicted for room, or the
/// gateway drains (`stop` changes).
fn spawn_connection(
    stream: tokio::net::TcpStream,
    gateway: &Gateway,
    http: &hyper::server::conn::http1::Builder,
    mut stop: tokio::sync::watch::Receiver<()>,
) {
    // Answers go out in one write; there is nothing to wait for.
    let _ = stream.set_nodelay(true);
    let connections = gateway.state.connections.clone();
    let drain_grace = gateway.state.config.connections.drain_grace;
    let slot = Arc::new(connections.open());
    let service = hyper::service::service_fn({
        let gateway = gateway.clone();
        let slot = slot.clone();
        move |req: hyper::Request<hyper::body::Incoming>| {
            let busy = slot.busy();
            // RFC 9112 §3.2: an HTTP/1.1 request without `Host` is answered 400.
            let answer = if req.version() == axum::http::Version::HTTP_11
                && !req.headers().contains_key(header::HOST)
            {
                let refused =
                    ApiError::BadRequest("an HTTP/1.1 request needs a Host header".into());
                Box::pin(std::future::ready(Ok(refused.into_problem(None))))
            } else {
                gateway.dispatch(req)
            };
            let connections = gateway.state.connections.clone();
            async move {
                let mut response = answer.await?;
                if connections.draining() {
                    response
                        .headers_mut()
                        .insert(header::CONNECTION, HeaderValue::from_static("close"));
                }
                Ok::<_, Infallible>(AnswerBody::wrap(response, busy))
            }
        }
    });
    let conn = http
        .serve_connection(hyper_util::rt::TokioIo::new(ClientIo::new(stream)), service)
        .with_upgrades();
    tokio::spawn(async move {
        let mut conn = std::pin::pin!(conn);
        if !connections.draining() {
            tokio::select! {
                _ = conn.as_mut() => return,
                // Asked to make room: dropped at once between requests (nothing sent, half a
                // head, or kept alive); one serving a request answers it first.
                () = slot.evicted() => {
                    if slot.is_busy() {
                        conn.as_mut().graceful_shutdown();
                        let _ = conn.await;
                    }
                    return;
                }
                _ = stop.changed() => {}
            }
        }
        // Draining: answers now say `Connection: close`, so a busy connection ends after its
        // answer; one that stays idle for the grace period is closed (a request already on its
        // way gets answered first).
        tokio::select! {
            _ = conn.as_mut() => return,
            () = tokio::time::sleep(drain_grace) => {}
        }
        if slot.is_busy() {
            conn.as_mut().graceful_shutdown();
            let _ = conn.await;
        }
        drop(stop);
    });
}

/// Unknown `/api` and `/ws` paths are problems; anything else is the admin UI (when built).
pub(crate) async fn fallback(State(state): State<AppState>, req: Request) -> Response {
    let path = req.uri().path();
    let ui = state
        .config
        .ui_dir
        .as_ref()
        // `/metrics` lives on the metrics listener: a scraper still pointed here gets a 404,
        // not the UI's index page with a 200.
        .filter(|_| {
            !(path.starts_with("/api/")
                || path == "/api"
                || path.starts_with("/ws/")
                || path == "/metrics")
        });
    match ui {
        Some(dir) => {
            let index = dir.join("index.html");
            let serve = tower_http::services::ServeDir::new(dir)
                .fallback(tower_http::services::ServeFile::new(index));
            match tower::ServiceExt::oneshot(serve, req).await {
                Ok(response) => response.map(axum::body::Body::new),
                Err(e) => ApiError::Internal(e.to_string()).into_response(),
            }
        }
        None => ApiError::NotFound(path.to_owned()).into_response(),
    }
}

/// The key's principal, from the bearer token (header, or WebSocket subprotocol for browsers).
/// The key itself is never logged or stored.
pub(crate) fn authenticate(
    state: &AppState,
    headers: &HeaderMap,
) -> Result<Arc<Principal>, ApiError> {
    let from_header = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(str::trim);
    let from_protocol = || {
        headers
            .get(header::SEC_WEBSOCKET_PROTOCOL)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| {
                v.split(',')
                    .map(str::trim)
                    .find_map(|p| p.strip_prefix(ws::BEARER_PREFIX))
            })
    };
    let Some(token) = from_header.or_else(from_protocol).filter(|t| !t.is_empty()) else {
        return Err(ApiError::Unauthorized(
            "an API key is required: send Authorization: Bearer <key>".into(),
        ));
    };
    state.keys.check(token).map_err(|refusal| match refusal {
        Refusal::Unknown => ApiError::Unauthorized("the API key is not valid".into()),
        Refusal::Expired { key_id, at } => {
            ApiError::Unauthorized(format!("the API key {key_id:?} expired at {at}"))
        }
    })
}

/// The refusal of a key without the scope for `method path`.
pub(crate) fn forbidden(who: &Principal, method: &str, path: &str) -> ApiError {
    ApiError::Forbidden(format!(
        "key {:?} lacks the scope for {method} {path}",
        who.key_id
    ))
}

/// Authenticates the caller and checks the scope the route needs.
pub(crate) async fn authorize(
    State(state): State<AppState>,
    mut req: Request,
    next: Next,
) -> Response {
    let who = match authenticate(&state, req.headers()) {
        Ok(who) => who,
        Err(e) => return e.into_response(),
    };
    let path = req.uri().path();
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let allowed = match (req.method().as_str(), segments.as_slice()) {
        (_, ["api", "whoami"]) => true,
        // Keys are secrets' metadata: listing them needs admin too.
        (_, ["api", "keys", ..]) => who.is_admin(),
        ("POST", _) => who.is_admin(),
        _ => who.can_read(),
    };
    if !allowed {
        return forbidden(&who, req.method().as_str(), path).into_response();
    }
    state.metrics.observe_key(&who.key_id);
    req.extensions_mut().insert(who);
    next.run(req).await
}

/// The caller's `x-request-id` when it is a usable one (printable ASCII, at most 128 bytes),
/// else a new UUID.
pub(crate) fn request_id(headers: &HeaderMap) -> String {
    headers
        .get(REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|v| bkg_core::wire::usable_request_id(v))
        .map_or_else(|| uuid::Uuid::new_v4().to_string(), str::to_owned)
}

/// Gives every request an id and a server span (continuing the caller's W3C trace when it sent
/// `traceparent`), returns the id on every response, and stamps it into problem bodies.
pub(crate) async fn stamp_request_id(req: Request, next: Next) -> Response {
    let id = request_id(req.headers());
    let span = tracing::info_span!(
        "request",
        otel.name = %format_args!("{} {}", req.method(), route(req.uri().path())),
        otel.kind = "server",
        http.request.method = req.method().as_str(),
        url.path = req.uri().path(),
        http.response.status_code = tracing::field::Empty,
        request_id = id.as_str(),
        trace_id = tracing::field::Empty,
    );
    bkg_trace::continue_from(&span, req.headers());
    let mut response = next.run(req).instrument(span.clone()).await;
    span.record("http.response.status_code", response.status().as_u16());
    let content_type = response.headers().get(header::CONTENT_TYPE);
    let is_problem = content_type.is_some_and(|v| v.as_bytes() == PROBLEM_JSON.as_bytes());
    let is_plain_error = (response.status().is_client_error()
        || response.status().is_server_error())
        && content_type.is_some_and(|v| v.as_bytes().starts_with(b"text/plain"));
    if is_plain_error {
        // An extractor's rejection (a bad query string, a path that is not UTF-8): axum answers
        // those in text/plain; our clients get one error shape.
        response = problem_from_text(response).await;
    }
    if is_problem || is_plain_error {
        response = stamp_problem(response, &id).await;
    }
    if let Ok(v) = HeaderValue::from_str(&id) {
        response.headers_mut().insert(REQUEST_ID, v);
    }
    response
}

/// The route template of a path, for span names: ids would make every name unique.
fn route(path: &str) -> &'static str {
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    match segments.as_slice() {
        ["healthz"] => "/healthz",
        ["api", "whoami"] => "/api/whoami",
        ["api", "keys"] => "/api/keys",
        ["api", "keys", _] => "/api/keys/{id}",
        ["api", "openapi.json"] => "/api/openapi.json",
        ["api", "plugins"] => "/api/plugins",
        ["api", "plugins", _] => "/api/plugins/{id}",
        ["api", "plugins", _, action] => match *action {
            "start" => "/api/plugins/{id}/start",
            "stop" => "/api/plugins/{id}/stop",
            "restart" => "/api/plugins/{id}/restart",
            "config" => "/api/plugins/{id}/config",
            "telemetry" => "/api/plugins/{id}/telemetry",
            "logs" => "/api/plugins/{id}/logs",
            "invoke" => "/api/plugins/{id}/invoke",
            _ => "/api/*",
        },
        ["ws", "plugins"] => "/ws/plugins",
        ["api", "aliases"] => "/api/aliases",
        ["ws", "plugins", _] => "/ws/plugins/{id}",
        ["api", ..] => "/api/*",
        _ => "/*",
    }
}

async fn problem_from_text(response: Response) -> Response {
    let status = response.status();
    let text = axum::body::to_bytes(response.into_body(), 64 * 1024)
        .await
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default();
    ApiError::Rejected {
        status,
        detail: text,
    }
    .into_response()
}

async fn stamp_problem(response: Response, id: &str) -> Response {
    let (parts, body) = response.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, 1024 * 1024).await else {
        return parts.status.into_response();
    };
    match serde_json::from_slice::<Problem>(&bytes) {
        Ok(mut problem) if problem.request_id.as_deref() != Some(id) => {
            problem.request_id = Some(id.to_owned());
            let bytes = serde_json::to_vec(&problem).unwrap_or_else(|_| bytes.to_vec());
            Response::from_parts(parts, axum::body::Body::from(bytes))
        }
        _ => Response::from_parts(parts, axum::body::Body::from(bytes)),
    }
}
