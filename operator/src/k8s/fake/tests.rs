//! The double's own behaviour, through the real kube client.

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use serde_json::json;

use super::ApiServer;

const CM: &str = "/api/v1/namespaces/default/configmaps/c";

fn cm(data: serde_json::Value) -> serde_json::Value {
    json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": data})
}

#[tokio::test]
async fn apply_merges_tracks_owners_and_refuses_a_conflict_unless_forced() {
    let server = ApiServer::default();
    let api: Api<ConfigMap> = Api::namespaced(server.client("t"), "default");
    let first = api
        .patch(
            "c",
            &PatchParams::apply("a"),
            &Patch::Apply(cm(json!({"x": "1"}))),
        )
        .await
        .expect("apply a");
    let rv1: u64 = first
        .metadata
        .resource_version
        .as_deref()
        .unwrap_or_default()
        .parse()
        .expect("rv");
    let second = api
        .patch(
            "c",
            &PatchParams::apply("b"),
            &Patch::Apply(cm(json!({"y": "2"}))),
        )
        .await
        .expect("apply b");
    let rv2: u64 = second
        .metadata
        .resource_version
        .as_deref()
        .unwrap_or_default()
        .parse()
        .expect("rv");
    assert!(rv2 > rv1);
    assert_eq!(
        second.data,
        Some([("x".into(), "1".into()), ("y".into(), "2".into())].into())
    );
    let managed = serde_json::to_value(&second.metadata.managed_fields).expect("json");
    assert_eq!(managed[0]["manager"], "a");
    assert_eq!(managed[0]["fieldsV1"], json!({"f:data": {"f:x": {}}}));
    assert_eq!(managed[1]["manager"], "b");

    let err = api
        .patch(
            "c",
            &PatchParams::apply("b"),
            &Patch::Apply(cm(json!({"x": "3"}))),
        )
        .await
        .expect_err("x belongs to a");
    match err {
        kube::Error::Api(s) => {
            assert_eq!(s.code, 409);
            assert_eq!(
                s.message,
                "Apply failed with 1 conflicts: conflict with \"a\": .data.x"
            );
        }
        e => panic!("{e}"),
    }
    let forced = api
        .patch(
            "c",
            &PatchParams::apply("b").force(),
            &Patch::Apply(cm(json!({"x": "3"}))),
        )
        .await
        .expect("forced");
    // b applied only x this time: y, which b alone owned, is gone; a lost x.
    assert_eq!(forced.data, Some([("x".into(), "3".into())].into()));
    let managed = serde_json::to_value(&forced.metadata.managed_fields).expect("json");
    assert_eq!(managed.as_array().map(Vec::len), Some(1), "{managed}");
    assert_eq!(managed[0]["manager"], "b");
}

#[tokio::test]
async fn status_and_main_resource_are_written_separately() {
    let server = ApiServer::default();
    let deploy = json!({"apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "d"}, "spec": {"replicas": 1}, "status": {"replicas": 9}});
    let deployments: Api<k8s_openapi::api::apps::v1::Deployment> =
        Api::namespaced(server.client("t"), "default");
    let applied = deployments
        .patch("d", &PatchParams::apply("m"), &Patch::Apply(&deploy))
        .await
        .expect("apply");
    assert!(
        applied.status.is_none(),
        "status ignored on the main resource"
    );
    let path = "/apis/apps/v1/namespaces/default/deployments/d";
    server.set_status(path, json!({"replicas": 1}));
    let body = json!({"apiVersion": "apps/v1", "kind": "Deployment",
        "spec": {"replicas": 5}, "status": {"readyReplicas": 1}});
    deployments
        .patch_status("d", &PatchParams::apply("m"), &Patch::Apply(&body))
        .await
        .expect("status apply");
    let stored = server.get(path).expect("stored");
    assert_eq!(stored["spec"]["replicas"], 1, "spec untouched by /status");
    assert_eq!(stored["status"], json!({"replicas": 1, "readyReplicas": 1}));
    assert_eq!(stored["metadata"]["generation"], 1);
}

#[tokio::test]
async fn a_stale_resource_version_is_a_conflict() {
    let server = ApiServer::default();
    let api: Api<Lease> = Api::namespaced(server.client("t"), "default");
    let mut lease = Lease::default();
    lease.metadata.name = Some("l".into());
    let created = api
        .create(&PostParams::default(), &lease)
        .await
        .expect("create");
    let err = api
        .create(&PostParams::default(), &lease)
        .await
        .expect_err("exists");
    assert!(matches!(err, kube::Error::Api(s) if s.code == 409));
    let mut renewed = created.clone();
    renewed.spec = Some(k8s_openapi::api::coordination::v1::LeaseSpec {
        holder_identity: Some("a".into()),
        ..Default::default()
    });
    let stored = api
        .replace("l", &PostParams::default(), &renewed)
        .await
        .expect("fresh");
    assert_ne!(
        stored.metadata.resource_version,
        created.metadata.resource_version
    );
    // Written again unchanged: a no-op keeps the resourceVersion.
    let again = api
        .replace("l", &PostParams::default(), &stored)
        .await
        .expect("no-op");
    assert_eq!(
        again.metadata.resource_version,
        stored.metadata.resource_version
    );
    let err = api
        .replace("l", &PostParams::default(), &renewed)
        .await
        .expect_err("stale");
    assert!(matches!(err, kube::Error::Api(s) if s.code == 409 && s.reason == "Conflict"));
}

#[tokio::test]
async fn deleting_an_owner_deletes_its_children() {
    let server = ApiServer::default();
    let client = server.client("t");
    let api: Api<ConfigMap> = Api::namespaced(client, "default");
    let owner = api
        .create(
            &PostParams::default(),
            &serde_json::from_value(cm(json!({}))).expect("cm"),
        )
        .await
        .expect("owner");
    let uid = owner.metadata.uid.clone().expect("uid");
    for name in ["child", "grandchild"] {
        let parent_uid = if name == "child" {
            uid.clone()
        } else {
            server
                .get("/api/v1/namespaces/default/configmaps/child")
                .expect("child")["metadata"]["uid"]
                .as_str()
                .expect("uid")
                .to_owned()
        };
        let child = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name,
            "ownerReferences": [{"apiVersion": "v1", "kind": "ConfigMap", "name": "x", "uid": parent_uid}]}});
        api.create(
            &PostParams::default(),
            &serde_json::from_value(child).expect("cm"),
        )
        .await
        .expect("child");
    }
    let unrelated = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "other"}});
    api.create(
        &PostParams::default(),
        &serde_json::from_value(unrelated).expect("cm"),
    )
    .await
    .expect("other");
    api.delete("c", &DeleteParams::background())
        .await
        .expect("delete");
    assert!(server.get(CM).is_none());
    assert!(
        server
            .get("/api/v1/namespaces/default/configmaps/child")
            .is_none()
    );
    assert!(
        server
            .get("/api/v1/namespaces/default/configmaps/grandchild")
            .is_none()
    );
    assert!(
        server
            .get("/api/v1/namespaces/default/configmaps/other")
            .is_some()
    );
}
