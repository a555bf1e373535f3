//! Named access to a safetensors checkpoint, with errors that say which file and tensor.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};

use super::Packing;
use crate::error::{Error, Result};

/// The tensors of one checkpoint, converted to the compute dtype on access.
pub struct Weights {
    tensors: HashMap<String, Tensor>,
    path: PathBuf,
    prefix: String,
    dtype: DType,
    device: Device,
    /// Which kernel dense layers are prepared for.
    packing: Packing,
    /// The hand-written CPU kernels (attention, layer norm, GELU) may run.
    cpu_kernels: bool,
}

impl Weights {
    /// Reads and parses the whole file. Reading (instead of mmap) keeps the crate free of
    /// `unsafe`; the raw bytes are dropped as soon as the tensors are built.
    /// `cpu_kernels`: use [`crate::kernels`] where the CPU supports them (false forces the
    /// portable candle path, for comparison and debugging).
    pub fn load(path: &Path, dtype: DType, device: &Device, cpu_kernels: bool) -> Result<Self> {
        let weights_err = |message: String| Error::Weights {
            path: path.to_owned(),
            message,
        };
        let bytes = std::fs::read(path).map_err(|e| weights_err(e.to_string()))?;
        let tensors = candle_core::safetensors::load_buffer(&bytes, &Device::Cpu)
            .map_err(|e| weights_err(format!("not a valid safetensors file: {e}")))?;
        drop(bytes);
        let support = crate::kernels::support();
        let cpu_kernels = cpu_kernels && device.is_cpu() && support.avx512;
        let packing = match dtype {
            DType::BF16 if cpu_kernels && support.bf16_gemm => Packing::Bf16,
            DType::F32 if cpu_kernels => Packing::F32,
            _ => Packing::None,
        };
        // The CPU kernels keep activations in f32 whatever the weights' storage precision.
        let dtype = if cpu_kernels { DType::F32 } else { dtype };
        Ok(Self {
            tensors,
            path: path.to_owned(),
            prefix: String::new(),
            dtype,
            device: device.clone(),
            packing,
            cpu_kernels,
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
            packing: Packing::None,
            cpu_kernels: false,
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

    /// How dense layers should hold their weights.
    pub fn packing(&self) -> Packing {
        self.packing
    }

    /// Whether the hand-written CPU kernels (attention, layer norm, GELU) are in use.
    pub fn cpu_kernels(&self) -> bool {
        self.cpu_kernels
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
