//! `spec.aliases`: names like ids, weights defaulting to 100, and the mistakes refused with the
//! field they are about (through the same manifest reader `bkg up` uses).

use bkg_core::manifest::parse_documents;

fn manifest(aliases: &str) -> String {
    format!(
        "apiVersion: bkg.rs/v1alpha1\nkind: Plugin\nmetadata: {{name: echo-v2}}\nspec:\n  implementation: echo\n  aliases: {aliases}\n"
    )
}

fn fields(aliases: &str) -> Vec<String> {
    match parse_documents(&manifest(aliases)).remove(0) {
        Ok(_) => Vec::new(),
        Err(e) => e.errors.into_iter().map(|e| e.field).collect(),
    }
}

#[test]
fn weights_default_to_100_and_an_unset_list_is_empty() {
    let plugin = parse_documents(&manifest("[{name: echo}, {name: canary, weight: 10}]"))
        .remove(0)
        .expect("valid");
    let got: Vec<(&str, u32)> = plugin
        .spec
        .aliases
        .iter()
        .map(|a| (a.name.as_str(), a.weight))
        .collect();
    assert_eq!(got, [("echo", 100), ("canary", 10)]);
    let plain = parse_documents(
        "apiVersion: bkg.rs/v1alpha1\nkind: Plugin\nmetadata: {name: echo}\nspec: {implementation: echo}\n",
    )
    .remove(0)
    .expect("valid");
    assert!(plain.spec.aliases.is_empty());
    assert!(
        !serde_json::to_string(&plain.spec)
            .expect("json")
            .contains("aliases"),
        "no aliases, no field: existing manifests round-trip unchanged"
    );
}

#[test]
fn bad_names_weights_and_duplicates_name_their_field() {
    for (aliases, field) in [
        ("[{name: MiniLM}]", "spec.aliases[0].name"),
        ("[{name: -x}]", "spec.aliases[0].name"),
        ("[{name: mini.lm}]", "spec.aliases[0].name"),
        ("[{name: ok, weight: -1}]", "spec.aliases[0].weight"),
        ("[{name: ok, weight: 10001}]", "spec.aliases[0].weight"),
        (
            "[{name: ok}, {name: ok, weight: 5}]",
            "spec.aliases[1].name",
        ),
        ("[{weight: 5}]", "spec.aliases[0]"),
    ] {
        let got = fields(aliases);
        assert!(
            got.iter().any(|f| f == field),
            "{aliases}: expected an error on {field}, got {got:?}"
        );
    }
    assert!(fields("[{name: minilm, weight: 0}]").is_empty());
}
