//! bkg-operator: turns Plugin manifests into running plugin-runtime instances.
//!
//! - [`local`]: the embedded default. Each replica is a supervised child process on this machine,
//!   fed from a folder of manifests (`bkg up`).
//! - [`k8s`]: the Kubernetes controller (`bkg operator`) and its offline renderer (`bkg render`).

pub mod k8s;
pub mod local;
