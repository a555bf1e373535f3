//! Mistakes in the manifest folder appear as plugins in phase Error at once, with the message,
//! not only in the terminal: a file that is not YAML, an unknown `spec.implementation`.

use bkg_e2e::{Stack, sample_echo};

#[test]
fn unreadable_files_and_unknown_implementations_are_error_entries() {
    let mystery = sample_echo()
        .replace("name: echo\n", "name: mystery\n")
        .replace("implementation: echo", "implementation: mystery");
    let stack = Stack::start(&[
        ("echo.yaml", &sample_echo()),
        ("broken.yaml", "this: is: not [yaml\n"),
        ("mystery.yaml", &mystery),
    ]);
    stack.wait_running("echo");

    // Not YAML: listed under its file name.
    let broken = stack.wait_plugin("broken", "an error entry", |p| p["status"] == "error");
    let message = broken["last_error"].as_str().unwrap_or_default();
    assert!(message.contains("broken.yaml"), "{broken:#}");

    // An implementation the runtime does not have: refused at manifest time, field named.
    let unknown = stack.wait_plugin("mystery", "an error entry", |p| p["status"] == "error");
    let message = unknown["last_error"].as_str().unwrap_or_default();
    assert!(
        message.contains("spec.implementation") && message.contains("\"mystery\""),
        "{unknown:#}"
    );
    assert!(
        unknown["instances"].as_array().is_none_or(|i| i.is_empty()),
        "it must not start: {unknown:#}"
    );
}
