//! `bkg operator`: the Kubernetes controller for Plugin resources.

use std::net::SocketAddr;

use anyhow::Context;
use bkg_operator::k8s::{self, Images, leader::LeaseConfig};

/// `service.name` of this command's traces unless OTEL_SERVICE_NAME says otherwise.
const SERVICE: &str = "bkg-operator";

/// Runtime images, shared by `bkg operator` and `bkg render` so both choose alike.
#[derive(clap::Args, Debug, Clone)]
pub struct ImageArgs {
    /// Runtime image for plugins without GPUs (a Plugin's spec.image overrides it).
    #[arg(long, env = "BKG_RUNTIME_IMAGE", default_value_t = Images::default().cpu)]
    image: String,
    /// Runtime image for plugins with spec.resources.gpu.
    #[arg(long, env = "BKG_RUNTIME_GPU_IMAGE", default_value_t = Images::default().gpu)]
    gpu_image: String,
    /// OTLP endpoint for the runtimes' traces; defaults to this process's
    /// OTEL_EXPORTER_OTLP_ENDPOINT, so one setting traces gateway, operator and plugins.
    #[arg(long, env = "BKG_RUNTIME_OTLP_ENDPOINT")]
    runtime_otlp_endpoint: Option<String>,
    /// Secrets in each Plugin's namespace the kubelet pulls runtime images with, comma-separated
    /// (a private registry).
    #[arg(long, env = "BKG_RUNTIME_IMAGE_PULL_SECRETS", value_delimiter = ',')]
    image_pull_secrets: Vec<String>,
    /// Secrets no Plugin's spec.env may reference, as namespace/name, comma-separated (the
    /// gateway's API-key Secret; the Helm chart sets it).
    #[arg(long, env = "BKG_PROTECTED_SECRETS", value_delimiter = ',')]
    protected_secrets: Vec<String>,
}

impl ImageArgs {
    pub fn images(&self) -> Images {
        Images {
            cpu: self.image.clone(),
            gpu: self.gpu_image.clone(),
            otlp_endpoint: self
                .runtime_otlp_endpoint
                .clone()
                .or_else(|| std::env::var("OTEL_EXPORTER_OTLP_ENDPOINT").ok())
                .filter(|e| !e.is_empty()),
            pull_secrets: self
                .image_pull_secrets
                .iter()
                .map(|s| s.trim().to_owned())
                .filter(|s| !s.is_empty())
                .collect(),
            protected_secrets: self
                .protected_secrets
                .iter()
                .map(|s| s.trim().to_owned())
                .filter(|s| !s.is_empty())
                .collect(),
        }
    }
}

#[derive(clap::Args, Debug)]
pub struct OperatorArgs {
    #[command(flatten)]
    images: ImageArgs,
    /// Namespace to watch; all namespaces when unset.
    #[arg(long, env = "BKG_WATCH_NAMESPACE")]
    namespace: Option<String>,
    /// Address of the operator's /metrics, /livez and /readyz.
    #[arg(
        long,
        env = "BKG_OPERATOR_METRICS_ADDR",
        default_value = "0.0.0.0:9090"
    )]
    metrics_addr: SocketAddr,
    /// Elect a leader through a Lease so several replicas can run (one reconciles).
    #[arg(long, env = "BKG_LEADER_ELECT", default_value_t = true, action = clap::ArgAction::Set)]
    leader_elect: bool,
    /// Name of the leader Lease.
    #[arg(long, env = "BKG_LEASE_NAME", default_value = "bkg-operator")]
    lease_name: String,
    /// Namespace of the leader Lease (the operator's own namespace).
    #[arg(long, env = "POD_NAMESPACE", default_value = "default")]
    lease_namespace: String,
    /// Identity in the Lease; the pod name.
    #[arg(long, env = "POD_NAME")]
    identity: Option<String>,
    /// Plugins reconciled at once.
    #[arg(long, env = "BKG_OPERATOR_CONCURRENCY", default_value_t = 16)]
    concurrency: u16,
    /// Log format: `text` or `json`.
    #[arg(long, env = "BKG_LOG_FORMAT", default_value = "text")]
    log_format: String,
}

pub fn run(args: OperatorArgs) -> anyhow::Result<()> {
    let _tracing = crate::process::init_tracing(&args.log_format, SERVICE);
    let identity = args
        .identity
        .clone()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| format!("bkg-operator-{}", std::process::id()));
    let config = k8s::Config {
        images: args.images.images(),
        namespace: args.namespace,
        metrics_listen: args.metrics_addr,
        lease: args
            .leader_elect
            .then(|| LeaseConfig::new(args.lease_name, args.lease_namespace, identity)),
        concurrency: args.concurrency,
    };
    tokio::runtime::Runtime::new()
        .context("starting the async runtime")?
        .block_on(k8s::serve::operate(
            config,
            crate::process::shutdown_signal(),
        ))
        .context("operator failed")
}
