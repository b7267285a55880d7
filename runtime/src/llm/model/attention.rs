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
use crate::kernels::causal::{causal_attention, store_key, CausalSeq};

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
/// `[n, nkv, hd]` into the head-major cache at positions `past..past + n`. With
/// `blocked_keys` (the fused kernel's layout, `crate::kernels::causal::store_key`) keys
/// go into dimension-major blocks; otherwise they are rows like the values.
pub(super) fn append_kv(
    kv: &mut LayerKv,
    k: &Tensor,
    v: &Tensor,
    past: usize,
    blocked_keys: bool,
) -> Result<()> {
    let (n, nkv, hd) = v.dims3()?;
    if blocked_keys {
        let keys = k.flatten_all()?.to_vec1::<f32>()?;
        kv.k.inplace_op1(&StoreKeys {
            keys,
            past,
            nkv,
            hd,
        })?;
    } else {
        let k = k.reshape((n, nkv, hd))?.transpose(0, 1)?.contiguous()?;
        kv.k.slice_set(&k, 1, past)?;
    }
    let v = v.transpose(0, 1)?.contiguous()?;
    kv.v.slice_set(&v, 1, past)?;
    Ok(())
}

/// Writes `[n, nkv, hd]` keys at positions `past..` of a `[nkv, capacity, hd]` CPU
/// cache tensor, in the fused kernel's blocked layout.
struct StoreKeys {
    keys: Vec<f32>,
    past: usize,
    nkv: usize,
    hd: usize,
}

impl candle_core::InplaceOp1 for StoreKeys {
    fn name(&self) -> &'static str {
        "store-keys"
    }

    fn cpu_fwd(
        &self,
        storage: &mut candle_core::CpuStorage,
        layout: &Layout,
    ) -> candle_core::Result<()> {
        let (nkv, cap, hd) = layout.shape().dims3()?;
        let n = self.keys.len() / (self.nkv * self.hd).max(1);
        if !layout.is_contiguous() || (nkv, hd) != (self.nkv, self.hd) || self.past + n > cap {
            candle_core::bail!(
                "store-keys: cache {:?} cannot take {n} keys at {}",
                layout.shape(),
                self.past
            );
        }
        let candle_core::CpuStorage::F32(data) = storage else {
            candle_core::bail!("store-keys: the cache is not f32");
        };
        let data = &mut data[layout.start_offset()..];
        for (t, key) in self.keys.chunks_exact(hd).enumerate() {
            let (pos, g) = (self.past + t / nkv, t % nkv);
            store_key(&mut data[g * cap * hd..(g + 1) * cap * hd], pos, key);
        }
        Ok(())
    }
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
