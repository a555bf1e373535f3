//! Management capabilities against the real stack: `model.load` and `model.unload` of the
//! Candle plugin need `admin` or `manage:<plugin>` (no invoke scope grants them), whether the
//! manifest marks them (the shipped sample) or the runtime's `/v1/info` reports them (a
//! manifest listing no capabilities); and `model.load` reads only inside the model root,
//! answering alike for every path outside it, existing or not.

use std::time::Duration;

use bkg_e2e::{ADMIN_KEY, Stack, create_key, repo_root};
use serde_json::{Value, json};

/// Invokes with `key`; status and body.
fn invoke_as(
    stack: &Stack,
    key: &str,
    plugin: &str,
    capability: &str,
    payload: Value,
) -> (u16, Value) {
    let r = reqwest::blocking::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(30))
        .build()
        .expect("client")
        .post(format!("{}/api/plugins/{plugin}/invoke", stack.url))
        .bearer_auth(key)
        .header("content-type", "application/json")
        .body(json!({"capability": capability, "payload": payload}).to_string())
        .send()
        .expect("invoke");
    let status = r.status().as_u16();
    (status, r.json().unwrap_or(Value::Null))
}

/// The key's id and scopes, for messages.
fn whoami(stack: &Stack, key: &str) -> Value {
    reqwest::blocking::Client::builder()
        .no_proxy()
        .build()
        .expect("client")
        .get(format!("{}/api/whoami", stack.url))
        .bearer_auth(key)
        .send()
        .and_then(|r| r.json())
        .unwrap_or(Value::Null)
}

/// The shipped Candle manifest, starting without a model and with `root` as its model root.
fn sample_candle(root: &std::path::Path) -> String {
    let text =
        std::fs::read_to_string(repo_root().join("config/plugins/candle.yaml")).expect("sample");
    let model = "    model:\n      model_id: sentence-transformers/all-MiniLM-L6-v2\n";
    assert!(text.contains(model), "the sample's model block moved");
    text.replace(model, &format!("    model_root: {}\n", root.display()))
}

#[test]
fn management_capabilities_need_a_manage_scope_and_model_load_stays_in_the_model_root() {
    let dir = tempfile::tempdir().expect("dir");
    let root = tempfile::tempdir().expect("model root");
    std::fs::create_dir(root.path().join("models")).expect("dir in root");
    let outside = tempfile::tempdir().expect("outside the root");
    std::os::unix::fs::symlink("/etc", root.path().join("etc-link")).expect("symlink");
    std::fs::write(dir.path().join("candle.yaml"), sample_candle(root.path())).expect("manifest");
    // No capabilities listed: the gateway learns them, and which manage, from /v1/info.
    std::fs::write(
        dir.path().join("bare.yaml"),
        format!(
            "apiVersion: bkg.rs/v1alpha1\nkind: Plugin\nmetadata: {{name: bare}}\n\
             spec:\n  implementation: candle\n  config: {{model_root: {}}}\n",
            root.path().display()
        ),
    )
    .expect("manifest");
    let keys_file = dir.path().join("keys").join("keys.yaml");
    let invoke = create_key(&keys_file, "invoker", "invoke");
    let narrow = create_key(
        &keys_file,
        "unloader",
        "invoke:candle/model.unload,invoke:bare/model.unload",
    );
    let manage_candle = create_key(&keys_file, "candle-manager", "manage:candle");
    let manage_bare = create_key(&keys_file, "bare-manager", "manage:bare");
    let stack = Stack::start_with(dir, &[]);
    stack.wait_running("candle");
    stack.wait_running("bare");

    for (plugin, manager, other) in [
        ("candle", &manage_candle, &manage_bare),
        ("bare", &manage_bare, &manage_candle),
    ] {
        // No invoke scope reaches a management capability, however narrow or wide.
        for key in [&invoke, &narrow, other] {
            for capability in ["model.unload", "model.load"] {
                let (status, body) =
                    invoke_as(&stack, key, plugin, capability, json!({"model_id": "x/y"}));
                assert_eq!(
                    status,
                    403,
                    "{plugin}/{capability} with {}: {body:#}",
                    whoami(&stack, key)
                );
                assert_eq!(body["type"], "https://bkg.rs/problems/forbidden");
            }
        }
        // The plugin's manager and the admin do.
        for key in [manager.as_str(), ADMIN_KEY] {
            let (status, body) = invoke_as(&stack, key, plugin, "model.unload", json!({}));
            assert_eq!(status, 200, "{plugin}: {body:#}");
            assert_eq!(body, json!({"unloaded": null}));
        }
        // Plain capabilities stay with the invoke scopes: no model, so 503 from the plugin.
        let (status, body) = invoke_as(
            &stack,
            &invoke,
            plugin,
            "model.infer",
            json!({"input": "hi"}),
        );
        assert_eq!(status, 503, "{plugin}: {body:#}");
        let (status, body) = invoke_as(
            &stack,
            manager,
            plugin,
            "model.infer",
            json!({"input": "hi"}),
        );
        assert_eq!(status, 403, "manage is not invoke: {body:#}");

        // model.load outside the root: one answer, whether the path exists or not, naming none.
        let outside_dir = outside.path().display().to_string();
        let mut answers = Vec::new();
        for path in [
            "/etc",
            "/nonexistent-bkg-e2e",
            outside_dir.as_str(),
            "/proc/self",
            "../../../../../../etc",
            "../../../../../../nonexistent-bkg-e2e",
            "etc-link",
            "etc-link/nonexistent-bkg-e2e",
        ] {
            let (status, mut body) =
                invoke_as(&stack, manager, plugin, "model.load", json!({"path": path}));
            assert!(
                status == 422 || status == 403,
                "{plugin} {path}: {status} {body:#}"
            );
            let detail = body["detail"].as_str().unwrap_or_default().to_owned();
            for leak in ["/", "etc", "nonexistent", "proc", "tmp"] {
                assert!(!detail.contains(leak), "{path}: {detail}");
            }
            assert!(!body.to_string().contains(&outside_dir), "{body}");
            body.as_object_mut().expect("problem").remove("request_id");
            answers.push((status, body));
        }
        answers.dedup();
        assert_eq!(answers.len(), 1, "{plugin}: {answers:#?}");
        // Inside the root the path is checked, and the load fails on its (empty) content.
        let (status, body) = invoke_as(
            &stack,
            manager,
            plugin,
            "model.load",
            json!({"path": "models"}),
        );
        assert_eq!(status, 422, "{body:#}");
        assert_ne!(body["detail"], answers[0].1["detail"], "{body:#}");
    }
}
