//! Decoding, detection and annotation: pure functions the worker thread calls.
//!
//! Everything a caller can get wrong is checked here before rustface sees it, because
//! rustface answers bad parameters and too-small images with a panic.

use std::io::Cursor;

use base64::Engine as _;
use image::{GrayImage, ImageFormat, ImageReader, Limits, Rgb, RgbImage};
use rustface::{ImageData, Model};
use serde::Serialize;

use crate::error::{Error, Result};

/// rustface's detection window: smaller images (and smaller faces) cannot be scanned.
pub const MIN_SIDE: u32 = 40;
/// rustface refuses smaller minimum face sizes.
pub const MIN_FACE_SIZE: u32 = 20;

/// The detector's knobs for one request, already checked.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Params {
    pub min_face_size: u32,
    pub score_threshold: f64,
    pub pyramid_scale_factor: f32,
    pub slide_window_step: u32,
}

impl Default for Params {
    /// The values of rustface's own example (`examples/image_demo.rs`).
    fn default() -> Self {
        Self {
            min_face_size: 20,
            score_threshold: 2.0,
            pyramid_scale_factor: 0.8,
            slide_window_step: 4,
        }
    }
}

impl Params {
    /// Refuses what would make rustface panic, naming the field.
    pub fn check(self) -> Result<Self> {
        if self.min_face_size < MIN_FACE_SIZE {
            return Err(Error::field(
                "min_face_size",
                format!("must be at least {MIN_FACE_SIZE}"),
            ));
        }
        if !(self.score_threshold.is_finite() && self.score_threshold > 0.0) {
            return Err(Error::field("score_threshold", "must be greater than 0"));
        }
        if !(0.01..=0.99).contains(&self.pyramid_scale_factor) {
            return Err(Error::field(
                "pyramid_scale_factor",
                "must be between 0.01 and 0.99",
            ));
        }
        if self.slide_window_step == 0 {
            return Err(Error::field("slide_window_step", "must be at least 1"));
        }
        Ok(self)
    }
}

/// One face: its box in the image's pixels and the detector's score.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Face {
    pub x: i32,
    pub y: i32,
    pub width: u32,
    pub height: u32,
    pub score: f64,
}

/// A decoded image: what the detector scans and what annotation draws on.
pub struct Decoded {
    pub rgb: RgbImage,
    pub gray: GrayImage,
}

/// The bytes of `image`: base64 (standard alphabet, padding optional) or a `data:` URL
/// with a base64 payload.
pub fn image_bytes(field: &str, text: &str) -> Result<Vec<u8>> {
    let b64 = match text.strip_prefix("data:") {
        Some(rest) => {
            let (meta, data) = rest
                .split_once(',')
                .ok_or_else(|| Error::field(field, "a data: URL without a comma"))?;
            if !meta.ends_with(";base64") {
                return Err(Error::field(
                    field,
                    "a data: URL must be base64 (`;base64,`)",
                ));
            }
            data
        }
        None => text,
    };
    let cleaned: String = b64.chars().filter(|c| !c.is_ascii_whitespace()).collect();
    // Padding is optional: strip it and decode without.
    base64::engine::general_purpose::STANDARD_NO_PAD
        .decode(cleaned.trim_end_matches('='))
        .map_err(|e| Error::field(field, format!("not base64: {e}")))
}

/// Decodes a JPEG, PNG or WebP image of at most `max_pixels`, refusing anything else before
/// allocating its pixels (a PNG declaring 100000×100000 is refused from its header).
pub fn decode(field: &str, bytes: &[u8], max_pixels: u64) -> Result<Decoded> {
    if bytes.is_empty() {
        return Err(Error::field(field, "the image is empty"));
    }
    let reader = ImageReader::new(Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| Error::field(field, format!("cannot read the image: {e}")))?;
    match reader.format() {
        Some(ImageFormat::Jpeg | ImageFormat::Png | ImageFormat::WebP) => {}
        Some(other) => {
            return Err(Error::field(
                field,
                format!("{other:?} images are not accepted (JPEG, PNG or WebP)"),
            ));
        }
        None => return Err(Error::field(field, "not a JPEG, PNG or WebP image")),
    }
    if reader.format() == Some(ImageFormat::Jpeg) && !jpeg_complete(bytes) {
        return Err(Error::field(
            field,
            "the JPEG is truncated: it ends before its end-of-image marker",
        ));
    }
    let (width, height) = ImageReader::new(Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| Error::field(field, format!("cannot read the image: {e}")))?
        .into_dimensions()
        .map_err(|e| Error::field(field, format!("cannot read the image's header: {e}")))?;
    let pixels = u64::from(width) * u64::from(height);
    if pixels > max_pixels {
        return Err(Error::field(
            field,
            format!(
                "the image is {width}×{height} = {pixels} pixels; at most {max_pixels} are accepted"
            ),
        ));
    }
    let mut reader = reader;
    let mut limits = Limits::default();
    // Room for the decoded image in its widest layout (RGBA, 16 bits) and the decoder's own.
    limits.max_alloc = Some(max_pixels.saturating_mul(8).saturating_add(64 << 20));
    reader.limits(limits);
    let image = reader
        .decode()
        .map_err(|e| Error::field(field, format!("cannot decode the image: {e}")))?;
    Ok(Decoded {
        gray: image.to_luma8(),
        rgb: image.to_rgb8(),
    })
}

/// Whether a JPEG's segments run to its end-of-image marker. The `image` crate's JPEG decoder
/// (zune-jpeg) fills the rest of a truncated scan with grey and reports no error, so a cut-off
/// upload would be answered as if it were whole. Segments are skipped by their length (an EXIF
/// thumbnail's own markers are inside one), entropy-coded data up to the next marker that is
/// not a stuffed `FF 00` or a restart marker.
fn jpeg_complete(b: &[u8]) -> bool {
    if !b.starts_with(&[0xFF, 0xD8]) {
        return false;
    }
    let mut i = 2;
    while let Some(&[mark, code]) = b.get(i..i + 2) {
        if mark != 0xFF {
            return false;
        }
        match code {
            // Fill byte before a marker.
            0xFF => i += 1,
            0xD9 => return true,
            // TEM and RSTn stand alone.
            0x01 | 0xD0..=0xD7 => i += 2,
            _ => {
                let Some(&[hi, lo]) = b.get(i + 2..i + 4) else {
                    return false;
                };
                i += 2 + usize::from(u16::from_be_bytes([hi, lo]));
                if code == 0xDA {
                    loop {
                        match b.get(i..i + 2) {
                            None => return false,
                            Some(&[0xFF, 0x00 | 0xD0..=0xD7]) => i += 2,
                            Some(&[0xFF, _]) => break,
                            Some(_) => i += 1,
                        }
                    }
                }
            }
        }
    }
    false
}

/// Runs the SeetaFace detector on a grayscale image. Images too small for its window have no
/// face it could find.
///
/// rustface 0.1.7 stores `min_face_size` but never applies it (the line that would bound its
/// image pyramid is commented out), so every size down to its 20 px window is searched and
/// reported. We drop the boxes narrower or shorter than `min_face_size` here, so the option means
/// what its schema says; it saves no detection time.
pub fn detect(model: &Model, gray: &GrayImage, params: Params) -> Vec<Face> {
    let (width, height) = gray.dimensions();
    if width < MIN_SIDE || height < MIN_SIDE {
        return Vec::new();
    }
    let mut detector = rustface::create_detector_with_model(model.clone());
    detector.set_min_face_size(params.min_face_size);
    detector.set_score_thresh(params.score_threshold);
    detector.set_pyramid_scale_factor(params.pyramid_scale_factor);
    detector.set_slide_window_step(params.slide_window_step, params.slide_window_step);
    let image = ImageData::new(gray, width, height);
    detector
        .detect(&image)
        .into_iter()
        .filter(|face| {
            let b = face.bbox();
            b.width().min(b.height()) >= params.min_face_size
        })
        .map(|face| {
            let b = face.bbox();
            Face {
                x: b.x(),
                y: b.y(),
                width: b.width(),
                height: b.height(),
                score: face.score(),
            }
        })
        .collect()
}

/// The image as a PNG with each face's box drawn (3 px, red), clipped to the image.
pub fn annotate(mut rgb: RgbImage, faces: &[Face]) -> Result<Vec<u8>> {
    const RED: Rgb<u8> = Rgb([255, 0, 0]);
    const THICKNESS: i64 = 3;
    let (w, h) = (i64::from(rgb.width()), i64::from(rgb.height()));
    for f in faces {
        let (x0, y0) = (i64::from(f.x), i64::from(f.y));
        let (x1, y1) = (x0 + i64::from(f.width) - 1, y0 + i64::from(f.height) - 1);
        for y in y0.max(0)..=y1.min(h - 1) {
            for x in x0.max(0)..=x1.min(w - 1) {
                let edge = x - x0 < THICKNESS
                    || x1 - x < THICKNESS
                    || y - y0 < THICKNESS
                    || y1 - y < THICKNESS;
                if edge {
                    // In range: clipped to the image above.
                    rgb.put_pixel(x as u32, y as u32, RED);
                }
            }
        }
    }
    let mut png = Vec::new();
    rgb.write_to(&mut Cursor::new(&mut png), ImageFormat::Png)
        .map_err(|e| Error::Inference(format!("cannot encode the annotated PNG: {e}")))?;
    Ok(png)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn png(width: u32, height: u32) -> Vec<u8> {
        let img = RgbImage::from_fn(width, height, |x, y| {
            Rgb([(x % 256) as u8, (y % 256) as u8, 128])
        });
        let mut out = Vec::new();
        img.write_to(&mut Cursor::new(&mut out), ImageFormat::Png)
            .expect("png");
        out
    }

    fn jpeg(width: u32, height: u32) -> Vec<u8> {
        let img = RgbImage::from_fn(width, height, |x, y| {
            Rgb([
                (x * 7 % 256) as u8,
                (y * 5 % 256) as u8,
                ((x ^ y) % 256) as u8,
            ])
        });
        let mut out = Vec::new();
        img.write_to(&mut Cursor::new(&mut out), ImageFormat::Jpeg)
            .expect("jpeg");
        out
    }

    #[test]
    fn base64_and_data_urls_give_the_same_bytes() {
        let bytes = png(4, 4);
        let b64 = base64::engine::general_purpose::STANDARD.encode(&bytes);
        assert_eq!(image_bytes("image", &b64).ok(), Some(bytes.clone()));
        let url = format!("data:image/png;base64,{b64}");
        assert_eq!(image_bytes("image", &url).ok(), Some(bytes.clone()));
        let unpadded = b64.trim_end_matches('=');
        assert_eq!(image_bytes("image", unpadded).ok(), Some(bytes));
        let err = image_bytes("image", "data:text/plain,hello").expect_err("not base64");
        assert!(err.to_string().contains("image"), "{err}");
        assert!(image_bytes("image", "!!!").is_err());
    }

    #[test]
    fn bad_images_are_refused_naming_the_field() {
        let jpeg = jpeg(64, 48);
        assert!(
            decode("image", &jpeg, 1 << 20).is_ok(),
            "a whole JPEG decodes"
        );
        // The image crate alone takes the cut-off JPEG as whole (grey where data is missing).
        assert!(image::load_from_memory(&jpeg[..jpeg.len() * 2 / 3]).is_ok());
        let cases: Vec<(&str, Vec<u8>)> = vec![
            ("empty", Vec::new()),
            ("text", b"this is not an image".to_vec()),
            ("truncated", png(64, 64)[..60].to_vec()),
            ("gif", b"GIF89a\x01\x00\x01\x00\x00\x00\x00;".to_vec()),
            ("truncated jpeg", jpeg[..jpeg.len() * 2 / 3].to_vec()),
            (
                "jpeg without its end marker",
                jpeg[..jpeg.len() - 2].to_vec(),
            ),
        ];
        for (name, bytes) in cases {
            let err = decode("image", &bytes, 1 << 20)
                .err()
                .unwrap_or_else(|| panic!("{name} decoded"));
            assert!(
                matches!(err, Error::InvalidInput(ref m) if m.starts_with("`image`")),
                "{name}: {err}"
            );
        }
    }

    #[test]
    fn an_image_over_the_pixel_limit_is_refused_from_its_header() {
        let err = decode("image", &png(100, 100), 9_999)
            .err()
            .expect("too large");
        assert!(err.to_string().contains("10000 pixels"), "{err}");
        // A PNG whose header declares 100000×100000 (a "PNG bomb"): refused before decoding.
        let mut bomb = png(1, 1);
        bomb[16..20].copy_from_slice(&100_000u32.to_be_bytes());
        bomb[20..24].copy_from_slice(&100_000u32.to_be_bytes());
        let err = decode("image", &bomb, 40_000_000).err().expect("bomb");
        assert!(
            matches!(err, Error::InvalidInput(ref m) if m.starts_with("`image`")),
            "{err}"
        );
    }

    #[test]
    fn params_that_would_panic_rustface_are_refused() {
        let ok = Params::default();
        assert_eq!(ok.check().ok(), Some(ok));
        for (p, field) in [
            (
                Params {
                    min_face_size: 19,
                    ..ok
                },
                "min_face_size",
            ),
            (
                Params {
                    score_threshold: 0.0,
                    ..ok
                },
                "score_threshold",
            ),
            (
                Params {
                    pyramid_scale_factor: 1.0,
                    ..ok
                },
                "pyramid_scale_factor",
            ),
            (
                Params {
                    slide_window_step: 0,
                    ..ok
                },
                "slide_window_step",
            ),
        ] {
            let err = p.check().expect_err(field);
            assert!(err.to_string().contains(field), "{err}");
        }
    }

    #[test]
    fn annotation_draws_clipped_boxes() {
        let rgb = RgbImage::from_pixel(50, 50, Rgb([0, 0, 0]));
        let faces = [Face {
            x: -5,
            y: 10,
            width: 30,
            height: 60,
            score: 3.0,
        }];
        let png_bytes = annotate(rgb, &faces).expect("annotate");
        let back = image::load_from_memory(&png_bytes).expect("png").to_rgb8();
        assert_eq!(back.get_pixel(24, 20), &Rgb([255, 0, 0]), "right edge");
        assert_eq!(back.get_pixel(10, 11), &Rgb([255, 0, 0]), "top edge");
        assert_eq!(back.get_pixel(10, 20), &Rgb([0, 0, 0]), "inside");
    }
}
