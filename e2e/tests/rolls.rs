//! Changes without failed calls: a config change, a restart and a manifest edit roll the
//! replicas of a local plugin (start the new instance, wait until it is ready, switch, drain
//! the old one) while 20 clients invoke it without pause. Every answer must be 200.
//!
//! Waits are on events (the plugin's status and instances); deadlines only guard against hangs.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use bkg_e2e::{ADMIN_KEY, Stack, alive, sample_echo};
use serde_json::{Value, json};

const CLIENTS: usize = 20;

/// A stack for `manifest` whose default rate limit does not throttle the clients.
fn stack(manifest: &str) -> Stack {
    Stack::start_env(&[("echo.yaml", manifest)], &[("BKG_RATE_LIMIT_RPS", "0")])
}

/// Clients invoking `echo` in a loop until stopped, counting answers.
struct Load {
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicU64>,
    threads: Vec<JoinHandle<Vec<String>>>,
}

impl Load {
    fn start(url: &str) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let ok = Arc::new(AtomicU64::new(0));
        let threads = (0..CLIENTS)
            .map(|client| {
                let (stop, ok, url) = (stop.clone(), ok.clone(), url.to_owned());
                std::thread::spawn(move || {
                    let http = reqwest::blocking::Client::builder()
                        .no_proxy()
                        .timeout(Duration::from_secs(30))
                        .build()
                        .expect("client");
                    let mut failures = Vec::new();
                    let mut n = 0u64;
                    while !stop.load(Ordering::Relaxed) {
                        n += 1;
                        let payload = json!({"client": client, "n": n});
                        let body = json!({"capability": "echo", "payload": payload});
                        let answer = http
                            .post(format!("{url}/api/plugins/echo/invoke"))
                            .bearer_auth(ADMIN_KEY)
                            .header("content-type", "application/json")
                            .body(body.to_string())
                            .send()
                            .map_err(|e| e.to_string())
                            .and_then(|r| {
                                let status = r.status().as_u16();
                                let text = r.text().map_err(|e| e.to_string())?;
                                Ok((status, text))
                            });
                        match answer {
                            Ok((200, text))
                                if serde_json::from_str::<Value>(&text).ok()
                                    == Some(payload.clone()) =>
                            {
                                ok.fetch_add(1, Ordering::Relaxed);
                            }
                            Ok((status, text)) => failures.push(format!("{status}: {text}")),
                            Err(e) => failures.push(format!("transport: {e}")),
                        }
                    }
                    failures
                })
            })
            .collect();
        Load { stop, ok, threads }
    }

    fn ok(&self) -> u64 {
        self.ok.load(Ordering::Relaxed)
    }

    /// Stops the clients; returns every failed call.
    fn finish(self) -> (u64, Vec<String>) {
        self.stop.store(true, Ordering::Relaxed);
        let failures = self
            .threads
            .into_iter()
            .flat_map(|t| t.join().expect("client thread"))
            .collect();
        (self.ok.load(Ordering::Relaxed), failures)
    }
}

fn pids(plugin: &Value) -> Vec<u64> {
    plugin["instances"]
        .as_array()
        .expect("instances")
        .iter()
        .filter_map(|i| i["pid"].as_u64())
        .collect()
}

/// Waits until the plugin runs `replicas` instances, all ready, none of them one of `old`.
fn wait_replaced(stack: &Stack, replicas: usize, old: &[u64]) -> Value {
    stack.wait_plugin("echo", "rolled to new instances", |p| {
        let instances = p["instances"].as_array().cloned().unwrap_or_default();
        p["status"] == "running"
            && instances.len() == replicas
            && instances.iter().all(|i| {
                i["ready"] == true && i["pid"].as_u64().is_some_and(|pid| !old.contains(&pid))
            })
    })
}

/// Waits until every process in `old` has exited (drained and stopped).
fn wait_gone(old: &[u64]) {
    let deadline = Instant::now() + Duration::from_secs(60);
    for &pid in old {
        while alive(pid as u32) {
            assert!(
                Instant::now() < deadline,
                "old instance {pid} never stopped"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// Runs `change`, waits until it rolled out, and checks that calls were served meanwhile.
fn roll(stack: &Stack, load: &Load, replicas: usize, what: &str, change: impl FnOnce()) -> Value {
    let (_, before) = stack.get("/api/plugins/echo");
    let old = pids(&before);
    assert_eq!(old.len(), replicas, "{before:#}");
    let served_before = load.ok();
    change();
    let after = wait_replaced(stack, replicas, &old);
    wait_gone(&old);
    assert!(
        load.ok() > served_before,
        "no call was served during the {what}"
    );
    after
}

fn greeting(stack: &Stack) -> Value {
    stack.invoke("echo", "config", json!({})).body["greeting"].clone()
}

fn config_restart_and_manifest_edit_fail_no_call(replicas: usize) {
    let manifest = sample_echo().replace("replicas: 1", &format!("replicas: {replicas}"));
    let stack = stack(&manifest);
    stack.wait_plugin("echo", "fully ready", |p| {
        p["ready_replicas"] == replicas as u64
    });
    let load = Load::start(&stack.url);
    // Calls are flowing before anything changes.
    let deadline = Instant::now() + Duration::from_secs(30);
    while load.ok() < 100 {
        assert!(Instant::now() < deadline, "the load never got going");
        std::thread::sleep(Duration::from_millis(20));
    }

    // (a) A config change answers once the new config serves on every replica.
    roll(&stack, &load, replicas, "config change", || {
        let r = stack.post("/api/plugins/echo/config", r#"{"greeting": "bonjour"}"#);
        assert_eq!(r.status, 200, "{:#}", r.body);
        assert_eq!(r.body["config"], json!({"greeting": "bonjour"}));
        // Answered after the roll: no old instance is routed any more.
        for _ in 0..2 * replicas {
            assert_eq!(greeting(&stack), "bonjour");
        }
    });

    // (b) A restart replaces every process.
    roll(&stack, &load, replicas, "restart", || {
        assert_eq!(stack.post("/api/plugins/echo/restart", "").status, 202);
    });
    assert_eq!(greeting(&stack), "bonjour");

    // (c) A manifest edit rolls out the file's spec.
    roll(&stack, &load, replicas, "manifest edit", || {
        let edited = manifest.replace("greeting: hello", "greeting: hallo");
        std::fs::write(stack.manifest_path("echo.yaml"), edited).expect("write");
    });
    assert_eq!(greeting(&stack), "hallo");

    let (ok, failures) = load.finish();
    assert!(
        failures.is_empty(),
        "{} of {} calls failed during the rolls with {replicas} replica(s); first ones: {:#?}",
        failures.len(),
        ok + failures.len() as u64,
        &failures[..failures.len().min(10)]
    );
}

#[test]
fn one_replica_rolls_without_a_failed_call() {
    config_restart_and_manifest_edit_fail_no_call(1);
}

#[test]
fn two_replicas_roll_without_a_failed_call() {
    config_restart_and_manifest_edit_fail_no_call(2);
}

#[test]
fn a_config_the_plugin_refuses_leaves_the_old_version_serving() {
    let stack = stack(&sample_echo());
    let before = stack.wait_running("echo");
    let old = pids(&before);
    let load = Load::start(&stack.url);

    // A config the schema refuses is answered 400, naming the field, before anything starts.
    let r = stack.post("/api/plugins/echo/config", r#"{"startupDelayMs": "soon"}"#);
    assert_eq!(r.status, 400, "{:#}", r.body);
    let detail = r.body["detail"].as_str().unwrap_or_default();
    assert!(detail.contains("spec.config.startupDelayMs"), "{detail}");

    // echo exits with status 78 on a config it refuses at start.
    let r = stack.post(
        "/api/plugins/echo/config",
        r#"{"startupError": "refused on purpose"}"#,
    );
    assert_eq!(r.status, 409, "{:#}", r.body);
    let detail = r.body["detail"].as_str().unwrap_or_default();
    assert!(
        detail.contains("refused on purpose") && detail.contains("keep serving"),
        "{detail}"
    );
    let (_, p) = stack.get("/api/plugins/echo");
    assert_eq!(p["status"], "running", "{p:#}");
    let error = p["last_error"].as_str().unwrap_or_default();
    assert!(error.contains("refused on purpose"), "{p:#}");
    // The old instance still serves with the old config.
    assert!(old.iter().all(|&pid| alive(pid as u32)));
    assert_eq!(greeting(&stack), "hello");

    // A good config replaces both the failed attempt and the old instance.
    let r = stack.post("/api/plugins/echo/config", r#"{"greeting": "fixed"}"#);
    assert_eq!(r.status, 200, "{:#}", r.body);
    let p = wait_replaced(&stack, 1, &old);
    assert!(p["last_error"].is_null(), "{p:#}");
    assert_eq!(greeting(&stack), "fixed");

    let (ok, failures) = load.finish();
    assert!(ok > 0);
    assert!(
        failures.is_empty(),
        "{} calls failed: {:#?}",
        failures.len(),
        &failures[..failures.len().min(10)]
    );
}

#[test]
fn stop_still_stops_every_instance() {
    let manifest = sample_echo().replace("replicas: 1", "replicas: 2");
    let stack = Stack::start(&[("echo.yaml", &manifest)]);
    let p = stack.wait_plugin("echo", "fully ready", |p| p["ready_replicas"] == 2);
    let old = pids(&p);
    assert_eq!(stack.post("/api/plugins/echo/stop", "").status, 202);
    stack.wait_plugin("echo", "stopped", |p| p["status"] == "stopped");
    assert!(old.iter().all(|&pid| !alive(pid as u32)));
    assert_eq!(stack.invoke("echo", "echo", json!({})).status, 503);
}
