//! bkg-operator: turns Plugin resources on a cluster into Deployments and Services of
//! plugin-runtime pods ([`k8s`]: the controller behind `bkg operator`, and its offline renderer
//! behind `bkg render`). Local mode (`bkg up`) is the `bkg-supervisor` crate.

pub mod k8s;
