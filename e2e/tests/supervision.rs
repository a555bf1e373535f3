//! What the local supervisor gives a plugin and what it leaves behind: the child's
//! environment, the error it reports after a crash loop, its work folder.

use std::collections::BTreeMap;
use std::time::Duration;

use bkg_e2e::{ADMIN_KEY, Stack, sample_echo};

/// The environment of a running process, from `/proc/<pid>/environ`.
fn environ(pid: u64) -> BTreeMap<String, String> {
    let raw = std::fs::read(format!("/proc/{pid}/environ")).expect("read environ");
    raw.split(|b| *b == 0)
        .filter(|kv| !kv.is_empty())
        .filter_map(|kv| {
            let kv = String::from_utf8_lossy(kv);
            kv.split_once('=')
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
        })
        .collect()
}

/// `valueFrom` locally: a secretKeyRef `{name: hf, key: token}` is read from bkg up's
/// `BKG_SECRET_HF_TOKEN`, a missing optional reference leaves its variable unset, and a new
/// version that needs a reference bkg up cannot resolve is refused naming the field, while the
/// running one keeps serving with its environment.
#[test]
fn env_references_resolve_from_bkg_ups_environment() {
    let with_env = |env: &str| {
        sample_echo().replace("  replicas: 1\n", &format!("  replicas: 1\n  env:\n{env}"))
    };
    let manifest = with_env(
        "    - {name: HF_TOKEN, valueFrom: {secretKeyRef: {name: hf, key: token}}}\n    - {name: MODE, valueFrom: {configMapKeyRef: {name: settings, key: mode}}}\n    - {name: EXTRA, valueFrom: {secretKeyRef: {name: extra, key: x, optional: true}}}\n",
    );
    let mut stack = Stack::start_env(
        &[("echo.yaml", &manifest)],
        &[
            ("BKG_SECRET_HF_TOKEN", "hf_e2e_token"),
            ("BKG_CONFIGMAP_SETTINGS_MODE", "fast"),
        ],
    );
    let p = stack.wait_running("echo");
    let pid = p["instances"][0]["pid"].as_u64().expect("runtime pid");
    let env = environ(pid);
    assert_eq!(
        env.get("HF_TOKEN").map(String::as_str),
        Some("hf_e2e_token")
    );
    assert_eq!(env.get("MODE").map(String::as_str), Some("fast"));
    assert!(!env.contains_key("EXTRA"), "optional and missing: unset");
    assert!(
        !env.contains_key("BKG_SECRET_HF_TOKEN"),
        "the stand-in itself stays with bkg up"
    );

    // A required reference bkg up cannot resolve: refused, named, the old version serves.
    std::fs::write(
        stack.manifest_path("echo.yaml"),
        with_env("    - {name: HF_TOKEN, valueFrom: {secretKeyRef: {name: gated, key: token}}}\n"),
    )
    .expect("write");
    let p = stack.wait_plugin("echo", "flagged", |p| {
        p["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("spec.env[0].valueFrom.secretKeyRef"))
    });
    let error = p["last_error"].as_str().unwrap_or_default();
    assert!(error.contains("BKG_SECRET_GATED_TOKEN"), "{p:#}");
    assert!(!error.contains("hf_e2e_token"), "no value is shown: {p:#}");
    stack.wait_for_output("BKG_SECRET_GATED_TOKEN", Duration::from_secs(30));
    assert_eq!(p["status"], "running", "{p:#}");
    assert_eq!(p["instances"][0]["pid"].as_u64(), Some(pid), "{p:#}");
    assert_eq!(
        stack
            .invoke("echo", "echo", serde_json::json!({"k": 1}))
            .status,
        200
    );
}

#[test]
fn a_plugin_gets_its_manifest_env_and_no_gateway_secret() {
    let manifest = sample_echo().replace(
        "  replicas: 1\n",
        "  replicas: 1\n  env:\n    - {name: ECHO_MODE, value: loud}\n    - {name: ECHO_LIMIT, value: \"7\"}\n",
    );
    let stack = Stack::start_env(
        &[("echo.yaml", &manifest)],
        &[
            ("AWS_SECRET_ACCESS_KEY", "aws-secret-e2e"),
            ("DATABASE_PASSWORD", "db-secret-e2e"),
            ("BKG_MAX_BODY_BYTES", "3000000"),
            ("HF_HUB_OFFLINE", "1"),
        ],
    );
    let p = stack.wait_running("echo");
    let pid = p["instances"][0]["pid"].as_u64().expect("runtime pid");
    let env = environ(pid);

    for secret in [
        "BKG_API_KEY",
        "AWS_SECRET_ACCESS_KEY",
        "DATABASE_PASSWORD",
        "BKG_MAX_BODY_BYTES",
    ] {
        assert!(
            !env.contains_key(secret),
            "the plugin sees {secret}: {env:#?}"
        );
    }
    for (name, value) in &env {
        for secret in [ADMIN_KEY, "aws-secret-e2e", "db-secret-e2e"] {
            assert!(!value.contains(secret), "{name} carries a host secret");
        }
    }
    // What it needs is there: the manifest's env, its config, the allow-listed basics.
    assert_eq!(env.get("ECHO_MODE").map(String::as_str), Some("loud"));
    assert_eq!(env.get("ECHO_LIMIT").map(String::as_str), Some("7"));
    assert_eq!(env.get("HF_HUB_OFFLINE").map(String::as_str), Some("1"));
    assert!(env.contains_key("PATH"), "{env:#?}");
    assert!(
        env.get("BKG_PLUGIN_CONFIG")
            .is_some_and(|c| c.contains("hello")),
        "{env:#?}"
    );
}

#[test]
fn after_a_crash_loop_last_error_quotes_the_plugins_error_line() {
    // A runtime setting it cannot parse: the runtime's argument parser exits with status 2,
    // printing the error and then "For more information, try '--help'.".
    let manifest = sample_echo().replace(
        "  replicas: 1\n",
        "  replicas: 1\n  env:\n    - {name: BKG_MAX_QUEUE, value: lots}\n",
    );
    let mut stack = Stack::start(&[("echo.yaml", &manifest)]);
    let p = stack.wait_plugin("echo", "given up", |p| p["status"] == "error");
    let error = p["last_error"].as_str().unwrap_or_default();
    assert!(
        error.contains("invalid value 'lots'"),
        "last_error should carry the plugin's error line: {p:#}"
    );
    assert!(!error.contains("--help"), "{p:#}");
    // The give-up is logged once, as an error: everything logged before shutdown (the host's
    // log lines are one ordered stream) holds one such line.
    stack.wait_for_output("giving up after", Duration::from_secs(10));
    assert!(stack.terminate().success());
    stack.wait_for_output("manifest removed", Duration::from_secs(10));
    let lines: Vec<&String> = stack
        .seen
        .iter()
        .filter(|l| l.contains("giving up after"))
        .collect();
    assert_eq!(lines.len(), 1, "{lines:#?}");
    assert!(lines[0].contains("ERROR"), "{lines:#?}");
}

#[test]
fn a_killed_bkg_ups_work_folder_is_removed_at_the_next_start() {
    let tmp = std::env::temp_dir();
    // A pid that ran and is gone.
    let mut gone = std::process::Command::new("true").spawn().expect("spawn");
    let dead_pid = gone.id();
    gone.wait().expect("wait");
    let stale = tmp.join(format!("bkg-up-{dead_pid}-e2eStale"));
    std::fs::create_dir_all(&stale).expect("mkdir");
    std::fs::write(stale.join("echo-0-1.addr"), "127.0.0.1:1").expect("write");
    std::fs::write(stale.join("echo-0-2.tmp"), "127.0.0.1:2").expect("write");
    // One whose process still runs (this test) is somebody's live folder.
    let live = tmp.join(format!("bkg-up-{}-e2eLive", std::process::id()));
    std::fs::create_dir_all(&live).expect("mkdir");

    let stack = Stack::start(&[("echo.yaml", &sample_echo())]);
    stack.wait_running("echo");
    let stale_exists = stale.exists();
    let live_exists = live.exists();
    let _ = std::fs::remove_dir_all(&stale);
    let _ = std::fs::remove_dir_all(&live);
    assert!(
        !stale_exists,
        "the stale folder {} is still there",
        stale.display()
    );
    assert!(live_exists, "a live process's folder was removed");

    // This stack's own folder is named after it and holds only its live address file.
    let own: Vec<_> = std::fs::read_dir(&tmp)
        .expect("read tmp")
        .filter_map(Result::ok)
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with(&format!("bkg-up-{}-", stack.child.id()))
        })
        .collect();
    assert_eq!(own.len(), 1);
}

#[test]
fn lifecycle_calls_leave_no_temporary_files() {
    let stack = Stack::start(&[("echo.yaml", &sample_echo())]);
    stack.wait_running("echo");
    let work = std::fs::read_dir(std::env::temp_dir())
        .expect("read tmp")
        .filter_map(Result::ok)
        .find(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with(&format!("bkg-up-{}-", stack.child.id()))
        })
        .expect("work folder")
        .path();
    let pid_of = |p: &serde_json::Value| p["instances"][0]["pid"].as_u64();
    for round in 0..10 {
        // A restart, then a crash of the new process and a restart while it waits to respawn
        // (its files must go with it), then now and then a stop and a start.
        let before = pid_of(&stack.wait_running("echo"));
        assert_eq!(stack.post("/api/plugins/echo/restart", "").status, 202);
        let p = stack.wait_plugin("echo", "replaced", |p| {
            p["status"] == "running"
                && p["instances"].as_array().is_some_and(|i| i.len() == 1)
                && pid_of(p) != before
        });
        if let Some(pid) = pid_of(&p) {
            bkg_e2e::signal(pid as u32, "KILL");
        }
        assert_eq!(stack.post("/api/plugins/echo/restart", "").status, 202);
        if round % 3 == 0 {
            assert_eq!(stack.post("/api/plugins/echo/stop", "").status, 202);
            assert_eq!(stack.post("/api/plugins/echo/start", "").status, 202);
        }
    }
    let p = stack.wait_plugin("echo", "settled", |p| {
        p["status"] == "running" && p["instances"].as_array().is_some_and(|i| i.len() == 1)
    });
    let files: Vec<String> = std::fs::read_dir(&work)
        .expect("read work folder")
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(files.len(), 1, "{files:?} for {p:#}");
    assert!(files[0].ends_with(".addr"), "{files:?}");
}
