//! Loading an ONNX file into a tract plan, and running it.
//!
//! ```text
//!  bytes ──prost──▶ ModelProto ──checks──▶ InferenceModel ──input facts (symbols for the
//!  dynamic dims)──▶ TypedModel (optimized once, for every batch size) ──▶ SimplePlan::run
//! ```
//!
//! The file is checked before tract sees it: protobuf decodes many byte strings that are not
//! models (a text file can parse as a handful of unknown fields), so a file without an IR
//! version or a graph with inputs and outputs is refused as "not an ONNX model".

use std::collections::HashSet;

use tract_onnx::pb;
use tract_onnx::pb::tensor_shape_proto::dimension::Value as DimValue;
use tract_onnx::prelude::*;

use crate::error::{Error, Result};
use crate::signature::{Dim, Dtype, Signature, TensorSpec};

type Plan = TypedRunnableModel<TypedModel>;

/// A loaded model: the optimized plan and the signature it was built for.
pub struct Model {
    plan: Plan,
    pub signature: Signature,
}

impl std::fmt::Debug for Model {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Model")
            .field("signature", &self.signature)
            .finish_non_exhaustive()
    }
}

/// tract's error with its causes on one line (`{:#}` of anyhow).
fn chain(e: &TractError) -> String {
    format!("{e:#}")
}

impl Model {
    /// Parses and optimizes the model in `bytes`; `origin` names it in errors. Blocking
    /// (optimization takes milliseconds to seconds).
    pub fn load(bytes: &[u8], origin: &str) -> Result<Self> {
        let onnx = tract_onnx::onnx();
        let not_onnx = |why: String| Error::Model(format!("{origin} is not an ONNX model: {why}"));
        let proto = onnx
            .proto_model_for_read(&mut &bytes[..])
            .map_err(|e| not_onnx(chain(&e)))?;
        let graph = match &proto.graph {
            Some(g) if proto.ir_version > 0 && !g.input.is_empty() && !g.output.is_empty() => g,
            _ => {
                return Err(not_onnx(
                    "no IR version, or no graph with inputs and outputs".into(),
                ));
            }
        };
        let mut model = onnx.model_for_proto_model(&proto).map_err(|e| {
            Error::Model(format!(
                "{origin}: tract cannot read the graph: {}",
                chain(&e)
            ))
        })?;

        let initializers: HashSet<&str> =
            graph.initializer.iter().map(|t| t.name.as_str()).collect();
        let declared: Vec<&pb::ValueInfoProto> = graph
            .input
            .iter()
            .filter(|i| !initializers.contains(i.name.as_str()))
            .collect();
        let outlets = model
            .input_outlets()
            .map_err(|e| Error::Model(chain(&e)))?
            .to_vec();
        let mut inputs = Vec::with_capacity(outlets.len());
        for (ix, outlet) in outlets.iter().enumerate() {
            let name = model.node(outlet.node).name.clone();
            let info = declared.iter().find(|i| i.name == name).ok_or_else(|| {
                Error::Model(format!(
                    "{origin}: input {name:?} is not declared in the graph"
                ))
            })?;
            let spec = input_spec(info, origin)?;
            let dims: TVec<TDim> = spec
                .dims
                .iter()
                .map(|d| match d {
                    Dim::Fixed(v) => TDim::from(*v as i64),
                    Dim::Dynamic(s) => TDim::from(model.symbols.sym(s)),
                })
                .collect();
            model
                .set_input_fact(ix, InferenceFact::dt_shape(spec.dtype.datum(), dims))
                .map_err(|e| Error::Model(chain(&e)))?;
            inputs.push(spec);
        }

        let typed = model.into_optimized().map_err(|e| {
            Error::Model(format!(
                "{origin}: tract cannot run this model: {}",
                chain(&e)
            ))
        })?;
        let mut outputs = Vec::new();
        for (ix, outlet) in typed
            .output_outlets()
            .map_err(|e| Error::Model(chain(&e)))?
            .iter()
            .enumerate()
        {
            let fact = typed.output_fact(ix).map_err(|e| Error::Model(chain(&e)))?;
            let name = graph
                .output
                .get(ix)
                .map(|o| o.name.clone())
                .or_else(|| typed.outlet_label(*outlet).map(str::to_owned))
                .unwrap_or_else(|| format!("output_{ix}"));
            let dtype = Dtype::from_datum(fact.datum_type).ok_or_else(|| {
                Error::Model(format!(
                    "{origin}: output {name:?} is {:?}, which brainml does not answer",
                    fact.datum_type
                ))
            })?;
            let dims = fact.shape.iter().map(Dim::from_tdim).collect();
            outputs.push(TensorSpec { name, dtype, dims });
        }
        let plan = typed
            .into_runnable()
            .map_err(|e| Error::Model(format!("{origin}: {}", chain(&e))))?;
        Ok(Self {
            plan,
            signature: Signature { inputs, outputs },
        })
    }

    /// Runs the model on tensors already checked against the signature, in its input order.
    /// Blocking.
    pub fn run(&self, inputs: Vec<Tensor>) -> Result<Vec<Tensor>> {
        let inputs: TVec<TValue> = inputs.into_iter().map(|t| t.into_tvalue()).collect();
        let outputs = self
            .plan
            .run(inputs)
            .map_err(|e| Error::Inference(chain(&e)))?;
        Ok(outputs.into_iter().map(|v| v.into_tensor()).collect())
    }
}

/// An input's declared dtype and shape; dynamic dimensions keep the model's name.
fn input_spec(info: &pb::ValueInfoProto, origin: &str) -> Result<TensorSpec> {
    let name = &info.name;
    let refuse = |why: String| Error::Model(format!("{origin}: input {name:?} {why}"));
    let Some(pb::type_proto::Value::TensorType(tensor)) =
        info.r#type.as_ref().and_then(|t| t.value.as_ref())
    else {
        return Err(refuse(
            "is not a tensor (sequences and maps are not served)".into(),
        ));
    };
    let dtype = Dtype::from_onnx(tensor.elem_type).ok_or_else(|| {
        refuse(format!(
            "is {}, which brainml does not feed",
            Dtype::onnx_name(tensor.elem_type)
        ))
    })?;
    let shape = tensor
        .shape
        .as_ref()
        .ok_or_else(|| refuse("declares no shape; brainml needs the rank of every input".into()))?;
    let dims = shape
        .dim
        .iter()
        .enumerate()
        .map(|(axis, d)| match &d.value {
            Some(DimValue::DimValue(v)) if *v > 0 => Dim::Fixed(*v as u64),
            Some(DimValue::DimParam(p)) if !p.is_empty() && p != "?" => Dim::Dynamic(p.clone()),
            _ if axis == 0 => Dim::Dynamic("N".into()),
            _ => Dim::Dynamic(format!("d{axis}")),
        })
        .collect();
    Ok(TensorSpec {
        name: name.clone(),
        dtype,
        dims,
    })
}
