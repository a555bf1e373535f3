//! Files through the invoke route, against a runtime stand-in on loopback: a raw `image/png`
//! body and a `multipart/form-data` upload reach the plugin as the same JSON payload (the
//! file in the base64 property the capability declares, the form's fields typed by its
//! schema), under the same keys, scopes, body limit, validation and metrics as JSON; what
//! cannot be mapped is a 400/413/415 problem naming the problem, and the plugin never sees it.

mod common;

use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::http::{Request, StatusCode};
use base64::Engine as _;
use bkg_gateway::auth::generate;
use bkg_gateway::{AppState, Config};
use serde_json::{Value, json};

type Seen = Arc<Mutex<Vec<(String, Value)>>>;

/// A runtime stand-in that records every payload and answers one face.
async fn runtime() -> (String, Seen) {
    let seen: Seen = Arc::default();
    let record = seen.clone();
    let app = axum::Router::new().route(
        "/v1/invoke/{capability}",
        axum::routing::post(
            move |axum::extract::Path(capability): axum::extract::Path<String>,
                  axum::Json(payload): axum::Json<Value>| {
                let record = record.clone();
                async move {
                    record.lock().expect("lock").push((capability, payload));
                    axum::Json(json!({"faces": [{"x": 1, "y": 2, "width": 3, "height": 4,
                        "score": 5.0}], "width": 8, "height": 8}))
                }
            },
        ),
    );
    (common::serve(app).await, seen)
}

const FACES: &str = r#"
apiVersion: bkg.rs/v1alpha1
kind: Plugin
metadata: {name: faces}
spec:
  implementation: rustyface
  capabilities:
    - id: face.detect
      inputSchema:
        type: object
        required: [image]
        additionalProperties: false
        properties:
          image: {type: string, minLength: 1, contentEncoding: base64, contentMediaType: "image/*"}
          min_face_size: {type: integer, minimum: 20}
          annotate: {type: boolean}
    - id: echo
"#;

struct Stand {
    state: AppState,
    seen: Seen,
    admin: String,
    /// May invoke `faces/echo` only.
    echo_only: String,
    _dir: tempfile::TempDir,
}

async fn stand() -> Stand {
    let (url, seen) = runtime().await;
    let dir = tempfile::tempdir().expect("dir");
    let (admin, a) = generate("admin", &["admin".to_owned()]).expect("key");
    let (echo_only, e) = generate("echo-only", &["invoke:faces/echo".to_owned()]).expect("key");
    let keys = common::key_store(dir.path(), vec![a, e]);
    let view = common::view(FACES, &url);
    let config = Config {
        max_body_bytes: 4096,
        ..Config::default()
    };
    Stand {
        state: AppState::new(config, Arc::new(common::Fixed(vec![view])), Arc::new(keys)),
        seen,
        admin,
        echo_only,
        _dir: dir,
    }
}

const BOUNDARY: &str = "bkg-test-boundary";

/// A form with the file (`image/png`) and the given text fields, as a browser sends it.
fn form(file: &[u8], media: &str, fields: &[(&str, &str)]) -> Vec<u8> {
    let mut body = Vec::new();
    for (name, value) in fields {
        body.extend_from_slice(
            format!(
                "--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n"
            )
            .as_bytes(),
        );
    }
    body.extend_from_slice(
        format!(
            "--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"face.png\"\r\nContent-Type: {media}\r\n\r\n"
        )
        .as_bytes(),
    );
    body.extend_from_slice(file);
    body.extend_from_slice(format!("\r\n--{BOUNDARY}--\r\n").as_bytes());
    body
}

fn post(uri: &str, key: &str, content_type: &str, body: Vec<u8>) -> Request<Body> {
    Request::builder()
        .method("POST")
        .uri(uri)
        .header("content-type", content_type)
        .header("authorization", format!("Bearer {key}"))
        .body(Body::from(body))
        .expect("request")
}

const MULTIPART: &str = "multipart/form-data; boundary=bkg-test-boundary";
const DETECT: &str = "/api/plugins/faces/invoke?capability=face.detect";
const PNG: &[u8] = b"\x89PNG\r\n\x1a\nnot really";

#[tokio::test]
async fn a_form_upload_and_a_raw_body_reach_the_plugin_as_the_same_json() {
    let s = stand().await;
    let b64 = base64::engine::general_purpose::STANDARD.encode(PNG);

    let raw = common::send(&s.state, post(DETECT, &s.admin, "image/png", PNG.to_vec())).await;
    assert_eq!(raw.status, StatusCode::OK, "{:?}", raw.json());
    let fields = [("min_face_size", "40"), ("annotate", "true")];
    let upload = common::send(
        &s.state,
        post(DETECT, &s.admin, MULTIPART, form(PNG, "image/png", &fields)),
    )
    .await;
    assert_eq!(upload.status, StatusCode::OK, "{:?}", upload.json());
    assert_eq!(upload.json(), raw.json());
    // The capability may also be a field of the form.
    let fields = [("capability", "face.detect")];
    let upload = common::send(
        &s.state,
        post(
            "/api/plugins/faces/invoke",
            &s.admin,
            MULTIPART,
            form(PNG, "image/png", &fields),
        ),
    )
    .await;
    assert_eq!(upload.status, StatusCode::OK, "{:?}", upload.json());

    let seen = s.seen.lock().expect("lock").clone();
    assert_eq!(
        seen,
        vec![
            ("face.detect".to_owned(), json!({"image": b64})),
            (
                "face.detect".to_owned(),
                json!({"image": b64, "min_face_size": 40, "annotate": true})
            ),
            ("face.detect".to_owned(), json!({"image": b64})),
        ]
    );

    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &s.state.registry).expect("encode");
    let line = r#"bkg_gateway_invoke_requests_total{plugin="faces",capability="face.detect",code="200"} 3"#;
    assert!(text.contains(line), "{line} missing in\n{text}");
}

#[tokio::test]
async fn a_form_the_gateway_cannot_map_is_refused_before_the_plugin() {
    let s = stand().await;
    let refused = |status: StatusCode, says: &'static str| (status, says);
    let cases = [
        (
            post(DETECT, &s.admin, MULTIPART, b"--bkg-test-boundary\r\nno".to_vec()),
            refused(StatusCode::BAD_REQUEST, "malformed"),
        ),
        (
            post(DETECT, &s.admin, "multipart/form-data", form(PNG, "image/png", &[])),
            refused(StatusCode::BAD_REQUEST, "boundary"),
        ),
        (
            post(
                DETECT,
                &s.admin,
                MULTIPART,
                b"--bkg-test-boundary\r\nContent-Disposition: form-data; name=\"min_face_size\"\r\n\r\n40\r\n--bkg-test-boundary--\r\n".to_vec(),
            ),
            refused(StatusCode::BAD_REQUEST, "no file part"),
        ),
        (
            post(DETECT, &s.admin, MULTIPART, form(b"hello", "text/plain", &[])),
            refused(StatusCode::UNSUPPORTED_MEDIA_TYPE, "text/plain"),
        ),
        (
            post(DETECT, &s.admin, MULTIPART, form(b"", "image/png", &[])),
            refused(StatusCode::BAD_REQUEST, "empty"),
        ),
        (
            post(
                DETECT,
                &s.admin,
                MULTIPART,
                form(&vec![0u8; 5000], "image/png", &[]),
            ),
            refused(StatusCode::PAYLOAD_TOO_LARGE, "larger than 4096 bytes"),
        ),
        // A field that is not an integer, and one the schema does not know: the schema check
        // names them.
        (
            post(
                DETECT,
                &s.admin,
                MULTIPART,
                form(PNG, "image/png", &[("min_face_size", "tiny")]),
            ),
            refused(StatusCode::BAD_REQUEST, "min_face_size"),
        ),
        (
            post(
                DETECT,
                &s.admin,
                MULTIPART,
                form(PNG, "image/png", &[("colour", "red")]),
            ),
            refused(StatusCode::BAD_REQUEST, "colour"),
        ),
        // The key's scope covers the capability, however the body is sent.
        (
            post(DETECT, &s.echo_only, MULTIPART, form(PNG, "image/png", &[])),
            refused(StatusCode::FORBIDDEN, "face.detect"),
        ),
        (
            post(
                "/api/plugins/faces/invoke?capability=echo",
                &s.admin,
                MULTIPART,
                form(PNG, "image/png", &[]),
            ),
            refused(StatusCode::UNSUPPORTED_MEDIA_TYPE, "image/png"),
        ),
    ];
    for (request, (status, says)) in cases {
        let answer = common::send(&s.state, request).await;
        assert_eq!(answer.status, status, "{says}: {:?}", answer.json());
        assert_eq!(
            answer.header("content-type").as_deref(),
            Some("application/problem+json")
        );
        assert!(
            answer.json().to_string().contains(says),
            "{says}: {:?}",
            answer.json()
        );
    }
    assert!(s.seen.lock().expect("lock").is_empty());
}
