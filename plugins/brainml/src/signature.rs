//! A model's signature: its named inputs and outputs, their element types and shapes.
//!
//! Inputs come from the ONNX graph as written (names, `elem_type`, `dim_value` / `dim_param`);
//! outputs from tract's typed model, which knows shapes the file may leave out (skl2onnx
//! writes `[?]` for `label`, tract infers `[N]`). The JSON Schemas of `predict` and the checks
//! on every request both read this one description.

use std::fmt;

use tract_onnx::prelude::{DatumType, TDim};

/// The element types brainml feeds and answers, named as NumPy names them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dtype {
    F32,
    F64,
    I8,
    I16,
    I32,
    I64,
    U8,
    U16,
    U32,
    U64,
    Bool,
}

impl Dtype {
    /// From ONNX's `TensorProto.DataType`; `None` for what brainml does not serve (strings,
    /// float16, complex).
    pub fn from_onnx(elem_type: i32) -> Option<Self> {
        Some(match elem_type {
            1 => Self::F32,
            2 => Self::U8,
            3 => Self::I8,
            4 => Self::U16,
            5 => Self::I16,
            6 => Self::I32,
            7 => Self::I64,
            9 => Self::Bool,
            11 => Self::F64,
            12 => Self::U32,
            13 => Self::U64,
            _ => return None,
        })
    }

    /// ONNX's name of an `elem_type`, for errors about the ones brainml refuses.
    pub fn onnx_name(elem_type: i32) -> &'static str {
        match elem_type {
            0 => "undefined",
            8 => "string",
            10 => "float16",
            14 => "complex64",
            15 => "complex128",
            16 => "bfloat16",
            _ => "an unsupported type",
        }
    }

    pub fn from_datum(dt: DatumType) -> Option<Self> {
        Some(match dt {
            DatumType::F32 => Self::F32,
            DatumType::F64 => Self::F64,
            DatumType::I8 => Self::I8,
            DatumType::I16 => Self::I16,
            DatumType::I32 => Self::I32,
            DatumType::I64 => Self::I64,
            DatumType::U8 => Self::U8,
            DatumType::U16 => Self::U16,
            DatumType::U32 => Self::U32,
            DatumType::U64 => Self::U64,
            DatumType::Bool => Self::Bool,
            _ => return None,
        })
    }

    pub fn datum(self) -> DatumType {
        match self {
            Self::F32 => DatumType::F32,
            Self::F64 => DatumType::F64,
            Self::I8 => DatumType::I8,
            Self::I16 => DatumType::I16,
            Self::I32 => DatumType::I32,
            Self::I64 => DatumType::I64,
            Self::U8 => DatumType::U8,
            Self::U16 => DatumType::U16,
            Self::U32 => DatumType::U32,
            Self::U64 => DatumType::U64,
            Self::Bool => DatumType::Bool,
        }
    }

    /// The name in payloads and schemas (`"dtype": "float32"`).
    pub fn name(self) -> &'static str {
        match self {
            Self::F32 => "float32",
            Self::F64 => "float64",
            Self::I8 => "int8",
            Self::I16 => "int16",
            Self::I32 => "int32",
            Self::I64 => "int64",
            Self::U8 => "uint8",
            Self::U16 => "uint16",
            Self::U32 => "uint32",
            Self::U64 => "uint64",
            Self::Bool => "bool",
        }
    }

    /// The inclusive range of an integer type (as i128, which holds every one).
    pub fn int_range(self) -> Option<(i128, i128)> {
        Some(match self {
            Self::I8 => (i8::MIN.into(), i8::MAX.into()),
            Self::I16 => (i16::MIN.into(), i16::MAX.into()),
            Self::I32 => (i32::MIN.into(), i32::MAX.into()),
            Self::I64 => (i64::MIN.into(), i64::MAX.into()),
            Self::U8 => (0, u8::MAX.into()),
            Self::U16 => (0, u16::MAX.into()),
            Self::U32 => (0, u32::MAX.into()),
            Self::U64 => (0, u64::MAX.into()),
            Self::F32 | Self::F64 | Self::Bool => return None,
        })
    }
}

/// One dimension of a declared shape.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Dim {
    Fixed(u64),
    /// Chosen by each request; the name is the model's (`batch`), or `N` for an unnamed
    /// first dimension (the batch, by convention shared by every input), `d<axis>` otherwise.
    Dynamic(String),
}

impl Dim {
    pub fn from_tdim(d: &TDim) -> Self {
        match d.to_i64() {
            Ok(v) if v >= 0 => Self::Fixed(v as u64),
            _ => Self::Dynamic(d.to_string()),
        }
    }
}

impl fmt::Display for Dim {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Fixed(v) => write!(f, "{v}"),
            Self::Dynamic(name) => f.write_str(name),
        }
    }
}

/// A named tensor of the signature.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TensorSpec {
    pub name: String,
    pub dtype: Dtype,
    pub dims: Vec<Dim>,
}

impl TensorSpec {
    /// `float32 [N, 4]`.
    pub fn describe(&self) -> String {
        let dims: Vec<String> = self.dims.iter().map(Dim::to_string).collect();
        format!("{} [{}]", self.dtype.name(), dims.join(", "))
    }
}

/// What the model takes and gives, in the graph's order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Signature {
    pub inputs: Vec<TensorSpec>,
    pub outputs: Vec<TensorSpec>,
}
