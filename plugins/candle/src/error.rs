//! The crate's one error type, and how it maps onto the plugin contract's [`PluginError`].
//!
//! Loading errors carry the file they are about, because "cannot find tensor" alone tells an
//! operator nothing about which of three model directories on the node is broken.

use std::path::PathBuf;

use bkg_plugin_api::PluginError;

/// Result with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong while loading a model or embedding text.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The start-up configuration or a `model.load` request names something unusable.
    #[error("invalid config: {0}")]
    Config(String),

    /// A request payload is well-formed JSON but cannot be embedded.
    #[error("{0}")]
    InvalidInput(String),

    /// No model is loaded (none configured, or unloaded).
    #[error("no model is loaded; call model.load first")]
    NoModel,

    /// The queue holds as many inputs as it may; the caller should retry.
    #[error("the embedding queue is full")]
    QueueFull,

    /// The model's inference thread is gone (unloaded while the request waited).
    #[error("the model was unloaded while the request waited")]
    Unloaded,

    /// The caller's deadline passed before its inputs reached the model.
    #[error("the request's deadline passed while it waited in the queue")]
    DeadlineExceeded,

    /// `model.load` named a path while no model root is configured.
    #[error(
        "model.load by path is off: no model root is configured (BKG_MODEL_ROOT or the config's model_root)"
    )]
    NoModelRoot,

    /// `model.load` named a path that is not a directory inside the model root. Deliberately
    /// the same words whether the path exists or not, and without the path.
    #[error("model.load: the path does not name a directory inside the model root")]
    ModelPathRefused,

    /// `model.load` named a Hub model id or revision that is not one.
    #[error("model.load: {0}")]
    BadModelId(&'static str),

    /// A model directory lacks a file it needs.
    #[error("model directory {dir}: missing {file}")]
    MissingFile { dir: PathBuf, file: &'static str },

    /// A file exists but cannot be read or parsed.
    #[error("cannot read {path}: {message}")]
    BadFile { path: PathBuf, message: String },

    /// `config.json` names an architecture this plugin does not implement.
    #[error("unsupported model_type {0:?} (supported: {supported})", supported = crate::models::SUPPORTED)]
    UnsupportedArchitecture(String),

    /// The Hugging Face Hub download failed, or offline mode found nothing cached.
    #[error("cannot fetch {file} of {model_id}@{revision}: {message}")]
    Hub {
        model_id: String,
        revision: String,
        file: String,
        message: String,
    },

    /// The weights do not fit the config (missing tensor, wrong shape, corrupt file).
    #[error("weights {path}: {message}")]
    Weights { path: PathBuf, message: String },

    /// The tokenizer failed on an input.
    #[error("tokenizer: {0}")]
    Tokenizer(String),

    /// The requested device cannot be used.
    #[error("device: {0}")]
    Device(String),

    /// A tensor operation failed during inference.
    #[error("inference failed: {0}")]
    Candle(#[from] candle_core::Error),

    /// A batch failed; every request with an input in it gets this copy of the reason.
    #[error("inference failed: {0}")]
    Inference(String),
}

impl Error {
    /// Low-cardinality name for logs and metric labels.
    pub fn category(&self) -> &'static str {
        match self {
            Self::Config(_) => "config",
            Self::InvalidInput(_) => "invalid_input",
            Self::NoModel => "no_model",
            Self::QueueFull => "queue_full",
            Self::Unloaded => "unloaded",
            Self::DeadlineExceeded => "deadline",
            Self::NoModelRoot | Self::ModelPathRefused | Self::BadModelId(_) => "refused",
            Self::MissingFile { .. } => "missing_file",
            Self::BadFile { .. } => "bad_file",
            Self::UnsupportedArchitecture(_) => "unsupported_architecture",
            Self::Hub { .. } => "hub",
            Self::Weights { .. } => "weights",
            Self::Tokenizer(_) => "tokenizer",
            Self::Device(_) => "device",
            Self::Candle(_) | Self::Inference(_) => "inference",
        }
    }

    /// Maps a loading error into the contract: at `start` it is a config problem, while a
    /// `model.load` request that names a bad model is the caller's input problem.
    pub fn into_load_error(self, at_start: bool) -> PluginError {
        match self {
            Self::Device(_) | Self::Candle(_) => self.into(),
            other if at_start => PluginError::Config(other.to_string()),
            other => PluginError::InvalidInput(other.to_string()),
        }
    }
}

/// Seconds a refused caller is told to wait: batches take tens of milliseconds, so one
/// second is plenty for the queue to drain a little.
pub const RETRY_AFTER_SECS: u32 = 1;

impl From<Error> for PluginError {
    fn from(err: Error) -> Self {
        match err {
            Error::Config(m) => PluginError::Config(m),
            Error::InvalidInput(m) => PluginError::InvalidInput(m),
            Error::NoModelRoot | Error::ModelPathRefused | Error::BadModelId(_) => {
                PluginError::InvalidInput(err.to_string())
            }
            Error::NoModel | Error::Unloaded => PluginError::NotReady(err.to_string()),
            Error::DeadlineExceeded => PluginError::NotReady(err.to_string()),
            Error::QueueFull => PluginError::Overloaded {
                retry_after_secs: RETRY_AFTER_SECS,
            },
            other => PluginError::Failed {
                message: other.to_string(),
                source: Some(Box::new(other)),
            },
        }
    }
}
