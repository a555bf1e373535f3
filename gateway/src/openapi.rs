//! The OpenAPI 3.1 document of the REST API, generated from the handlers' annotations and the
//! wire types: served at `/api/openapi.json`, checked by schemathesis in `make test`.
//!
//! Every error is one problem+json shape; each status has one named response here, and every
//! `/api` operation also lists 401 and 403 (the bearer scheme applies to all of them).

use bkg_core::wire::{
    Capability, ConditionInfo, FieldError, Instance, InvokeRequest, LogLine, Logs, Overview,
    PROBLEM_JSON, PluginEvent, PluginInfo, PluginSparkline, Problem, ResourcesInfo, ScaleEvent,
    ScalingInfo, Telemetry, TelemetryHistory, TelemetrySample,
};
use utoipa::openapi::header::HeaderBuilder;
use utoipa::openapi::response::{Response, ResponseBuilder};
use utoipa::openapi::schema::{ObjectBuilder, Type};
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::openapi::{Content, Ref, RefOr};
use utoipa::{Modify, OpenApi, ToSchema};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "bkg gateway",
        description = "Runs ML plugins and invokes their capabilities. Every /api route needs \
            `Authorization: Bearer <key>` with the scope it names (read, invoke[:plugin[/capability]], \
            manage:<plugin>, admin). A management capability (e.g. model.load, model.unload) needs \
            admin or manage:<plugin>, which no invoke scope grants. Errors are RFC 9457 problem+json with a request_id. Live events are served on \
            the WebSockets /ws/plugins and /ws/plugins/{id} (subprotocol bkg.v1), which OpenAPI \
            does not describe.",
        license(name = "Apache-2.0", identifier = "Apache-2.0")
    ),
    paths(
        crate::api::healthz,
        crate::api::whoami,
        crate::keys::list,
        crate::keys::create,
        crate::keys::revoke,
        crate::api::list,
        crate::api::get_one,
        crate::api::telemetry,
        crate::api::telemetry_history,
        crate::api::overview,
        crate::api::logs,
        crate::api::invoke,
        crate::api::invoke_stream,
        crate::api::start,
        crate::api::stop,
        crate::api::restart,
        crate::api::set_config,
        crate::api::aliases,
        crate::openai::doc::embeddings,
        crate::openai::doc::rerank,
        crate::openai::doc::chat_completions,
        crate::openai::doc::completions,
        crate::openai::doc::models,
    ),
    components(
        responses(
            BadRequest, NotFound, Conflict, TooLarge, PluginRefused, RateLimited, PluginFailed,
            BadGateway, Unavailable, Timeout, UnsupportedMediaType
        ),
        schemas(
        PluginInfo, Capability, Instance, ResourcesInfo, ScalingInfo, ScaleEvent, ConditionInfo, InvokeRequest,
        Telemetry, TelemetryHistory, TelemetrySample, PluginEvent, Overview, PluginSparkline,
        Logs, LogLine, Problem, FieldError, WhoAmI, LiveMessage,
        crate::auth::KeyInfo, crate::keys::CreateKey, crate::keys::CreatedKey, crate::keys::ScopeName,
        bkg_core::wire::AliasShare, crate::aliases::AliasInfo, crate::aliases::AliasTarget,
        crate::openai::ErrorBody, crate::openai::OpenAiError, crate::openai::ModelList, crate::openai::Model,
        crate::openai::doc::EmbeddingsRequest, crate::openai::doc::RerankRequest,
        crate::openai::doc::ChatCompletionRequest, crate::openai::doc::CompletionRequest,
        crate::openai::doc::ChatMessage, crate::openai::doc::StreamOptions
    )),
    modifiers(&Security),
    security(("bearer" = [])),
    tags(
        (name = "plugins", description = "Read plugins, their telemetry and logs (scope read)"),
        (name = "invoke", description = "Call a capability (scope invoke; a management capability: manage:<plugin> or admin)"),
        (name = "lifecycle", description = "Start, stop, restart and reconfigure (scope admin)"),
        (name = "auth", description = "The calling key"),
        (name = "keys", description = "List, create and revoke API keys (scope admin). Locally they live in the key file; on a cluster in a Secret, which the API does not edit (409)"),
        (name = "health", description = "Open endpoints for probes and Prometheus"),
        (name = "openai", description = "OpenAI-, TEI- and Cohere-compatible routes: `model` is a plugin id or an alias (spec.aliases, split by weight). The same keys, scopes (invoke), limits and validation as invoke; errors in OpenAI's shape {\"error\": {message, type, param, code}}"),
    )
)]
pub struct ApiDoc;

/// The document as JSON text (built once).
pub fn document() -> &'static str {
    static DOC: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    DOC.get_or_init(|| ApiDoc::openapi().to_json().unwrap_or_default())
}

// Shapes the handlers build with `json!` (api::whoami, ws.rs): listed among the schemas so that the
// admin UI's generated types (admin-ui/src/app/core/api.d.ts) have them. Keep them in step.

/// What `GET /api/whoami` answers.
#[derive(ToSchema)]
pub struct WhoAmI {
    /// The key's id in the keys file.
    pub key_id: String,
    /// `read`, `invoke`, `invoke:<plugin>[/<capability>]`, `manage:<plugin>` or `admin`.
    pub scopes: Vec<String>,
}

/// A `multipart/form-data` invoke: one file part, and the capability's other payload fields as
/// text fields (`min_face_size=40`, `annotate=true`), converted to the types the input schema
/// declares. The gateway forwards it as the JSON invoke it stands for.
#[derive(ToSchema)]
pub struct MultipartInvoke {
    /// The file, sent with a filename (any part name, or the name of the base64 property). Its
    /// Content-Type must be one the capability declares (`contentMediaType`).
    #[schema(content_media_type = "application/octet-stream")]
    pub file: Vec<u8>,
    /// The capability, when the query does not name it.
    pub capability: Option<String>,
}

/// One message on the live WebSockets `/ws/plugins` and `/ws/plugins/{id}` (subprotocol bkg.v1),
/// which this document does not describe as routes.
#[derive(serde::Serialize, ToSchema)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum LiveMessage {
    /// The plugin's aggregated telemetry, every second.
    Telemetry(Telemetry),
    /// One new log line.
    Log {
        plugin_id: String,
        #[serde(flatten)]
        line: LogLine,
    },
    /// The plugin whenever its status, readiness, instances or last error change.
    Status { plugin: Box<PluginInfo> },
}

/// The bearer scheme, and 401/403 on every operation it guards.
struct Security;

impl Modify for Security {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                Http::builder()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("bkg API key")
                    .build(),
            ),
        );
        for (name, response) in [
            (
                "Unauthorized",
                problem("No key, or a key that is not valid"),
            ),
            (
                "Forbidden",
                problem("The key lacks the scope this route needs"),
            ),
        ] {
            components
                .responses
                .insert(name.to_owned(), RefOr::T(response));
        }
        for (path, item) in openapi.paths.paths.iter_mut() {
            if !path.starts_with("/api/") {
                continue;
            }
            for operation in [&mut item.get, &mut item.post, &mut item.delete]
                .into_iter()
                .flatten()
            {
                let responses = &mut operation.responses.responses;
                responses.insert(
                    "401".into(),
                    RefOr::Ref(Ref::from_response_name("Unauthorized")),
                );
                responses.insert(
                    "403".into(),
                    RefOr::Ref(Ref::from_response_name("Forbidden")),
                );
            }
        }
    }
}

/// A problem+json response.
fn problem(description: &str) -> Response {
    ResponseBuilder::new()
        .description(description)
        .content(
            PROBLEM_JSON,
            Content::new(Some(Ref::from_schema_name(Problem::name()))),
        )
        .build()
}

/// A problem+json response that tells the client when to retry.
fn problem_with_retry(description: &str) -> Response {
    let mut response = problem(description);
    response.headers.insert(
        "Retry-After".to_owned(),
        RefOr::T(
            HeaderBuilder::new()
                .schema(Some(
                    ObjectBuilder::new()
                        .schema_type(Type::Integer)
                        .minimum(Some(0))
                        .build(),
                ))
                .description(Some("Seconds to wait before retrying"))
                .build(),
        ),
    );
    response
}

macro_rules! problem_responses {
    ($($name:ident => $make:ident($description:literal);)*) => {$(
        #[doc = $description]
        pub struct $name;

        impl<'r> utoipa::ToResponse<'r> for $name {
            fn response() -> (&'r str, RefOr<Response>) {
                (stringify!($name), RefOr::T($make($description)))
            }
        }
    )*};
}

problem_responses! {
    BadRequest => problem("Malformed JSON, a body of the wrong shape, or a payload that violates the capability's input schema (errors[] names each field)");
    NotFound => problem("No such plugin or capability");
    Conflict => problem("The plugin cannot do this now (e.g. its manifest is invalid)");
    TooLarge => problem("The request body is larger than the gateway accepts, or the call costs more rate-limit units than the capability's burst (cost-over-burst)");
    PluginRefused => problem("The plugin refused the input");
    RateLimited => problem_with_retry("The key's rate limit for this capability is used up, or the plugin is overloaded");
    PluginFailed => problem("The plugin failed while serving the call");
    BadGateway => problem("The plugin's answer could not be relayed");
    Unavailable => problem_with_retry("The plugin has no ready replica (starting, stopped or in error)");
    Timeout => problem("The plugin did not answer within its timeout");
    UnsupportedMediaType => problem("The capability declares no property for the body's (or the file part's) media type");
}

#[cfg(test)]
mod tests {
    use serde_json::Value;

    #[test]
    fn the_document_describes_every_route_with_auth_and_errors() {
        let doc: Value = serde_json::from_str(super::document()).expect("JSON");
        assert_eq!(doc["openapi"], "3.1.0");
        assert_eq!(
            doc["components"]["securitySchemes"]["bearer"]["scheme"],
            "bearer"
        );
        let paths = doc["paths"].as_object().expect("paths");
        for route in [
            "/api/plugins",
            "/api/plugins/{id}",
            "/api/plugins/{id}/invoke",
            "/api/plugins/{id}/invoke/stream",
            "/api/plugins/{id}/start",
            "/api/plugins/{id}/stop",
            "/api/plugins/{id}/restart",
            "/api/plugins/{id}/config",
            "/api/plugins/{id}/telemetry",
            "/api/plugins/{id}/telemetry/history",
            "/api/overview",
            "/api/plugins/{id}/logs",
            "/api/whoami",
            "/api/keys",
            "/api/keys/{id}",
            "/healthz",
            "/api/aliases",
            "/v1/embeddings",
            "/v1/rerank",
            "/v1/chat/completions",
            "/v1/completions",
            "/v1/models",
        ] {
            assert!(paths.contains_key(route), "{route} missing");
        }
        // Served on the metrics listener only, not on the port this document describes.
        assert!(!paths.contains_key("/metrics"));
        let invoke = &doc["paths"]["/api/plugins/{id}/invoke"]["post"]["responses"];
        for code in [
            "200", "400", "401", "403", "404", "413", "415", "422", "429", "500", "502", "503",
            "504",
        ] {
            assert!(invoke.get(code).is_some(), "invoke lacks {code}");
        }
        // Every response reference resolves (openapi-typescript refuses a dangling one).
        let text = doc.to_string();
        for name in text.split("\"#/components/responses/").skip(1) {
            let name = &name[..name.find('"').expect("closing quote")];
            assert!(
                doc["components"]["responses"].get(name).is_some(),
                "response {name} is referenced but not declared"
            );
        }
        // Files: as the raw body, or as a form's file part.
        let bodies = &doc["paths"]["/api/plugins/{id}/invoke"]["post"]["requestBody"]["content"];
        for media in ["application/json", "multipart/form-data", "image/*"] {
            assert!(bodies.get(media).is_some(), "invoke takes no {media}");
        }
        assert!(
            bodies["multipart/form-data"]["schema"]["properties"]
                .get("file")
                .is_some(),
            "{bodies:#}"
        );
        assert_eq!(
            doc["components"]["responses"]["RateLimited"]["headers"]["Retry-After"]["schema"]["type"],
            "integer"
        );
        assert!(
            doc["paths"]["/healthz"]["get"]["security"] == serde_json::json!([{}]),
            "healthz is open"
        );
        // The admin UI's generated types need the shapes no route names as its body.
        for schema in ["WhoAmI", "LiveMessage"] {
            assert!(
                doc["components"]["schemas"].get(schema).is_some(),
                "{schema} missing"
            );
        }
    }
}
