//! Weight formats and fused projections.
//!
//! What format the matmul weights are kept in decides decode speed on CPU far
//! more than anything else in the forward, so it is an explicit load option.

use std::borrow::Cow;

use candle_core::quantized::{GgmlDType, QMatMul, QStorage, QTensor};
use candle_core::{Device, Module, Tensor};

use super::error::Result;

/// How matmul weights are stored in memory after loading.
///
/// Measured on a 2-core AVX-512 machine with SmolLM2-135M Q4_1 (see the
/// crate-level benchmark): candle 0.11 has no SIMD CPU kernel for Q4_1, Q5_0 or
/// Q5_1, so those run through scalar code at roughly a third of the speed of
/// its AVX2 Q8_0 kernel. Requantizing them to Q8_0 costs ~1.9x the memory of
/// Q4_1 and a small accuracy loss relative to the file (Q8_0 error on top of
/// the Q4_1 values), but nearly triples decode speed; it is the default on CPU.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum WeightFormat {
    /// On CPU, requantize types without a candle SIMD kernel (Q4_1, Q5_0,
    /// Q5_1) to Q8_0 and keep everything else. On GPUs keep the file's types,
    /// because candle's CUDA kernels cover them all.
    #[default]
    Auto,
    /// Keep the file's quantization exactly (bit-exact with llama.cpp's view
    /// of the weights, slowest on CPU for Q4_1 files).
    AsStored,
    /// Requantize every quantized matmul weight to Q8_0.
    Q8_0,
    /// Dequantize matmul weights to f32 so matmuls go through a dense GEMM.
    /// 4x the memory of Q8_0 and slower for one stream (memory bound), but the
    /// GEMM's cost grows sub-linearly with batch size.
    F32,
}

impl WeightFormat {
    /// The dtype a weight stored as `stored` should have in memory.
    pub fn target_dtype(self, stored: GgmlDType, device: &Device) -> GgmlDType {
        let is_float = matches!(stored, GgmlDType::F32 | GgmlDType::F16 | GgmlDType::BF16);
        match self {
            Self::AsStored => stored,
            Self::F32 => GgmlDType::F32,
            Self::Q8_0 if is_float => stored,
            Self::Q8_0 => GgmlDType::Q8_0,
            Self::Auto if !device.is_cpu() => stored,
            Self::Auto => match stored {
                GgmlDType::Q4_1 | GgmlDType::Q5_0 | GgmlDType::Q5_1 => GgmlDType::Q8_0,
                other => other,
            },
        }
    }
}

/// Converts a loaded tensor to the in-memory format chosen by `format`.
pub fn convert(q: QTensor, format: WeightFormat, device: &Device) -> Result<QTensor> {
    Ok(converted(&q, format, device)?.unwrap_or(q))
}

/// A converted copy of `q`, or `None` when `format` keeps it as is (so the
/// caller can share the original instead of copying it).
pub fn converted(q: &QTensor, format: WeightFormat, device: &Device) -> Result<Option<QTensor>> {
    let target = format.target_dtype(q.dtype(), device);
    if target == q.dtype() {
        return Ok(None);
    }
    let dense = q.dequantize(device)?;
    Ok(Some(QTensor::quantize(&dense, target)?))
}

/// Several projections of the same input computed by one matmul call.
///
/// candle's CPU quantized matmul quantizes the activations and wakes its
/// thread pool once per call; fusing q/k/v (3 calls) and gate/up (2 calls)
/// into one call each removes that overhead per layer. Rows are concatenated
/// byte for byte, so the fused weight computes exactly the same dot products
/// as the separate ones.
pub enum Projection {
    Fused {
        weight: QMatMul,
        splits: Vec<usize>,
    },
    /// Used when the parts have different quantization types (mixed-type
    /// files such as Q4_K_M), which cannot share one weight tensor.
    Separate(Vec<QMatMul>),
}

impl Projection {
    pub fn new(parts: Vec<QTensor>, device: &Device) -> Result<Self> {
        let same_dtype = parts.windows(2).all(|w| w[0].dtype() == w[1].dtype());
        let dims: Vec<(usize, usize)> = parts
            .iter()
            .map(|p| p.shape().dims2())
            .collect::<candle_core::Result<_>>()?;
        let same_k = dims.windows(2).all(|w| w[0].1 == w[1].1);
        if parts.len() < 2 || !same_dtype || !same_k {
            let mms = parts
                .into_iter()
                .map(QMatMul::from_qtensor)
                .collect::<candle_core::Result<_>>()?;
            return Ok(Self::Separate(mms));
        }
        let dtype = parts[0].dtype();
        let k = dims[0].1;
        let splits: Vec<usize> = dims.iter().map(|d| d.0).collect();
        let mut bytes = Vec::with_capacity(parts.iter().map(|p| p.storage_size_in_bytes()).sum());
        for p in &parts {
            bytes.extend_from_slice(&p.data()?);
        }
        let storage = QStorage::from_data(Cow::Owned(bytes), device, dtype)?;
        let fused = QTensor::new(storage, (splits.iter().sum::<usize>(), k))?;
        Ok(Self::Fused {
            weight: QMatMul::from_qtensor(fused)?,
            splits,
        })
    }

    /// Returns one output per part, each `[n, part_rows]` (possibly a strided
    /// view into the fused output).
    pub fn forward(&self, xs: &Tensor) -> Result<Vec<Tensor>> {
        match self {
            Self::Separate(mms) => Ok(mms
                .iter()
                .map(|m| m.forward(xs))
                .collect::<candle_core::Result<_>>()?),
            Self::Fused { weight, splits } => {
                let y = weight.forward(xs)?;
                let mut offset = 0;
                let mut outs = Vec::with_capacity(splits.len());
                for &n in splits {
                    outs.push(y.narrow(1, offset, n)?);
                    offset += n;
                }
                Ok(outs)
            }
        }
    }
}

/// Bytes held by a matmul weight, for load-time reporting.
pub fn qmatmul_bytes(m: &QMatMul) -> usize {
    match m {
        QMatMul::QTensor(t) => t.storage_size_in_bytes(),
        QMatMul::Tensor(t) | QMatMul::TensorF16(t) => t.elem_count() * t.dtype().size_in_bytes(),
    }
}

impl Projection {
    pub fn bytes(&self) -> usize {
        match self {
            Self::Fused { weight, .. } => qmatmul_bytes(weight),
            Self::Separate(mms) => mms.iter().map(qmatmul_bytes).sum(),
        }
    }
}
