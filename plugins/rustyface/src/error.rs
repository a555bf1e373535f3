//! The plugin's errors and how they map onto the protocol's.

use bkg_plugin_api::PluginError;
use bkg_plugin_api::worker_pool;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The request cannot be used (422): the message starts with the field, in backticks.
    #[error("{0}")]
    InvalidInput(String),
    /// Every place in the queue is taken (429).
    #[error("the detection queue is full")]
    QueueFull,
    /// The detection threads are gone (503).
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

impl From<worker_pool::Error> for Error {
    fn from(e: worker_pool::Error) -> Self {
        match e {
            worker_pool::Error::Full => Self::QueueFull,
            worker_pool::Error::Stopped => Self::Unloaded,
            worker_pool::Error::Panicked => {
                Self::Inference("the detector panicked on this image".into())
            }
            worker_pool::Error::Expired => Self::Inference(e.to_string()),
        }
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
