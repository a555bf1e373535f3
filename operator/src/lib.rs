//! bkg-operator: turns Plugin manifests into running plugin-runtime instances.
//!
//! - [`local`]: the embedded default. Each replica is a supervised child process on this machine,
//!   fed from a folder of manifests (`bkg up`).

pub mod local;
