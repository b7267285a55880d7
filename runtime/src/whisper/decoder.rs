//! Whisper's text decoder with per-sequence KV caches, batched across sequences.
//!
//! candle's decoder re-runs the whole prefix every token (it caches only the
//! cross-attention K/V); here each sequence keeps its self-attention K/V in a
//! preallocated head-major cache (`[heads, n_text_ctx, head_dim]`, the layout of
//! [`crate::kernels::attention`]) and the cross-attention K/V of its window, so a step
//! costs one token's work per sequence. All rows of all sequences in a step go through
//! each linear layer together (one pass over the weights), and attention runs per row
//! with the fused decode-attention kernel: prompt rows see the cache up to their own
//! position, which makes prefill and decode the same code.

use crate::kernels::attention::{decode_attention, AttnShape, DecodeKv};

use super::ct2::Ct2Model;
use super::layers::{f16_values, values, Linear, Mlp, Norm, SelfAttention};
use super::{Result, WhisperError};

struct Layer {
    attn: SelfAttention,
    cross_ln: Norm,
    cross_q: Linear,
    cross_kv: Linear,
    cross_out: Linear,
    mlp: Mlp,
}

pub struct Decoder {
    d: usize,
    n_head: usize,
    n_ctx: usize,
    vocab: usize,
    /// Token embeddings, kept in f16 (half the memory; read one row per token).
    emb: Vec<half::f16>,
    pos: Vec<f32>,
    layers: Vec<Layer>,
    ln: Norm,
    /// Output projection, tied to the token embedding.
    head: Linear,
}

/// One sequence's self-attention K/V, all layers, room for the whole text context.
pub struct SelfCache {
    k: Vec<Vec<f32>>,
    v: Vec<Vec<f32>>,
    len: usize,
}

impl SelfCache {
    /// Layer `l`'s K/V as the attention kernel reads them, its first `len` positions.
    fn layer_kv(&self, l: usize, head_stride: usize, len: usize) -> DecodeKv<'_> {
        DecodeKv {
            k: &self.k[l],
            v: &self.v[l],
            head_stride,
            len,
        }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Forgets all tokens (keeps the memory), e.g. to re-decode a window.
    pub fn clear(&mut self) {
        self.len = 0;
    }
}

/// The cross-attention K/V of one encoded window, all layers, head-major.
pub struct CrossKv {
    k: Vec<Vec<f32>>,
    v: Vec<Vec<f32>>,
    frames: usize,
}

impl CrossKv {
    /// Layer `l`'s K/V as the attention kernel reads them: every frame of the window.
    fn layer_kv(&self, l: usize, head_dim: usize) -> DecodeKv<'_> {
        DecodeKv {
            k: &self.k[l],
            v: &self.v[l],
            head_stride: self.frames * head_dim,
            len: self.frames,
        }
    }
}

/// One sequence's part of a decode step.
pub struct DecodeSeq<'a> {
    /// New tokens: the prompt on a window's first step, then one token per step.
    pub tokens: &'a [u32],
    pub cache: &'a mut SelfCache,
    pub cross: &'a CrossKv,
    /// Indices into `tokens` whose logits are wanted (usually just the last).
    pub logits_for: &'a [usize],
}

impl Decoder {
    pub fn load(ct2: &Ct2Model, n_layers: usize, n_head: usize) -> Result<Self> {
        let emb_t = ct2.get("decoder/embeddings/weight")?;
        let (vocab, d) = emb_t.dims2()?;
        // The table is kept in f16 (lookups widen one row). The output head is the same
        // matrix quantized to Q8_0: straight from the stored f16 values (no f32 copy of
        // the largest matrix), or from f32 when the file stores f32.
        let (emb, head) = if emb_t.dtype() == candle_core::DType::F16 {
            let emb = f16_values(emb_t)?;
            let head = Linear::from_f16(vocab, d, &emb, None)?;
            (emb, head)
        } else {
            let emb = values(emb_t)?;
            let head = Linear::from_values(vocab, d, &emb, None)?;
            (emb.iter().map(|&v| half::f16::from_f32(v)).collect(), head)
        };
        let pos_t = ct2.get("decoder/position_encodings/encodings")?;
        let (n_ctx, _) = pos_t.dims2()?;
        let layers = (0..n_layers)
            .map(|i| {
                let p = format!("decoder/layer_{i}");
                Ok(Layer {
                    attn: SelfAttention::load(ct2, &p)?,
                    cross_ln: Norm::load(ct2, &format!("{p}/attention/layer_norm"))?,
                    cross_q: Linear::load(ct2, &format!("{p}/attention/linear_0"))?,
                    cross_kv: Linear::load(ct2, &format!("{p}/attention/linear_1"))?,
                    cross_out: Linear::load(ct2, &format!("{p}/attention/linear_2"))?,
                    mlp: Mlp::load(ct2, &p)?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            d,
            n_head,
            n_ctx,
            vocab,
            pos: values(pos_t)?,
            layers,
            ln: Norm::load(ct2, "decoder/layer_norm")?,
            head,
            emb,
        })
    }

    pub fn vocab(&self) -> usize {
        self.vocab
    }

    /// Longest token sequence (prompt + output) per window.
    pub fn n_ctx(&self) -> usize {
        self.n_ctx
    }

    fn head_dim(&self) -> usize {
        self.d / self.n_head
    }

    pub fn new_cache(&self) -> SelfCache {
        let size = self.n_ctx * self.d;
        SelfCache {
            k: vec![vec![0.0; size]; self.layers.len()],
            v: vec![vec![0.0; size]; self.layers.len()],
            len: 0,
        }
    }

    /// Projects an encoded window (`[frames, d]`) into every layer's cross K/V.
    pub fn cross_kv(&self, audio: &[f32]) -> Result<CrossKv> {
        let d = self.d;
        let frames = audio.len() / d;
        let mut kv = Vec::new();
        let (mut ks, mut vs) = (Vec::new(), Vec::new());
        for layer in &self.layers {
            layer.cross_kv.forward(audio, frames, &mut kv)?;
            let mut k = vec![0f32; frames * d];
            let mut v = vec![0f32; frames * d];
            for (t, row) in kv.chunks_exact(2 * d).enumerate() {
                self.scatter_heads(&row[..d], &mut k, frames, t);
                self.scatter_heads(&row[d..], &mut v, frames, t);
            }
            ks.push(k);
            vs.push(v);
        }
        Ok(CrossKv {
            k: ks,
            v: vs,
            frames,
        })
    }

    /// Writes one token's `[d]` row into a head-major `[heads, capacity, hd]` buffer.
    fn scatter_heads(&self, row: &[f32], dst: &mut [f32], capacity: usize, t: usize) {
        let hd = self.head_dim();
        for (h, part) in row.chunks_exact(hd).enumerate() {
            dst[(h * capacity + t) * hd..][..hd].copy_from_slice(part);
        }
    }

    /// Runs every sequence's new tokens through the decoder, appending them to the
    /// sequences' caches, and returns the logits of the requested rows
    /// (`[Σ logits_for, vocab]`, in sequence order).
    pub fn step(&self, seqs: &mut [DecodeSeq<'_>]) -> Result<Vec<f32>> {
        let (d, hd) = (self.d, self.head_dim());
        let rows: usize = seqs.iter().map(|s| s.tokens.len()).sum();
        let mut x = Vec::with_capacity(rows * d);
        // (sequence, position) of every row.
        let mut at = Vec::with_capacity(rows);
        for (si, s) in seqs.iter().enumerate() {
            if s.cache.len + s.tokens.len() > self.n_ctx {
                return Err(WhisperError::Decode(format!(
                    "sequence of {} tokens exceeds the decoder's {} positions",
                    s.cache.len + s.tokens.len(),
                    self.n_ctx
                )));
            }
            for (i, &tok) in s.tokens.iter().enumerate() {
                let p = s.cache.len + i;
                let tok = tok as usize;
                if tok >= self.vocab {
                    return Err(WhisperError::Decode(format!("token {tok} out of range")));
                }
                let e = &self.emb[tok * d..(tok + 1) * d];
                let pe = &self.pos[p * d..(p + 1) * d];
                x.extend(e.iter().zip(pe).map(|(a, b)| a.to_f32() + b));
                at.push((si, p));
            }
        }
        let shape = AttnShape {
            n_head: self.n_head,
            n_kv_head: self.n_head,
            head_dim: hd,
        };
        let mut h = vec![0f32; rows * d];
        let mut qkv = Vec::new();
        let mut q = vec![0f32; rows * d];
        let mut att = vec![0f32; rows * d];
        let (mut tmp, mut ff) = (Vec::new(), Vec::new());
        for (l, layer) in self.layers.iter().enumerate() {
            layer.attn.project(&x, rows, &mut h, &mut qkv)?;
            for (r, &(si, p)) in at.iter().enumerate() {
                let row = &qkv[r * 3 * d..(r + 1) * 3 * d];
                q[r * d..(r + 1) * d].copy_from_slice(&row[..d]);
                let cache = &mut *seqs[si].cache;
                self.scatter_heads(&row[d..2 * d], &mut cache.k[l], self.n_ctx, p);
                self.scatter_heads(&row[2 * d..], &mut cache.v[l], self.n_ctx, p);
            }
            // Each row sees its own sequence's cache up to and including its position.
            let kvs: Vec<DecodeKv<'_>> = at
                .iter()
                .map(|&(si, p)| seqs[si].cache.layer_kv(l, self.n_ctx * hd, p + 1))
                .collect();
            decode_attention(shape, &q, &kvs, &mut att).map_err(kernel_err)?;
            layer.attn.out.forward_add(&att, rows, &mut x, &mut tmp)?;

            layer.cross_ln.forward(&x, &mut h);
            layer.cross_q.forward(&h, rows, &mut tmp)?;
            let kvs: Vec<DecodeKv<'_>> = at
                .iter()
                .map(|&(si, _)| seqs[si].cross.layer_kv(l, hd))
                .collect();
            decode_attention(shape, &tmp, &kvs, &mut att).map_err(kernel_err)?;
            layer.cross_out.forward_add(&att, rows, &mut x, &mut tmp)?;

            layer
                .mlp
                .forward_residual(&mut x, rows, &mut h, &mut ff, &mut tmp)?;
        }
        let mut wanted = Vec::new();
        let mut base = 0;
        for s in seqs.iter_mut() {
            for &i in s.logits_for {
                let r = base + i.min(s.tokens.len().saturating_sub(1));
                wanted.extend_from_slice(&x[r * d..(r + 1) * d]);
            }
            base += s.tokens.len();
            s.cache.len += s.tokens.len();
        }
        let n = wanted.len() / d;
        let mut normed = vec![0f32; wanted.len()];
        self.ln.forward(&wanted, &mut normed);
        let mut logits = Vec::new();
        self.head.forward(&normed, n, &mut logits)?;
        Ok(logits)
    }
}

fn kernel_err(e: crate::kernels::KernelError) -> WhisperError {
    WhisperError::Decode(e.to_string())
}
