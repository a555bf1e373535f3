//! The RustyFace plugin: face detection with the SeetaFace frontal detector (`rustface`).
//!
//! | capability | does |
//! |---|---|
//! | `face.detect` | an image (JPEG, PNG or WebP; base64 or a `data:` URL in `image`) → `{faces: [{x, y, width, height, score}], width, height}`, and with `annotate: true` the image as a PNG with the boxes drawn |
//!
//! The model (`model/seeta_fd_frontal_v1.0.bin`, the one the `rustface` crate ships) is
//! compiled in, so the plugin needs no download and no mounted file.
//!
//! ```text
//!  invoke ──params, base64 (422 naming the field)──▶ WorkerPool (429 when full)
//!         ──▶ `workers` threads, each with its own detector: decode → detect → annotate?
//! ```
//!
//! Detection runs on the plugin API's [`WorkerPool`], never on tokio's workers: at most
//! `queue_capacity` images are accepted and not yet answered (the rest are a 429 at once, never
//! a backlog), on `workers` threads (by default one per CPU the process may use). rustface's
//! detector is not `Sync`, so each thread keeps its own copy of the model.
//!
//! Everything a caller can get wrong (not an image, truncated, too many pixels, parameters
//! rustface would panic on) is a 422 naming the field.

#![forbid(unsafe_code)]

mod detect;
mod error;

use std::sync::OnceLock;

use base64::Engine as _;
use bkg_plugin_api::worker_pool::WorkerPool;
use bkg_plugin_api::{
    CapabilityDescriptor, InvokeContext, Plugin, PluginError, StartContext, async_trait,
};
use serde_json::{Map, Value, json};

pub use detect::{Face, Params};
pub use error::Error;

/// The SeetaFace frontal model, as the `rustface` crate ships it (BSD-2-Clause).
pub const MODEL: &[u8] = include_bytes!("../model/seeta_fd_frontal_v1.0.bin");

/// The capability's id.
pub const FACE_DETECT: &str = "face.detect";

/// Creates the plugin; the runtime calls this once per process.
pub fn new_plugin() -> Box<dyn Plugin> {
    Box::new(RustyFace::default())
}

/// `spec.config`: the detector's defaults (each request may override them) and the queue.
#[derive(Debug, serde::Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
#[schemars(title = "RustyFace plugin config")]
pub struct RustyFaceConfig {
    /// Smallest face, in pixels, the detector looks for (rustface's minimum is 20).
    #[schemars(range(min = 20))]
    pub min_face_size: u32,
    /// Score a window needs to count as a face; higher finds fewer, surer faces.
    #[schemars(range(min = 0.0))]
    pub score_threshold: f64,
    /// How much each level of the image pyramid shrinks (0.01–0.99); closer to 1 is slower
    /// and finds more sizes.
    #[schemars(range(min = 0.01, max = 0.99))]
    pub pyramid_scale_factor: f32,
    /// Pixels the detection window moves per step (both directions); larger is faster.
    #[schemars(range(min = 1))]
    pub slide_window_step: u32,
    /// Largest image accepted, in pixels (width × height), checked from its header before
    /// decoding.
    #[schemars(range(min = 1))]
    pub max_pixels: u64,
    /// Images accepted and not yet answered; more are refused with 429.
    #[schemars(range(min = 1))]
    pub queue_capacity: usize,
    /// Detector threads, each running one image at a time with its own detector; absent or
    /// null: one per CPU the process may use.
    #[schemars(range(min = 1, max = 64))]
    pub workers: Option<usize>,
}

impl Default for RustyFaceConfig {
    fn default() -> Self {
        let p = Params::default();
        Self {
            min_face_size: p.min_face_size,
            score_threshold: p.score_threshold,
            pyramid_scale_factor: p.pyramid_scale_factor,
            slide_window_step: p.slide_window_step,
            max_pixels: 40_000_000,
            queue_capacity: 32,
            workers: None,
        }
    }
}

/// At most this many detector threads: each holds a copy of the model and decoded images.
const MAX_WORKERS: usize = 64;

impl RustyFaceConfig {
    fn params(&self) -> Params {
        Params {
            min_face_size: self.min_face_size,
            score_threshold: self.score_threshold,
            pyramid_scale_factor: self.pyramid_scale_factor,
            slide_window_step: self.slide_window_step,
        }
    }

    /// The detector threads to run: `workers`, or one per CPU the process may use.
    fn workers(&self) -> usize {
        self.workers.unwrap_or_else(|| {
            std::thread::available_parallelism()
                .map_or(1, usize::from)
                .min(MAX_WORKERS)
        })
    }
}

/// What one call asks of a detector thread.
struct Request {
    image: Vec<u8>,
    params: Params,
    annotate: bool,
}

/// What the detector found.
struct Detection {
    faces: Vec<Face>,
    width: u32,
    height: u32,
    /// The annotated PNG, when asked for.
    annotated: Option<Vec<u8>>,
}

/// The detection queue: one image in, its faces (or why not) out.
type Queue = WorkerPool<Request, Result<Detection, Error>>;

/// One detector thread's work: decode, detect, annotate when asked.
fn process(model: &rustface::Model, request: Request, max_pixels: u64) -> Result<Detection, Error> {
    let decoded = detect::decode("image", &request.image, max_pixels)?;
    let (width, height) = decoded.gray.dimensions();
    let faces = detect::detect(model, &decoded.gray, request.params);
    let annotated = if request.annotate {
        Some(detect::annotate(decoded.rgb, &faces)?)
    } else {
        None
    };
    Ok(Detection {
        faces,
        width,
        height,
        annotated,
    })
}

/// The JSON Schema of `spec.config` (draft 2020-12), as `plugins/rustyface/config.schema.json`
/// holds it.
pub fn config_schema() -> Value {
    let schema = schemars::SchemaGenerator::default().into_root_schema_for::<RustyFaceConfig>();
    Value::from(schema)
}

/// The input schema of `face.detect`.
pub fn input_schema() -> Value {
    json!({
        "type": "object",
        "required": ["image"],
        "additionalProperties": false,
        "properties": {
            "image": {
                "type": "string",
                "minLength": 1,
                "contentEncoding": "base64",
                "contentMediaType": "image/*",
                "description": "The image (JPEG, PNG or WebP), base64-encoded or as a data: URL (data:image/png;base64,…)."
            },
            "min_face_size": {"type": "integer", "minimum": 20, "description": "Smallest face in pixels; default from spec.config."},
            "score_threshold": {"type": "number", "exclusiveMinimum": 0, "description": "Score a face needs; default from spec.config."},
            "pyramid_scale_factor": {"type": "number", "minimum": 0.01, "maximum": 0.99, "description": "Image pyramid step; default from spec.config."},
            "slide_window_step": {"type": "integer", "minimum": 1, "description": "Window step in pixels; default from spec.config."},
            "annotate": {"type": "boolean", "default": false, "description": "Also return the image as a PNG (base64) with the boxes drawn."}
        }
    })
}

/// The output schema of `face.detect`.
pub fn output_schema() -> Value {
    json!({
        "type": "object",
        "required": ["faces", "width", "height"],
        "properties": {
            "faces": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["x", "y", "width", "height", "score"],
                    "properties": {
                        "x": {"type": "integer"},
                        "y": {"type": "integer"},
                        "width": {"type": "integer", "minimum": 0},
                        "height": {"type": "integer", "minimum": 0},
                        "score": {"type": "number"}
                    }
                }
            },
            "width": {"type": "integer", "minimum": 1},
            "height": {"type": "integer", "minimum": 1},
            "annotated_png": {"type": "string", "contentEncoding": "base64", "contentMediaType": "image/png"}
        }
    })
}

struct Started {
    queue: Queue,
    defaults: Params,
}

#[derive(Default)]
struct RustyFace {
    started: OnceLock<Started>,
}

/// A request's parameters: the config's defaults, overridden by the payload's fields.
fn params(payload: &Map<String, Value>, defaults: Params) -> Result<Params, Error> {
    let uint = |name: &str, default: u32| -> Result<u32, Error> {
        match payload.get(name) {
            None | Some(Value::Null) => Ok(default),
            Some(v) => bkg_plugin_api::as_u64(v)
                .and_then(|n| u32::try_from(n).ok())
                .ok_or_else(|| Error::field(name, "must be a non-negative integer")),
        }
    };
    let float = |name: &str, default: f64| -> Result<f64, Error> {
        match payload.get(name) {
            None | Some(Value::Null) => Ok(default),
            Some(v) => v
                .as_f64()
                .ok_or_else(|| Error::field(name, "must be a number")),
        }
    };
    Params {
        min_face_size: uint("min_face_size", defaults.min_face_size)?,
        score_threshold: float("score_threshold", defaults.score_threshold)?,
        pyramid_scale_factor: float(
            "pyramid_scale_factor",
            f64::from(defaults.pyramid_scale_factor),
        )? as f32,
        slide_window_step: uint("slide_window_step", defaults.slide_window_step)?,
    }
    .check()
}

#[async_trait]
impl Plugin for RustyFace {
    fn version(&self) -> &'static str {
        env!("CARGO_PKG_VERSION")
    }

    fn config_schema(&self) -> Value {
        config_schema()
    }

    fn capabilities(&self) -> Vec<CapabilityDescriptor> {
        vec![CapabilityDescriptor {
            id: FACE_DETECT.into(),
            name: "Detect faces".into(),
            description: "Finds frontal faces in a JPEG, PNG or WebP image (SeetaFace) and \
                          returns their boxes; optionally the image with the boxes drawn."
                .into(),
            input_schema: input_schema(),
            output_schema: output_schema(),
            ..CapabilityDescriptor::default()
        }]
    }

    async fn start(&self, ctx: StartContext) -> Result<(), PluginError> {
        let config: RustyFaceConfig = if ctx.config.is_null() {
            RustyFaceConfig::default()
        } else {
            serde_json::from_value(ctx.config.clone()).map_err(|e| {
                PluginError::Config(format!("the config does not match its schema: {e}"))
            })?
        };
        let defaults = config
            .params()
            .check()
            .map_err(|e| PluginError::Config(e.to_string()))?;
        if config.queue_capacity == 0 || config.max_pixels == 0 {
            return Err(PluginError::Config(
                "`queue_capacity` and `max_pixels` must be at least 1".into(),
            ));
        }
        if config
            .workers
            .is_some_and(|w| !(1..=MAX_WORKERS).contains(&w))
        {
            return Err(PluginError::Config(format!(
                "`workers` must be 1 to {MAX_WORKERS}"
            )));
        }
        let model = rustface::read_model(MODEL)
            .map_err(|e| PluginError::failed(format!("cannot read the SeetaFace model: {e}")))?;
        let (workers, max_pixels) = (config.workers(), config.max_pixels);
        // rustface panics on inputs it considers illegal; the pool answers such a panic as
        // an error and the thread serves on.
        let queue = Queue::spawn("bkg-rustyface", workers, config.queue_capacity, |_| {
            let model = model.clone();
            move |request| process(&model, request, max_pixels)
        })
        .map_err(|e| Error::Inference(format!("cannot start the detector threads: {e}")))?;
        // A second start keeps the first detector: the runtime starts a plugin once per process.
        let _ = self.started.set(Started { queue, defaults });
        tracing::info!(plugin_id = %ctx.plugin_id, ?config, workers, "rustyface plugin started");
        Ok(())
    }

    async fn invoke(
        &self,
        capability: &str,
        payload: Value,
        ctx: InvokeContext,
    ) -> Result<Value, PluginError> {
        if capability != FACE_DETECT {
            return Err(PluginError::UnknownCapability(capability.to_owned()));
        }
        let started = self
            .started
            .get()
            .ok_or_else(|| PluginError::NotReady("the detector is not started".into()))?;
        let Value::Object(payload) = payload else {
            return Err(PluginError::InvalidInput(
                "the payload must be an object with an `image`".into(),
            ));
        };
        let image = match payload.get("image") {
            Some(Value::String(s)) => detect::image_bytes("image", s)?,
            Some(_) => return Err(Error::field("image", "must be a base64 string").into()),
            None => return Err(Error::field("image", "is required").into()),
        };
        let annotate = match payload.get("annotate") {
            None | Some(Value::Null) => false,
            Some(Value::Bool(b)) => *b,
            Some(_) => return Err(Error::field("annotate", "must be a boolean").into()),
        };
        let params = params(&payload, started.defaults)?;
        let request = Request {
            image,
            params,
            annotate,
        };
        let detection = started
            .queue
            .run(request, Some(ctx.deadline))
            .await
            .map_err(Error::from)??;
        tracing::debug!(request_id = %ctx.request_id, faces = detection.faces.len(), "detected");
        let mut out = json!({
            "faces": detection.faces,
            "width": detection.width,
            "height": detection.height,
        });
        if let Some(png) = detection.annotated {
            out["annotated_png"] =
                Value::String(base64::engine::general_purpose::STANDARD.encode(png));
        }
        Ok(out)
    }

    fn details(&self) -> Map<String, Value> {
        let mut details = Map::new();
        if let Some(s) = self.started.get() {
            details.insert("workers".into(), json!(s.queue.workers()));
        }
        details
    }

    fn telemetry(&self) -> Map<String, Value> {
        let mut t = Map::new();
        if let Some(s) = self.started.get() {
            t.insert("queue_depth".into(), json!(s.queue.depth()));
        }
        t
    }
}

#[cfg(test)]
mod tests;
