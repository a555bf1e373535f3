//! Raw binary bodies (an `image/png` upload) turned into the JSON invoke they stand for.
//!
//! ```text
//!  POST /api/plugins/{id}/invoke?capability=face.detect   Content-Type: image/jpeg   <bytes>
//!   ─▶ the capability's input schema names the property that takes it:
//!        {"image": {"type": "string", "contentEncoding": "base64", "contentMediaType": "image/*"}}
//!   ─▶ {"capability": "face.detect", "payload": {"image": "<base64>"}}  (then the JSON path)
//! ```
//!
//! A capability declares the media types it accepts with JSON Schema's own content keywords,
//! so the manifest, the CRD and the runtime's descriptor need nothing new. Everything after
//! this step (scopes, rate limit, validation, forwarding, metrics) is the JSON invoke's; the
//! body limit applies to the raw bytes as they arrive.

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode, header};
use base64::Engine as _;
use serde_json::{Value, json};

use crate::problem::ApiError;

/// The body's media type when it is a raw binary one (`image/*`, `application/octet-stream`),
/// lower-cased and without parameters; `None` for JSON and for no content type.
pub fn raw_media_type(headers: &HeaderMap) -> Option<String> {
    let value = headers.get(header::CONTENT_TYPE)?.to_str().ok()?;
    let essence = value.split(';').next()?.trim().to_ascii_lowercase();
    (essence.starts_with("image/") || essence == "application/octet-stream").then_some(essence)
}

/// The value of `name` in a query string, percent-decoded.
pub(super) fn query_param(query: Option<&str>, name: &str) -> Option<String> {
    query?.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (k == name).then(|| {
            percent_encoding::percent_decode_str(&v.replace('+', " "))
                .decode_utf8_lossy()
                .into_owned()
        })
    })
}

/// Whether `declared` (`image/png`, `image/*`, `*/*`) covers `media`.
fn covers(declared: &str, media: &str) -> bool {
    let declared = declared.trim().to_ascii_lowercase();
    declared == media
        || declared == "*/*"
        || declared
            .strip_suffix("/*")
            .is_some_and(|top| media.split('/').next() == Some(top))
}

/// The property of `schema` that takes `media` as base64: the one whose `contentEncoding` is
/// `base64` and whose `contentMediaType` covers it.
pub fn binary_property<'s>(schema: &'s Value, media: &str) -> Option<&'s str> {
    schema
        .get("properties")?
        .as_object()?
        .iter()
        .find_map(|(name, prop)| {
            let base64 = prop.get("contentEncoding").and_then(Value::as_str) == Some("base64");
            let accepts = prop
                .get("contentMediaType")
                .and_then(Value::as_str)
                .is_some_and(|d| covers(d, media));
            (base64 && accepts).then_some(name.as_str())
        })
}

/// The JSON invoke a raw body stands for: the capability from `?capability=`, the body in the
/// property its input schema declares for this media type.
pub fn envelope(
    capabilities: &[bkg_core::CapabilitySpec],
    plugin: &str,
    query: Option<&str>,
    media: &str,
    body: &[u8],
) -> Result<Bytes, ApiError> {
    let capability = query_param(query, "capability").ok_or_else(|| {
        ApiError::BadRequest(format!(
            "a {media} body names its capability in the query: ?capability=<id>"
        ))
    })?;
    let (_, field) = declared(capabilities, plugin, &capability, media)?;
    if body.is_empty() {
        return Err(ApiError::BadRequest(format!(
            "the {media} body is empty: `{field}` needs the bytes"
        )));
    }
    let encoded = base64::engine::general_purpose::STANDARD.encode(body);
    let envelope = json!({"capability": capability, "payload": {field: encoded}});
    Ok(Bytes::from(envelope.to_string()))
}

/// The input schema of `capability` and its property that takes `media` as base64: a 404 for
/// a capability the plugin does not have, a 415 when no property declares the media type.
pub(super) fn declared<'c>(
    capabilities: &'c [bkg_core::CapabilitySpec],
    plugin: &str,
    capability: &str,
    media: &str,
) -> Result<(&'c Value, &'c str), ApiError> {
    let Some(spec) = capabilities.iter().find(|c| c.id == capability) else {
        return Err(ApiError::UnknownCapability {
            plugin: plugin.to_owned(),
            capability: capability.to_owned(),
        });
    };
    spec.input_schema
        .as_ref()
        .and_then(|s| Some((s, binary_property(s, media)?)))
        .ok_or_else(|| ApiError::Body {
            status: StatusCode::UNSUPPORTED_MEDIA_TYPE,
            detail: format!(
                "{plugin}/{capability} does not accept {media} bodies: send JSON, or declare a \
                 property with contentEncoding base64 and a contentMediaType covering it"
            ),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn detect() -> Vec<bkg_core::CapabilitySpec> {
        serde_json::from_value(json!([{
            "id": "face.detect",
            "inputSchema": {"type": "object", "properties": {
                "image": {"type": "string", "contentEncoding": "base64", "contentMediaType": "image/*"},
                "annotate": {"type": "boolean"}
            }}
        }, {"id": "plain", "inputSchema": {"type": "object"}}]))
        .expect("specs")
    }

    #[test]
    fn only_raw_media_types_take_this_path() {
        let mut h = HeaderMap::new();
        assert_eq!(raw_media_type(&h), None);
        h.insert(
            header::CONTENT_TYPE,
            "application/json".parse().expect("hv"),
        );
        assert_eq!(raw_media_type(&h), None);
        h.insert(header::CONTENT_TYPE, "Image/PNG; q=1".parse().expect("hv"));
        assert_eq!(raw_media_type(&h).as_deref(), Some("image/png"));
    }

    #[test]
    fn a_raw_image_becomes_the_declared_property_in_base64() {
        let out = envelope(
            &detect(),
            "faces",
            Some("x=1&capability=face.detect"),
            "image/jpeg",
            b"\xff\xd8jpeg",
        )
        .expect("envelope");
        let v: Value = serde_json::from_slice(&out).expect("json");
        assert_eq!(
            v,
            json!({"capability": "face.detect", "payload": {"image": "/9hqcGVn"}})
        );
    }

    #[test]
    fn what_cannot_be_mapped_is_refused_saying_why() {
        let status = |r: Result<Bytes, ApiError>| r.err().map(|e| e.status());
        assert_eq!(
            status(envelope(&detect(), "f", None, "image/png", b"x")),
            Some(StatusCode::BAD_REQUEST)
        );
        assert_eq!(
            status(envelope(
                &detect(),
                "f",
                Some("capability=plain"),
                "image/png",
                b"x"
            )),
            Some(StatusCode::UNSUPPORTED_MEDIA_TYPE)
        );
        assert_eq!(
            status(envelope(
                &detect(),
                "f",
                Some("capability=face.detect"),
                "application/octet-stream",
                b"x"
            )),
            Some(StatusCode::UNSUPPORTED_MEDIA_TYPE)
        );
        assert_eq!(
            status(envelope(
                &detect(),
                "f",
                Some("capability=nope"),
                "image/png",
                b"x"
            )),
            Some(StatusCode::NOT_FOUND)
        );
        assert_eq!(
            status(envelope(
                &detect(),
                "f",
                Some("capability=face.detect"),
                "image/png",
                b""
            )),
            Some(StatusCode::BAD_REQUEST)
        );
    }
}
