//! RustyFace end to end: `bkg up` with the sample manifest (`config/plugins/rustyface.yaml`)
//! detects the faces of rustface's own test image sent through the gateway as base64 JSON and
//! as a data: URL, and as a raw `image/jpeg` body, with the boxes rustface's detector finds
//! when run directly; a payload that is not an image is a 422 naming `image`, a media type the
//! capability does not declare a 415, and the plugin keeps serving.
//!
//! The test image itself (PNG) as a `multipart/form-data` upload and as a raw `image/png` body
//! answers the same faces; bad input (a truncated JPEG, a PNG that declares 100000×100000
//! pixels, empty bodies, media types the capability does not take) is a 4xx naming the
//! problem, and both the plugin and the gateway keep serving.

use std::io::Cursor;
use std::path::PathBuf;

use base64::Engine as _;
use bkg_e2e::{Stack, repo_root};
use image::ImageFormat;
use serde_json::{Value, json};

/// rustface's package directory (its `test.png`), from `cargo metadata`: offline and filtered
/// to the host (a build never downloads other platforms' packages).
fn rustface_package() -> PathBuf {
    let rustc = std::process::Command::new(std::env::var("RUSTC").unwrap_or("rustc".into()))
        .arg("-vV")
        .output()
        .expect("rustc -vV");
    let host = String::from_utf8_lossy(&rustc.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("host: ").map(str::to_owned))
        .expect("rustc -vV names the host");
    let out = std::process::Command::new(env!("CARGO"))
        .args([
            "metadata",
            "--format-version",
            "1",
            "--offline",
            "--filter-platform",
            &host,
            "--manifest-path",
        ])
        .arg(repo_root().join("Cargo.toml"))
        .output()
        .expect("cargo metadata");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let meta: Value = serde_json::from_slice(&out.stdout).expect("metadata json");
    let manifest = meta["packages"]
        .as_array()
        .and_then(|ps| ps.iter().find(|p| p["name"] == "rustface"))
        .and_then(|p| p["manifest_path"].as_str())
        .expect("rustface in cargo metadata")
        .to_owned();
    PathBuf::from(manifest).parent().expect("dir").to_owned()
}

type Boxes = Vec<(i64, i64, u64, u64)>;

/// What rustface finds directly, with the sample manifest's parameters (its example's).
fn reference(jpeg: &[u8]) -> Boxes {
    let model =
        std::fs::read(repo_root().join("plugins/rustyface/model/seeta_fd_frontal_v1.0.bin"))
            .expect("model");
    let mut detector =
        rustface::create_detector_with_model(rustface::read_model(&model[..]).expect("model"));
    detector.set_min_face_size(20);
    detector.set_score_thresh(2.0);
    detector.set_pyramid_scale_factor(0.8);
    detector.set_slide_window_step(4, 4);
    let gray = image::load_from_memory(jpeg).expect("jpeg").to_luma8();
    let (w, h) = gray.dimensions();
    let mut boxes: Boxes = detector
        .detect(&rustface::ImageData::new(&gray, w, h))
        .iter()
        .map(|f| {
            let b = f.bbox();
            (
                i64::from(b.x()),
                i64::from(b.y()),
                u64::from(b.width()),
                u64::from(b.height()),
            )
        })
        .collect();
    boxes.sort_unstable();
    boxes
}

fn boxes(body: &Value) -> Boxes {
    let mut boxes: Boxes = body["faces"]
        .as_array()
        .expect("faces")
        .iter()
        .map(|f| {
            let n = |k: &str| f[k].as_i64().expect(k);
            (n("x"), n("y"), n("width") as u64, n("height") as u64)
        })
        .collect();
    boxes.sort_unstable();
    boxes
}

#[test]
fn rustyface_detects_faces_through_the_gateway() {
    // The PNG (2 MB) base64-encoded would pass the gateway's 2 MiB body limit: send it as JPEG.
    let png = std::fs::read(rustface_package().join("test.png")).expect("rustface's test.png");
    let decoded = image::load_from_memory(&png).expect("png");
    let mut jpeg = Vec::new();
    decoded
        .to_rgb8()
        .write_to(&mut Cursor::new(&mut jpeg), ImageFormat::Jpeg)
        .expect("jpeg");
    let expected = reference(&jpeg);
    assert!(expected.len() >= 20, "rustface itself finds {expected:?}");

    let manifest = std::fs::read_to_string(repo_root().join("config/plugins/rustyface.yaml"))
        .expect("manifest");
    let stack = Stack::start(&[("rustyface.yaml", &manifest)]);
    stack.wait_running("rustyface");

    let b64 = base64::engine::general_purpose::STANDARD.encode(&jpeg);
    let r = stack.invoke("rustyface", "face.detect", json!({"image": b64}));
    assert_eq!(r.status, 200, "{:#}", r.body);
    assert_eq!(
        (r.body["width"].as_u64(), r.body["height"].as_u64()),
        (
            Some(u64::from(decoded.width())),
            Some(u64::from(decoded.height()))
        )
    );
    assert_eq!(boxes(&r.body), expected);

    let url = format!("data:image/jpeg;base64,{b64}");
    let r = stack.invoke("rustyface", "face.detect", json!({"image": url}));
    assert_eq!(r.status, 200, "{:#}", r.body);
    assert_eq!(boxes(&r.body), expected);

    // Not an image: 422 naming the field, as problem+json.
    let text = base64::engine::general_purpose::STANDARD.encode(b"hello, not an image");
    let r = stack.invoke("rustyface", "face.detect", json!({"image": text}));
    assert_eq!(r.status, 422, "{:#}", r.body);
    assert!(r.body.to_string().contains("`image`"), "{:#}", r.body);
    // A field the schema does not know is refused by the gateway before the plugin sees it.
    let r = stack.invoke(
        "rustyface",
        "face.detect",
        json!({"image": b64, "colour": true}),
    );
    assert!((400..500).contains(&r.status), "{} {:#}", r.status, r.body);

    // The raw bytes, as an image/jpeg body: the same boxes. The capability comes from the
    // query; the gateway puts the bytes where the manifest's schema declares (`image`).
    let raw = |content_type: &str, query: &str, body: Vec<u8>| {
        let r = stack
            .http
            .post(format!("{}/api/plugins/rustyface/invoke{query}", stack.url))
            .header("content-type", content_type)
            .body(body)
            .send()
            .expect("POST");
        bkg_e2e::Response::from(r)
    };
    let r = raw("image/jpeg", "?capability=face.detect", jpeg.clone());
    assert_eq!(r.status, 200, "{:#}", r.body);
    assert_eq!(boxes(&r.body), expected);
    // A raw body that is not an image: the plugin's 422 naming `image`.
    let r = raw(
        "image/png",
        "?capability=face.detect",
        b"not a png".to_vec(),
    );
    assert_eq!(r.status, 422, "{:#}", r.body);
    assert!(r.body.to_string().contains("`image`"), "{:#}", r.body);
    // A media type the capability does not declare: 415; no capability named: 400.
    let r = raw(
        "application/octet-stream",
        "?capability=face.detect",
        jpeg.clone(),
    );
    assert_eq!(r.status, 415, "{:#}", r.body);
    let r = raw("image/jpeg", "", jpeg.clone());
    assert_eq!(r.status, 400, "{:#}", r.body);
    // The same metrics as JSON invokes: the raw calls are counted under the capability.
    let metrics = stack
        .http
        .get(format!("{}/metrics", stack.metrics_url))
        .send()
        .expect("metrics")
        .text()
        .expect("text");
    let line =
        r#"bkg_gateway_invoke_requests_total{plugin="rustyface",capability="face.detect",code="#;
    let count = |code: &str| {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{line}\"{code}\"}} ")))
            .and_then(|v| v.trim().parse::<f64>().ok())
    };
    // Two JSON and one raw success; one JSON and one raw 422.
    assert_eq!(count("200"), Some(3.0), "{metrics}");
    assert_eq!(count("422"), Some(2.0), "{metrics}");

    // Still serving, and annotation returns a PNG of the same size.
    let r = stack.invoke(
        "rustyface",
        "face.detect",
        json!({"image": b64, "annotate": true, "min_face_size": 40}),
    );
    assert_eq!(r.status, 200, "{:#}", r.body);
    let annotated = base64::engine::general_purpose::STANDARD
        .decode(r.body["annotated_png"].as_str().expect("annotated_png"))
        .expect("base64");
    let annotated = image::load_from_memory_with_format(&annotated, ImageFormat::Png).expect("png");
    assert_eq!(
        (annotated.width(), annotated.height()),
        (decoded.width(), decoded.height())
    );
}

/// A form as a browser sends it: the text fields, then the file part.
fn form(boundary: &str, file: &[u8], media: &str, fields: &[(&str, &str)]) -> Vec<u8> {
    let mut body = Vec::new();
    for (name, value) in fields {
        body.extend_from_slice(
            format!(
                "--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n"
            )
            .as_bytes(),
        );
    }
    body.extend_from_slice(
        format!(
            "--{boundary}\r\nContent-Disposition: form-data; name=\"image\"; filename=\"test\"\r\nContent-Type: {media}\r\n\r\n"
        )
        .as_bytes(),
    );
    body.extend_from_slice(file);
    body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    body
}

/// CRC-32 (ISO-HDLC, PNG's chunk checksum).
fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in bytes {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// A PNG bomb: a valid header declaring `width`×`height` RGB pixels and a few bytes of data.
fn png_bomb(width: u32, height: u32) -> Vec<u8> {
    let chunk = |out: &mut Vec<u8>, kind: &[u8], data: &[u8]| {
        out.extend_from_slice(&u32::try_from(data.len()).expect("len").to_be_bytes());
        let mut typed = kind.to_vec();
        typed.extend_from_slice(data);
        out.extend_from_slice(&typed);
        out.extend_from_slice(&crc32(&typed).to_be_bytes());
    };
    let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut ihdr = Vec::new();
    ihdr.extend_from_slice(&width.to_be_bytes());
    ihdr.extend_from_slice(&height.to_be_bytes());
    ihdr.extend_from_slice(&[8, 2, 0, 0, 0]); // 8-bit RGB, deflate, no interlace
    chunk(&mut png, b"IHDR", &ihdr);
    // A zlib stream of zeros: what would inflate to the whole image if it went on.
    chunk(
        &mut png,
        b"IDAT",
        &[0x78, 0x9c, 0x63, 0x00, 0x00, 0x00, 0x01, 0x00, 0x01],
    );
    chunk(&mut png, b"IEND", &[]);
    png
}

#[test]
fn rustyface_takes_forms_and_raw_png_and_refuses_bad_images() {
    // The crate's test image as it is (2 MB, under the gateway's 2 MiB body limit).
    let png = std::fs::read(rustface_package().join("test.png")).expect("rustface's test.png");
    let expected = reference(&png);
    assert!(expected.len() >= 20, "rustface itself finds {expected:?}");

    let manifest = std::fs::read_to_string(repo_root().join("config/plugins/rustyface.yaml"))
        .expect("manifest");
    let stack = Stack::start(&[("rustyface.yaml", &manifest)]);
    stack.wait_running("rustyface");
    let post = |content_type: &str, query: &str, body: Vec<u8>| {
        let r = stack
            .http
            .post(format!("{}/api/plugins/rustyface/invoke{query}", stack.url))
            .header("content-type", content_type)
            .body(body)
            .send()
            .expect("POST");
        bkg_e2e::Response::from(r)
    };
    let detect = "?capability=face.detect";
    let boundary = "----bkgE2eBoundary7MA4YWxkTrZu0gW";
    let multipart = format!("multipart/form-data; boundary={boundary}");

    let raw = post("image/png", detect, png.clone());
    assert_eq!(raw.status, 200, "{:#}", raw.body);
    assert_eq!(boxes(&raw.body), expected);
    // The same image as a form upload, with an option as a text field: the same faces and
    // scores (score_threshold 2.0 is the manifest's default).
    let upload = post(
        &multipart,
        detect,
        form(boundary, &png, "image/png", &[("score_threshold", "2.0")]),
    );
    assert_eq!(upload.status, 200, "{:#}", upload.body);
    assert_eq!(upload.body, raw.body);
    // The capability as a form field; a higher score_threshold keeps fewer faces. (rustface
    // 0.1.7 ignores min_face_size: its pyramid's max scale is commented out upstream.)
    let fewer = post(
        &multipart,
        "",
        form(
            boundary,
            &png,
            "image/png",
            &[("capability", "face.detect"), ("score_threshold", "15")],
        ),
    );
    assert_eq!(fewer.status, 200, "{:#}", fewer.body);
    let kept = boxes(&fewer.body);
    assert!(
        !kept.is_empty() && kept.len() < expected.len(),
        "{:#}",
        fewer.body
    );

    // Bad input, each a 4xx problem naming what is wrong.
    let mut jpeg = Vec::new();
    image::load_from_memory(&png)
        .expect("png")
        .to_rgb8()
        .write_to(&mut Cursor::new(&mut jpeg), ImageFormat::Jpeg)
        .expect("jpeg");
    let truncated = jpeg[..jpeg.len() / 3].to_vec();
    let bomb = png_bomb(100_000, 100_000);
    let text = "hello, not an image".as_bytes().to_vec();
    let cases: Vec<(&str, bkg_e2e::Response, u16, &str)> = vec![
        (
            "truncated JPEG",
            post("image/jpeg", detect, truncated.clone()),
            422,
            "`image`",
        ),
        (
            "truncated JPEG in a form",
            post(&multipart, detect, form(boundary, &truncated, "image/jpeg", &[])),
            422,
            "`image`",
        ),
        (
            "PNG bomb",
            post("image/png", detect, bomb.clone()),
            422,
            "10000000000 pixels",
        ),
        (
            "PNG bomb in a form",
            post(&multipart, detect, form(boundary, &bomb, "image/png", &[])),
            422,
            "10000000000 pixels",
        ),
        ("empty raw body", post("image/png", detect, Vec::new()), 400, "empty"),
        (
            "empty file part",
            post(&multipart, detect, form(boundary, &[], "image/png", &[])),
            400,
            "empty",
        ),
        (
            "empty base64",
            post(
                "application/json",
                "",
                json!({"capability": "face.detect", "payload": {"image": ""}})
                    .to_string()
                    .into_bytes(),
            ),
            400,
            "/image",
        ),
        (
            "text as a form's file",
            post(&multipart, detect, form(boundary, &text, "text/plain", &[])),
            415,
            "text/plain",
        ),
        (
            "text/plain body",
            post("text/plain", detect, text.clone()),
            400,
            "JSON",
        ),
        (
            "form without a file",
            post(
                &multipart,
                detect,
                format!("--{boundary}\r\nContent-Disposition: form-data; name=\"min_face_size\"\r\n\r\n40\r\n--{boundary}--\r\n").into_bytes(),
            ),
            400,
            "no file part",
        ),
        (
            "malformed form",
            post(&multipart, detect, format!("--{boundary}\r\ngarbage").into_bytes()),
            400,
            "malformed",
        ),
        (
            "option that is not an integer",
            post(
                &multipart,
                detect,
                form(boundary, &png, "image/png", &[("min_face_size", "big")]),
            ),
            400,
            "min_face_size",
        ),
    ];
    for (what, r, status, says) in cases {
        assert_eq!(r.status, status, "{what}: {:#}", r.body);
        assert!(r.body.to_string().contains(says), "{what}: {:#}", r.body);
    }

    // Both keep serving: the same answer as before.
    let again = post("image/png", detect, png);
    assert_eq!(again.status, 200, "{:#}", again.body);
    assert_eq!(again.body, raw.body);
    assert!(
        stack
            .http
            .get(format!("{}/healthz", stack.url))
            .send()
            .expect("healthz")
            .status()
            .is_success()
    );
}
