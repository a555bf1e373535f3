use std::io::Cursor;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use image::{ImageFormat, Rgb, RgbImage};
use rustface::ImageData;

use super::*;

fn ctx() -> InvokeContext {
    InvokeContext {
        request_id: "test".into(),
        deadline: Instant::now() + Duration::from_secs(120),
    }
}

async fn started(config: Value) -> Box<dyn Plugin> {
    let plugin = new_plugin();
    plugin
        .start(StartContext {
            plugin_id: "rustyface".into(),
            config,
        })
        .await
        .expect("start");
    plugin
}

/// Where cargo unpacked the `rustface` package this crate builds against (its `test.png`
/// and model), from `cargo metadata` so no path is guessed. Offline, and filtered to the host:
/// packages of other platforms (Windows-only crates) are never downloaded by a build.
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
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml"))
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
        .expect("rustface in cargo metadata");
    PathBuf::from(manifest)
        .parent()
        .expect("package dir")
        .to_owned()
}

/// The crate's own example, run directly: its parameters, its grayscale conversion.
fn reference_faces(image: &image::DynamicImage) -> Vec<Face> {
    let mut detector = rustface::create_detector_with_model(
        rustface::load_model(
            rustface_package()
                .join("model/seeta_fd_frontal_v1.0.bin")
                .to_str()
                .expect("utf-8 path"),
        )
        .expect("model"),
    );
    detector.set_min_face_size(20);
    detector.set_score_thresh(2.0);
    detector.set_pyramid_scale_factor(0.8);
    detector.set_slide_window_step(4, 4);
    let gray = image.to_luma8();
    let (w, h) = gray.dimensions();
    detector
        .detect(&ImageData::new(&gray, w, h))
        .into_iter()
        .map(|f| Face {
            x: f.bbox().x(),
            y: f.bbox().y(),
            width: f.bbox().width(),
            height: f.bbox().height(),
            score: f.score(),
        })
        .collect()
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn faces_of(out: &Value) -> Vec<Face> {
    out["faces"]
        .as_array()
        .expect("faces")
        .iter()
        .map(|f| Face {
            x: f["x"].as_i64().expect("x") as i32,
            y: f["y"].as_i64().expect("y") as i32,
            width: f["width"].as_u64().expect("w") as u32,
            height: f["height"].as_u64().expect("h") as u32,
            score: f["score"].as_f64().expect("score"),
        })
        .collect()
}

#[test]
fn the_compiled_in_model_is_the_one_rustface_ships() {
    let shipped = std::fs::read(rustface_package().join("model/seeta_fd_frontal_v1.0.bin"))
        .expect("rustface's model");
    assert!(
        shipped == MODEL,
        "model/seeta_fd_frontal_v1.0.bin differs from rustface's"
    );
}

/// The crate's own test image through the capability gives the same boxes as rustface's
/// example run directly with the same parameters.
#[tokio::test(flavor = "multi_thread")]
async fn finds_the_faces_of_rustfaces_test_image_like_the_crate_itself() {
    let bytes = std::fs::read(rustface_package().join("test.png")).expect("rustface's test.png");
    let image = image::load_from_memory(&bytes).expect("png");
    let reference = reference_faces(&image);

    let plugin = started(json!({})).await;
    let out = plugin
        .invoke(FACE_DETECT, json!({"image": b64(&bytes)}), ctx())
        .await
        .expect("detect");
    assert_eq!(out["width"], json!(image.width()));
    assert_eq!(out["height"], json!(image.height()));
    // rustface scans in parallel (rayon): compare the boxes in reading order.
    let by_position = |faces: &mut Vec<Face>| faces.sort_by_key(|f| (f.y, f.x, f.width));
    let mut got = faces_of(&out);
    let mut reference = reference;
    by_position(&mut got);
    by_position(&mut reference);
    assert_eq!(got.len(), 29, "faces found: {got:?}");
    assert_eq!(got.len(), reference.len());
    for (g, r) in got.iter().zip(&reference) {
        assert_eq!((g.x, g.y, g.width, g.height), (r.x, r.y, r.width, r.height));
        assert!((g.score - r.score).abs() < 1e-9, "{g:?} vs {r:?}");
    }

    // A stricter threshold in the request overrides the config's default: fewer faces,
    // each of them one the default found.
    let strict = plugin
        .invoke(
            FACE_DETECT,
            json!({"image": format!("data:image/png;base64,{}", b64(&bytes)), "score_threshold": 10.0}),
            ctx(),
        )
        .await
        .expect("detect");
    let strict = faces_of(&strict);
    assert!(
        strict.len() < got.len(),
        "{} vs {}",
        strict.len(),
        got.len()
    );
    assert!(strict.iter().all(|f| f.score >= 10.0 && got.contains(f)));

    // A larger minimum face size leaves exactly the default's faces at least that large (rustface
    // itself ignores the setting and would answer all 29).
    let large = plugin
        .invoke(
            FACE_DETECT,
            json!({"image": b64(&bytes), "min_face_size": 55}),
            ctx(),
        )
        .await
        .expect("detect");
    let mut large = faces_of(&large);
    by_position(&mut large);
    let expected: Vec<Face> = got
        .iter()
        .filter(|f| f.width.min(f.height) >= 55)
        .cloned()
        .collect();
    assert!(
        !expected.is_empty() && expected.len() < got.len(),
        "the test image should have faces on both sides of 55 px: {got:?}"
    );
    assert_eq!(large, expected);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_image_without_faces_has_none_and_can_be_annotated() {
    let img = RgbImage::from_fn(320, 240, |x, y| Rgb([(x % 256) as u8, (y % 256) as u8, 90]));
    let mut jpeg = Vec::new();
    img.write_to(&mut Cursor::new(&mut jpeg), ImageFormat::Jpeg)
        .expect("jpeg");
    let plugin = started(json!({"min_face_size": 55})).await;
    let out = plugin
        .invoke(
            FACE_DETECT,
            json!({"image": b64(&jpeg), "annotate": true}),
            ctx(),
        )
        .await
        .expect("detect");
    assert_eq!(out["faces"], json!([]));
    assert_eq!(
        (out["width"].clone(), out["height"].clone()),
        (json!(320), json!(240))
    );
    let png = base64::engine::general_purpose::STANDARD
        .decode(out["annotated_png"].as_str().expect("annotated_png"))
        .expect("base64");
    let back = image::load_from_memory_with_format(&png, ImageFormat::Png).expect("a PNG");
    assert_eq!((back.width(), back.height()), (320, 240));
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_input_is_a_422_naming_the_field_and_the_plugin_keeps_serving() {
    let plugin = started(json!({"max_pixels": 10_000})).await;
    let mut small = Vec::new();
    RgbImage::from_pixel(64, 64, Rgb([1, 2, 3]))
        .write_to(&mut Cursor::new(&mut small), ImageFormat::Png)
        .expect("png");
    let mut big = Vec::new();
    RgbImage::from_pixel(101, 100, Rgb([1, 2, 3]))
        .write_to(&mut Cursor::new(&mut big), ImageFormat::Png)
        .expect("png");
    let cases = [
        (json!({}), "image"),
        (json!({"image": 3}), "image"),
        (json!({"image": "not base64!"}), "image"),
        (json!({"image": b64(b"plain text, not an image")}), "image"),
        (json!({"image": b64(&small[..small.len() / 2])}), "image"),
        (json!({"image": b64(&big)}), "image"),
        (
            json!({"image": b64(&small), "min_face_size": 10}),
            "min_face_size",
        ),
        (
            json!({"image": b64(&small), "slide_window_step": -1}),
            "slide_window_step",
        ),
        (
            json!({"image": b64(&small), "pyramid_scale_factor": 2}),
            "pyramid_scale_factor",
        ),
        (
            json!({"image": b64(&small), "score_threshold": "high"}),
            "score_threshold",
        ),
        (json!({"image": b64(&small), "annotate": "yes"}), "annotate"),
    ];
    for (payload, field) in cases {
        let err = plugin
            .invoke(FACE_DETECT, payload.clone(), ctx())
            .await
            .expect_err("refused");
        assert!(
            matches!(&err, PluginError::InvalidInput(m) if m.contains(&format!("`{field}`"))),
            "{payload}: {err}"
        );
    }
    let out = plugin
        .invoke(FACE_DETECT, json!({"image": b64(&small)}), ctx())
        .await
        .expect("still serving");
    assert_eq!(out["faces"], json!([]));
    let err = plugin
        .invoke("nope", json!({}), ctx())
        .await
        .expect_err("unknown");
    assert!(matches!(err, PluginError::UnknownCapability(_)));
}

/// The pool's behaviour is `bkg_plugin_api::worker_pool`'s to test; here, that the plugin
/// detects on the configured workers.
#[tokio::test(flavor = "multi_thread")]
async fn detects_on_the_configured_workers() {
    let img = RgbImage::from_fn(160, 120, |x, y| Rgb([(x % 256) as u8, (y % 256) as u8, 90]));
    let mut png = Vec::new();
    img.write_to(&mut Cursor::new(&mut png), ImageFormat::Png)
        .expect("png");
    let plugin = started(json!({"workers": 2, "queue_capacity": 2})).await;
    // Two images in the queue at once, its capacity: both answered.
    let call = || plugin.invoke(FACE_DETECT, json!({"image": b64(&png)}), ctx());
    let (a, b) = tokio::join!(call(), call());
    for out in [a, b] {
        let out = out.expect("detect");
        assert_eq!(
            (out["width"].clone(), out["faces"].clone()),
            (json!(160), json!([]))
        );
    }
    assert_eq!(plugin.details()["workers"], json!(2));
    assert_eq!(plugin.telemetry()["queue_depth"], json!(0));
}

#[test]
fn the_default_is_one_worker_per_cpu() {
    let cpus = std::thread::available_parallelism().map_or(1, usize::from);
    assert_eq!(RustyFaceConfig::default().workers(), cpus.min(64));
    let two: RustyFaceConfig = serde_json::from_value(json!({"workers": 2})).expect("config");
    assert_eq!(two.workers(), 2);
}

#[tokio::test]
async fn a_config_rustface_would_panic_on_is_refused_at_start() {
    for config in [
        json!({"min_face_size": 5}),
        json!({"pyramid_scale_factor": 1.5}),
        json!({"queue_capacity": 0}),
        json!({"workers": 0}),
        json!({"workers": 65}),
        json!({"unknown": 1}),
    ] {
        let err = new_plugin()
            .start(StartContext {
                plugin_id: "rustyface".into(),
                config: config.clone(),
            })
            .await
            .expect_err("refused");
        assert!(matches!(err, PluginError::Config(_)), "{config}: {err}");
    }
}

/// The committed schema (read by the operator and `bkg up`) is this type's schema.
#[test]
fn the_committed_config_schema_is_current() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/config.schema.json");
    let on_disk: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap_or_default())
        .unwrap_or_default();
    assert!(
        on_disk == config_schema(),
        "plugins/rustyface/config.schema.json is stale: run `make config-schemas`"
    );
}
