//! Weight formats and fused projections.
//!
//! What format the matmul weights are kept in decides decode speed on CPU far
//! more than anything else in the forward, so it is an explicit load option.

use std::borrow::Cow;

use candle_core::quantized::{GgmlDType, QMatMul, QStorage, QTensor};
use candle_core::{Device, Module, Tensor, D};

use super::error::Result;
use crate::kernels::{self, QuantMatrix};

/// How matmul weights are stored in memory after loading.
///
/// Measured on a 2-core AVX-512 machine with SmolLM2-135M Q4_1
/// (`examples/llm_bench.rs`): candle 0.11 has no SIMD CPU kernel for Q4_1,
/// Q5_0 or Q5_1, so those run through scalar code (31 tok/s decode, 39 tok/s
/// prefill). Requantizing to Q8_0 doubles decode (62) and quintuples prefill
/// (208) for ~1.5x the weight memory and a small accuracy loss (Q8_0 rounding
/// of the Q4_1 values plus 8-bit activations in blocks of 32; see
/// [`KPadding`] for measured divergence). It is the default on CPU.
/// Dense f32 was slower everywhere that matters (19 tok/s decode, 86 at 16
/// streams) because candle's f32 GEMM is poor at few rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum WeightFormat {
    /// On CPU, requantize types without a candle SIMD kernel (Q4_1, Q5_0,
    /// Q5_1) to Q8_0 and keep everything else. On GPUs keep the file's types,
    /// because candle's CUDA kernels cover them all.
    #[default]
    Auto,
    /// Keep the file's quantization unchanged (most accurate, slowest on CPU
    /// for Q4_1 files).
    AsStored,
    /// Requantize every quantized matmul weight to Q8_0.
    Q8_0,
    /// Dequantize matmul weights to f32 so matmuls go through a dense GEMM:
    /// exact activations (the accuracy reference in tests), 4x the memory of
    /// Q8_0, slow on CPU.
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

/// Whether Q8_0 weights get their input dimension padded to a multiple of
/// 256 so candle uses its tiled AVX-512/AVX VNNI kernel.
///
/// candle 0.11 only takes its repacked VNNI path for Q8_0 when `k % 256 == 0`
/// (and `n % 16 == 0`); otherwise it runs a per-row AVX2 dot product. Most
/// SmolLM2 matmuls have k = 576 and miss the fast path. Padding k to 768 with
/// zero blocks does 33% more arithmetic but ran 2-4x faster at one row and
/// 5-9x at 16 rows here. The price is accuracy: the tiled path quantizes
/// activations in blocks of 256 (Q8_K) instead of 32, so one outlier channel
/// coarsens 255 neighbours. Measured here (2 cores, AVX-512 VNNI,
/// `CANDLE_NUM_THREADS=2 RAYON_NUM_THREADS=1`); KL is the mean divergence of
/// next-token distributions from dense f32 weights over 6 chat prompts x 24
/// teacher-forced tokens:
///
/// | weights | KL | prefill / decode / 16-stream tok/s | peak RSS |
/// |---|---|---|---|
/// | Q4_1 as stored (layers cannot pad) | 0.0034 | 39 / 31 / 35 | 260 MB |
/// | Q8_0, `Off` | 0.0084 | 208 / 62 / 138 | 297 MB |
/// | Q8_0, `Balanced` | 0.0118 | 468 / 87 / 271 | 485 MB |
/// | Q8_0, `All` | 0.0255 | 813 / 93 / 357 | 512 MB |
///
/// Memory grows because candle lazily builds a repacked copy of every weight
/// that takes the tiled path, next to the original.
///
/// The attention input (q/k/v projection) carries most of the extra error
/// (0.018 when padded alone), so `Balanced` pads everything else.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum KPadding {
    /// Never pad (bit-exact with candle's own quantized_llama).
    Off,
    /// Pad the attention output, MLP and output head, not the q/k/v input.
    #[default]
    Balanced,
    /// Pad every eligible weight: fastest, least accurate.
    All,
}

/// Mirrors candle's own dispatch test for its tiled x86 Q8_0 kernel: without
/// VNNI, padding would only add work.
pub fn tiled_q8_kernel_available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        (is_x86_feature_detected!("avx512f") && is_x86_feature_detected!("avx512vnni"))
            || (is_x86_feature_detected!("avxvnni") && is_x86_feature_detected!("avx2"))
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

const TILE_K: usize = 256;
const TILE_N: usize = 16;

/// Zeros to append to the input dimension of `q` under `padding`: only for
/// Q8_0 on CPUs with the tiled kernel, `n % 16 == 0` and `k % 256 != 0`.
/// Callers decide which weights `Balanced` exempts.
fn k_padding(q: &QTensor, padding: KPadding, device: &Device) -> Result<usize> {
    if padding == KPadding::Off || !device.is_cpu() || q.dtype() != GgmlDType::Q8_0 {
        return Ok(0);
    }
    let (n, k) = q.shape().dims2()?;
    if n % TILE_N != 0 || k % TILE_K == 0 || !tiled_q8_kernel_available() {
        return Ok(0);
    }
    Ok(k.next_multiple_of(TILE_K) - k)
}

/// Appends `pad` zero columns to every row, byte for byte: an all-zero Q8_0
/// block has scale 0 and decodes to zeros, so the padded weight computes the
/// same dot products on zero-padded inputs.
fn pad_k(q: &QTensor, pad: usize, device: &Device) -> Result<QTensor> {
    let dtype = q.dtype();
    let (n, k) = q.shape().dims2()?;
    let row = k / dtype.block_size() * dtype.type_size();
    let new_row = (k + pad) / dtype.block_size() * dtype.type_size();
    let data = q.data()?;
    let mut bytes = vec![0u8; n * new_row];
    for (src, dst) in data.chunks_exact(row).zip(bytes.chunks_exact_mut(new_row)) {
        dst[..row].copy_from_slice(src);
    }
    let storage = QStorage::from_data(Cow::Owned(bytes), device, dtype)?;
    Ok(QTensor::new(storage, (n, k + pad))?)
}

/// A matmul weight: candle's `QMatMul` (plus the zero padding its input needs, see
/// [`KPadding`]), or on CPUs our own SIMD kernels (`crate::kernels`), which run Q4_1,
/// Q8_0, Q5_0, Q5_1, Q4_K, Q5_K and Q6_K directly and need neither requantization
/// nor padding.
pub struct Linear {
    backend: Backend,
}

enum Backend {
    Candle {
        weight: QMatMul,
        input_pad: usize,
    },
    Own {
        matrix: QuantMatrix,
        dtype: GgmlDType,
    },
}

impl Linear {
    /// `own_kernels`: use `crate::kernels` when they support `q`'s type.
    pub fn new(q: QTensor, padding: KPadding, device: &Device, own_kernels: bool) -> Result<Self> {
        if let Some(l) = Self::own(&q, own_kernels)? {
            return Ok(l);
        }
        let input_pad = k_padding(&q, padding, device)?;
        let q = if input_pad > 0 {
            pad_k(&q, input_pad, device)?
        } else {
            q
        };
        Ok(Self {
            backend: Backend::Candle {
                weight: QMatMul::from_qtensor(q)?,
                input_pad,
            },
        })
    }

    /// A weight already in our kernels' layout.
    pub fn from_matrix(matrix: QuantMatrix) -> Self {
        let dtype = matrix.format().ggml_dtype();
        Self {
            backend: Backend::Own { matrix, dtype },
        }
    }

    fn own(q: &QTensor, own_kernels: bool) -> Result<Option<Self>> {
        if !own_kernels {
            return Ok(None);
        }
        let matrix =
            QuantMatrix::from_qtensor(q).map_err(|e| candle_core::Error::Msg(e.to_string()))?;
        Ok(matrix.map(|matrix| Self {
            backend: Backend::Own {
                matrix,
                dtype: q.dtype(),
            },
        }))
    }

    /// A copy of `q` in our kernels' layout or padded for candle when either applies,
    /// else `None` (so the caller can share `q` itself).
    pub fn padded_copy(
        q: &QTensor,
        padding: KPadding,
        device: &Device,
        own_kernels: bool,
    ) -> Result<Option<Self>> {
        if let Some(l) = Self::own(q, own_kernels)? {
            return Ok(Some(l));
        }
        let input_pad = k_padding(q, padding, device)?;
        if input_pad == 0 {
            return Ok(None);
        }
        Ok(Some(Self {
            backend: Backend::Candle {
                weight: QMatMul::from_qtensor(pad_k(q, input_pad, device)?)?,
                input_pad,
            },
        }))
    }

    /// Wraps an existing weight without padding (used to share the tied
    /// embedding matrix with the output head).
    pub fn unpadded(weight: QMatMul) -> Self {
        Self {
            backend: Backend::Candle {
                weight,
                input_pad: 0,
            },
        }
    }

    pub fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        match &self.backend {
            Backend::Candle {
                weight,
                input_pad: 0,
            } => Ok(weight.forward(xs)?),
            Backend::Candle { weight, input_pad } => {
                let xs = xs.pad_with_zeros(D::Minus1, 0, *input_pad)?;
                Ok(weight.forward(&xs)?)
            }
            Backend::Own { matrix, .. } => {
                let dims = xs.dims().to_vec();
                let k = *dims.last().unwrap_or(&0);
                let n = xs.elem_count() / k.max(1);
                let x = xs.contiguous()?.flatten_all()?.to_vec1::<f32>()?;
                let mut out = vec![0f32; n * matrix.rows()];
                kernels::matmul(matrix, &x, n, &mut out)
                    .map_err(|e| candle_core::Error::Msg(e.to_string()))?;
                let mut shape = dims;
                if let Some(last) = shape.last_mut() {
                    *last = matrix.rows();
                }
                Ok(Tensor::from_vec(out, shape, xs.device())?)
            }
        }
    }

    /// candle's weight, when this layer runs on candle.
    pub fn weight(&self) -> Option<&QMatMul> {
        match &self.backend {
            Backend::Candle { weight, .. } => Some(weight),
            Backend::Own { .. } => None,
        }
    }

    /// The weight type in memory, for the load report.
    pub fn dtype_name(&self) -> String {
        match &self.backend {
            Backend::Candle {
                weight: QMatMul::QTensor(t),
                ..
            } => format!("{:?}", t.dtype()),
            Backend::Candle { weight, .. } => match weight {
                QMatMul::Tensor(t) | QMatMul::TensorF16(t) => format!("{:?}", t.dtype()),
                QMatMul::QTensor(_) => unreachable!("matched above"),
            },
            Backend::Own { dtype, .. } => format!("{dtype:?} (surge kernels)"),
        }
    }

    pub fn bytes(&self) -> usize {
        match &self.backend {
            Backend::Candle { weight, .. } => qmatmul_bytes(weight),
            Backend::Own { matrix, .. } => matrix.size_in_bytes(),
        }
    }

    /// Whether this layer runs on our kernels, which compute each input row the same
    /// way whatever the number of rows (candle's matmul takes another path for one row).
    pub fn is_own(&self) -> bool {
        matches!(self.backend, Backend::Own { .. })
    }

    pub fn is_padded(&self) -> bool {
        matches!(self.backend, Backend::Candle { input_pad, .. } if input_pad > 0)
    }
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
        weight: Linear,
        splits: Vec<usize>,
    },
    /// Used when the parts have different quantization types (mixed-type
    /// files such as Q4_K_M), which cannot share one weight tensor.
    Separate(Vec<Linear>),
}

impl Projection {
    pub fn new(
        parts: Vec<QTensor>,
        padding: KPadding,
        device: &Device,
        own_kernels: bool,
    ) -> Result<Self> {
        let same_dtype = parts.windows(2).all(|w| w[0].dtype() == w[1].dtype());
        let dims: Vec<(usize, usize)> = parts
            .iter()
            .map(|p| p.shape().dims2())
            .collect::<candle_core::Result<_>>()?;
        let same_k = dims.windows(2).all(|w| w[0].1 == w[1].1);
        if parts.len() < 2 || !same_dtype || !same_k {
            let linears = parts
                .into_iter()
                .map(|p| Linear::new(p, padding, device, own_kernels))
                .collect::<Result<_>>()?;
            return Ok(Self::Separate(linears));
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
            weight: Linear::new(fused, padding, device, own_kernels)?,
            splits,
        })
    }

    /// A fused projection already repacked for our kernels (rows of the parts in
    /// order, `splits` their row counts).
    pub fn from_matrix(matrix: QuantMatrix, splits: Vec<usize>) -> Self {
        Self::Fused {
            weight: Linear::from_matrix(matrix),
            splits,
        }
    }

    /// Returns one output per part, each `[n, part_rows]` (possibly a strided
    /// view into the fused output).
    pub fn forward(&self, xs: &Tensor) -> Result<Vec<Tensor>> {
        match self {
            Self::Separate(linears) => linears.iter().map(|m| m.forward(xs)).collect(),
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

    /// Whether every part runs on our kernels ([`Linear::is_own`]).
    pub fn is_own(&self) -> bool {
        match self {
            Self::Fused { weight, .. } => weight.is_own(),
            Self::Separate(linears) => linears.iter().all(Linear::is_own),
        }
    }

    pub fn bytes(&self) -> usize {
        match self {
            Self::Fused { weight, .. } => weight.bytes(),
            Self::Separate(linears) => linears.iter().map(Linear::bytes).sum(),
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
