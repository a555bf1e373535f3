//! `bkg operator` as a process, without a cluster: it must still stop when told to.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use bkg_e2e::{bin_dir, signal};

/// A kubeconfig whose API server is a closed port: the operator starts, serves its probes and
/// metrics, and its watches back off forever.
fn unreachable_kubeconfig(dir: &std::path::Path) -> std::path::PathBuf {
    let path = dir.join("kubeconfig");
    std::fs::write(
        &path,
        "apiVersion: v1\nkind: Config\n\
         clusters: [{name: none, cluster: {server: \"http://127.0.0.1:1\"}}]\n\
         users: [{name: none, user: {token: none}}]\n\
         contexts: [{name: none, context: {cluster: none, user: none}}]\n\
         current-context: none\n",
    )
    .expect("write kubeconfig");
    path
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port()
}

#[test]
fn sigterm_stops_the_operator_while_the_api_server_is_unreachable() {
    let dir = tempfile::tempdir().expect("tempdir");
    let kubeconfig = unreachable_kubeconfig(dir.path());
    for leader_elect in ["false", "true"] {
        let port = free_port();
        let mut child = Command::new(bin_dir().join("bkg"))
            .args(["operator", "--metrics-addr", &format!("127.0.0.1:{port}")])
            .args(["--leader-elect", leader_elect, "--log-format", "json"])
            .env("KUBECONFIG", &kubeconfig)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn bkg operator");
        // Up: probes answer while the watches (or the Lease) back off.
        let http = reqwest::blocking::Client::new();
        let deadline = Instant::now() + Duration::from_secs(20);
        while http
            .get(format!("http://127.0.0.1:{port}/livez"))
            .send()
            .map_or(true, |r| !r.status().is_success())
        {
            assert!(
                Instant::now() < deadline,
                "the operator never served /livez"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        std::thread::sleep(Duration::from_secs(1));

        signal(child.id(), "TERM");
        let stopped_by = Instant::now() + Duration::from_secs(12);
        let status = loop {
            if let Some(status) = child.try_wait().expect("wait") {
                break status;
            }
            if Instant::now() > stopped_by {
                let pid = child.id();
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "leader-elect={leader_elect}: bkg operator (pid {pid}) ignored SIGTERM for 12 s"
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        };
        assert!(
            status.success(),
            "leader-elect={leader_elect}: exit status {status:?}"
        );
    }
}
