//! Helpers to run the real `bkg up` as a child process and talk to it over HTTP.

#![forbid(unsafe_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;

/// Folder of the workspace's built binaries (`target/debug`).
pub fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    // target/debug/deps/<test> → target/debug
    exe.parent()
        .and_then(Path::parent)
        .expect("target dir")
        .to_path_buf()
}

/// The repository root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("repo root")
        .to_path_buf()
}

/// The venv's Python with `openai`; fails (never skips) when setup has not installed it.
pub fn python_with_openai() -> PathBuf {
    let python = repo_root().join(".tools/venv/bin/python");
    let found = Command::new(&python)
        .args(["-c", "import openai; print(openai.__version__)"])
        .output();
    match found {
        Ok(out) if out.status.success() => python,
        Ok(out) => panic!(
            "the openai Python package is missing from {}: run scripts/setup.sh (make test does)\n{}",
            python.display(),
            String::from_utf8_lossy(&out.stderr)
        ),
        Err(e) => panic!(
            "no Python venv at {} ({e}): run scripts/setup.sh (make test does)",
            python.display()
        ),
    }
}

/// The bootstrap admin key every test stack accepts (`BKG_API_KEY`).
pub const ADMIN_KEY: &str = "bkg_e2eAdminKey0123456789abcdefghijklmnopqr";

/// A running `bkg up` with its own manifest folder; killed on drop.
pub struct Stack {
    pub child: Child,
    pub url: String,
    /// The metrics listener (`--metrics-listen`): `/metrics` is not on the API port.
    pub metrics_url: String,
    pub dir: tempfile::TempDir,
    pub http: reqwest::blocking::Client,
    output: mpsc::Receiver<String>,
    pub seen: Vec<String>,
}

impl Stack {
    /// Starts `bkg up --port 0` on a folder holding `manifests` (file name, YAML text).
    pub fn start(manifests: &[(&str, &str)]) -> Stack {
        let dir = tempfile::tempdir().expect("tempdir");
        for (name, text) in manifests {
            std::fs::write(dir.path().join(name), text).expect("write manifest");
        }
        let bkg = bin_dir().join("bkg");
        assert!(
            bkg.is_file() && bin_dir().join("plugin-runtime").is_file(),
            "build the binaries first: cargo build --workspace"
        );
        Self::start_in(dir, &[], &[])
    }

    /// Like [`Stack::start`], with extra environment for `bkg up` and its children.
    pub fn start_env(manifests: &[(&str, &str)], env: &[(&str, &str)]) -> Stack {
        let dir = tempfile::tempdir().expect("tempdir");
        for (name, text) in manifests {
            std::fs::write(dir.path().join(name), text).expect("write manifest");
        }
        Self::start_in(dir, &[], env)
    }

    /// Starts `bkg up` on an existing manifest folder with extra arguments.
    pub fn start_with(dir: tempfile::TempDir, extra: &[&str]) -> Stack {
        Self::start_in(dir, extra, &[])
    }

    /// Starts `bkg up` on an existing manifest folder with extra arguments and environment.
    pub fn start_with_env(dir: tempfile::TempDir, extra: &[&str], env: &[(&str, &str)]) -> Stack {
        Self::start_in(dir, extra, env)
    }

    fn start_in(dir: tempfile::TempDir, extra: &[&str], env: &[(&str, &str)]) -> Stack {
        let mut child = Command::new(bin_dir().join("bkg"))
            .args(["up", "--port", "0", "--watch-interval-ms", "100"])
            .args(["--metrics-listen", "127.0.0.1:0"])
            .arg("--plugins")
            .arg(dir.path())
            .arg("--keys-file")
            .arg(dir.path().join("keys").join("keys.yaml"))
            .args(extra)
            .env("RUST_LOG", "info")
            .env("BKG_API_KEY", ADMIN_KEY)
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn bkg up");
        let (tx, rx) = mpsc::channel();
        for stream in [
            Box::new(child.stdout.take().expect("stdout")) as Box<dyn std::io::Read + Send>,
            Box::new(child.stderr.take().expect("stderr")),
        ] {
            let tx = tx.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    if tx.send(line).is_err() {
                        return;
                    }
                }
            });
        }
        let mut stack = Stack {
            child,
            url: String::new(),
            metrics_url: String::new(),
            dir,
            http: reqwest::blocking::Client::builder()
                .no_proxy()
                .default_headers({
                    let mut h = reqwest::header::HeaderMap::new();
                    h.insert(
                        reqwest::header::AUTHORIZATION,
                        reqwest::header::HeaderValue::from_static(concat!(
                            "Bearer ",
                            "bkg_e2eAdminKey0123456789abcdefghijklmnopqr"
                        )),
                    );
                    h
                })
                .timeout(Duration::from_secs(30))
                .build()
                .expect("client"),
            output: rx,
            seen: Vec::new(),
        };
        let line = stack.wait_for_output("gateway listening on http://", Duration::from_secs(20));
        let url = line
            .split_whitespace()
            .find(|w| w.starts_with("http://"))
            .expect("url in banner");
        stack.url = url.to_owned();
        let line = stack.wait_for_output("metrics on http://", Duration::from_secs(20));
        let metrics = line
            .split_whitespace()
            .find(|w| w.starts_with("http://"))
            .expect("metrics url in banner");
        stack.metrics_url = metrics.trim_end_matches("/metrics").to_owned();
        stack
    }

    /// Stops this `bkg up` (SIGTERM) and starts a new one on the same manifest folder (and key
    /// file), as a person restarting `make up` would.
    pub fn restart(mut self) -> Stack {
        if self.child.try_wait().expect("try_wait").is_none() {
            self.terminate();
        }
        let placeholder = tempfile::tempdir().expect("tempdir");
        let dir = std::mem::replace(&mut self.dir, placeholder);
        drop(self);
        Self::start_in(dir, &[], &[])
    }

    /// Waits for an output line containing `needle` and returns it.
    pub fn wait_for_output(&mut self, needle: &str, timeout: Duration) -> String {
        if let Some(line) = self.seen.iter().find(|l| l.contains(needle)) {
            return line.clone();
        }
        let deadline = Instant::now() + timeout;
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match self.output.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if line.contains(needle) {
                        return line;
                    }
                }
                Err(_) => break,
            }
        }
        panic!(
            "no output line with {needle:?} within {timeout:?}; output so far:\n{}",
            self.seen.join("\n")
        );
    }

    /// Collects output printed so far without waiting.
    pub fn drain_output(&mut self) -> &[String] {
        while let Ok(line) = self.output.try_recv() {
            self.seen.push(line);
        }
        &self.seen
    }

    pub fn get(&self, path: &str) -> (u16, Value) {
        let r = self
            .http
            .get(format!("{}{path}", self.url))
            .send()
            .expect("GET");
        let status = r.status().as_u16();
        (status, r.json().unwrap_or(Value::Null))
    }

    pub fn post(&self, path: &str, body: impl Into<reqwest::blocking::Body>) -> Response {
        let r = self
            .http
            .post(format!("{}{path}", self.url))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .expect("POST");
        Response::from(r)
    }

    pub fn invoke(&self, plugin: &str, capability: &str, payload: Value) -> Response {
        let body = serde_json::json!({"capability": capability, "payload": payload});
        self.post(&format!("/api/plugins/{plugin}/invoke"), body.to_string())
    }

    /// Polls `GET /api/plugins/{id}` until `pred` holds.
    pub fn wait_plugin(&self, id: &str, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut last = Value::Null;
        while Instant::now() < deadline {
            let (status, body) = self.get(&format!("/api/plugins/{id}"));
            if status == 200 && pred(&body) {
                return body;
            }
            last = body;
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("plugin {id} never became {what}; last seen: {last:#}");
    }

    pub fn wait_running(&self, id: &str) -> Value {
        self.wait_plugin(id, "running", |p| p["status"] == "running")
    }

    /// Manifest folder path.
    pub fn manifest_path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Sends SIGTERM and waits for exit.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        signal(self.child.id(), "TERM");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "bkg up did not exit after SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Status, headers of interest and JSON body of one answer.
pub struct Response {
    pub status: u16,
    pub content_type: String,
    pub request_id: Option<String>,
    pub retry_after: Option<String>,
    pub body: Value,
}

impl From<reqwest::blocking::Response> for Response {
    fn from(r: reqwest::blocking::Response) -> Self {
        let header = |name: &str| {
            r.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        let content_type = header("content-type").unwrap_or_default();
        let request_id = header("x-request-id");
        let retry_after = header("retry-after");
        let status = r.status().as_u16();
        Response {
            status,
            content_type,
            request_id,
            retry_after,
            body: r.json().unwrap_or(Value::Null),
        }
    }
}

/// Sends a signal with the `kill` command.
pub fn signal(pid: u32, name: &str) {
    let ok = Command::new("kill")
        .arg(format!("-{name}"))
        .arg(pid.to_string())
        .status()
        .expect("kill")
        .success();
    assert!(ok, "kill -{name} {pid} failed");
}

/// True while `pid` exists and is not a zombie.
pub fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rsplit_once(')')
            .map(|(_, rest)| !rest.trim_start().starts_with('Z'))
            .unwrap_or(false),
        Err(_) => false,
    }
}

/// The sample echo manifest from `config/plugins`.
pub fn sample_echo() -> String {
    std::fs::read_to_string(repo_root().join("config/plugins/echo.yaml")).expect("sample echo")
}

/// POSTs `body` over a raw socket and returns the status line and the body of the answer.
/// A server may answer 413 and close before a large body is fully sent, which HTTP clients
/// report as a write error; this reads the answer regardless.
pub fn post_raw(url: &str, path: &str, body: &[u8]) -> (u16, String) {
    use std::io::{Read, Write};
    let authority = url.trim_start_matches("http://");
    let mut stream = std::net::TcpStream::connect(authority).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let head = format!(
        "POST {path} HTTP/1.1\r\nhost: {authority}\r\nauthorization: Bearer {ADMIN_KEY}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).expect("write head");
    let _ = stream.write_all(body);
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    let text = String::from_utf8_lossy(&answer).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

/// Runs `bkg apikey create` with `scopes` (comma-separated) into `keys_file` and returns the
/// printed key.
pub fn create_key(keys_file: &Path, id: &str, scopes: &str) -> String {
    let out = Command::new(bin_dir().join("bkg"))
        .args([
            "apikey",
            "create",
            "--id",
            id,
            "--scopes",
            scopes,
            "--keys-file",
        ])
        .arg(keys_file)
        .output()
        .expect("bkg apikey create");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .find(|w| w.starts_with("bkg_"))
        .expect("key printed")
        .to_owned()
}
