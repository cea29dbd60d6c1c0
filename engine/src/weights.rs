//! Reading and writing HF safetensors weights: one `model.safetensors` or a sharded set listed by
//! `model.safetensors.index.json`; F32, BF16 and F16 on disk.
//!
//! Every tensor the model asks for is checked for presence, shape and dtype, and every tensor in
//! the files must be asked for: a missing, extra or misshaped tensor is an error naming the tensor
//! and the file.

use crate::error::{EngineError, Result};
use burn::tensor::backend::Backend;
use burn::tensor::{FloatDType, Tensor, TensorData};
use safetensors::{Dtype, SafeTensors};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};

/// Single-file weights name.
pub const SINGLE_FILE: &str = "model.safetensors";
/// Sharded-weights index name.
pub const INDEX_FILE: &str = "model.safetensors.index.json";

/// The safetensors files of a model directory, held in memory, with a ledger of consumed tensors.
pub struct WeightFiles {
    files: Vec<(PathBuf, Vec<u8>)>,
    /// tensor name → index into `files`
    location: HashMap<String, usize>,
    taken: BTreeSet<String>,
}

fn werr(path: &Path, message: impl Into<String>) -> EngineError {
    EngineError::Weights { path: path.into(), message: message.into() }
}

impl WeightFiles {
    /// Opens `dir/model.safetensors`, or the shards named by `dir/model.safetensors.index.json`.
    pub fn open(dir: &Path) -> Result<Self> {
        let index = dir.join(INDEX_FILE);
        let single = dir.join(SINGLE_FILE);
        let paths: Vec<PathBuf> = if index.is_file() {
            let text = std::fs::read_to_string(&index).map_err(|e| EngineError::io(&index, e))?;
            let v: serde_json::Value = serde_json::from_str(&text)
                .map_err(|e| EngineError::Json { path: index.clone(), message: e.to_string() })?;
            let map = v.get("weight_map").and_then(|m| m.as_object()).ok_or_else(|| EngineError::Json {
                path: index.clone(),
                message: "no \"weight_map\" object".into(),
            })?;
            let files: BTreeSet<&str> = map.values().filter_map(|f| f.as_str()).collect();
            if files.is_empty() || files.len() > map.len() {
                return Err(EngineError::Json { path: index, message: "weight_map names no files".into() });
            }
            files.into_iter().map(|f| dir.join(f)).collect()
        } else if single.is_file() {
            vec![single]
        } else {
            return Err(werr(dir, format!("no {SINGLE_FILE} or {INDEX_FILE} in this directory")));
        };
        Self::from_files(paths)
    }

    /// Reads the given safetensors files; a tensor may appear in only one of them.
    pub fn from_files(paths: Vec<PathBuf>) -> Result<Self> {
        let mut files: Vec<(PathBuf, Vec<u8>)> = Vec::with_capacity(paths.len());
        let mut location: HashMap<String, usize> = HashMap::new();
        for path in paths {
            let bytes = std::fs::read(&path).map_err(|e| EngineError::io(&path, e))?;
            let st = SafeTensors::deserialize(&bytes)
                .map_err(|e| werr(&path, format!("not a valid safetensors file (truncated or corrupt?): {e}")))?;
            for name in st.names() {
                if let Some(&other) = location.get(name) {
                    let other: &PathBuf = &files[other].0;
                    return Err(werr(&path, format!("tensor {name} also appears in {}", other.display())));
                }
                location.insert(name.to_string(), files.len());
            }
            files.push((path, bytes));
        }
        Ok(Self { files, location, taken: BTreeSet::new() })
    }

    /// Whether the files hold `name`.
    pub fn contains(&self, name: &str) -> bool {
        self.location.contains_key(name)
    }

    /// Names of all tensors in the files, sorted.
    pub fn names(&self) -> Vec<String> {
        let mut v: Vec<String> = self.location.keys().cloned().collect();
        v.sort();
        v
    }

    /// Marks a tensor as deliberately unused (e.g. `lm_head.weight` of a tied model).
    pub fn skip(&mut self, name: &str) {
        self.taken.insert(name.to_string());
    }

    /// Reads tensor `name` as f32 values, checking its shape.
    pub fn read_f32(&mut self, name: &str, shape: &[usize]) -> Result<Vec<f32>> {
        let Some(&i) = self.location.get(name) else {
            let files: Vec<String> = self.files.iter().map(|(p, _)| p.display().to_string()).collect();
            return Err(EngineError::Weights {
                path: self.files.first().map(|(p, _)| p.clone()).unwrap_or_default(),
                message: format!("missing tensor {name} (looked in {})", files.join(", ")),
            });
        };
        let (path, bytes) = &self.files[i];
        let st = SafeTensors::deserialize(bytes).map_err(|e| werr(path, e.to_string()))?;
        let view = st.tensor(name).map_err(|e| werr(path, format!("tensor {name}: {e}")))?;
        if view.shape() != shape {
            return Err(werr(path, format!("tensor {name} has shape {:?}, expected {shape:?}", view.shape())));
        }
        let data = view.data();
        let values = match view.dtype() {
            Dtype::F32 => data.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect(),
            Dtype::BF16 => data.chunks_exact(2).map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32()).collect(),
            Dtype::F16 => data.chunks_exact(2).map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32()).collect(),
            other => return Err(werr(path, format!("tensor {name} has dtype {other:?}; expected F32, BF16 or F16"))),
        };
        self.taken.insert(name.to_string());
        Ok(values)
    }

    /// Reads tensor `name` onto `device` as a float tensor of `dtype`.
    pub fn tensor<B: Backend, const D: usize>(
        &mut self,
        name: &str,
        shape: [usize; D],
        dtype: FloatDType,
        device: &B::Device,
    ) -> Result<Tensor<B, D>> {
        // Uploaded as f32, then cast: that buffer must fit the device (WGPU adapters cap single buffers).
        let bytes = shape.iter().product::<usize>() as u64 * 4;
        if let (Err(e), Some(&i)) = (mlagent_kernels::device_memory::check_buffer_fits(device, bytes, &format!("tensor {name} {shape:?}")), self.location.get(name)) {
            return Err(werr(&self.files[i].0, format!("{e}: use --device cpu, or a GPU with larger buffers")));
        }
        let values = self.read_f32(name, &shape)?;
        Ok(to_device(values, shape, dtype, device))
    }

    /// Errors if any tensor in the files was never consumed.
    pub fn finish(self) -> Result<()> {
        let mut extra: Vec<(&String, usize)> =
            self.location.iter().filter(|(n, _)| !self.taken.contains(*n)).map(|(n, &i)| (n, i)).collect();
        extra.sort();
        if let Some((name, i)) = extra.first() {
            let more = if extra.len() > 1 { format!(" (and {} more)", extra.len() - 1) } else { String::new() };
            return Err(werr(&self.files[*i].0, format!("unexpected tensor {name}{more}: not part of a Qwen2 model")));
        }
        Ok(())
    }
}

/// Moves f32 values to a device tensor of the given float dtype.
pub fn to_device<B: Backend, const D: usize>(values: Vec<f32>, shape: [usize; D], dtype: FloatDType, device: &B::Device) -> Tensor<B, D> {
    let t = Tensor::<B, D>::from_data(TensorData::new(values, shape), device);
    if dtype == FloatDType::F32 { t } else { t.cast(dtype) }
}

/// Writes named tensors to one safetensors file (atomically: temp file + rename).
///
/// `tensors` maps names to (shape, f32 values); `dtype` chooses the on-disk type.
pub fn save_safetensors(
    path: &Path,
    tensors: &BTreeMap<String, (Vec<usize>, Vec<f32>)>,
    dtype: crate::config::StorageDType,
) -> Result<()> {
    use crate::config::StorageDType as S;
    let mut buffers: Vec<(String, Dtype, Vec<usize>, Vec<u8>)> = Vec::with_capacity(tensors.len());
    for (name, (shape, values)) in tensors {
        let (dt, bytes): (Dtype, Vec<u8>) = match dtype {
            S::F32 => (Dtype::F32, values.iter().flat_map(|v| v.to_le_bytes()).collect()),
            S::BF16 => (Dtype::BF16, values.iter().flat_map(|v| half::bf16::from_f32(*v).to_le_bytes()).collect()),
            S::F16 => (Dtype::F16, values.iter().flat_map(|v| half::f16::from_f32(*v).to_le_bytes()).collect()),
        };
        buffers.push((name.clone(), dt, shape.clone(), bytes));
    }
    let mut views = Vec::with_capacity(buffers.len());
    for (name, dt, shape, bytes) in &buffers {
        let view = safetensors::tensor::TensorView::new(*dt, shape.clone(), bytes)
            .map_err(|e| werr(path, format!("tensor {name}: {e}")))?;
        views.push((name.clone(), view));
    }
    let meta = HashMap::from([("format".to_string(), "pt".to_string())]);
    let tmp = path.with_extension("safetensors.tmp");
    safetensors::serialize_to_file(views, Some(meta), &tmp).map_err(|e| werr(&tmp, e.to_string()))?;
    std::fs::rename(&tmp, path).map_err(|e| EngineError::io(path, e))
}
