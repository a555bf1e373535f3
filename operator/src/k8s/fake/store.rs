//! The double's object store: objects as JSON, field ownership per manager, the change log.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Map, Value, json};

/// Where an object lives: its collection (`apiVersion` and plural) and its name.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Key {
    pub api_version: String,
    pub plural: String,
    pub namespace: String,
    pub name: String,
}

/// A field path, as the keys from the object's root (`["spec", "replicas"]`).
pub type Path = Vec<String>;

/// The fields one manager set through one operation kind and subresource.
#[derive(Clone, Debug)]
pub struct Owner {
    pub manager: String,
    /// `Apply` or `Update`, as in `metadata.managedFields`.
    pub operation: &'static str,
    pub subresource: Option<String>,
    pub fields: BTreeSet<Path>,
}

#[derive(Clone, Debug)]
pub struct Stored {
    pub object: Value,
    pub owners: Vec<Owner>,
}

/// One write, as a watch event.
#[derive(Clone, Debug)]
pub struct Change {
    pub rv: u64,
    pub type_: &'static str,
    pub key: Key,
    pub object: Value,
}

/// A refusal, answered as a Kubernetes `Status`.
#[derive(Debug)]
pub struct Refusal {
    pub code: u16,
    pub reason: &'static str,
    pub message: String,
}

impl Refusal {
    pub fn new(code: u16, reason: &'static str, message: impl Into<String>) -> Self {
        Self {
            code,
            reason,
            message: message.into(),
        }
    }

    pub fn not_found(key: &Key) -> Self {
        Self::new(
            404,
            "NotFound",
            format!("{} \"{}\" not found", key.plural, key.name),
        )
    }
}

/// What a server-side apply writes: the manager and whether it forces.
pub struct Apply<'a> {
    pub manager: &'a str,
    pub force: bool,
    /// `Some("status")` for the status subresource.
    pub subresource: Option<&'a str>,
}

#[derive(Default)]
pub struct Store {
    pub rv: u64,
    uids: u64,
    pub objects: BTreeMap<Key, Stored>,
    pub log: Vec<Change>,
}

/// Metadata the server owns: never part of a manager's fields.
const SERVER_METADATA: [&str; 7] = [
    "name",
    "namespace",
    "resourceVersion",
    "uid",
    "generation",
    "creationTimestamp",
    "managedFields",
];

/// The leaf paths of `v`: maps are walked, lists and scalars are leaves (lists are atomic here).
pub fn leaves(v: &Value, prefix: &mut Path, out: &mut BTreeSet<Path>) {
    match v {
        Value::Object(map) if !map.is_empty() => {
            for (k, child) in map {
                if prefix.is_empty() && (k == "apiVersion" || k == "kind") {
                    continue;
                }
                if prefix.len() == 1
                    && prefix[0] == "metadata"
                    && SERVER_METADATA.contains(&k.as_str())
                {
                    continue;
                }
                prefix.push(k.clone());
                leaves(child, prefix, out);
                prefix.pop();
            }
        }
        _ if prefix.is_empty() => {}
        _ => {
            out.insert(prefix.clone());
        }
    }
}

fn fields_of(v: &Value) -> BTreeSet<Path> {
    let mut out = BTreeSet::new();
    leaves(v, &mut Vec::new(), &mut out);
    out
}

pub fn get<'a>(v: &'a Value, path: &[String]) -> Option<&'a Value> {
    path.iter().try_fold(v, |v, k| v.get(k))
}

fn remove(v: &mut Value, path: &[String]) {
    let Some((last, parents)) = path.split_last() else {
        return;
    };
    let mut cur = v;
    for k in parents {
        match cur.get_mut(k) {
            Some(next) => cur = next,
            None => return,
        }
    }
    if let Some(map) = cur.as_object_mut() {
        map.remove(last);
    }
}

/// Merges `patch` into `target`: maps key by key, everything else (lists included) replaced.
fn merge(target: &mut Value, patch: &Value) {
    match (target.as_object_mut(), patch.as_object()) {
        (Some(t), Some(p)) => {
            for (k, v) in p {
                merge(t.entry(k.clone()).or_insert(Value::Null), v);
            }
        }
        _ => *target = patch.clone(),
    }
}

/// RFC 7386 JSON merge patch (`null` removes).
pub fn merge_patch(target: &mut Value, patch: &Value) {
    let Some(p) = patch.as_object() else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = json!({});
    }
    let t = target.as_object_mut().expect("object");
    for (k, v) in p {
        if v.is_null() {
            t.remove(k);
        } else {
            merge_patch(t.entry(k.clone()).or_insert(Value::Null), v);
        }
    }
}

fn overlaps(a: &Path, b: &Path) -> bool {
    a.starts_with(b) || b.starts_with(a)
}

/// `metadata.managedFields` as the API server writes it (FieldsV1: `f:` keys, `{}` leaves).
fn managed_fields(api_version: &str, owners: &[Owner]) -> Value {
    let entries: Vec<Value> = owners
        .iter()
        .map(|o| {
            let mut fields = json!({});
            for path in &o.fields {
                let mut cur = &mut fields;
                for k in path {
                    cur = cur
                        .as_object_mut()
                        .expect("map")
                        .entry(format!("f:{k}"))
                        .or_insert(json!({}));
                }
            }
            let mut e = json!({
                "manager": o.manager,
                "operation": o.operation,
                "apiVersion": api_version,
                "fieldsType": "FieldsV1",
                "fieldsV1": fields,
            });
            if let Some(s) = &o.subresource {
                e["subresource"] = json!(s);
            }
            e
        })
        .collect();
    Value::Array(entries)
}

/// Everything but metadata and status: what `metadata.generation` counts changes of.
fn desired(v: &Value) -> Value {
    let mut v = v.clone();
    if let Some(m) = v.as_object_mut() {
        m.remove("metadata");
        m.remove("status");
    }
    v
}

impl Store {
    fn next_rv(&mut self) -> u64 {
        self.rv += 1;
        self.rv
    }

    /// Stamps the server's metadata on `object` and records the change.
    fn commit(&mut self, key: &Key, mut stored: Stored, old: Option<&Value>) -> Value {
        // A write that changes nothing (a repeated apply) keeps the resourceVersion and sends
        // no watch event, as the API server does: otherwise every controller would loop.
        if let Some(old) = old {
            stored.owners.retain(|o| !o.fields.is_empty());
            let mut same = stored.object.clone();
            if let Some(meta) = same["metadata"].as_object_mut() {
                meta.insert(
                    "managedFields".into(),
                    managed_fields(&key.api_version, &stored.owners),
                );
            }
            if same == *old {
                self.objects.insert(key.clone(), stored);
                return old.clone();
            }
        }
        let rv = self.next_rv();
        let generation = match old {
            None => 1,
            Some(old) => {
                let g = old["metadata"]["generation"].as_i64().unwrap_or(1);
                if desired(old) == desired(&stored.object) {
                    g
                } else {
                    g + 1
                }
            }
        };
        stored.owners.retain(|o| !o.fields.is_empty());
        let managed = managed_fields(&key.api_version, &stored.owners);
        let meta = stored.object["metadata"]
            .as_object_mut()
            .expect("metadata is a map");
        meta.insert("name".into(), json!(key.name));
        meta.insert("namespace".into(), json!(key.namespace));
        meta.insert("resourceVersion".into(), json!(rv.to_string()));
        meta.insert("generation".into(), json!(generation));
        meta.insert("managedFields".into(), managed);
        if old.is_none() {
            self.uids += 1;
            meta.insert(
                "uid".into(),
                json!(format!("00000000-0000-4000-8000-{:012}", self.uids)),
            );
            meta.insert("creationTimestamp".into(), json!("2026-01-01T00:00:00Z"));
        }
        let object = stored.object.clone();
        self.log.push(Change {
            rv,
            type_: if old.is_none() { "ADDED" } else { "MODIFIED" },
            key: key.clone(),
            object: object.clone(),
        });
        self.objects.insert(key.clone(), stored);
        object
    }

    fn skeleton(key: &Key, body: &Value) -> Value {
        json!({
            "apiVersion": key.api_version,
            "kind": body["kind"],
            "metadata": {"name": key.name, "namespace": key.namespace},
        })
    }

    /// Server-side apply of `body` (see the module docs of [`super`]).
    pub fn apply(&mut self, key: &Key, body: &Value, how: &Apply<'_>) -> Result<Value, Refusal> {
        let old = self.objects.get(key).cloned();
        if old.is_none() && how.subresource.is_some() {
            return Err(Refusal::not_found(key));
        }
        let mut stored = old.clone().unwrap_or_else(|| Stored {
            object: Self::skeleton(key, body),
            owners: Vec::new(),
        });
        // The main resource ignores status; the status subresource takes only status.
        let mut body = body.clone();
        let body = match how.subresource {
            Some("status") => json!({"status": body.get("status").cloned().unwrap_or(json!({}))}),
            _ => {
                if let Some(m) = body.as_object_mut() {
                    m.remove("status");
                }
                body
            }
        };
        let applied = fields_of(&body);
        let me = |o: &Owner| {
            o.manager == how.manager
                && o.operation == "Apply"
                && o.subresource.as_deref() == how.subresource
        };
        let mut conflicts = Vec::new();
        for owner in stored.owners.iter().filter(|o| !me(o)) {
            for owned in &owner.fields {
                for p in applied.iter().filter(|p| overlaps(p, owned)) {
                    if get(&stored.object, p) != get(&body, p) {
                        conflicts.push((owner.manager.clone(), p.clone(), owned.clone()));
                    }
                }
            }
        }
        if !conflicts.is_empty() && !how.force {
            let list: Vec<String> = conflicts
                .iter()
                .map(|(m, p, _)| format!("conflict with \"{m}\": .{}", p.join(".")))
                .collect();
            return Err(Refusal::new(
                409,
                "Conflict",
                format!(
                    "Apply failed with {} conflicts: {}",
                    list.len(),
                    list.join(", ")
                ),
            ));
        }
        // Forced: the other managers lose the fields whose values change.
        for (manager, _, owned) in &conflicts {
            for o in stored
                .owners
                .iter_mut()
                .filter(|o| &o.manager == manager && !me(o))
            {
                o.fields.remove(owned);
            }
        }
        // Fields this manager set before and no longer applies are removed, unless another
        // manager also owns them.
        let before = stored
            .owners
            .iter()
            .find(|o| me(o))
            .map(|o| o.fields.clone())
            .unwrap_or_default();
        for gone in before.difference(&applied) {
            let shared = stored
                .owners
                .iter()
                .filter(|o| !me(o))
                .any(|o| o.fields.iter().any(|f| overlaps(f, gone)));
            if !shared {
                remove(&mut stored.object, gone);
            }
        }
        merge(&mut stored.object, &body);
        match stored.owners.iter_mut().find(|o| me(o)) {
            Some(o) => o.fields = applied,
            None => stored.owners.push(Owner {
                manager: how.manager.to_owned(),
                operation: "Apply",
                subresource: how.subresource.map(str::to_owned),
                fields: applied,
            }),
        }
        Ok(self.commit(key, stored, old.as_ref().map(|s| &s.object)))
    }

    /// POST: a new object; status is dropped, as for any resource with a status subresource.
    pub fn create(&mut self, mut key: Key, mut body: Value) -> Result<Value, Refusal> {
        if key.name.is_empty() {
            let prefix = body["metadata"]["generateName"].as_str().unwrap_or("obj-");
            key.name = format!("{prefix}{}", self.rv + 1);
        }
        if self.objects.contains_key(&key) {
            return Err(Refusal::new(
                409,
                "AlreadyExists",
                format!("{} \"{}\" already exists", key.plural, key.name),
            ));
        }
        if let Some(m) = body.as_object_mut() {
            m.remove("status");
            m.insert("apiVersion".into(), json!(key.api_version));
            m.entry("metadata").or_insert(json!({}));
        }
        let stored = Stored {
            object: body,
            owners: Vec::new(),
        };
        Ok(self.commit(&key, stored, None))
    }

    /// PUT, optimistic: a `metadata.resourceVersion` other than the stored one is a 409.
    pub fn replace(
        &mut self,
        key: &Key,
        body: Value,
        subresource: Option<&str>,
    ) -> Result<Value, Refusal> {
        let old = self
            .objects
            .get(key)
            .cloned()
            .ok_or_else(|| Refusal::not_found(key))?;
        let stored_rv = old.object["metadata"]["resourceVersion"].clone();
        let sent_rv = &body["metadata"]["resourceVersion"];
        if !sent_rv.is_null() && *sent_rv != stored_rv {
            return Err(Refusal::new(
                409,
                "Conflict",
                format!(
                    "Operation cannot be fulfilled on {} \"{}\": the object has been modified",
                    key.plural, key.name
                ),
            ));
        }
        let mut stored = old.clone();
        match subresource {
            Some("status") => stored.object["status"] = body["status"].clone(),
            _ => {
                let mut next = body;
                let keep: Map<String, Value> = old.object["metadata"]
                    .as_object()
                    .map(|m| {
                        m.iter()
                            .filter(|(k, _)| {
                                ["uid", "creationTimestamp", "generation"].contains(&k.as_str())
                            })
                            .map(|(k, v)| (k.clone(), v.clone()))
                            .collect()
                    })
                    .unwrap_or_default();
                merge(&mut next["metadata"], &Value::Object(keep));
                match old.object.get("status") {
                    Some(s) => next["status"] = s.clone(),
                    None => {
                        if let Some(m) = next.as_object_mut() {
                            m.remove("status");
                        }
                    }
                }
                stored.object = next;
            }
        }
        Ok(self.commit(key, stored, Some(&old.object)))
    }

    /// JSON merge patch (what kube's event recorder sends for a repeated Event).
    pub fn patch_merge(
        &mut self,
        key: &Key,
        patch: &Value,
        subresource: Option<&str>,
    ) -> Result<Value, Refusal> {
        let old = self
            .objects
            .get(key)
            .cloned()
            .ok_or_else(|| Refusal::not_found(key))?;
        let mut stored = old.clone();
        match subresource {
            Some("status") => merge_patch(&mut stored.object["status"], &patch["status"]),
            _ => {
                let status = stored.object.get("status").cloned();
                merge_patch(&mut stored.object, patch);
                if let Some(s) = status {
                    stored.object["status"] = s;
                }
            }
        }
        Ok(self.commit(key, stored, Some(&old.object)))
    }

    /// Writes `spec.replicas` through the scale subresource as `manager` (an Update, as the
    /// HPA controller and the gateway's autoscaler do).
    pub fn scale(&mut self, key: &Key, replicas: i64, manager: &str) -> Result<Value, Refusal> {
        let old = self
            .objects
            .get(key)
            .cloned()
            .ok_or_else(|| Refusal::not_found(key))?;
        let mut stored = old.clone();
        stored.object["spec"]["replicas"] = json!(replicas);
        let path = vec!["spec".to_owned(), "replicas".to_owned()];
        for o in &mut stored.owners {
            o.fields.remove(&path);
        }
        stored.owners.push(Owner {
            manager: manager.to_owned(),
            operation: "Update",
            subresource: Some("scale".into()),
            fields: [path].into(),
        });
        Ok(self.commit(key, stored, Some(&old.object)))
    }

    /// Deletes `key`, then (as the garbage collector does) every object whose owner reference
    /// names a deleted uid.
    pub fn delete(&mut self, key: &Key) -> Result<Value, Refusal> {
        let stored = self
            .objects
            .remove(key)
            .ok_or_else(|| Refusal::not_found(key))?;
        let mut gone = vec![(key.clone(), stored.object.clone())];
        let mut i = 0;
        while let Some((_, owner)) = gone.get(i) {
            let uid = owner["metadata"]["uid"].clone();
            let children: Vec<Key> = self
                .objects
                .iter()
                .filter(|(_, s)| {
                    s.object["metadata"]["ownerReferences"]
                        .as_array()
                        .is_some_and(|refs| refs.iter().any(|r| r["uid"] == uid))
                })
                .map(|(k, _)| k.clone())
                .collect();
            for k in children {
                if let Some(s) = self.objects.remove(&k) {
                    gone.push((k, s.object));
                }
            }
            i += 1;
        }
        for (k, object) in &gone {
            let rv = self.next_rv();
            self.log.push(Change {
                rv,
                type_: "DELETED",
                key: k.clone(),
                object: object.clone(),
            });
        }
        Ok(stored.object)
    }
}
