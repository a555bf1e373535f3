//! Named access to a safetensors checkpoint, with errors that say which file and tensor.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};

use crate::error::{Error, Result};

/// The tensors of one checkpoint, converted to the compute dtype on access.
pub struct Weights {
    tensors: HashMap<String, Tensor>,
    path: PathBuf,
    prefix: String,
    dtype: DType,
    device: Device,
    /// Dense layers use the packed bf16 CPU kernel; everything else stays f32.
    pack_bf16: bool,
}

impl Weights {
    /// Reads and parses the whole file. Reading (instead of mmap) keeps the crate free of
    /// `unsafe`; the raw bytes are dropped as soon as the tensors are built.
    pub fn load(path: &Path, dtype: DType, device: &Device) -> Result<Self> {
        let weights_err = |message: String| Error::Weights {
            path: path.to_owned(),
            message,
        };
        let bytes = std::fs::read(path).map_err(|e| weights_err(e.to_string()))?;
        let tensors = candle_core::safetensors::load_buffer(&bytes, &Device::Cpu)
            .map_err(|e| weights_err(format!("not a valid safetensors file: {e}")))?;
        drop(bytes);
        let pack_bf16 =
            dtype == DType::BF16 && device.is_cpu() && crate::kernels::support().bf16_gemm;
        Ok(Self {
            tensors,
            path: path.to_owned(),
            prefix: String::new(),
            dtype: if pack_bf16 { DType::F32 } else { dtype },
            device: device.clone(),
            pack_bf16,
        })
    }

    /// Builds weights from in-memory tensors (tests).
    pub fn from_tensors(tensors: HashMap<String, Tensor>, dtype: DType, device: &Device) -> Self {
        Self {
            tensors,
            path: PathBuf::from("<memory>"),
            prefix: String::new(),
            dtype,
            device: device.clone(),
            pack_bf16: false,
        }
    }

    /// Checkpoints saved from task models nest the encoder under e.g. `bert.`; pick the first
    /// prefix under which `probe` exists.
    pub fn detect_prefix(&mut self, probe: &str, candidates: &[&str]) {
        if let Some(p) = candidates
            .iter()
            .find(|p| self.tensors.contains_key(&format!("{p}{probe}")))
        {
            self.prefix = (*p).to_owned();
        }
    }

    /// `dtype: bf16` on a CPU with AVX-512 BF16: dense layers pack their weights for
    /// [`crate::kernels::gemm_bf16`] and activations stay f32.
    pub fn packs_bf16(&self) -> bool {
        self.pack_bf16
    }

    pub fn contains(&self, name: &str) -> bool {
        self.tensors.contains_key(&format!("{}{name}", self.prefix))
    }

    /// The tensor `name`, checked against the shape the config implies.
    pub fn get(&self, name: &str, shape: &[usize]) -> Result<Tensor> {
        let full = format!("{}{name}", self.prefix);
        let t = self.tensors.get(&full).ok_or_else(|| Error::Weights {
            path: self.path.clone(),
            message: format!("missing tensor {full:?}"),
        })?;
        if t.dims() != shape {
            return Err(Error::Weights {
                path: self.path.clone(),
                message: format!(
                    "tensor {full:?} has shape {:?}, the config implies {shape:?}",
                    t.dims()
                ),
            });
        }
        Ok(t.to_dtype(self.dtype)?.to_device(&self.device)?)
    }
}
