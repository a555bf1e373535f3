//! The path of one invoke through the gateway.
//!
//! ```text
//!  POST /api/plugins/{id}/invoke
//!   ─▶ request id, trace context ─▶ key and scope ─▶ find plugin ─▶ read and parse body
//!   ─▶ capability (and the key's scope for it: invoke, or manage for a management one)
//!   ─▶ rate limit, charged the call's cost ─▶ validate payload
//!   ─▶ a ready instance, round robin ─▶ POST /v1/invoke/{capability} ─▶ relay the answer
//! ```
//!
//! This route is served in front of the axum router ([`crate::Gateway`]): it is the call every
//! client makes all the time, and the router's per-request layers (request-id and authorization
//! middleware, extractors, boxed services) cost more than the work they wrap. It does what those
//! layers do for the other routes, with the same functions ([`crate::front`]).

mod cost;
mod forward;
mod schema;
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

/// The raw (still percent-encoded) plugin id when `req` is `POST /api/plugins/{id}/invoke`.
pub fn target<B>(req: &Request<B>) -> Option<&str> {
    if req.method() != Method::POST {
        return None;
    }
    let id = req
        .uri()
        .path()
        .strip_prefix("/api/plugins/")?
        .strip_suffix("/invoke")?;
    (!id.is_empty() && !id.contains('/')).then_some(id)
}

/// Serves one invoke of plugin `raw_id` (as it appears in the path).
pub async fn serve<B>(
    state: AppState,
    raw_id: String,
    req: Request<B>,
) -> Result<Response, std::convert::Infallible>
where
    B: http_body::Body<Data = Bytes>,
    B::Error: Into<axum::BoxError>,
{
    let started = Instant::now();
    let (parts, body) = req.into_parts();
    let request_id = front::request_id(&parts.headers);
    let id = percent_encoding::percent_decode_str(&raw_id).decode_utf8();
    let id = id.as_deref().unwrap_or(&raw_id);
    let trace = Trace::begin(state.config.invoke_spans, &request_id, id, &parts.headers);
    let mut seen = Seen::default();
    let run = run(
        &state,
        id,
        &request_id,
        &trace,
        &parts.headers,
        body,
        &mut seen,
    );
    let result = match trace.span() {
        Some(span) => run.instrument(span).await,
        None => run.await,
    };
    let status = match &result {
        Ok(response) => response.status(),
        Err(error) => error.status(),
    };
    trace.finish(status.as_u16());
    let fields = Fields {
        plugin: id,
        capability: seen.capability.as_deref(),
        key_id: seen.who.as_ref().map(|w| w.key_id.as_str()),
        request_id: &request_id,
    };
    // Failures get a line each up to a budget per plugin; the rest are summed up (logbudget.rs).
    let log_failure =
        status.is_server_error() && state.failure_logs.admit(id, std::time::Instant::now());
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
    if seen.known {
        state.metrics.observe_invoke(
            id,
            seen.capability.as_deref().unwrap_or("_unknown"),
            status.as_u16(),
            started.elapsed(),
        );
    } else {
        // Unknown plugins share one label value, so scanners cannot explode the series count.
        state
            .metrics
            .observe_invoke("_unknown", "_unknown", status.as_u16(), started.elapsed());
    }
    let mut response = match result {
        Ok(response) => response,
        Err(error) => error.into_problem(Some(&request_id)),
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
    /// The plugin exists.
    known: bool,
    /// The capability label: the capability once known to exist, `_unknown` before.
    capability: Option<String>,
}

async fn run<B>(
    state: &AppState,
    id: &str,
    request_id: &str,
    trace: &Trace,
    headers: &HeaderMap,
    body: B,
    seen: &mut Seen,
) -> Result<Response, ApiError>
where
    B: http_body::Body<Data = Bytes>,
    B::Error: Into<axum::BoxError>,
{
    let who = front::authenticate(state, headers)?;
    trace.key(&who.key_id);
    state.metrics.observe_key(&who.key_id);
    let who = &*seen.who.insert(who);
    if !who.can_call(id, None) {
        return Err(front::forbidden(
            who,
            "POST",
            &format!("/api/plugins/{id}/invoke"),
        ));
    }
    let Some(route) = state.backend.route(id).await else {
        return Err(ApiError::UnknownPlugin(id.to_owned()));
    };
    seen.known = true;
    seen.capability = Some("_unknown".to_owned());
    let _in_flight = state.metrics.in_flight(id);
    let body = read_body(body, headers, state.config.max_body_bytes).await?;
    let request = Envelope::parse(&body)?;
    if !who.can_call(id, Some(&request.capability)) {
        return Err(ApiError::Forbidden(format!(
            "key {:?} may not invoke {}/{}",
            who.key_id, id, request.capability
        )));
    }
    let declared = &route.plugin.spec.capabilities;
    let unknown_capability = || ApiError::UnknownCapability {
        plugin: id.to_owned(),
        capability: request.capability.clone().into_owned(),
    };
    // The capability, its input schema, whether it is a management one and what it costs:
    // from the manifest (borrowed), or, when the manifest declares none, as the runtime
    // reports them.
    let (capability, schema, management, cost): (
        String,
        Cow<'_, serde_json::Value>,
        bool,
        Option<Cow<'_, Cost>>,
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
        match caps.into_iter().find(|c| c.id == request.capability) {
            Some(c) => (
                c.id,
                Cow::Owned(c.input_schema),
                c.management,
                c.cost.map(Cow::Owned),
            ),
            // A plugin that is not running cannot report capabilities its manifest leaves out.
            None if route.endpoints.is_empty() => {
                return Err(Box::pin(unavailable(state, id)).await);
            }
            None => return Err(unknown_capability()),
        }
    } else {
        match declared.iter().find(|c| c.id == request.capability) {
            Some(c) => (
                c.id.clone(),
                c.input_schema
                    .as_ref()
                    .map_or(Cow::Owned(serde_json::Value::Bool(true)), Cow::Borrowed),
                c.management,
                c.cost.as_ref().map(Cow::Borrowed),
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
    let payload = request.payload.unwrap_or(RawValue::NULL);
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
    forward::forward(state, route, trace, &capability, payload, request_id).await
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
