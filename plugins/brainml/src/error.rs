//! The plugin's errors and how they map onto the protocol's.

use bkg_plugin_api::PluginError;
use bkg_plugin_api::worker_pool;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The request cannot be used (422): the message starts with the JSON pointer of the
    /// offending field (`/inputs/X/shape`), in backticks.
    #[error("{0}")]
    InvalidInput(String),
    /// The model cannot be used (a start error): not ONNX, no such file, an input brainml
    /// cannot feed.
    #[error("{0}")]
    Model(String),
    /// The model could not be fetched (a start error that may pass: the Hub, the network).
    #[error("{0}")]
    Fetch(String),
    /// The worker pool refused or lost the request: full (429), stopped (503), expired or
    /// panicked (500).
    #[error(transparent)]
    Pool(#[from] worker_pool::Error),
    /// Inference itself failed (500).
    #[error("inference failed: {0}")]
    Inference(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// An invalid field, named first (as a JSON pointer into the payload) so callers see which.
    pub fn field(pointer: &str, message: impl std::fmt::Display) -> Self {
        Self::InvalidInput(format!("`{pointer}`: {message}"))
    }
}

impl From<Error> for PluginError {
    fn from(e: Error) -> Self {
        match e {
            Error::InvalidInput(m) => PluginError::InvalidInput(m),
            Error::Model(m) => PluginError::Config(m),
            Error::Pool(e) => e.into(),
            Error::Fetch(_) | Error::Inference(_) => PluginError::failed(e.to_string()),
        }
    }
}
