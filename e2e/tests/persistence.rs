//! A config set through the API outlives a restart of `bkg up`; a manifest edited meanwhile wins.

use bkg_e2e::{Stack, sample_echo};
use serde_json::json;

#[test]
fn a_config_set_through_the_api_survives_a_restart_until_the_manifest_changes() {
    let stack = Stack::start(&[("echo.yaml", &sample_echo())]);
    stack.wait_running("echo");
    let r = stack.post(
        "/api/plugins/echo/config",
        json!({"greeting": "from the API"}).to_string(),
    );
    assert_eq!(r.status, 200, "{:#}", r.body);
    let stored = stack.dir.path().join(".bkg/overrides/echo.config.json");
    assert!(stored.is_file(), "no {}", stored.display());

    // Restarted on the same folder: the plugin starts with the API's config, not the file's.
    let stack = stack.restart();
    let plugin = stack.wait_running("echo");
    assert_eq!(plugin["config"]["greeting"], "from the API", "{plugin:#}");
    let r = stack.invoke("echo", "config", json!({}));
    assert_eq!(r.status, 200, "{:#}", r.body);
    assert_eq!(r.body["greeting"], "from the API", "{:#}", r.body);

    // The manifest's own config edited while bkg up is down: the file is the source of truth.
    let mut stack = stack;
    stack.terminate();
    let edited = sample_echo().replace("greeting: hello", "greeting: edited");
    assert!(edited.contains("greeting: edited"));
    std::fs::write(stack.manifest_path("echo.yaml"), edited).expect("edit manifest");
    let stack = stack.restart();
    let plugin = stack.wait_running("echo");
    assert_eq!(plugin["config"]["greeting"], "edited", "{plugin:#}");
    assert!(!stored.exists(), "the override outlived the manifest edit");
}
