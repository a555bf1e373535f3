//! `multipart/form-data` invokes (an HTML form, `curl -F`) turned into the JSON invoke they
//! stand for, like a raw body (binary.rs).
//!
//! ```text
//!  POST /api/plugins/{id}/invoke?capability=face.detect   Content-Type: multipart/form-data
//!    image=@face.png (image/png)   min_face_size=40   annotate=true
//!   ─▶ the file part: base64 in the property declared for its media type (as binary.rs)
//!   ─▶ the other parts: the payload's options, typed by the input schema (integer 40, true)
//!   ─▶ {"capability": "face.detect", "payload": {"image": "<base64>", "min_face_size": 40, …}}
//! ```
//!
//! The capability comes from `?capability=` or a `capability` part. The body has already been
//! read under the gateway's body limit (413), so multer parses bytes in memory; everything
//! after this step is the JSON invoke's (scopes, rate limit, schema validation, metrics).

use axum::body::Bytes;
use axum::http::{HeaderMap, header};
use base64::Engine as _;
use serde_json::{Map, Value};

use crate::problem::ApiError;

/// The form's boundary when the body is `multipart/form-data` (`None` for any other body);
/// a multipart content type without a usable boundary is a 400.
pub fn boundary(headers: &HeaderMap) -> Option<Result<String, ApiError>> {
    let value = headers.get(header::CONTENT_TYPE)?.to_str().ok()?;
    let essence = value.split(';').next()?.trim();
    if !essence.eq_ignore_ascii_case("multipart/form-data") {
        return None;
    }
    Some(multer::parse_boundary(value).map_err(|e| {
        ApiError::BadRequest(format!(
            "the multipart/form-data content type has no usable boundary: {e}"
        ))
    }))
}

/// One part of the form, read whole.
struct Part {
    name: String,
    /// Sent as a file (`filename=` in its Content-Disposition).
    file: bool,
    /// Its Content-Type, lower-cased essence.
    media: Option<String>,
    bytes: Bytes,
}

/// The parts of a form, in order; a body that is not well-formed multipart is a 400.
async fn parts(boundary: String, body: Bytes) -> Result<Vec<Part>, ApiError> {
    let malformed = |e: multer::Error| {
        ApiError::BadRequest(format!("the multipart/form-data body is malformed: {e}"))
    };
    let stream = futures::stream::once(async move { Ok::<_, std::convert::Infallible>(body) });
    let mut form = multer::Multipart::new(stream, boundary);
    let mut parts = Vec::new();
    while let Some(field) = form.next_field().await.map_err(malformed)? {
        let name = field.name().map(str::to_owned).ok_or_else(|| {
            ApiError::BadRequest(
                "a part of the multipart/form-data body has no name (Content-Disposition: form-data; name=…)"
                    .into(),
            )
        })?;
        let file = field.file_name().is_some();
        let media = field
            .content_type()
            .map(|m| m.essence_str().to_ascii_lowercase());
        let bytes = field.bytes().await.map_err(malformed)?;
        parts.push(Part {
            name,
            file,
            media,
            bytes,
        });
    }
    Ok(parts)
}

/// Whether `name` is a property of `schema` that holds base64 bytes.
fn is_binary_property(schema: &Value, name: &str) -> bool {
    schema
        .get("properties")
        .and_then(|p| p.get(name))
        .and_then(|p| p.get("contentEncoding"))
        .and_then(Value::as_str)
        == Some("base64")
}

/// A form field's text as the JSON value its property declares: a form carries only text, so
/// `40` for an integer property is the number 40 and `true` for a boolean one is `true`. Text
/// that does not parse stays a string, and the schema check names the field (400).
fn typed(schema: &Value, name: &str, text: &str) -> Value {
    let types: Vec<&str> = match schema
        .get("properties")
        .and_then(|p| p.get(name))
        .and_then(|p| p.get("type"))
    {
        Some(Value::String(t)) => vec![t.as_str()],
        Some(Value::Array(ts)) => ts.iter().filter_map(Value::as_str).collect(),
        _ => Vec::new(),
    };
    let parsed = serde_json::from_str::<Value>(text.trim()).ok();
    let fits = |v: &Value| {
        types.iter().any(|t| match *t {
            "integer" | "number" => v.is_number(),
            "boolean" => v.is_boolean(),
            "array" => v.is_array(),
            "object" => v.is_object(),
            "null" => v.is_null(),
            _ => false,
        })
    };
    // A string property keeps the text as it is, even when it would parse as something else.
    if types.contains(&"string") {
        return Value::String(text.to_owned());
    }
    match parsed {
        Some(v) if fits(&v) => v,
        _ => Value::String(text.to_owned()),
    }
}

/// The JSON invoke a multipart form stands for: its one file part in the base64 property the
/// capability declares for the part's media type, its other parts as the payload's options.
pub async fn envelope(
    capabilities: &[bkg_core::CapabilitySpec],
    plugin: &str,
    query: Option<&str>,
    boundary: String,
    body: Bytes,
) -> Result<Bytes, ApiError> {
    let parts = parts(boundary, body).await?;
    let bad = |m: String| ApiError::BadRequest(m);
    let mut names = std::collections::HashSet::new();
    if let Some(twice) = parts.iter().find(|p| !names.insert(p.name.as_str())) {
        return Err(bad(format!(
            "the multipart/form-data body has the part `{}` twice",
            twice.name
        )));
    }
    let from_form = parts
        .iter()
        .find(|p| p.name == "capability" && !p.file)
        .map(|p| String::from_utf8_lossy(&p.bytes).trim().to_owned());
    let capability = match (super::binary::query_param(query, "capability"), from_form) {
        (Some(q), Some(f)) if q != f => {
            return Err(bad(format!(
                "the query names capability {q:?} and the form's `capability` part {f:?}"
            )));
        }
        (Some(c), _) | (None, Some(c)) => c,
        (None, None) => {
            return Err(bad(
                "a multipart/form-data invoke names its capability: ?capability=<id> or a `capability` part"
                    .into(),
            ));
        }
    };
    let Some(spec) = capabilities.iter().find(|c| c.id == capability) else {
        return Err(ApiError::UnknownCapability {
            plugin: plugin.to_owned(),
            capability,
        });
    };
    let schema = spec.input_schema.as_ref().unwrap_or(&Value::Null);
    // The file: a part sent with a filename, or one named after a base64 property.
    let mut files = parts
        .iter()
        .filter(|p| p.file || is_binary_property(schema, &p.name));
    let Some(file) = files.next() else {
        return Err(bad(format!(
            "the multipart/form-data body has no file part: send the image as a part with a \
             filename (curl -F image=@face.jpg) to {plugin}/{capability}"
        )));
    };
    if let Some(other) = files.next() {
        return Err(bad(format!(
            "the multipart/form-data body has more than one file part (`{}` and `{}`); send one",
            file.name, other.name
        )));
    }
    let media = file.media.as_deref().unwrap_or("application/octet-stream");
    let (_, field) = super::binary::declared(capabilities, plugin, &capability, media)?;
    if file.bytes.is_empty() {
        return Err(bad(format!(
            "the file part `{}` is empty: `{field}` needs the bytes",
            file.name
        )));
    }
    let mut payload = Map::new();
    for part in parts
        .iter()
        .filter(|p| p.name != file.name && p.name != "capability")
    {
        let text = std::str::from_utf8(&part.bytes).map_err(|_| {
            bad(format!(
                "the form field `{}` is not UTF-8 text; only one part may be a file",
                part.name
            ))
        })?;
        payload.insert(part.name.clone(), typed(schema, &part.name, text));
    }
    payload.insert(
        field.to_owned(),
        Value::String(base64::engine::general_purpose::STANDARD.encode(&file.bytes)),
    );
    let envelope = serde_json::json!({"capability": capability, "payload": payload});
    Ok(Bytes::from(envelope.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::StatusCode;
    use serde_json::json;

    fn status(r: &Result<Bytes, ApiError>) -> Option<StatusCode> {
        r.as_ref().err().map(ApiError::status)
    }

    fn detect() -> Vec<bkg_core::CapabilitySpec> {
        serde_json::from_value(json!([{
            "id": "face.detect",
            "inputSchema": {"type": "object", "properties": {
                "image": {"type": "string", "contentEncoding": "base64", "contentMediaType": "image/*"},
                "min_face_size": {"type": "integer"},
                "score_threshold": {"type": "number"},
                "annotate": {"type": "boolean"},
                "label": {"type": "string"}
            }}
        }, {"id": "plain", "inputSchema": {"type": "object"}}]))
        .expect("specs")
    }

    const B: &str = "XyZ";

    /// A file part's filename and content type.
    type File<'a> = Option<(&'a str, Option<&'a str>)>;

    /// A form body: (name, Some((filename, content type)) for a file, bytes).
    fn form(parts: &[(&str, File<'_>, &[u8])]) -> Bytes {
        let mut out = Vec::new();
        for (name, file, bytes) in parts {
            out.extend_from_slice(format!("--{B}\r\n").as_bytes());
            match file {
                Some((filename, media)) => {
                    out.extend_from_slice(
                        format!(
                            "Content-Disposition: form-data; name=\"{name}\"; filename=\"{filename}\"\r\n"
                        )
                        .as_bytes(),
                    );
                    if let Some(m) = media {
                        out.extend_from_slice(format!("Content-Type: {m}\r\n").as_bytes());
                    }
                }
                None => out.extend_from_slice(
                    format!("Content-Disposition: form-data; name=\"{name}\"\r\n").as_bytes(),
                ),
            }
            out.extend_from_slice(b"\r\n");
            out.extend_from_slice(bytes);
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(format!("--{B}--\r\n").as_bytes());
        Bytes::from(out)
    }

    async fn run(query: Option<&str>, body: Bytes) -> Result<Bytes, ApiError> {
        envelope(&detect(), "faces", query, B.into(), body).await
    }

    #[test]
    fn only_multipart_form_data_takes_this_path() {
        let mut h = HeaderMap::new();
        assert!(boundary(&h).is_none());
        h.insert(header::CONTENT_TYPE, "image/png".parse().expect("hv"));
        assert!(boundary(&h).is_none());
        h.insert(
            header::CONTENT_TYPE,
            "Multipart/Form-Data; boundary=abc".parse().expect("hv"),
        );
        assert_eq!(boundary(&h).and_then(Result::ok).as_deref(), Some("abc"));
        h.insert(
            header::CONTENT_TYPE,
            "multipart/form-data".parse().expect("hv"),
        );
        let refused = boundary(&h).and_then(Result::err).map(|e| e.status());
        assert_eq!(refused, Some(StatusCode::BAD_REQUEST));
    }

    #[tokio::test]
    async fn the_file_becomes_base64_and_the_fields_typed_options() {
        let body = form(&[
            ("min_face_size", None, b"40"),
            (
                "photo",
                Some(("a.jpg", Some("image/jpeg"))),
                b"\xff\xd8jpeg",
            ),
            ("annotate", None, b"true"),
            ("score_threshold", None, b"2.5"),
            ("label", None, b"42"),
        ]);
        let out = run(Some("capability=face.detect"), body).await.expect("ok");
        let v: Value = serde_json::from_slice(&out).expect("json");
        assert_eq!(
            v,
            json!({"capability": "face.detect", "payload": {
                "image": "/9hqcGVn", "min_face_size": 40, "annotate": true,
                "score_threshold": 2.5, "label": "42"
            }})
        );
    }

    #[tokio::test]
    async fn the_capability_may_be_a_part_and_the_file_a_part_named_after_the_property() {
        let body = form(&[
            ("capability", None, b"face.detect"),
            ("image", None, b"\xff\xd8jpeg"),
        ]);
        // No filename and no content type: application/octet-stream, which image/* does not cover.
        assert_eq!(
            status(&run(None, body).await),
            Some(StatusCode::UNSUPPORTED_MEDIA_TYPE)
        );
        let body = form(&[
            ("capability", None, b"face.detect"),
            ("image", Some(("x.png", Some("image/png"))), b"png"),
            ("min_face_size", None, b"big"),
        ]);
        let v: Value = serde_json::from_slice(&run(None, body).await.expect("ok")).expect("json");
        // Text that is not an integer stays text: the schema check then names the field.
        assert_eq!(
            v["payload"],
            json!({"image": "cG5n", "min_face_size": "big"})
        );
    }

    #[tokio::test]
    async fn what_cannot_be_mapped_is_refused_saying_why() {
        let png = |name: &'static str| (name, Some(("x.png", Some("image/png"))), &b"png"[..]);
        let cases: Vec<(Option<&str>, Bytes, StatusCode, &str)> = vec![
            (
                Some("capability=face.detect"),
                Bytes::from_static(b"--XyZ\r\nnot a header\r\n"),
                StatusCode::BAD_REQUEST,
                "malformed",
            ),
            (
                Some("capability=face.detect"),
                form(&[("min_face_size", None, b"40")]),
                StatusCode::BAD_REQUEST,
                "no file part",
            ),
            (
                Some("capability=face.detect"),
                form(&[png("a"), png("b")]),
                StatusCode::BAD_REQUEST,
                "more than one file",
            ),
            (
                Some("capability=face.detect"),
                form(&[png("a"), png("a")]),
                StatusCode::BAD_REQUEST,
                "twice",
            ),
            (
                Some("capability=face.detect"),
                form(&[("f", Some(("x.txt", Some("text/plain"))), b"hi")]),
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "text/plain",
            ),
            (
                Some("capability=face.detect"),
                form(&[("f", Some(("x.png", Some("image/png"))), b"")]),
                StatusCode::BAD_REQUEST,
                "is empty",
            ),
            (
                None,
                form(&[png("f")]),
                StatusCode::BAD_REQUEST,
                "?capability=",
            ),
            (
                Some("capability=plain"),
                form(&[png("f")]),
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "image/png",
            ),
            (
                Some("capability=nope"),
                form(&[png("f")]),
                StatusCode::NOT_FOUND,
                "nope",
            ),
            (
                Some("capability=plain"),
                form(&[("capability", None, b"face.detect"), png("f")]),
                StatusCode::BAD_REQUEST,
                "capability",
            ),
        ];
        for (query, body, code, says) in cases {
            let r = run(query, body).await;
            assert_eq!(status(&r), Some(code), "{query:?} {says}");
            let message = r.err().map(|e| e.to_string()).unwrap_or_default();
            assert!(message.contains(says), "{message:?} should say {says:?}");
        }
    }
}
