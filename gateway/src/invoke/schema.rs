//! Capabilities and their input schemas: what an invoke may call, and whether its payload fits.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bkg_core::wire::{Capability, FieldError, RuntimeInfo};

use crate::backend::PluginView;
use crate::problem::ApiError;
use crate::{AppState, FastMap};

/// Compiled input-schema validators: plugin id → (spec generation, capability id → validator).
/// Looked up by `&str` on every invoke, so the hot path allocates nothing here.
#[derive(Default)]
pub struct Validators {
    cache: Mutex<FastMap<String, PluginValidators>>,
}

/// One plugin's validators: the spec generation they were compiled for, by capability id.
type PluginValidators = (u64, FastMap<String, Arc<jsonschema::Validator>>);

impl Validators {
    fn get(
        &self,
        plugin: &str,
        generation: u64,
        capability: &str,
        schema: &serde_json::Value,
    ) -> Result<Arc<jsonschema::Validator>, ApiError> {
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((g, validators)) = cache.get(plugin)
            && *g == generation
            && let Some(v) = validators.get(capability)
        {
            return Ok(v.clone());
        }
        let validator = Arc::new(jsonschema::validator_for(schema).map_err(|e| {
            ApiError::Internal(format!(
                "the input schema of capability {capability:?} is not a valid JSON Schema: {e}"
            ))
        })?);
        let entry = cache
            .entry(plugin.to_owned())
            .or_insert_with(|| (generation, FastMap::default()));
        if entry.0 != generation {
            // Validators of an older spec are dead weight.
            *entry = (generation, FastMap::default());
        }
        entry.1.insert(capability.to_owned(), validator.clone());
        Ok(validator)
    }
}

/// Capabilities reported by runtimes, for plugins whose manifest declares none.
#[derive(Default)]
pub struct RuntimeCapabilities {
    cache: Mutex<HashMap<(String, u64), Vec<Capability>>>,
}

impl RuntimeCapabilities {
    pub fn cached(&self, view: &PluginView) -> Option<Vec<Capability>> {
        let cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        cache
            .get(&(view.plugin.id().to_owned(), view.generation))
            .cloned()
    }

    /// Asks a ready instance for its capabilities when the manifest declares none.
    pub async fn fetch(
        &self,
        http: &reqwest::Client,
        view: &PluginView,
    ) -> Option<Vec<Capability>> {
        if let Some(caps) = self.cached(view) {
            return Some(caps);
        }
        let endpoint = view.ready_endpoints().first().map(|e| e.to_string())?;
        let info: RuntimeInfo = http
            .get(format!("{endpoint}/v1/info"))
            .timeout(Duration::from_secs(2))
            .send()
            .await
            .ok()?
            .json()
            .await
            .ok()?;
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        cache.insert(
            (view.plugin.id().to_owned(), view.generation),
            info.capabilities.clone(),
        );
        Some(info.capabilities)
    }
}

/// The capabilities clients see: the manifest's, or the runtime's when it declares none.
pub async fn capabilities(state: &AppState, view: &PluginView) -> Vec<Capability> {
    if !view.plugin.spec.capabilities.is_empty() {
        return view
            .plugin
            .spec
            .capabilities
            .iter()
            .map(Capability::from)
            .collect();
    }
    state
        .runtime_caps
        .fetch(&state.http, view)
        .await
        .unwrap_or_default()
}

/// Validates the payload (JSON text, already known to be well-formed) against the capability's
/// input schema. It is parsed only when the schema constrains it.
pub fn validate(
    state: &AppState,
    plugin: &str,
    generation: u64,
    capability: &str,
    schema: &serde_json::Value,
    payload: &serde_json::value::RawValue,
) -> Result<(), ApiError> {
    if schema == &serde_json::Value::Bool(true) {
        return Ok(());
    }
    let validator = state
        .validators
        .get(plugin, generation, capability, schema)?;
    let payload: serde_json::Value = serde_json::from_str(payload.get())
        .map_err(|e| ApiError::MalformedJson(format!("the payload is not valid JSON: {e}")))?;
    if validator.is_valid(&payload) {
        return Ok(());
    }
    let errors: Vec<FieldError> = validator
        .iter_errors(&payload)
        .take(20)
        .map(|e| FieldError {
            field: {
                let p = e.instance_path().as_str().to_owned();
                if p.is_empty() { "/".to_owned() } else { p }
            },
            message: e.to_string(),
        })
        .collect();
    Err(ApiError::InvalidPayload {
        capability: capability.to_owned(),
        errors,
    })
}
