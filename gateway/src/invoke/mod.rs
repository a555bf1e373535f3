//! The path of one invoke through the gateway.
//!
//! ```text
//!  POST /api/plugins/{id}/invoke
//!   ─▶ request id, trace context ─▶ key and scope ─▶ find plugin ─▶ read and parse body
//!      (a raw `image/*` body or a multipart form: wrapped as the JSON invoke its capability
//!      declares, binary.rs and multipart.rs)
//!   ─▶ capability (and the key's scope for it: invoke, or manage for a management one)
//!   ─▶ rate limit, charged the call's cost ─▶ validate payload
//!   ─▶ a ready instance, round robin ─▶ POST /v1/invoke/{capability} ─▶ relay the answer
//!
//!  POST /api/plugins/{id}/invoke/stream: the same steps, then
//!   ─▶ POST /v1/invoke/{capability}/stream ─▶ relay NDJSON frame by frame (stream.rs)
//! ```
//!
//! This route is served in front of the axum router ([`crate::Gateway`]): it is the call every
//! client makes all the time, and the router's per-request layers (request-id and authorization
//! middleware, extractors, boxed services) cost more than the work they wrap. It does what those
//! layers do for the other routes, with the same functions ([`crate::front`]).

mod binary;
mod cost;
mod forward;
mod multipart;
mod schema;
pub(crate) mod stream;
mod trace;

use std::time::Instant;

use axum::body::Bytes;
use axum::http::{HeaderMap, HeaderValue, Method, Request, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bkg_core::Cost;
use serde_json::value::RawValue;
use std::borrow::Cow;
use tracing::Instrument;

pub use forward::unavailable;
pub use schema::{RuntimeCapabilities, Validators, capabilities};

use crate::auth::Principal;
use crate::problem::ApiError;
use crate::ratelimit::Refused;
use crate::{AppState, REQUEST_ID, front};
use trace::{Fields, Trace};

/// The raw (still percent-encoded) plugin id when `req` is `POST /api/plugins/{id}/invoke`
/// (`false`) or `POST /api/plugins/{id}/invoke/stream` (`true`).
pub fn target<B>(req: &Request<B>) -> Option<(&str, bool)> {
    if req.method() != Method::POST {
        return None;
    }
    let rest = req.uri().path().strip_prefix("/api/plugins/")?;
    let (id, stream) = match rest.strip_suffix("/invoke") {
        Some(id) => (id, false),
        None => (rest.strip_suffix("/invoke/stream")?, true),
    };
    (!id.is_empty() && !id.contains('/')).then_some((id, stream))
}

/// How a call reached the invoke path.
#[derive(Clone, Copy, Debug)]
pub enum Entry<'a> {
    /// `POST /api/plugins/{id}/invoke`, with the id as it appears in the path.
    Invoke(&'a str),
    /// `POST /api/plugins/{id}/invoke/stream`: the same, answered as NDJSON while it runs.
    InvokeStream(&'a str),
    /// `POST /v1/embeddings`, `/v1/rerank`, `/v1/chat/completions` or `/v1/completions`
    /// (`crate::openai`).
    V1(crate::openai::Endpoint),
}

/// Serves one invoke of plugin `raw_id` (as it appears in the path), streamed or whole.
pub async fn serve<B>(
    state: AppState,
    raw_id: String,
    stream: bool,
    req: Request<B>,
) -> Result<Response, std::convert::Infallible>
where
    B: http_body::Body<Data = Bytes>,
    B::Error: Into<axum::BoxError>,
{
    let entry = if stream {
        Entry::InvokeStream(&raw_id)
    } else {
        Entry::Invoke(&raw_id)
    };
    serve_entry(state, entry, req).await
}

/// Serves one call that goes through the invoke path: an invoke, or a `/v1` route translated
/// into one. Both get the same key and scope checks, limits, validation, metrics and trace.
pub async fn serve_entry<B>(
    state: AppState,
    entry: Entry<'_>,
    req: Request<B>,
) -> Result<Response, std::convert::Infallible>
where
    B: http_body::Body<Data = Bytes>,
    B::Error: Into<axum::BoxError>,
{
    let started = Instant::now();
    let (parts, body) = req.into_parts();
    let request_id = front::request_id(&parts.headers);
    let decoded;
    let (name, route) = match entry {
        Entry::Invoke(raw_id) | Entry::InvokeStream(raw_id) => {
            decoded = percent_encoding::percent_decode_str(raw_id).decode_utf8();
            let id = decoded.as_deref().unwrap_or(raw_id);
            if matches!(entry, Entry::InvokeStream(_)) {
                (Some(id), trace::Route::InvokeStream(id))
            } else {
                (Some(id), trace::Route::Invoke(id))
            }
        }
        Entry::V1(endpoint) => (None, trace::Route::V1(endpoint.path())),
    };
    let trace = Trace::begin(
        state.config.invoke_spans,
        &request_id,
        route,
        &parts.headers,
    );
    let mut seen = Seen::default();
    let run = async {
        match (entry, name) {
            (Entry::V1(endpoint), _) => {
                run_v1(
                    &state,
                    endpoint,
                    &request_id,
                    &trace,
                    &parts.headers,
                    body,
                    &mut seen,
                    started,
                )
                .await
            }
            (Entry::Invoke(_) | Entry::InvokeStream(_), id) => {
                run(
                    &state,
                    id.unwrap_or_default(),
                    matches!(entry, Entry::InvokeStream(_)),
                    &request_id,
                    &trace,
                    &parts,
                    body,
                    &mut seen,
                    started,
                )
                .await
            }
        }
    };
    let result = match trace.span() {
        Some(span) => run.instrument(span).await,
        None => run.await,
    };
    let status = match &result {
        Ok(response) => response.status(),
        Err(error) => error.status(),
    };
    trace.finish(status.as_u16());
    let plugin = seen.plugin.as_deref().or(name).unwrap_or("_unknown");
    let fields = Fields {
        plugin,
        capability: seen.capability.as_deref(),
        key_id: seen.who.as_ref().map(|w| w.key_id.as_str()),
        request_id: &request_id,
    };
    // Failures get a line each up to a budget per plugin; the rest are summed up (logbudget.rs).
    let log_failure =
        status.is_server_error() && state.failure_logs.admit(plugin, std::time::Instant::now());
    if log_failure || tracing::enabled!(tracing::Level::DEBUG) {
        trace.log(&fields, || match &result {
            Ok(_) if log_failure => {
                tracing::warn!(status = status.as_u16(), "plugin answered an error");
            }
            Ok(_) => {}
            Err(error) if log_failure => {
                tracing::warn!(status = status.as_u16(), error = %error, "invoke failed");
            }
            Err(error) => {
                tracing::debug!(status = status.as_u16(), error = %error, "invoke refused");
            }
        });
    }
    match (&seen.plugin, seen.known) {
        (Some(id), true) => {
            state.metrics.observe_invoke(
                id,
                seen.capability.as_deref().unwrap_or("_unknown"),
                status.as_u16(),
                started.elapsed(),
            );
            if let Some(alias) = &seen.alias {
                state.metrics.observe_alias(alias, id);
            }
        }
        // Unknown plugins share one label value, so scanners cannot explode the series count.
        _ => {
            state
                .metrics
                .observe_invoke("_unknown", "_unknown", status.as_u16(), started.elapsed())
        }
    }
    let mut response = match entry {
        Entry::Invoke(_) | Entry::InvokeStream(_) => match result {
            Ok(response) => response,
            Err(error) => error.into_problem(Some(&request_id)),
        },
        Entry::V1(_) => {
            let shape = std::mem::take(&mut seen.shape);
            crate::openai::answer(shape, result, state.config.max_response_bytes).await
        }
    };
    if let Ok(v) = HeaderValue::from_str(&request_id) {
        response.headers_mut().insert(REQUEST_ID, v);
    }
    Ok(response)
}

/// What the invoke learnt on its way, for its metrics and log lines.
#[derive(Default)]
struct Seen {
    who: Option<std::sync::Arc<Principal>>,
    /// The plugin the call goes to, once its name (an id or an alias) is resolved.
    plugin: Option<String>,
    /// The plugin exists.
    known: bool,
    /// The alias the plugin was picked for, when the call named one.
    alias: Option<String>,
    /// The capability label: the capability once known to exist, `_unknown` before.
    capability: Option<String>,
    /// How a `/v1` call's answer is handed back.
    shape: crate::openai::Shape,
}

#[allow(clippy::too_many_arguments)]
async fn run<B>(
    state: &AppState,
    name: &str,
    stream: bool,
    request_id: &str,
    trace: &Trace,
    parts: &axum::http::request::Parts,
    body: B,
    seen: &mut Seen,
    started: Instant,
) -> Result<Response, ApiError>
where
    B: http_body::Body<Data = Bytes>,
    B::Error: Into<axum::BoxError>,
{
    let (headers, query) = (&parts.headers, parts.uri.query());
    let who = front::authenticate(state, headers)?;
    trace.key(&who.key_id);
    state.metrics.observe_key(&who.key_id);
    let who = seen.who.insert(who).clone();
    let who = &*who;
    let suffix = if stream { "/stream" } else { "" };
    let forbidden =
        || front::forbidden(who, "POST", &format!("/api/plugins/{name}/invoke{suffix}"));
    let (id, route) = resolve(state, who, name, seen).await.map_err(|e| match e {
        Resolve::Forbidden => forbidden(),
        Resolve::Unknown => ApiError::UnknownPlugin(name.to_owned()),
        Resolve::NoWeight(e) => e,
    })?;
    trace.plugin(&id);
    let in_flight = state.metrics.in_flight(&id);
    let body = read_body(body, headers, state.config.max_body_bytes).await?;
    // A raw image body or a multipart form is the JSON invoke its capability declares for it
    // (binary.rs, multipart.rs).
    let capabilities = &route.plugin.spec.capabilities;
    let body = match (
        binary::raw_media_type(headers),
        multipart::boundary(headers),
    ) {
        (Some(media), _) => binary::envelope(capabilities, &id, query, &media, &body)?,
        (None, Some(boundary)) => {
            Box::pin(multipart::envelope(
                capabilities,
                &id,
                query,
                boundary?,
                body,
            ))
            .await?
        }
        (None, None) => body,
    };
    let request = Envelope::parse(&body)?;
    let payload = request.payload.unwrap_or(RawValue::NULL);
    call(
        state,
        who,
        &id,
        route,
        &request.capability,
        payload,
        Relay {
            request_id,
            trace,
            stream,
            started,
            in_flight,
        },
        seen,
    )
    .await
}

/// Why a name selects no plugin the key may call.
enum Resolve {
    /// The key's scopes do not reach the plugin (or, for an alias, every one of its targets).
    Forbidden,
    /// No plugin has this id and no enabled plugin this alias.
    Unknown,
    /// Every target of the alias has weight 0.
    NoWeight(ApiError),
}

/// The plugin a name selects, and its route: the plugin of that id, else one target of the
/// alias of that name, picked by weight. A key may use an alias only if it may call every
/// target, so the split never turns into a 403 for some of its calls.
async fn resolve(
    state: &AppState,
    who: &Principal,
    name: &str,
    seen: &mut Seen,
) -> Result<(String, crate::backend::Route), Resolve> {
    if let Some(route) = state.backend.route(name).await {
        if !who.can_call(name, None) {
            return Err(Resolve::Forbidden);
        }
        seen.plugin = Some(name.to_owned());
        seen.known = true;
        seen.capability = Some("_unknown".to_owned());
        return Ok((name.to_owned(), route));
    }
    let aliases = state.backend.aliases().await;
    let Some(targets) = aliases.targets(name) else {
        return Err(if who.can_call(name, None) {
            Resolve::Unknown
        } else {
            Resolve::Forbidden
        });
    };
    if !targets.iter().all(|t| who.can_call(&t.plugin, None)) {
        return Err(Resolve::Forbidden);
    }
    let Some(id) = state.alias_picker.pick(name, targets) else {
        return Err(Resolve::NoWeight(ApiError::Unavailable {
            detail: format!("every plugin of alias {name:?} has weight 0"),
            retry_after: None,
        }));
    };
    // A target removed since the table was derived.
    let route = state.backend.route(&id).await.ok_or(Resolve::Unknown)?;
    seen.plugin = Some(id.clone());
    seen.known = true;
    seen.alias = Some(name.to_owned());
    seen.capability = Some("_unknown".to_owned());
    Ok((id, route))
}

/// `POST /v1/embeddings` and `POST /v1/rerank`: the body translated into an invoke of the
/// plugin `model` names (`crate::openai`), then the same steps as an invoke.
#[allow(clippy::too_many_arguments)]
async fn run_v1<B>(
    state: &AppState,
    endpoint: crate::openai::Endpoint,
    request_id: &str,
    trace: &Trace,
    headers: &HeaderMap,
    body: B,
    seen: &mut Seen,
    started: Instant,
) -> Result<Response, ApiError>
where
    B: http_body::Body<Data = Bytes>,
    B::Error: Into<axum::BoxError>,
{
    let who = front::authenticate(state, headers)?;
    trace.key(&who.key_id);
    state.metrics.observe_key(&who.key_id);
    let who = seen.who.insert(who).clone();
    let who = &*who;
    let body = read_body(body, headers, state.config.max_body_bytes).await?;
    let request = crate::openai::translate(endpoint, &body)?;
    seen.shape = request.shape.clone();
    let model = match request.model {
        Some(model) => model,
        None => only_plugin_with(state, request.capability).await?,
    };
    let (id, route) = resolve(state, who, &model, seen)
        .await
        .map_err(|e| match e {
            Resolve::Forbidden => {
                ApiError::Forbidden(format!("key {:?} may not call model {model:?}", who.key_id))
            }
            Resolve::Unknown => ApiError::UnknownPlugin(model.clone()),
            Resolve::NoWeight(e) => e,
        })?;
    trace.plugin(&id);
    let in_flight = state.metrics.in_flight(&id);
    let payload: &RawValue = serde_json::from_str(&request.payload)
        .map_err(|e| ApiError::MalformedJson(format!("the request body is not valid JSON: {e}")))?;
    call(
        state,
        who,
        &id,
        route,
        request.capability,
        payload,
        Relay {
            request_id,
            trace,
            stream: request.stream,
            started,
            in_flight,
        },
        seen,
    )
    .await
}

/// How a call's answer goes back, and what it carries along for that.
struct Relay<'a> {
    request_id: &'a str,
    trace: &'a Trace,
    /// Streamed (`…/invoke/stream`, `/v1` with `stream: true`), or whole.
    stream: bool,
    /// When the gateway took the request (time to first token counts from it).
    started: Instant,
    /// The plugin's in-flight gauge: a stream's body keeps it until the stream ends.
    in_flight: crate::metrics::InFlight,
}

/// The one enabled plugin whose manifest declares `capability`: TEI's clients send no
/// `model`, which is unambiguous while one plugin reranks.
async fn only_plugin_with(state: &AppState, capability: &str) -> Result<String, ApiError> {
    let offering: Vec<String> = state
        .backend
        .list()
        .await
        .into_iter()
        .filter(|v| v.plugin.spec.enabled && v.plugin.capability(capability).is_some())
        .map(|v| v.plugin.id().to_owned())
        .collect();
    match <[String; 1]>::try_from(offering) {
        Ok([only]) => Ok(only),
        Err(many) => Err(ApiError::InvalidPayload {
            capability: capability.to_owned(),
            errors: vec![bkg_core::wire::FieldError {
                field: "/model".into(),
                message: format!(
                    "model is required: {} plugins offer {capability}{}",
                    many.len(),
                    if many.is_empty() {
                        String::new()
                    } else {
                        format!(" ({})", many.join(", "))
                    }
                ),
            }],
        }),
    }
}

/// From a known plugin on: the key's scope for the capability, the capability itself, rate
/// limit, schema validation, hold at zero replicas, forward.
#[allow(clippy::too_many_arguments)]
async fn call(
    state: &AppState,
    who: &Principal,
    id: &str,
    route: crate::backend::Route,
    capability: &str,
    payload: &RawValue,
    relay: Relay<'_>,
    seen: &mut Seen,
) -> Result<Response, ApiError> {
    let trace = relay.trace;
    if !who.can_call(id, Some(capability)) {
        return Err(ApiError::Forbidden(format!(
            "key {:?} may not invoke {}/{}",
            who.key_id, id, capability
        )));
    }
    let declared = &route.plugin.spec.capabilities;
    let unknown_capability = || ApiError::UnknownCapability {
        plugin: id.to_owned(),
        capability: capability.to_owned(),
    };
    // The capability, its input schema, whether it is a management one and what it costs:
    // from the manifest (borrowed), or, when the manifest declares none, as the runtime
    // reports them.
    let (capability, schema, management, cost, streaming): (
        String,
        Cow<'_, serde_json::Value>,
        bool,
        Option<Cow<'_, Cost>>,
        bool,
    ) = if declared.is_empty() {
        // Boxed: this rare path (a manifest without capabilities) would otherwise add its
        // HTTP client's state to every invoke's future, which is moved by value.
        let reported = Box::pin(async {
            let view = state.backend.get(id).await?;
            Some(capabilities(state, &view).await)
        });
        let caps = reported
            .await
            .ok_or_else(|| ApiError::UnknownPlugin(id.to_owned()))?;
        match caps.into_iter().find(|c| c.id == capability) {
            Some(c) => (
                c.id,
                Cow::Owned(c.input_schema),
                c.management,
                c.cost.map(Cow::Owned),
                c.streaming,
            ),
            // A plugin that is not running cannot report capabilities its manifest leaves out.
            None if route.endpoints.is_empty() => {
                return Err(Box::pin(unavailable(state, id)).await);
            }
            None => return Err(unknown_capability()),
        }
    } else {
        match declared.iter().find(|c| c.id == capability) {
            Some(c) => (
                c.id.clone(),
                c.input_schema
                    .as_ref()
                    .map_or(Cow::Owned(serde_json::Value::Bool(true)), Cow::Borrowed),
                c.management,
                c.cost.as_ref().map(Cow::Borrowed),
                c.streaming,
            ),
            None => return Err(unknown_capability()),
        }
    };
    // Management capabilities change the plugin for every caller: only `admin` and
    // `manage:<plugin>` reach them, and `manage:<plugin>` reaches nothing else.
    if management && !who.can_manage(id) {
        return Err(ApiError::Forbidden(format!(
            "key {:?} may not invoke {id}/{capability}: a management capability needs the admin or manage:{id} scope",
            who.key_id
        )));
    }
    if !management && !who.can_invoke(id, Some(&capability)) {
        return Err(ApiError::Forbidden(format!(
            "key {:?} may not invoke {id}/{capability}",
            who.key_id
        )));
    }
    trace.capability(&capability);
    seen.capability = Some(capability.clone());
    let units = cost::units(cost.as_deref(), payload);
    match state
        .rate_limiter
        .check(&route.plugin, &capability, &who.key_id, units)
    {
        Ok(()) => {}
        Err(Refused::Exceeded(exceeded)) => {
            state.metrics.observe_rate_limited(id, &capability);
            let limit = exceeded.limit;
            let detail = if exceeded.cost > 1 {
                format!(
                    "key {:?} may use {} units of {id}/{capability} per second (burst {}); this call costs {}; retry in {}s",
                    who.key_id,
                    limit.requests_per_second,
                    limit.burst(),
                    exceeded.cost,
                    exceeded.retry_after_secs()
                )
            } else {
                format!(
                    "key {:?} may call {id}/{capability} {} times per second (burst {}); retry in {}s",
                    who.key_id,
                    limit.requests_per_second,
                    limit.burst(),
                    exceeded.retry_after_secs()
                )
            };
            return Err(ApiError::RateLimited {
                detail,
                retry_after: exceeded.retry_after_secs(),
            });
        }
        Err(Refused::OverBurst { limit, cost }) => {
            state.metrics.observe_rate_limited(id, &capability);
            return Err(ApiError::CostOverBurst(format!(
                "this call of {id}/{capability} costs {cost} units and its rate limit holds at most {} (burst); split it into smaller calls",
                limit.burst()
            )));
        }
    }
    // Generation capabilities (those that stream) are metered in tokens per key.
    let payer = streaming.then(|| stream::Payer {
        key: who.key_id.clone(),
        tokens_per_minute: who.tokens_per_minute,
    });
    if let Some(payer) = &payer
        && let Err(retry_after) =
            state
                .tokens
                .admit(&payer.key, payer.tokens_per_minute, Instant::now())
    {
        state.metrics.observe_rate_limited(id, &capability);
        return Err(ApiError::RateLimited {
            detail: format!(
                "key {:?} may use {} tokens per minute and has used them up; retry in {retry_after}s",
                who.key_id,
                payer.tokens_per_minute.unwrap_or_default()
            ),
            retry_after,
        });
    }
    schema::validate(state, id, route.generation, &capability, &schema, payload)?;
    let payload = payload.get().as_bytes();
    // A plugin the autoscaler may have taken to zero (or that is still starting its first
    // replica): the invoke waits for one, in line with the others.
    let activated;
    let route = match route.plugin.spec.scaling.as_ref() {
        Some(scaling) if route.endpoints.is_empty() && route.plugin.spec.enabled => {
            activated = crate::scale::hold(state, id, scaling).await?;
            &activated
        }
        _ => &route,
    };
    let mode = if relay.stream {
        forward::Mode::Stream(stream::Meter {
            state: state.clone(),
            plugin: id.to_owned(),
            payer,
            started: relay.started,
            last_text: None,
            in_flight: relay.in_flight,
        })
    } else {
        forward::Mode::Whole(payer)
    };
    forward::forward(
        state,
        route,
        trace,
        &capability,
        payload,
        relay.request_id,
        mode,
    )
    .await
}

/// The request body, refused above `limit` bytes.
async fn read_body<B>(body: B, headers: &HeaderMap, limit: usize) -> Result<Bytes, ApiError>
where
    B: http_body::Body<Data = Bytes>,
    B::Error: Into<axum::BoxError>,
{
    use http_body_util::BodyExt;
    let too_large = || ApiError::Body {
        status: StatusCode::PAYLOAD_TOO_LARGE,
        detail: format!("the request body is larger than {limit} bytes"),
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(too_large());
    }
    match http_body_util::Limited::new(body, limit).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(too_large()),
        Err(e) => Err(ApiError::Body {
            status: StatusCode::BAD_REQUEST,
            detail: format!("reading the request body failed: {e}"),
        }),
    }
}

/// The body of an invoke call: [`bkg_core::wire::InvokeRequest`], with the payload left as the
/// client's JSON text. It is parsed only if the input schema needs it, and relayed unchanged.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Envelope<'a> {
    #[serde(borrow)]
    capability: Cow<'a, str>,
    #[serde(borrow, default)]
    payload: Option<&'a RawValue>,
}

impl<'a> Envelope<'a> {
    fn parse(body: &'a [u8]) -> Result<Self, ApiError> {
        serde_json::from_slice(body).map_err(|e| {
            if e.is_data() {
                ApiError::BadRequest(format!("invalid invoke request: {e}"))
            } else {
                ApiError::MalformedJson(format!("the request body is not valid JSON: {e}"))
            }
        })
    }
}

/// The invoke route answers only POST; the router serves this for the other methods.
pub async fn method_not_allowed() -> Response {
    let mut response = ApiError::MethodNotAllowed.into_response();
    response
        .headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static("POST"));
    response
}
