//! Per-sequence key/value cache.
//!
//! Each sequence owns its cache so that sequences can join and leave a running
//! batch at any position (continuous batching) and so that cancelling a request
//! frees its memory simply by dropping its `SeqCache`.

use candle_core::{DType, Device, Tensor};

use super::error::{LlmError, Result};
use crate::kernels::causal::BLOCK;

/// Smallest allocation, so that short prompts followed by decoding do not
/// reallocate on every few tokens.
const MIN_CAPACITY: usize = 64;

/// Keys and values of one layer, `[n_kv_head, capacity, head_dim]` each.
///
/// Head-major layout makes `narrow(1, 0, len)` a view whose inner two
/// dimensions are dense, which candle's batched matmul accepts without a copy.
pub(crate) struct LayerKv {
    pub(crate) k: Tensor,
    pub(crate) v: Tensor,
}

/// The attention state of one sequence across all layers.
///
/// Storage grows geometrically (amortised O(1) per token, unlike
/// `Tensor::cat` per step which copies the whole cache every token) and is
/// capped at the model's context length.
pub struct SeqCache {
    pub(crate) layers: Vec<LayerKv>,
    len: usize,
    capacity: usize,
    n_layer: usize,
    n_kv_head: usize,
    head_dim: usize,
    max_len: usize,
    device: Device,
}

impl SeqCache {
    pub(crate) fn new(
        n_layer: usize,
        n_kv_head: usize,
        head_dim: usize,
        max_len: usize,
        device: Device,
    ) -> Self {
        Self {
            layers: Vec::new(),
            len: 0,
            capacity: 0,
            n_layer,
            n_kv_head,
            head_dim,
            max_len,
            device,
        }
    }

    /// Tokens already processed, i.e. the position of the next token.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Tokens that fit without reallocating.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Longest sequence this cache accepts (the model's context length or the
    /// load-time override).
    pub fn max_len(&self) -> usize {
        self.max_len
    }

    /// Bytes held on the device, for admission control and metrics.
    pub fn memory_bytes(&self) -> usize {
        2 * self.n_layer
            * self.n_kv_head
            * self.capacity
            * self.head_dim
            * DType::F32.size_in_bytes()
    }

    /// Forgets tokens past `len`, keeping storage; lets a caller roll back to a
    /// shared prefix or retry a step without recomputing the prompt.
    pub fn truncate(&mut self, len: usize) {
        self.len = self.len.min(len);
    }

    /// Forgets everything and releases the storage.
    pub fn reset(&mut self) {
        self.layers.clear();
        self.len = 0;
        self.capacity = 0;
    }

    pub(crate) fn check_compatible(
        &self,
        n_layer: usize,
        n_kv_head: usize,
        head_dim: usize,
    ) -> Result<()> {
        if (self.n_layer, self.n_kv_head, self.head_dim) != (n_layer, n_kv_head, head_dim) {
            return Err(LlmError::InvalidBatch(
                "sequence cache was created by a different model".into(),
            ));
        }
        Ok(())
    }

    /// Makes room for `needed` tokens in total, copying the valid prefix when
    /// the storage has to grow.
    pub(crate) fn reserve(&mut self, needed: usize) -> Result<()> {
        if needed > self.max_len {
            return Err(LlmError::ContextOverflow {
                requested: needed,
                max: self.max_len,
            });
        }
        if needed <= self.capacity {
            return Ok(());
        }
        // Whole blocks of the fused attention kernel, which reads keys a block at a time.
        let new_cap = needed
            .max(self.capacity.saturating_mul(2))
            .max(MIN_CAPACITY)
            .min(self.max_len)
            .next_multiple_of(BLOCK);
        let shape = (self.n_kv_head, new_cap, self.head_dim);
        let mut layers = Vec::with_capacity(self.n_layer);
        for i in 0..self.n_layer {
            let k = Tensor::zeros(shape, DType::F32, &self.device)?;
            let v = Tensor::zeros(shape, DType::F32, &self.device)?;
            if self.len > 0 {
                if let Some(old) = self.layers.get(i) {
                    copy_rows(&k, &old.k, self.len)?;
                    copy_rows(&v, &old.v, self.len)?;
                }
            }
            layers.push(LayerKv { k, v });
        }
        self.layers = layers;
        self.capacity = new_cap;
        Ok(())
    }

    /// Makes this (empty) cache hold the first `n` tokens of `src`, a cache of the
    /// same model: a prompt that starts like an earlier sequence skips their prefill.
    pub fn copy_prefix(&mut self, src: &SeqCache, n: usize) -> Result<()> {
        src.check_compatible(self.n_layer, self.n_kv_head, self.head_dim)?;
        if n > src.len || self.len != 0 {
            return Err(LlmError::InvalidBatch(format!(
                "cannot copy {n} tokens of a {}-token cache into a {}-token one",
                src.len, self.len
            )));
        }
        self.reserve(n)?;
        for (dst, from) in self.layers.iter().zip(&src.layers) {
            copy_rows(&dst.k, &from.k, n)?;
            copy_rows(&dst.v, &from.v, n)?;
        }
        self.len = n;
        Ok(())
    }

    /// Marks `n` more tokens as valid; called only after a whole step has
    /// succeeded so that a failed step leaves the sequence unchanged.
    pub(crate) fn commit(&mut self, n: usize) {
        self.len += n;
    }
}

/// Copies the first `n` positions of every head of `src` (`[nkv, cap, hd]`) into `dst`,
/// in whole blocks: the fused attention keeps keys dimension-major inside blocks of
/// `BLOCK` positions, so a prefix of positions is a prefix of whole blocks (positions past
/// `n` in the last block are copied too; they are past the cache's length, never read
/// as keys). Both capacities are whole blocks.
fn copy_rows(dst: &Tensor, src: &Tensor, n: usize) -> Result<()> {
    let rows = n.next_multiple_of(BLOCK).min(src.dim(1)?);
    dst.slice_set(&src.narrow(1, 0, rows)?.contiguous()?, 1, 0)?;
    Ok(())
}

impl std::fmt::Debug for SeqCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SeqCache")
            .field("len", &self.len)
            .field("capacity", &self.capacity)
            .field("max_len", &self.max_len)
            .finish()
    }
}
