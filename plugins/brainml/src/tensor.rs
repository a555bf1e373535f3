//! JSON ⇄ tensors: a request's named inputs checked against the signature, and the outputs.
//!
//! An input is either `{"shape": [2, 4], "data": [...row-major...], "dtype"?: "float32"}` or
//! plain nested arrays (`[[5.1, 3.5, 1.4, 0.2], ...]`, the shape read from the nesting).
//! Every refusal names the field as a JSON pointer into the payload (`/inputs/X/shape`,
//! `/inputs/X/data/7`, `/inputs/X/1/3`).

use std::collections::HashMap;

use serde_json::{Map, Value, json};
use tract_onnx::prelude::{Datum, Tensor};

use crate::error::{Error, Result};
use crate::signature::{Dim, Dtype, TensorSpec};

/// A scalar a payload gave, with where it came from.
struct Leaf<'a> {
    value: &'a Value,
    pointer: String,
}

/// Checks one named input against its spec and builds the tensor. `bound` carries the values
/// of the dynamic dimensions seen so far, so inputs sharing a dimension (`N`) agree.
pub fn parse_input(
    spec: &TensorSpec,
    value: &Value,
    bound: &mut HashMap<String, (u64, String)>,
) -> Result<Tensor> {
    let at = format!("/inputs/{}", escape(&spec.name));
    let (shape, leaves, shape_at) = match value {
        Value::Object(obj) => object_form(spec, obj, &at)?,
        Value::Array(_) => {
            let mut shape = Vec::new();
            nested_shape(value, &mut shape);
            let mut leaves = Vec::new();
            flatten(value, &shape, 0, at.clone(), &mut leaves)?;
            (shape, leaves, at.clone())
        }
        _ if spec.dims.is_empty() => (
            Vec::new(),
            vec![Leaf {
                value,
                pointer: at.clone(),
            }],
            at.clone(),
        ),
        _ => {
            return Err(Error::field(
                &at,
                format!(
                    "must be nested arrays or {{\"shape\", \"data\"}}: the model's {} is {}",
                    spec.name,
                    spec.describe()
                ),
            ));
        }
    };
    check_shape(spec, &shape, &shape_at, bound)?;
    let shape: Vec<usize> = shape.iter().map(|&d| d as usize).collect();
    match spec.dtype {
        Dtype::F32 => build(
            &shape,
            &leaves,
            |v| v.as_f64().map(|f| f as f32),
            "a number",
        ),
        Dtype::F64 => build(&shape, &leaves, Value::as_f64, "a number"),
        Dtype::Bool => build(&shape, &leaves, Value::as_bool, "a boolean"),
        Dtype::I8 => ints::<i8>(spec.dtype, &shape, &leaves),
        Dtype::I16 => ints::<i16>(spec.dtype, &shape, &leaves),
        Dtype::I32 => ints::<i32>(spec.dtype, &shape, &leaves),
        Dtype::I64 => ints::<i64>(spec.dtype, &shape, &leaves),
        Dtype::U8 => ints::<u8>(spec.dtype, &shape, &leaves),
        Dtype::U16 => ints::<u16>(spec.dtype, &shape, &leaves),
        Dtype::U32 => ints::<u32>(spec.dtype, &shape, &leaves),
        Dtype::U64 => ints::<u64>(spec.dtype, &shape, &leaves),
    }
}

/// `{"shape", "data", "dtype"?}`.
fn object_form<'a>(
    spec: &TensorSpec,
    obj: &'a Map<String, Value>,
    at: &str,
) -> Result<(Vec<u64>, Vec<Leaf<'a>>, String)> {
    if let Some(key) = obj
        .keys()
        .find(|k| !matches!(k.as_str(), "shape" | "data" | "dtype"))
    {
        return Err(Error::field(
            &format!("{at}/{}", escape(key)),
            "unknown field (a tensor has `shape`, `data` and optionally `dtype`)",
        ));
    }
    if let Some(dtype) = obj.get("dtype")
        && dtype.as_str() != Some(spec.dtype.name())
    {
        return Err(Error::field(
            &format!("{at}/dtype"),
            format!(
                "the model's {} is {}, not {dtype}",
                spec.name,
                spec.dtype.name()
            ),
        ));
    }
    let shape_at = format!("{at}/shape");
    let shape = match obj.get("shape") {
        Some(Value::Array(dims)) => dims
            .iter()
            .map(bkg_plugin_api::as_u64)
            .collect::<Option<Vec<u64>>>()
            .ok_or_else(|| Error::field(&shape_at, "must be an array of non-negative integers"))?,
        Some(_) => {
            return Err(Error::field(
                &shape_at,
                "must be an array of non-negative integers",
            ));
        }
        None => return Err(Error::field(&shape_at, "is required")),
    };
    let data_at = format!("{at}/data");
    let data = match obj.get("data") {
        Some(Value::Array(data)) => data,
        Some(_) => {
            return Err(Error::field(
                &data_at,
                "must be a flat array of the elements, row-major",
            ));
        }
        None => return Err(Error::field(&data_at, "is required")),
    };
    let leaves = data
        .iter()
        .enumerate()
        .map(|(i, value)| Leaf {
            value,
            pointer: format!("{data_at}/{i}"),
        })
        .collect::<Vec<_>>();
    let count = shape
        .iter()
        .try_fold(1u64, |n, &d| n.checked_mul(d))
        .ok_or_else(|| Error::field(&shape_at, "has too many elements"))?;
    if count != leaves.len() as u64 {
        return Err(Error::field(
            &data_at,
            format!(
                "has {} elements; shape {shape:?} needs {count}",
                leaves.len()
            ),
        ));
    }
    Ok((shape, leaves, shape_at))
}

/// The shape of nested arrays, read along the first element of each level.
fn nested_shape(value: &Value, shape: &mut Vec<u64>) {
    if let Value::Array(items) = value {
        shape.push(items.len() as u64);
        if let Some(first) = items.first() {
            nested_shape(first, shape);
        }
    }
}

/// Row-major leaves of nested arrays, each level checked against `shape`.
fn flatten<'a>(
    value: &'a Value,
    shape: &[u64],
    depth: usize,
    pointer: String,
    out: &mut Vec<Leaf<'a>>,
) -> Result<()> {
    match (value, shape.get(depth)) {
        (Value::Array(items), Some(&len)) => {
            if items.len() as u64 != len {
                return Err(Error::field(
                    &pointer,
                    format!(
                        "has {} items where its siblings have {len}: nested arrays must be rectangular",
                        items.len()
                    ),
                ));
            }
            for (i, item) in items.iter().enumerate() {
                flatten(item, shape, depth + 1, format!("{pointer}/{i}"), out)?;
            }
            Ok(())
        }
        (Value::Array(_), None) | (_, Some(_)) => Err(Error::field(
            &pointer,
            format!(
                "nested arrays must be rectangular ({} levels deep everywhere)",
                shape.len()
            ),
        )),
        (_, None) => {
            out.push(Leaf { value, pointer });
            Ok(())
        }
    }
}

fn check_shape(
    spec: &TensorSpec,
    shape: &[u64],
    at: &str,
    bound: &mut HashMap<String, (u64, String)>,
) -> Result<()> {
    let wrong = |why: String| {
        Error::field(
            at,
            format!(
                "shape {shape:?} {why}: the model's {} is {}",
                spec.name,
                spec.describe()
            ),
        )
    };
    if shape.len() != spec.dims.len() {
        return Err(wrong(format!(
            "has {} dimensions, not {}",
            shape.len(),
            spec.dims.len()
        )));
    }
    for (axis, (&got, want)) in shape.iter().zip(&spec.dims).enumerate() {
        match want {
            Dim::Fixed(v) if got != *v => {
                return Err(wrong(format!("has {got} at axis {axis}, not {v}")));
            }
            Dim::Fixed(_) => {}
            Dim::Dynamic(_) if got == 0 => {
                return Err(wrong(format!("is empty at axis {axis}")));
            }
            Dim::Dynamic(name) => match bound.get(name) {
                Some((v, other)) if *v != got => {
                    return Err(wrong(format!(
                        "has {name} = {got} at axis {axis}, where {other} has {name} = {v}"
                    )));
                }
                Some(_) => {}
                None => {
                    bound.insert(name.clone(), (got, spec.name.clone()));
                }
            },
        }
    }
    Ok(())
}

fn build<T: Datum + Copy>(
    shape: &[usize],
    leaves: &[Leaf<'_>],
    convert: impl Fn(&Value) -> Option<T>,
    what: &str,
) -> Result<Tensor> {
    let data = leaves
        .iter()
        .map(|l| {
            convert(l.value).ok_or_else(|| Error::field(&l.pointer, format!("must be {what}")))
        })
        .collect::<Result<Vec<T>>>()?;
    Tensor::from_shape(shape, &data).map_err(|e| Error::Inference(format!("{e:#}")))
}

fn ints<T: Datum + Copy + TryFrom<i128>>(
    dtype: Dtype,
    shape: &[usize],
    leaves: &[Leaf<'_>],
) -> Result<Tensor> {
    let (lo, hi) = dtype.int_range().unwrap_or((0, 0));
    let data = leaves
        .iter()
        .map(|l| {
            bkg_plugin_api::as_integer(l.value)
                .and_then(|i| T::try_from(i).ok())
                .ok_or_else(|| {
                    Error::field(
                        &l.pointer,
                        format!("must be an integer from {lo} to {hi} ({})", dtype.name()),
                    )
                })
        })
        .collect::<Result<Vec<T>>>()?;
    Tensor::from_shape(shape, &data).map_err(|e| Error::Inference(format!("{e:#}")))
}

/// An output as `{"dtype", "shape", "data"}` (row-major). Non-finite floats, which JSON cannot
/// carry, are `null`.
pub fn output_json(tensor: &Tensor) -> Result<Value> {
    fn data<T: Datum + Copy>(t: &Tensor, f: impl Fn(T) -> Value) -> Result<Vec<Value>> {
        Ok(t.as_slice::<T>()
            .map_err(|e| Error::Inference(format!("{e:#}")))?
            .iter()
            .map(|&x| f(x))
            .collect())
    }
    let dtype = Dtype::from_datum(tensor.datum_type())
        .ok_or_else(|| Error::Inference(format!("the model answered {:?}", tensor.datum_type())))?;
    let values = match dtype {
        Dtype::F32 => data::<f32>(tensor, |x| Value::from(f64::from(x)))?,
        Dtype::F64 => data::<f64>(tensor, Value::from)?,
        Dtype::Bool => data::<bool>(tensor, Value::from)?,
        Dtype::I8 => data::<i8>(tensor, Value::from)?,
        Dtype::I16 => data::<i16>(tensor, Value::from)?,
        Dtype::I32 => data::<i32>(tensor, Value::from)?,
        Dtype::I64 => data::<i64>(tensor, Value::from)?,
        Dtype::U8 => data::<u8>(tensor, Value::from)?,
        Dtype::U16 => data::<u16>(tensor, Value::from)?,
        Dtype::U32 => data::<u32>(tensor, Value::from)?,
        Dtype::U64 => data::<u64>(tensor, Value::from)?,
    };
    Ok(json!({"dtype": dtype.name(), "shape": tensor.shape(), "data": values}))
}

/// A JSON pointer token (RFC 6901).
pub fn escape(token: &str) -> String {
    token.replace('~', "~0").replace('/', "~1")
}
