//! The plugin's errors and how they map onto the protocol's.

use bkg_plugin_api::PluginError;
use bkg_plugin_api::worker_pool;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The request cannot be used (422): the message starts with the field, in backticks.
    #[error("{0}")]
    InvalidInput(String),
    /// The worker pool refused or lost the request: full (429), stopped (503), expired or
    /// panicked (500).
    #[error(transparent)]
    Pool(#[from] worker_pool::Error),
    /// Detection itself failed (500).
    #[error("detection failed: {0}")]
    Inference(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// An invalid field, named first so callers see which one.
    pub fn field(field: &str, message: impl std::fmt::Display) -> Self {
        Self::InvalidInput(format!("`{field}`: {message}"))
    }
}

impl From<Error> for PluginError {
    fn from(e: Error) -> Self {
        match e {
            Error::InvalidInput(m) => PluginError::InvalidInput(m),
            Error::Pool(e) => e.into(),
            Error::Inference(_) => PluginError::failed(e.to_string()),
        }
    }
}
