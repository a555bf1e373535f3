//! `predict`'s JSON Schemas, derived from the model's signature.
//!
//! Each input accepts two forms, so the schema is a `oneOf` of an object (`shape` with a
//! `prefixItems` entry per dimension: a `const` where the model fixes it, `minimum: 1` where it
//! is dynamic; flat `data` of the dtype's JSON type) and nested arrays (one level per
//! dimension, `minItems`/`maxItems` where fixed). The gateway validates payloads against it, so
//! a wrong rank, a fixed dimension that differs or a string among numbers is refused before
//! the plugin sees it, naming `/inputs/<name>`; what a schema cannot say (`data`'s length
//! against the shape, dynamic dimensions shared between inputs) the plugin checks.

use serde_json::{Map, Value, json};

use crate::signature::{Dim, Dtype, Signature, TensorSpec};

/// The JSON Schema of one element.
fn element(dtype: Dtype) -> Value {
    match (dtype, dtype.int_range()) {
        (Dtype::Bool, _) => json!({"type": "boolean"}),
        (_, Some((lo, hi))) => {
            // i128 → JSON: the bounds of u64/i64 fit i64/u64, and serde_json keeps them exact.
            let bound = |v: i128| -> Value {
                i64::try_from(v)
                    .map(Value::from)
                    .or_else(|_| u64::try_from(v).map(Value::from))
                    .unwrap_or(Value::Null)
            };
            json!({"type": "integer", "minimum": bound(lo), "maximum": bound(hi)})
        }
        _ => json!({"type": "number"}),
    }
}

fn dim_schema(dim: &Dim) -> Value {
    match dim {
        Dim::Fixed(v) => json!({"const": v}),
        Dim::Dynamic(name) => {
            json!({"type": "integer", "minimum": 1, "description": format!("{name} (dynamic)")})
        }
    }
}

fn shape_schema(dims: &[Dim]) -> Value {
    json!({
        "type": "array",
        "prefixItems": dims.iter().map(dim_schema).collect::<Vec<_>>(),
        "minItems": dims.len(),
        "maxItems": dims.len(),
    })
}

/// Nested arrays, one level per dimension.
fn nested(dtype: Dtype, dims: &[Dim]) -> Value {
    let Some((first, rest)) = dims.split_first() else {
        return element(dtype);
    };
    let mut schema = json!({"type": "array", "items": nested(dtype, rest)});
    match first {
        Dim::Fixed(v) => {
            schema["minItems"] = json!(v);
            schema["maxItems"] = json!(v);
        }
        Dim::Dynamic(_) => schema["minItems"] = json!(1),
    }
    schema
}

fn input_schema_of(spec: &TensorSpec) -> Value {
    json!({
        "description": format!("{}: {}", spec.name, spec.describe()),
        "x-dtype": spec.dtype.name(),
        "x-shape": shape_values(&spec.dims),
        "oneOf": [
            {
                "type": "object",
                "required": ["shape", "data"],
                "additionalProperties": false,
                "properties": {
                    "dtype": {"const": spec.dtype.name()},
                    "shape": shape_schema(&spec.dims),
                    "data": {"type": "array", "items": element(spec.dtype), "description": "The elements, row-major."}
                }
            },
            nested(spec.dtype, &spec.dims)
        ]
    })
}

/// The shape as a list: numbers where fixed, the dimension's name where dynamic.
fn shape_values(dims: &[Dim]) -> Vec<Value> {
    dims.iter()
        .map(|d| match d {
            Dim::Fixed(v) => json!(v),
            Dim::Dynamic(name) => json!(name),
        })
        .collect()
}

/// The input schema of `predict`.
pub fn input_schema(signature: &Signature) -> Value {
    let properties: Map<String, Value> = signature
        .inputs
        .iter()
        .map(|s| (s.name.clone(), input_schema_of(s)))
        .collect();
    let names: Vec<&str> = signature.inputs.iter().map(|s| s.name.as_str()).collect();
    let outputs: Vec<&str> = signature.outputs.iter().map(|s| s.name.as_str()).collect();
    json!({
        "type": "object",
        "required": ["inputs"],
        "additionalProperties": false,
        "properties": {
            "inputs": {
                "type": "object",
                "required": names,
                "additionalProperties": false,
                "properties": properties
            },
            "outputs": {
                "type": "array",
                "items": {"enum": outputs},
                "uniqueItems": true,
                "minItems": 1,
                "description": "Only these outputs (default: all)."
            }
        }
    })
}

/// The output schema of `predict`.
pub fn output_schema(signature: &Signature) -> Value {
    let properties: Map<String, Value> = signature
        .outputs
        .iter()
        .map(|s| {
            (
                s.name.clone(),
                json!({
                    "description": format!("{}: {}", s.name, s.describe()),
                    "type": "object",
                    "required": ["dtype", "shape", "data"],
                    "properties": {
                        "dtype": {"const": s.dtype.name()},
                        "shape": shape_schema(&s.dims),
                        "data": {"type": "array", "items": element(s.dtype)}
                    }
                }),
            )
        })
        .collect();
    json!({
        "type": "object",
        "required": ["outputs"],
        "properties": {
            "outputs": {"type": "object", "additionalProperties": false, "properties": properties}
        }
    })
}

/// Before a model is loaded: any object with `inputs`.
pub fn unloaded_input_schema() -> Value {
    json!({
        "type": "object",
        "required": ["inputs"],
        "properties": {
            "inputs": {"type": "object", "additionalProperties": {"type": ["object", "array", "number", "boolean"]}},
            "outputs": {"type": "array", "items": {"type": "string"}}
        }
    })
}
