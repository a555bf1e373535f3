//! `spec.scaling` across fields: who owns the replica count, what a spec starts with, and which
//! combinations are refused (naming the field), checked on the spec itself, below the CRD schema
//! (the API server's schema and CEL rule catch some of these first; the operator and `bkg up`
//! rely on these checks for the rest).

use bkg_core::crd::{PluginSpec, ScalingOwner};

fn spec(yaml: &str) -> PluginSpec {
    serde_yaml::from_str(yaml).expect("spec YAML")
}

fn fields(yaml: &str) -> Vec<String> {
    spec(yaml)
        .cross_field_errors()
        .into_iter()
        .map(|(field, _)| field)
        .collect()
}

#[test]
fn each_mode_has_one_owner_and_a_starting_count() {
    let cases = [
        ("implementation: echo", ScalingOwner::Replicas, 1),
        (
            "{implementation: echo, replicas: 3}",
            ScalingOwner::Replicas,
            3,
        ),
        (
            "{implementation: echo, scaling: {minReplicas: 0, maxReplicas: 4}}",
            ScalingOwner::Autoscaler,
            0,
        ),
        (
            "{implementation: echo, scaling: {minReplicas: 0, maxReplicas: 4, metric: inFlight}}",
            ScalingOwner::Autoscaler,
            0,
        ),
        (
            "{implementation: echo, scaling: {minReplicas: 2, maxReplicas: 4, metric: cpu}}",
            ScalingOwner::Hpa,
            2,
        ),
        (
            "{implementation: echo, enabled: false, scaling: {minReplicas: 2, maxReplicas: 4}}",
            ScalingOwner::Autoscaler,
            0,
        ),
    ];
    for (yaml, owner, initial) in cases {
        let s = spec(yaml);
        assert_eq!(s.scaling_owner(), owner, "{yaml}");
        assert_eq!(s.initial_replicas(), initial, "{yaml}");
        assert!(s.cross_field_errors().is_empty(), "{yaml}");
    }
}

#[test]
fn bad_scaling_names_the_field() {
    assert_eq!(
        fields("{implementation: echo, scaling: {minReplicas: 5, maxReplicas: 2}}"),
        ["spec.scaling.minReplicas"]
    );
    assert_eq!(
        fields("{implementation: echo, scaling: {minReplicas: -1, maxReplicas: 0, target: 0}}"),
        [
            "spec.scaling.minReplicas",
            "spec.scaling.maxReplicas",
            "spec.scaling.target"
        ]
    );
    assert_eq!(
        fields("{implementation: echo, replicas: 2, scaling: {maxReplicas: 4}}"),
        ["spec.replicas"]
    );
    assert_eq!(
        fields("{implementation: echo, replicas: -1}"),
        ["spec.replicas"]
    );
    assert_eq!(
        fields("{implementation: echo, scaling: {minReplicas: 0, maxReplicas: 4, metric: cpu}}"),
        ["spec.scaling.minReplicas"],
        "an HPA cannot scale to zero"
    );
    let (_, message) = spec("{implementation: echo, scaling: {minReplicas: 5, maxReplicas: 2}}")
        .cross_field_errors()
        .remove(0);
    assert!(message.contains("maxReplicas (2)"), "{message}");
}
