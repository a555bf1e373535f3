//! `bkg operator` and `bkg gateway --backend kubernetes` against a real cluster (kind, k3d, …):
//! apply the CRD and a Plugin, wait Ready, invoke through the gateway, disable, delete.
//!
//! Ignored by `make test` (reported as ignored, with the reason); `make test-cluster` runs it,
//! and then it fails unless a cluster is reachable (`KUBECONFIG`, `~/.kube/config` or in-cluster)
//! and `BKG_E2E_RUNTIME_IMAGE` names a plugin-runtime image the cluster can pull. See
//! e2e/README.md.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bkg_e2e::{bin_dir, repo_root};
use serde_json::{Value, json};

const KEY: &str = "bkg_e2eClusterKey0123456789abcdefghijklmnop";

/// Why the cluster test cannot run here, if it cannot.
fn skip_reason() -> Option<String> {
    let kubeconfig = std::env::var_os("KUBECONFIG")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".kube/config")));
    let in_cluster = std::env::var_os("KUBERNETES_SERVICE_HOST").is_some();
    if !in_cluster && !kubeconfig.is_some_and(|p| p.exists()) {
        return Some("no KUBECONFIG, ~/.kube/config or in-cluster service account".into());
    }
    let reachable = Command::new("kubectl")
        .args(["cluster-info", "--request-timeout=5s"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    match reachable {
        Err(_) => return Some("kubectl is not on PATH".into()),
        Ok(s) if !s.success() => return Some("the cluster is not reachable".into()),
        Ok(_) => {}
    }
    if std::env::var_os("BKG_E2E_RUNTIME_IMAGE").is_none() {
        return Some(
            "BKG_E2E_RUNTIME_IMAGE is not set (a plugin-runtime image the cluster can pull)".into(),
        );
    }
    None
}

fn kubectl(args: &[&str]) -> (bool, String) {
    let out = Command::new("kubectl")
        .args(args)
        .output()
        .expect("kubectl");
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

fn kubectl_ok(args: &[&str]) -> String {
    let (ok, text) = kubectl(args);
    assert!(ok, "kubectl {args:?} failed: {text}");
    text
}

fn kubectl_apply(yaml: &str) {
    use std::io::Write;
    let mut child = Command::new("kubectl")
        .args(["apply", "-f", "-"])
        .stdin(Stdio::piped())
        .spawn()
        .expect("kubectl apply");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(yaml.as_bytes())
        .expect("write manifest");
    assert!(
        child.wait().expect("kubectl apply").success(),
        "kubectl apply failed"
    );
}

fn wait_until(what: &str, timeout: Duration, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !ok() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_secs(2));
    }
}

/// A temporary namespace and the processes of one test; all removed on drop.
struct Fixture {
    namespace: String,
    children: Vec<Child>,
}

impl Drop for Fixture {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = kubectl(&["delete", "namespace", &self.namespace, "--wait=false"]);
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

#[test]
#[ignore = "needs a Kubernetes cluster and BKG_E2E_RUNTIME_IMAGE; run it with `make test-cluster` (e2e/README.md)"]
fn plugin_runs_on_the_cluster_behind_the_gateway() {
    // Asked for explicitly (`--ignored`), so a missing cluster is a failure, not a pass.
    if let Some(reason) = skip_reason() {
        panic!("the cluster e2e cannot run: {reason}. See e2e/README.md.");
    }
    let image = std::env::var("BKG_E2E_RUNTIME_IMAGE").expect("checked above");
    let namespace = format!("bkg-e2e-{}", std::process::id());
    let mut fx = Fixture {
        namespace: namespace.clone(),
        children: Vec::new(),
    };
    let crd = repo_root().join("crds/plugins.bkg.rs.yaml");
    kubectl_ok(&["apply", "-f", crd.to_str().expect("path")]);
    kubectl_ok(&[
        "wait",
        "--for=condition=Established",
        "crd/plugins.bkg.rs",
        "--timeout=60s",
    ]);
    kubectl_ok(&["create", "namespace", &namespace]);

    let bkg = bin_dir().join("bkg");
    fx.children.push(
        Command::new(&bkg)
            .args([
                "operator",
                "--namespace",
                &namespace,
                "--leader-elect",
                "false",
            ])
            .args(["--metrics-addr", &format!("127.0.0.1:{}", free_port())])
            .args(["--image", &image, "--gpu-image", &image])
            .spawn()
            .expect("bkg operator"),
    );

    let echo = std::fs::read_to_string(repo_root().join("config/plugins/echo.yaml"))
        .expect("echo sample")
        .replace(
            "  name: echo\n",
            &format!("  name: echo\n  namespace: {namespace}\n"),
        );
    kubectl_apply(&echo);
    let phase = || {
        kubectl(&[
            "get",
            "plugin",
            "echo",
            "-n",
            &namespace,
            "-o",
            "jsonpath={.status.phase}",
        ])
        .1
    };
    wait_until("Plugin echo Running", Duration::from_secs(300), || {
        phase() == "Running"
    });
    let ready = kubectl_ok(&[
        "get",
        "plugin",
        "echo",
        "-n",
        &namespace,
        "-o",
        "jsonpath={.status.conditions[?(@.type==\"Ready\")].status}",
    ]);
    assert_eq!(ready, "True");

    let port = free_port();
    fx.children.push(
        Command::new(&bkg)
            .args([
                "gateway",
                "--backend",
                "kubernetes",
                "--namespace",
                &namespace,
            ])
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .env("BKG_API_KEY", KEY)
            .spawn()
            .expect("bkg gateway"),
    );
    let http = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("http client");
    let url = format!("http://127.0.0.1:{port}");
    let mut answer = Value::Null;
    wait_until(
        "an invoke through the gateway",
        Duration::from_secs(60),
        || {
            let r = http
                .post(format!("{url}/api/plugins/echo/invoke"))
                .bearer_auth(KEY)
                .json(&json!({"capability": "echo", "payload": {"hello": "cluster"}}))
                .send();
            match r {
                Ok(r) if r.status().is_success() => {
                    answer = r.json().unwrap_or(Value::Null);
                    true
                }
                _ => false,
            }
        },
    );
    assert!(answer.to_string().contains("cluster"), "answer: {answer}");

    kubectl_ok(&[
        "patch",
        "plugin",
        "echo",
        "-n",
        &namespace,
        "--type",
        "merge",
        "-p",
        r#"{"spec":{"enabled":false}}"#,
    ]);
    wait_until("Plugin echo Stopped", Duration::from_secs(120), || {
        phase() == "Stopped"
    });
    let replicas = kubectl_ok(&[
        "get",
        "deployment",
        "echo",
        "-n",
        &namespace,
        "-o",
        "jsonpath={.spec.replicas}",
    ]);
    assert_eq!(replicas, "0");

    kubectl_ok(&["delete", "plugin", "echo", "-n", &namespace, "--wait=true"]);
    wait_until(
        "children garbage-collected",
        Duration::from_secs(120),
        || !kubectl(&["get", "deployment", "echo", "-n", &namespace]).0,
    );
}
