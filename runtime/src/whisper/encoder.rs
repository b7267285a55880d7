//! Whisper's audio encoder on our own buffers: two convolutions as matrix products over
//! im2col rows (conv1 f32 GEMM, conv2 int8), then pre-norm transformer layers whose
//! linears run on the int8 kernels and whose attention is the fused AVX-512 kernel of
//! [`crate::kernels::full_attention`] (GEMM → vectorised softmax → GEMM on strided views
//! of the fused QKV buffer elsewhere). candle's version spent most of its time in layout
//! copies and a scalar `exp` over 6 × 1500 × 1500 scores per layer.

use crate::kernels::full_attention::{full_attention, FullShape};
use crate::kernels::softmax::softmax_rows;

use super::ct2::Ct2Model;
use super::layers::{
    add_in_place, gelu, gemm_f32, transposed, values, Linear, Mlp, Norm, SelfAttention, View,
};
use super::Result;

struct Layer {
    attn: SelfAttention,
    mlp: Mlp,
}

pub struct Encoder {
    n_mels: usize,
    /// Output frames per window (1500).
    n_ctx: usize,
    d: usize,
    n_head: usize,
    /// conv1 stays f32: its input is the mel itself (int8 here measured no faster and
    /// changed transcripts).
    conv1_w: Vec<f32>,
    conv1_b: Vec<f32>,
    /// conv2 as a linear layer over its im2col rows (`[d, d·3]`, int8 like the others).
    conv2: Linear,
    pos: Vec<f32>,
    layers: Vec<Layer>,
    ln_post: Norm,
}

impl Encoder {
    pub fn load(ct2: &Ct2Model, n_layers: usize, n_head: usize) -> Result<Self> {
        let conv1 = ct2.get("encoder/conv1/weight")?;
        let (d, n_mels, _) = conv1.dims3()?;
        let (n_ctx, _) = ct2.get("encoder/position_encodings/encodings")?.dims2()?;
        let layers = (0..n_layers)
            .map(|i| {
                let p = format!("encoder/layer_{i}");
                Ok(Layer {
                    attn: SelfAttention::load(ct2, &p)?,
                    mlp: Mlp::load(ct2, &p)?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            n_mels,
            n_ctx,
            d,
            n_head,
            conv1_w: values(conv1)?,
            conv1_b: values(ct2.get("encoder/conv1/bias")?)?,
            conv2: {
                let w = ct2.get("encoder/conv2/weight")?;
                let (out, c_in, k) = w.dims3()?;
                Linear::from_tensor(
                    &w.reshape((out, c_in * k))?,
                    Some(values(ct2.get("encoder/conv2/bias")?)?),
                )?
            },
            pos: values(ct2.get("encoder/position_encodings/encodings")?)?,
            layers,
            ln_post: Norm::load(ct2, "encoder/layer_norm")?,
        })
    }

    /// Mel frames per window (3000).
    pub fn n_frames(&self) -> usize {
        2 * self.n_ctx
    }

    pub fn n_ctx(&self) -> usize {
        self.n_ctx
    }

    /// Encodes windows (`[n_mels, 3000]` each, row-major) into `[windows·1500, d]`.
    /// The linear layers see every window's frames at once.
    pub fn forward(&self, mels: &[&[f32]]) -> Result<Vec<f32>> {
        let (t, d) = (self.n_ctx, self.d);
        let rows = mels.len() * t;
        let mut x = Vec::with_capacity(rows * d);
        for mel in mels {
            x.extend(self.stem(mel)?);
        }
        let mut h = vec![0f32; rows * d];
        let mut qkv = Vec::new();
        let mut att = vec![0f32; rows * d];
        let mut tmp = Vec::new();
        let mut ff = Vec::new();
        let mut scores = vec![0f32; t * t];
        for layer in &self.layers {
            layer.attn.project(&x, rows, &mut h, &mut qkv)?;
            for w in 0..mels.len() {
                self.attention(&qkv[w * t * 3 * d..], &mut att[w * t * d..], &mut scores);
            }
            layer.attn.out.forward_add(&att, rows, &mut x, &mut tmp)?;
            layer
                .mlp
                .forward_residual(&mut x, rows, &mut h, &mut ff, &mut tmp)?;
        }
        self.ln_post.forward(&x, &mut h);
        Ok(h)
    }

    /// conv1 (k3, pad 1) → GELU → conv2 (k3, stride 2, pad 1) → GELU → + positions,
    /// giving `[1500, d]` frames for one window.
    fn stem(&self, mel: &[f32]) -> Result<Vec<f32>> {
        let (frames, d, c_in) = (self.n_frames(), self.d, self.n_mels);
        // im2col: cols[t][c·3 + j] = mel[c][t + j − 1], zero outside.
        let k1 = c_in * 3;
        let mut cols = vec![0f32; frames * k1];
        for c in 0..c_in {
            let row = &mel[c * frames..(c + 1) * frames];
            for t in 0..frames {
                for j in 0..3 {
                    let src = t + j;
                    if (1..=frames).contains(&src) {
                        cols[t * k1 + c * 3 + j] = row[src - 1];
                    }
                }
            }
        }
        let mut h1 = vec![0f32; frames * d];
        let lhs = View {
            ptr: cols.as_ptr(),
            rs: k1 as isize,
            cs: 1,
        };
        // SAFETY: all views cover exactly the buffers above.
        unsafe {
            gemm_f32(
                (frames, d, k1),
                h1.as_mut_ptr(),
                d as isize,
                lhs,
                transposed(&self.conv1_w, k1),
                1.0,
            )
        };
        for row in h1.chunks_exact_mut(d) {
            add_in_place(row, &self.conv1_b);
        }
        gelu(&mut h1);
        // cols2[t][c·3 + j] = h1[2t + j − 1][c]
        let (t_out, k2) = (self.n_ctx, d * 3);
        let mut cols = vec![0f32; t_out * k2];
        for t in 0..t_out {
            for j in 0..3 {
                let src = 2 * t + j;
                if !(1..=frames).contains(&src) {
                    continue;
                }
                let from = &h1[(src - 1) * d..src * d];
                let to = &mut cols[t * k2..(t + 1) * k2];
                for (c, &v) in from.iter().enumerate() {
                    to[c * 3 + j] = v;
                }
            }
        }
        let mut h2 = Vec::new();
        self.conv2.forward(&cols, t_out, &mut h2)?;
        gelu(&mut h2);
        add_in_place(&mut h2, &self.pos);
        Ok(h2)
    }

    /// Full (non-causal) multi-head attention for one window: `qkv` is `[T, 3d]`
    /// (Q | K | V), `out` `[T, d]`.
    fn attention(&self, qkv: &[f32], out: &mut [f32], scores: &mut [f32]) {
        let (t, d) = (self.n_ctx, self.d);
        let hd = d / self.n_head;
        let shape = FullShape {
            t,
            n_head: self.n_head,
            head_dim: hd,
        };
        if full_attention(shape, qkv, out) {
            return;
        }
        // Portable path: GEMM → softmax → GEMM per head.
        let scale = 1.0 / (hd as f32).sqrt();
        let stride = 3 * d as isize;
        assert!(qkv.len() >= t * 3 * d && out.len() >= t * d && scores.len() >= t * t);
        for h in 0..self.n_head {
            let q = View {
                ptr: qkv[h * hd..].as_ptr(),
                rs: stride,
                cs: 1,
            };
            // Kᵀ: element (i, j) = K[j][i].
            let kt = View {
                ptr: qkv[d + h * hd..].as_ptr(),
                rs: 1,
                cs: stride,
            };
            // SAFETY: the asserts above bound every strided access.
            unsafe { gemm_f32((t, t, hd), scores.as_mut_ptr(), t as isize, q, kt, scale) };
            softmax_rows(&mut scores[..t * t], t);
            let p = View {
                ptr: scores.as_ptr(),
                rs: t as isize,
                cs: 1,
            };
            let v = View {
                ptr: qkv[2 * d + h * hd..].as_ptr(),
                rs: stride,
                cs: 1,
            };
            // SAFETY: as above; the destination is head h's columns of `out`.
            unsafe {
                gemm_f32(
                    (t, hd, t),
                    out[h * hd..].as_mut_ptr(),
                    d as isize,
                    p,
                    v,
                    1.0,
                )
            };
        }
    }
}
