//! Named access to a safetensors checkpoint, with errors that say which file and tensor.
//!
//! The file is not read whole: the header is parsed and checked at open, and each tensor is
//! read (positioned read) when a layer asks for it, then packed by that layer. Start-up thus
//! touches one copy of the weights instead of three (file buffer, tensors, packed copy),
//! which is most of its time (page faults) and of its peak RSS.

use std::collections::HashMap;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use serde::Deserialize;

use super::Packing;
use crate::error::{Error, Result};

/// One entry of the safetensors header.
#[derive(Debug, Clone, Deserialize)]
struct Entry {
    dtype: String,
    shape: Vec<usize>,
    data_offsets: [u64; 2],
}

/// A checkpoint's tensors, converted to the compute dtype on access.
pub struct Weights {
    file: File,
    /// Where tensor data starts (8-byte length + JSON header).
    data_start: u64,
    entries: HashMap<String, Entry>,
    path: PathBuf,
    prefix: String,
    dtype: DType,
    device: Device,
    /// Which kernel dense layers are prepared for.
    packing: Packing,
    /// The hand-written CPU kernels (attention, layer norm, GELU) may run.
    cpu_kernels: bool,
}

/// Largest header we accept (safetensors' own limit is 100 MB).
const MAX_HEADER: u64 = 100_000_000;

impl Weights {
    /// Opens the file and validates its header against the file size, so a truncated or
    /// corrupt checkpoint fails here with a clear message rather than mid-load.
    /// `cpu_kernels`: use [`crate::kernels`] where the CPU supports them (false forces the
    /// portable candle path, for comparison and debugging).
    pub fn load(path: &Path, dtype: DType, device: &Device, cpu_kernels: bool) -> Result<Self> {
        let err = |message: String| Error::Weights {
            path: path.to_owned(),
            message,
        };
        let file = File::open(path).map_err(|e| err(e.to_string()))?;
        let file_len = file.metadata().map_err(|e| err(e.to_string()))?.len();
        let mut len_bytes = [0u8; 8];
        file.read_exact_at(&mut len_bytes, 0)
            .map_err(|_| err("not a valid safetensors file: shorter than its header".into()))?;
        let header_len = u64::from_le_bytes(len_bytes);
        if header_len > MAX_HEADER || 8 + header_len > file_len {
            return Err(err(format!(
                "not a valid safetensors file: header length {header_len}"
            )));
        }
        let mut header = vec![0u8; header_len as usize];
        file.read_exact_at(&mut header, 8)
            .map_err(|e| err(e.to_string()))?;
        let mut raw: HashMap<String, serde_json::Value> = serde_json::from_slice(&header)
            .map_err(|e| err(format!("not a valid safetensors file: header: {e}")))?;
        raw.remove("__metadata__");
        let data_start = 8 + header_len;
        let data_len = file_len - data_start;
        let mut entries = HashMap::with_capacity(raw.len());
        for (name, value) in raw {
            let entry: Entry = serde_json::from_value(value)
                .map_err(|e| err(format!("not a valid safetensors file: entry {name:?}: {e}")))?;
            let [begin, end] = entry.data_offsets;
            let size_ok = element_size(&entry.dtype).is_none_or(|e| {
                end.checked_sub(begin) == Some(entry.shape.iter().product::<usize>() as u64 * e)
            });
            if end < begin || !size_ok || end > data_len {
                return Err(err(format!(
                    "tensor {name:?} lies outside the file or has the wrong size (truncated or corrupt file?)"
                )));
            }
            entries.insert(name, entry);
        }
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
            file,
            data_start,
            entries,
            path: path.to_owned(),
            prefix: String::new(),
            dtype,
            device: device.clone(),
            packing,
            cpu_kernels,
        })
    }

    /// Checkpoints saved from task models nest the encoder under e.g. `bert.`; pick the first
    /// prefix under which `probe` exists.
    pub fn detect_prefix(&mut self, probe: &str, candidates: &[&str]) {
        if let Some(p) = candidates
            .iter()
            .find(|p| self.entries.contains_key(&format!("{p}{probe}")))
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
        self.entries.contains_key(&format!("{}{name}", self.prefix))
    }

    /// [`Weights::contains`] without the prefix.
    pub fn contains_exact(&self, full: &str) -> bool {
        self.entries.contains_key(full)
    }

    /// The checkpoint file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The dtype tensors are converted to on access.
    pub fn dtype(&self) -> DType {
        self.dtype
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    /// Reads the tensor `name` (under the detected prefix), checked against the shape the
    /// config implies.
    pub fn get(&self, name: &str, shape: &[usize]) -> Result<Tensor> {
        self.get_exact(&format!("{}{name}", self.prefix), shape)
    }

    /// [`Weights::get`] without the prefix: task heads sit beside the encoder's prefix
    /// (`classifier.weight` next to `bert.…`).
    pub fn get_exact(&self, full: &str, shape: &[usize]) -> Result<Tensor> {
        let err = |message: String| Error::Weights {
            path: self.path.clone(),
            message,
        };
        let entry = self
            .entries
            .get(full)
            .ok_or_else(|| err(format!("missing tensor {full:?}")))?;
        if entry.shape != shape {
            return Err(err(format!(
                "tensor {full:?} has shape {:?}, the config implies {shape:?}",
                entry.shape
            )));
        }
        let [begin, end] = entry.data_offsets;
        let mut bytes = vec![0u8; (end - begin) as usize];
        self.file
            .read_exact_at(&mut bytes, self.data_start + begin)
            .map_err(|e| err(format!("reading tensor {full:?}: {e}")))?;
        let stored = match entry.dtype.as_str() {
            "F32" => DType::F32,
            "F16" => DType::F16,
            "BF16" => DType::BF16,
            other => {
                return Err(err(format!(
                    "tensor {full:?} has dtype {other}; only F32, F16 and BF16 are supported"
                )));
            }
        };
        let t = Tensor::from_raw_buffer(&bytes, stored, shape, &Device::Cpu)?;
        Ok(t.to_dtype(self.dtype)?.to_device(&self.device)?)
    }
}

/// Bytes per element of a safetensors dtype (`None`: unknown, size not checked).
fn element_size(dtype: &str) -> Option<u64> {
    match dtype {
        "F64" | "I64" | "U64" => Some(8),
        "F32" | "I32" | "U32" => Some(4),
        "F16" | "BF16" | "I16" | "U16" => Some(2),
        "I8" | "U8" | "BOOL" | "F8_E4M3" | "F8_E5M2" => Some(1),
        _ => None,
    }
}
