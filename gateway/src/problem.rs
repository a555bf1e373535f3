//! `ApiError`: every gateway error, mapped to one status code and a problem+json body.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bkg_core::wire::{FieldError, PROBLEM_JSON, Problem, ProblemKind};

use crate::backend::BackendError;

/// An error answered to an API client.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("malformed JSON: {0}")]
    MalformedJson(String),
    #[error("{0}")]
    BadRequest(String),
    #[error("request body refused: {detail}")]
    Body { status: StatusCode, detail: String },
    #[error("no plugin {0:?}")]
    UnknownPlugin(String),
    #[error("plugin {plugin:?} has no capability {capability:?}")]
    UnknownCapability { plugin: String, capability: String },
    #[error("payload does not match the input schema of {capability:?}")]
    InvalidPayload {
        capability: String,
        errors: Vec<FieldError>,
    },
    #[error("{0}")]
    Conflict(String),
    #[error("{detail}")]
    Unavailable {
        detail: String,
        retry_after: Option<u32>,
    },
    #[error("plugin {plugin:?} did not answer within {secs}s")]
    Timeout { plugin: String, secs: u64 },
    #[error("{0}")]
    BadGateway(String),
    /// A bounded queue is full (the invokes held for a plugin at zero replicas): 429.
    #[error("{0}")]
    Overloaded(String),
    #[error("{0}")]
    Internal(String),
    #[error("{0}")]
    Unauthorized(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("{detail}")]
    RateLimited { detail: String, retry_after: u32 },
    /// The call costs more rate-limit units than its bucket holds: no retry can pass.
    #[error("{0}")]
    CostOverBurst(String),
    /// A request axum refused before a handler ran (query string, path encoding).
    #[error("{detail}")]
    Rejected { status: StatusCode, detail: String },
    #[error("no route {0}")]
    NotFound(String),
    #[error("no API key {0:?}")]
    UnknownKey(String),
    #[error("method not allowed")]
    MethodNotAllowed,
}

impl ApiError {
    /// The HTTP status this error is answered with.
    pub fn status(&self) -> StatusCode {
        self.parts().0
    }

    fn parts(&self) -> (StatusCode, ProblemKind, &'static str) {
        match self {
            ApiError::MalformedJson(_) => (
                StatusCode::BAD_REQUEST,
                ProblemKind::MalformedJson,
                "Malformed JSON",
            ),
            ApiError::BadRequest(_) => (
                StatusCode::BAD_REQUEST,
                ProblemKind::BadRequest,
                "Bad request",
            ),
            ApiError::Body { status, .. } if *status == StatusCode::PAYLOAD_TOO_LARGE => {
                (*status, ProblemKind::BodyTooLarge, "Request body too large")
            }
            ApiError::Body { status, .. } => {
                (*status, ProblemKind::BadBody, "Request body refused")
            }
            ApiError::Rejected { status, .. } => {
                (*status, ProblemKind::BadRequest, "Request refused")
            }
            ApiError::UnknownPlugin(_) => (
                StatusCode::NOT_FOUND,
                ProblemKind::UnknownPlugin,
                "Unknown plugin",
            ),
            ApiError::UnknownCapability { .. } => (
                StatusCode::NOT_FOUND,
                ProblemKind::UnknownCapability,
                "Unknown capability",
            ),
            ApiError::InvalidPayload { .. } => (
                StatusCode::BAD_REQUEST,
                ProblemKind::InvalidPayload,
                "Payload violates the input schema",
            ),
            ApiError::Conflict(_) => (StatusCode::CONFLICT, ProblemKind::Conflict, "Conflict"),
            ApiError::Unavailable { .. } => (
                StatusCode::SERVICE_UNAVAILABLE,
                ProblemKind::PluginUnavailable,
                "Plugin unavailable",
            ),
            ApiError::Timeout { .. } => (
                StatusCode::GATEWAY_TIMEOUT,
                ProblemKind::InvokeTimeout,
                "Invoke timed out",
            ),
            ApiError::Overloaded(_) => (
                StatusCode::TOO_MANY_REQUESTS,
                ProblemKind::Overloaded,
                "Too many held invokes",
            ),
            ApiError::BadGateway(_) => (
                StatusCode::BAD_GATEWAY,
                ProblemKind::BadGateway,
                "Bad gateway",
            ),
            ApiError::Internal(_) => (
                StatusCode::INTERNAL_SERVER_ERROR,
                ProblemKind::Internal,
                "Internal error",
            ),
            ApiError::NotFound(_) => (StatusCode::NOT_FOUND, ProblemKind::NotFound, "Not found"),
            ApiError::UnknownKey(_) => {
                (StatusCode::NOT_FOUND, ProblemKind::NotFound, "Unknown key")
            }
            ApiError::Unauthorized(_) => (
                StatusCode::UNAUTHORIZED,
                ProblemKind::Unauthorized,
                "Unauthorized",
            ),
            ApiError::Forbidden(_) => (StatusCode::FORBIDDEN, ProblemKind::Forbidden, "Forbidden"),
            ApiError::RateLimited { .. } => (
                StatusCode::TOO_MANY_REQUESTS,
                ProblemKind::RateLimited,
                "Rate limit exceeded",
            ),
            ApiError::CostOverBurst(_) => (
                StatusCode::PAYLOAD_TOO_LARGE,
                ProblemKind::CostOverBurst,
                "Call costs more than the rate limit allows",
            ),
            ApiError::MethodNotAllowed => (
                StatusCode::METHOD_NOT_ALLOWED,
                ProblemKind::MethodNotAllowed,
                "Method not allowed",
            ),
        }
    }
}

impl ApiError {
    /// Seconds the client should wait before retrying, for the errors a retry can pass.
    pub fn retry_after(&self) -> Option<u32> {
        match self {
            ApiError::Unavailable { retry_after, .. } => *retry_after,
            ApiError::RateLimited { retry_after, .. } => Some(*retry_after),
            ApiError::Overloaded(_) => Some(1),
            _ => None,
        }
    }

    /// The first offending field of a payload that violates its schema, as a JSON pointer.
    pub fn first_field(&self) -> Option<&str> {
        match self {
            ApiError::InvalidPayload { errors, .. } => errors.first().map(|e| e.field.as_str()),
            _ => None,
        }
    }
}

impl From<BackendError> for ApiError {
    fn from(e: BackendError) -> Self {
        match e {
            BackendError::NotFound(id) => ApiError::UnknownPlugin(id),
            BackendError::Conflict(m) => ApiError::Conflict(m),
            BackendError::Unavailable(m) => ApiError::Unavailable {
                detail: m,
                retry_after: Some(1),
            },
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        self.into_problem(None)
    }
}

impl ApiError {
    /// The problem+json answer, naming the request when its id is known (routes behind the
    /// router get theirs stamped in by the request-id middleware instead).
    pub fn into_problem(self, request_id: Option<&str>) -> Response {
        let (status, kind, title) = self.parts();
        let retry_after = self.retry_after();
        let errors = match &self {
            ApiError::InvalidPayload { errors, .. } => errors.clone(),
            _ => Vec::new(),
        };
        let mut body =
            Problem::new(status.as_u16(), kind, title, self.to_string()).with_errors(errors);
        body.request_id = request_id.map(str::to_owned);
        let mut response = problem_response(status, &body, retry_after);
        if status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"bkg\""),
            );
        }
        response
    }
}

/// Serialises a problem with the right media type.
pub fn problem_response(status: StatusCode, body: &Problem, retry_after: Option<u32>) -> Response {
    let bytes = serde_json::to_vec(body).unwrap_or_default();
    let mut response = (status, bytes).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
    if let Some(secs) = retry_after {
        headers.insert(header::RETRY_AFTER, HeaderValue::from(secs));
    }
    response
}
