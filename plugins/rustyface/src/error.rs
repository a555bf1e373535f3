//! The plugin's errors and how they map onto the protocol's.

use bkg_plugin_api::PluginError;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The request cannot be used (422): the message starts with the field, in backticks.
    #[error("{0}")]
    InvalidInput(String),
    /// Every place in the queue is taken (429).
    #[error("the detection queue is full")]
    QueueFull,
    /// The detection thread is gone (503).
    #[error("the detector is not running")]
    Unloaded,
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
            Error::QueueFull => PluginError::Overloaded {
                retry_after_secs: 1,
            },
            Error::Unloaded => PluginError::NotReady(e.to_string()),
            Error::Inference(_) => PluginError::failed(e.to_string()),
        }
    }
}
