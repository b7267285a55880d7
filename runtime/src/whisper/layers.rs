//! The building blocks of our Whisper forward, on plain row-major `f32` buffers.
//!
//! Linear layers run on our int8 kernels ([`crate::kernels`]): weights are
//! quantized to Q8_0 once at load (as CTranslate2's int8 mode does) and activations to
//! 8 bits per call. The convolutions and the encoder's attention products are f32 GEMMs
//! ([`gemm_f32`]) on strided views, so no tensor is ever transposed or copied.

use candle_core::{DType, Tensor};

use crate::kernels::{self, QuantMatrix};

use super::ct2::Ct2Model;
use super::{Result, WhisperError};

/// A tensor's values as f32, row-major. f16 (what CTranslate2 files store) widens with
/// `half`'s vectorised slice conversion, several times faster than candle's per-element
/// `to_dtype` — a cold start converts every weight once.
pub fn values(t: &Tensor) -> Result<Vec<f32>> {
    if t.dtype() == DType::F16 {
        let h = f16_values(t)?;
        let mut out = vec![0f32; h.len()];
        half::slice::HalfFloatSliceExt::convert_to_f32_slice(&h[..], &mut out);
        return Ok(out);
    }
    Ok(t.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?)
}

/// An f16 tensor's values, row-major (no conversion).
pub fn f16_values(t: &Tensor) -> Result<Vec<half::f16>> {
    Ok(t.flatten_all()?.to_vec1::<half::f16>()?)
}

/// Pre-norm LayerNorm (`eps = 1e-5`, as Whisper's).
pub struct Norm {
    gamma: Vec<f32>,
    beta: Vec<f32>,
}

impl Norm {
    pub fn load(ct2: &Ct2Model, name: &str) -> Result<Self> {
        Ok(Self {
            gamma: values(ct2.get(&format!("{name}/gamma"))?)?,
            beta: values(ct2.get(&format!("{name}/beta"))?)?,
        })
    }

    /// `out[r] = layernorm(x[r])` for every row of `x`.
    pub fn forward(&self, x: &[f32], out: &mut [f32]) {
        let d = self.gamma.len();
        for (xr, or) in x.chunks_exact(d).zip(out.chunks_exact_mut(d)) {
            let mean = xr.iter().sum::<f32>() / d as f32;
            let var = xr.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / d as f32;
            let inv = 1.0 / (var + 1e-5).sqrt();
            for (((o, &v), &g), &b) in or.iter_mut().zip(xr).zip(&self.gamma).zip(&self.beta) {
                *o = (v - mean) * inv * g + b;
            }
        }
    }
}

/// `y = x·Wᵀ + b` with W quantized to Q8_0.
pub struct Linear {
    w: QuantMatrix,
    bias: Option<Vec<f32>>,
}

impl Linear {
    /// Loads CT2's `{name}/weight` (and `{name}/bias` when present).
    pub fn load(ct2: &Ct2Model, name: &str) -> Result<Self> {
        let w = ct2.get(&format!("{name}/weight"))?;
        let bias = match ct2.vars.get(&format!("{name}/bias")) {
            Some(b) => Some(values(b)?),
            None => None,
        };
        Self::from_tensor(w, bias)
    }

    pub fn from_tensor(w: &Tensor, bias: Option<Vec<f32>>) -> Result<Self> {
        let (rows, cols) = w.dims2()?;
        if w.dtype() == DType::F16 {
            // Widened block by block inside the (threaded) quantizer: no f32 copy.
            return Self::from_f16(rows, cols, &f16_values(w)?, bias);
        }
        Self::from_values(rows, cols, &values(w)?, bias)
    }

    /// From row-major f16 weights `[rows, cols]`; the same Q8_0 as [`Linear::from_values`]
    /// on the widened values (f16 → f32 is exact).
    pub fn from_f16(
        rows: usize,
        cols: usize,
        w: &[half::f16],
        bias: Option<Vec<f32>>,
    ) -> Result<Self> {
        let w = QuantMatrix::quantize_q8_0_f16(rows, cols, w)
            .map_err(|e| WhisperError::Load(e.to_string()))?;
        Ok(Self { w, bias })
    }

    /// From row-major f32 weights `[rows, cols]`.
    pub fn from_values(
        rows: usize,
        cols: usize,
        w: &[f32],
        bias: Option<Vec<f32>>,
    ) -> Result<Self> {
        let w = QuantMatrix::quantize_q8_0(rows, cols, w)
            .map_err(|e| WhisperError::Load(e.to_string()))?;
        Ok(Self { w, bias })
    }

    pub fn out_dim(&self) -> usize {
        self.w.rows()
    }

    /// `x` is `n × in`, `out` `n × out` (resized).
    pub fn forward(&self, x: &[f32], n: usize, out: &mut Vec<f32>) -> Result<()> {
        out.resize(n * self.w.rows(), 0.0);
        kernels::matmul(&self.w, x, n, out).map_err(|e| WhisperError::Decode(e.to_string()))?;
        if let Some(b) = &self.bias {
            for row in out.chunks_exact_mut(b.len()) {
                row.iter_mut().zip(b).for_each(|(o, &b)| *o += b);
            }
        }
        Ok(())
    }

    /// The residual update `residual += x·Wᵀ + b` (`x` is `n × in`); `tmp` is scratch.
    pub fn forward_add(
        &self,
        x: &[f32],
        n: usize,
        residual: &mut [f32],
        tmp: &mut Vec<f32>,
    ) -> Result<()> {
        self.forward(x, n, tmp)?;
        add_in_place(residual, tmp);
        Ok(())
    }
}

/// The self-attention projections every Whisper layer (encoder and decoder) starts with,
/// CT2's `{layer}/self_attention/…`: the pre-norm, the fused Q | K | V input projection
/// and the output projection. The attention between them differs (full in the encoder,
/// cached and causal in the decoder) and stays with the caller.
pub struct SelfAttention {
    pub ln: Norm,
    pub qkv: Linear,
    pub out: Linear,
}

impl SelfAttention {
    pub fn load(ct2: &Ct2Model, layer: &str) -> Result<Self> {
        Ok(Self {
            ln: Norm::load(ct2, &format!("{layer}/self_attention/layer_norm"))?,
            qkv: Linear::load(ct2, &format!("{layer}/self_attention/linear_0"))?,
            out: Linear::load(ct2, &format!("{layer}/self_attention/linear_1"))?,
        })
    }

    /// `qkv = layernorm(x)·W_qkvᵀ + b` for `rows` rows; `h` (`rows × d`) is scratch.
    pub fn project(&self, x: &[f32], rows: usize, h: &mut [f32], qkv: &mut Vec<f32>) -> Result<()> {
        self.ln.forward(x, h);
        self.qkv.forward(h, rows, qkv)
    }
}

/// A Whisper layer's pre-norm feed-forward block, CT2's `{layer}/ffn/…`:
/// `x += fc2(gelu(fc1(layernorm(x))))`.
pub struct Mlp {
    ln: Norm,
    fc1: Linear,
    fc2: Linear,
}

impl Mlp {
    pub fn load(ct2: &Ct2Model, layer: &str) -> Result<Self> {
        Ok(Self {
            ln: Norm::load(ct2, &format!("{layer}/ffn/layer_norm"))?,
            fc1: Linear::load(ct2, &format!("{layer}/ffn/linear_0"))?,
            fc2: Linear::load(ct2, &format!("{layer}/ffn/linear_1"))?,
        })
    }

    /// Adds the block's output to the residual stream `x` (`rows × d`). `h` (`rows × d`),
    /// `ff` and `tmp` are scratch buffers the caller keeps across layers.
    pub fn forward_residual(
        &self,
        x: &mut [f32],
        rows: usize,
        h: &mut [f32],
        ff: &mut Vec<f32>,
        tmp: &mut Vec<f32>,
    ) -> Result<()> {
        self.ln.forward(x, h);
        self.fc1.forward(h, rows, ff)?;
        gelu(ff);
        self.fc2.forward_add(ff, rows, x, tmp)
    }
}

pub use crate::kernels::softmax::gelu;

/// `a += b`.
pub fn add_in_place(a: &mut [f32], b: &[f32]) {
    a.iter_mut().zip(b).for_each(|(x, y)| *x += y);
}

/// A strided view of a matrix for [`gemm_f32`]: element (r, c) at `ptr[r*rs + c*cs]`.
#[derive(Clone, Copy)]
pub struct View {
    pub ptr: *const f32,
    pub rs: isize,
    pub cs: isize,
}

/// `dst (m × n, row stride dst_rs) = scale · lhs (m × k) · rhs (k × n)`, multithreaded.
///
/// # Safety
/// Every element the views address must be inside live allocations, and `dst` must
/// not overlap them.
pub unsafe fn gemm_f32(
    (m, n, k): (usize, usize, usize),
    dst: *mut f32,
    dst_rs: isize,
    lhs: View,
    rhs: View,
    scale: f32,
) {
    let threads = kernels::global_pool().threads();
    let par = if threads > 1 && m * n * k > 1 << 20 {
        gemm::Parallelism::Rayon(threads)
    } else {
        gemm::Parallelism::None
    };
    gemm::gemm(
        m, n, k, dst, 1, dst_rs, false, lhs.ptr, lhs.cs, lhs.rs, rhs.ptr, rhs.cs, rhs.rs, 0.0,
        scale, false, false, false, par,
    );
}

/// A weight matrix `[out, in]` used as the right operand `[in, out]` of [`gemm_f32`].
pub fn transposed(w: &[f32], inner: usize) -> View {
    View {
        ptr: w.as_ptr(),
        rs: 1,
        cs: inner as isize,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gemm_strided_matches_naive() {
        // lhs 3×4, rhs given as a 5×4 weight used transposed → 3×5.
        let a: Vec<f32> = (0..12).map(|i| i as f32 * 0.5 - 2.0).collect();
        let w: Vec<f32> = (0..20).map(|i| (i % 7) as f32 - 3.0).collect();
        let mut out = vec![0f32; 15];
        let lhs = View {
            ptr: a.as_ptr(),
            rs: 4,
            cs: 1,
        };
        unsafe { gemm_f32((3, 5, 4), out.as_mut_ptr(), 5, lhs, transposed(&w, 4), 2.0) };
        for r in 0..3 {
            for c in 0..5 {
                let want: f32 = (0..4).map(|i| a[r * 4 + i] * w[c * 4 + i]).sum::<f32>() * 2.0;
                assert!((out[r * 5 + c] - want).abs() < 1e-5);
            }
        }
    }
}
