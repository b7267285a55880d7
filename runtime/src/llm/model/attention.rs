//! Attention of [`LlmModel::step`]: on the CPU kernels every item (prompt chunk or
//! decode token) through the fused causal kernel in one call per layer; elsewhere (a
//! GPU, or a CPU without SIMD kernels) through candle ops against each sequence's cache.
//! Both see only the sliding window on the layers that have one.

use candle_core::{Device, Layout, Storage, Tensor};
use candle_nn::ops::softmax_last_dim;

use super::super::error::{LlmError, Result};
use super::super::kv_cache::LayerKv;
use super::{BatchItem, LlmModel};
use crate::kernels::attention::AttnShape;
use crate::kernels::causal::{causal_attention, CausalSeq};

impl LlmModel {
    /// Causal attention of `n` new tokens of one sequence over its cache (their
    /// keys and values already appended at `past..past + n`), each seeing at most
    /// the last `window` positions (its own included).
    ///
    /// Input is `q: [n, n_head, 1, hd]`; returns `[n, n_head * hd]`. Grouped-query attention is
    /// done by folding the query heads that share a kv head into the row
    /// dimension (`[n_kv, group * n, hd]`), which avoids materialising
    /// repeated keys and values.
    pub(super) fn attend(
        &self,
        kv: &LayerKv,
        q: &Tensor,
        past: usize,
        window: usize,
        mask: Option<&Tensor>,
    ) -> Result<Tensor> {
        let cfg = &self.config;
        let (nh, nkv, hd) = (cfg.n_head, cfg.n_kv_head, cfg.head_dim);
        let group = nh / nkv;
        let n = q.dim(0)?;
        let total = past + n;
        // Keys before the first query's window are never attended to.
        let lo = window_start(past, window);
        let keys = kv.k.narrow(1, lo, total - lo)?;
        let values = kv.v.narrow(1, lo, total - lo)?;

        let q = q
            .reshape((n, nh, hd))?
            .transpose(0, 1)?
            .contiguous()?
            .reshape((nkv, group * n, hd))?;
        let att = (q.matmul(&keys.t()?)? / (hd as f64).sqrt())?;
        let att = if let Some(mask) = mask {
            att.reshape((nkv, group, n, total - lo))?
                .broadcast_add(mask)?
                .reshape((nkv, group * n, total - lo))?
        } else {
            att
        };
        let att = softmax_last_dim(&att)?;
        let y = att.matmul(&values)?;
        Ok(y.reshape((nh, n, hd))?
            .transpose(0, 1)?
            .reshape((n, nh * hd))?)
    }

    /// Fused CPU attention of every item of `batch` at layer `li` (their new keys and
    /// values already appended): prompt chunks and decode tokens in one kernel call,
    /// each row computed the same way whatever the chunk it came in (see
    /// `crate::kernels::causal`). `q` is the packed `[n_total, n_head, 1, hd]` after
    /// RoPE; returns `[n_total, n_head * hd]`.
    pub(super) fn attend_fused(
        &self,
        batch: &[BatchItem<'_>],
        li: usize,
        spans: &[(usize, usize, usize)],
        q: &Tensor,
        window: usize,
    ) -> Result<Tensor> {
        let cfg = &self.config;
        let shape = AttnShape {
            n_head: cfg.n_head,
            n_kv_head: cfg.n_kv_head,
            head_dim: cfg.head_dim,
        };
        let q = q.flatten_all()?.to_vec1::<f32>()?;
        // Read locks on the cache tensors, held for the kernel call.
        let guards = batch
            .iter()
            .map(|item| {
                let kv = &item.cache.layers[li];
                (kv.k.storage_and_layout(), kv.v.storage_and_layout())
            })
            .collect::<Vec<_>>();
        let seqs = guards
            .iter()
            .zip(spans)
            .map(|(((ks, kl), (vs, vl)), &(row, n, past))| {
                let (_, cap, _) = kl.shape().dims3()?;
                Ok(CausalSeq {
                    k: cpu_f32(ks, kl)?,
                    v: cpu_f32(vs, vl)?,
                    head_stride: cap * cfg.head_dim,
                    past,
                    n,
                    row,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let mut out = vec![0f32; q.len()];
        causal_attention(shape, window, &q, &seqs, &mut out).map_err(candle_core::Error::from)?;
        drop(seqs);
        drop(guards);
        let n_total = out.len() / (cfg.n_head * cfg.head_dim);
        Ok(Tensor::from_vec(
            out,
            (n_total, cfg.n_head * cfg.head_dim),
            &self.device,
        )?)
    }
}

/// Writes `n` new keys `[n, nkv, 1, hd]` (or `[n, nkv, hd]`) and values
/// `[n, nkv, hd]` into the head-major cache at positions `past..past + n`.
pub(super) fn append_kv(
    kv: &mut LayerKv,
    k: &Tensor,
    v: &Tensor,
    past: usize,
    nkv: usize,
    hd: usize,
) -> Result<()> {
    let n = v.dim(0)?;
    let k = k.reshape((n, nkv, hd))?.transpose(0, 1)?.contiguous()?;
    let v = v.transpose(0, 1)?.contiguous()?;
    kv.k.slice_set(&k, 1, past)?;
    kv.v.slice_set(&v, 1, past)?;
    Ok(())
}

/// The f32 elements of a contiguous CPU tensor, from its first element.
fn cpu_f32<'a>(storage: &'a Storage, layout: &Layout) -> Result<&'a [f32]> {
    match storage {
        Storage::Cpu(cpu) if layout.is_contiguous() => {
            Ok(&cpu.as_slice::<f32>()?[layout.start_offset()..])
        }
        _ => Err(LlmError::Unsupported(
            "fused attention needs a contiguous CPU f32 cache".into(),
        )),
    }
}

/// The first cached position a query at position `past` (the earliest of its
/// chunk) can see through a window of `window` positions, its own included.
fn window_start(past: usize, window: usize) -> usize {
    (past + 1).saturating_sub(window)
}

/// Additive mask over keys `lo..past + n` with `lo = window_start(past, window)`:
/// query `i` (at position `p = past + i`) sees keys `j` with `j <= p` and
/// `p - j < window` (llama.cpp's and Hugging Face's sliding-window rule).
pub(super) fn causal_mask(n: usize, past: usize, window: usize, device: &Device) -> Result<Tensor> {
    let lo = window_start(past, window);
    let total = past + n;
    let mask: Vec<f32> = (0..n)
        .flat_map(|i| {
            let p = past + i;
            (lo..total).map(move |j| {
                if j > p || p - j >= window {
                    f32::NEG_INFINITY
                } else {
                    0.0
                }
            })
        })
        .collect();
    Ok(Tensor::from_vec(mask, (n, total - lo), device)?)
}
