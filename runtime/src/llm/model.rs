//! Llama-family forward pass (`llama`; `qwen2`: q/k/v biases and NeoX RoPE;
//! `gemma3`: extra norms, GELU, sliding-window layers) over a packed batch of
//! sequences at different positions.
//!
//! candle-transformers' `quantized_llama` keeps one KV cache for the whole
//! model and can only batch sequences at the same position, which rules out
//! continuous batching. This forward follows the same maths (and is tested for
//! parity against it) but packs the new tokens of every sequence into one
//! `[n_tokens, hidden]` matrix for the projections and the MLP, where batching
//! pays, and runs only RoPE and attention per sequence against its own cache.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use candle_core::quantized::{QMatMul, QTensor};
use candle_core::{DType, Device, Tensor};
use candle_nn::ops::{rms_norm, silu};
use candle_nn::rotary_emb::{rope, rope_i};

use super::error::{LlmError, Result};
use super::gguf::{Architecture, GgufFile, LlamaConfig, RopeStyle};
use super::kv_cache::SeqCache;
use super::weights::{convert, converted, KPadding, Linear, Projection, WeightFormat};

mod attention;
mod packs;

use attention::{append_kv, causal_mask};
use packs::{Embeddings, Packs};

/// Load-time choices.
#[derive(Debug, Clone)]
pub struct LoadOptions {
    pub weight_format: WeightFormat,
    pub k_padding: KPadding,
    /// Caps the context below the model's trained length to bound the RoPE
    /// tables and the largest KV cache; `None` uses the GGUF context length.
    pub max_context: Option<usize>,
    /// Run quantized matmuls (Q4_1, Q8_0, Q5_0, Q5_1, Q4_K, Q5_K, Q6_K) on CPU with
    /// our own SIMD kernels (`crate::kernels`) instead of candle's. Exact-parity tests against candle turn it off.
    pub cpu_kernels: bool,
    /// Packed-weights file of this GGUF (`super::packed`) and the GGUF's sha256:
    /// mapped when it exists, written during the load when it does not. `None`
    /// repacks every load and writes nothing (tests, files outside the cache).
    pub packed_weights: Option<(PathBuf, String)>,
}

impl Default for LoadOptions {
    fn default() -> Self {
        Self {
            weight_format: WeightFormat::default(),
            k_padding: KPadding::default(),
            max_context: None,
            cpu_kernels: true,
            packed_weights: None,
        }
    }
}

/// Facts about a loaded model, for logs and the worker's readiness report.
#[derive(Debug, Clone)]
pub struct LoadReport {
    pub load_seconds: f64,
    /// Bytes of weights held on the device after conversion.
    pub weight_bytes: usize,
    /// Quantization of the layer matmul weights in the file and in memory.
    pub stored_dtype: String,
    pub memory_dtype: String,
    pub k_padding: KPadding,
    /// Whether the layer weights were padded (it needs a VNNI CPU and Q8_0
    /// weights); a Q8_0 head can be padded even when Q4_1 layers are not.
    pub k_padded: bool,
    /// What happened with the packed-weights file: `mapped`, `written`,
    /// `not written: <why>`, or `off`.
    pub packed_weights: String,
}

/// One sequence's contribution to a [`LlmModel::step`]: the tokens not yet in
/// its cache (a prompt chunk, or the single token sampled last step).
pub struct BatchItem<'a> {
    pub tokens: &'a [u32],
    pub cache: &'a mut SeqCache,
}

impl<'a> BatchItem<'a> {
    /// Pairs each sequence's new tokens with its cache, in order.
    pub fn pack<T: AsRef<[u32]>>(
        tokens: &'a [T],
        caches: &'a mut [SeqCache],
    ) -> Vec<BatchItem<'a>> {
        tokens
            .iter()
            .zip(caches.iter_mut())
            .map(|(t, cache)| BatchItem {
                tokens: t.as_ref(),
                cache,
            })
            .collect()
    }
}

struct Layer {
    attn_norm: Tensor,
    qkv: Projection,
    /// `[q, k, v]` biases (Qwen2), f32, added after the projection.
    qkv_bias: Option<[Tensor; 3]>,
    wo: Linear,
    ffn_norm: Tensor,
    gate_up: Projection,
    down: Linear,
    /// Gemma 3: RMS norms of every q and of every k head (before RoPE), and of
    /// the attention and MLP outputs (before each residual add).
    qk_norm: Option<[Tensor; 2]>,
    post_attn_norm: Option<Tensor>,
    post_ffn_norm: Option<Tensor>,
    /// Attends through `LlamaConfig::sliding_window`, with the local RoPE tables.
    sliding: bool,
}

/// A llama-family model (`llama`, `qwen2` or `gemma3`, see [`super::gguf::Architecture`])
/// whose state lives entirely in the weights; sequences carry their own
/// [`SeqCache`], so `step` takes `&self`.
pub struct LlmModel {
    config: LlamaConfig,
    max_context: usize,
    device: Device,
    /// Token embeddings (see [`Embeddings`]): rows are dequantized on lookup,
    /// which avoids holding a dense `[vocab, hidden]` f32 copy (113 MB for
    /// SmolLM2) and gives exactly the values a dense dequantization would.
    embed: Embeddings,
    layers: Vec<Layer>,
    norm: Tensor,
    head: Linear,
    /// `[max_context, head_dim / 2]` rotation tables.
    cos: Tensor,
    sin: Tensor,
    /// The sliding-window layers' tables (Gemma 3's local RoPE base).
    local_rope: Option<(Tensor, Tensor)>,
    /// Attention runs on our fused causal kernel (`crate::kernels::causal`) instead
    /// of candle ops; set with the matmul kernels (`LoadOptions::cpu_kernels` on a
    /// SIMD CPU).
    cpu_attention: bool,
    report: LoadReport,
}

impl LlmModel {
    /// Loads a llama GGUF file onto `device`.
    pub fn load(path: impl AsRef<Path>, device: &Device, opts: &LoadOptions) -> Result<Self> {
        let started = Instant::now();
        let file = GgufFile::open(path)?;
        let mut model = Self::load_gguf(&file, device, opts)?;
        model.report.load_seconds = started.elapsed().as_secs_f64();
        Ok(model)
    }

    /// Loads from an already opened file, so a worker can parse the header
    /// once for the model, the tokenizer and the chat template.
    pub fn load_gguf(file: &GgufFile, device: &Device, opts: &LoadOptions) -> Result<Self> {
        let started = Instant::now();
        let config = LlamaConfig::from_gguf(file)?;
        let max_context = opts
            .max_context
            .map_or(config.context_length, |m| m.min(config.context_length))
            .max(1);
        // Our kernels need SIMD to beat candle; they run every quantization of common
        // GGUF files as stored, so with them `Auto` keeps the file's quantization.
        let own = opts.cpu_kernels
            && device.is_cpu()
            && crate::kernels::active_level() != crate::kernels::Level::Scalar;
        let fmt = match (own, opts.weight_format) {
            (true, WeightFormat::Auto) => WeightFormat::AsStored,
            (_, f) => f,
        };
        let pad = opts.k_padding;
        let qkv_pad = match pad {
            KPadding::Balanced => KPadding::Off,
            other => other,
        };
        let stored_dtype = file
            .tensor_info("blk.0.attn_q.weight")
            .map(|(_, d)| format!("{d:?}"))
            .unwrap_or_default();

        let load =
            |name: &str| -> Result<QTensor> { convert(file.tensor(name, device)?, fmt, device) };
        // With our kernels and the file's own quantization, matmul weights go from the
        // mapped file straight into the kernels' layout: one copy instead of a read, a
        // typed copy, a fused concatenation and the repack.
        let direct = own && fmt == WeightFormat::AsStored;
        let packs = Packs::open(direct, opts.packed_weights.as_ref());
        let projection = |names: &[String], padding: KPadding| -> Result<Projection> {
            if direct {
                if let Some((m, splits)) = packs.matrix(file, names)? {
                    return Ok(Projection::from_matrix(m, splits));
                }
                // Parts of different formats (Q4_K_M's q/k vs v) cannot fuse: one
                // kernel matrix each, so they are packed (and mapped) too.
                let parts = names
                    .iter()
                    .map(|n| packs.matrix(file, std::slice::from_ref(n)))
                    .collect::<Result<Option<Vec<_>>>>()?;
                if let Some(parts) = parts {
                    let linears = parts.into_iter().map(|(m, _)| Linear::from_matrix(m));
                    return Ok(Projection::Separate(linears.collect()));
                }
            }
            let parts = names.iter().map(|n| load(n)).collect::<Result<Vec<_>>>()?;
            Projection::new(parts, padding, device, own)
        };
        let linear = |name: String| -> Result<Linear> {
            if direct {
                if let Some((m, _)) = packs.matrix(file, std::slice::from_ref(&name))? {
                    return Ok(Linear::from_matrix(m));
                }
            }
            Linear::new(load(&name)?, pad, device, own)
        };
        let load_layer = |i: usize| -> Result<Layer> {
            let p = format!("blk.{i}");
            let qkv = [
                format!("{p}.attn_q.weight"),
                format!("{p}.attn_k.weight"),
                format!("{p}.attn_v.weight"),
            ];
            let gate_up = [format!("{p}.ffn_gate.weight"), format!("{p}.ffn_up.weight")];
            let bias_names = ["q", "k", "v"].map(|t| format!("{p}.attn_{t}.bias"));
            let qkv_bias = if config.architecture.requires_qkv_bias()
                || bias_names.iter().any(|n| file.has_tensor(n))
            {
                // Biases are tiny and usually stored as f32; dequantize whatever they are.
                let [q, k, v] = bias_names.each_ref().map(|n| {
                    file.tensor(n, device)
                        .and_then(|t| Ok(t.dequantize(device)?))
                });
                Some([q?, k?, v?])
            } else {
                None
            };
            let norm = |name: &str| -> Result<Option<Tensor>> {
                let name = format!("{p}.{name}.weight");
                if !file.has_tensor(&name) {
                    return Ok(None);
                }
                Ok(Some(load(&name)?.dequantize(device)?))
            };
            let qk_norm = match (norm("attn_q_norm")?, norm("attn_k_norm")?) {
                (Some(q), Some(k)) => Some([q, k]),
                (None, None) => None,
                _ => {
                    return Err(LlmError::Unsupported(format!(
                        "{p} has a norm for only one of q and k"
                    )))
                }
            };
            let gemma = config.architecture == Architecture::Gemma3;
            let post_attn_norm = norm("post_attention_norm")?;
            let post_ffn_norm = norm("post_ffw_norm")?;
            if gemma && (qk_norm.is_none() || post_attn_norm.is_none() || post_ffn_norm.is_none()) {
                return Err(LlmError::Unsupported(format!(
                    "{p} lacks one of Gemma 3's q/k, post-attention or post-MLP norms"
                )));
            }
            Ok(Layer {
                qk_norm,
                post_attn_norm,
                post_ffn_norm,
                sliding: config.is_sliding_layer(i),
                attn_norm: load(&format!("{p}.attn_norm.weight"))?.dequantize(device)?,
                qkv: projection(&qkv, qkv_pad)?,
                qkv_bias,
                wo: linear(format!("{p}.attn_output.weight"))?,
                ffn_norm: load(&format!("{p}.ffn_norm.weight"))?.dequantize(device)?,
                gate_up: projection(&gate_up, pad)?,
                down: linear(format!("{p}.ffn_down.weight"))?,
            })
        };
        // Repacking is most of a CPU load and layers are independent: one contiguous
        // run of layers per core (the file is mapped, so threads read it without locks).
        let threads = if device.is_cpu() {
            crate::kernels::threads().min(config.n_layer).max(1)
        } else {
            1
        };
        let layers: Vec<Layer> = if threads == 1 {
            (0..config.n_layer).map(load_layer).collect::<Result<_>>()?
        } else {
            let per = config.n_layer.div_ceil(threads);
            std::thread::scope(|s| -> Result<Vec<Layer>> {
                let runs: Vec<_> = (0..config.n_layer)
                    .step_by(per)
                    .map(|lo| {
                        let hi = (lo + per).min(config.n_layer);
                        let load_layer = &load_layer;
                        s.spawn(move || (lo..hi).map(load_layer).collect::<Result<Vec<_>>>())
                    })
                    .collect();
                let mut layers = Vec::with_capacity(config.n_layer);
                for run in runs {
                    let run = run.join().map_err(|_| {
                        candle_core::Error::Msg("a weight-loading thread panicked".into())
                    })?;
                    layers.extend(run?);
                }
                Ok(layers)
            })?
        };
        let norm = load("output_norm.weight")?.dequantize(device)?;
        let embed = match packs.mapped("token_embd.weight") {
            Some(m) => Embeddings::Packed(m),
            None => Embeddings::File(Arc::new(file.tensor("token_embd.weight", device)?)),
        };
        // Tied embeddings (SmolLM2, Gemma) have no output.weight: the head reuses the
        // embedding matrix, converted like any other matmul weight, or shared
        // when no conversion applies.
        let tied = !file.has_tensor("output.weight");
        let head = if !tied {
            linear("output.weight".to_string())?
        } else if let Some((m, _)) = direct
            .then(|| packs.matrix(file, &["token_embd.weight".to_string()]))
            .transpose()?
            .flatten()
        {
            Linear::from_matrix(m)
        } else {
            let Embeddings::File(embed) = &embed else {
                unreachable!("mapped embeddings come with a mapped head")
            };
            match converted(embed, fmt, device)? {
                Some(q) => Linear::new(q, pad, device, own)?,
                None => match Linear::padded_copy(embed, pad, device, own)? {
                    Some(l) => l,
                    None => Linear::unpadded(QMatMul::from_arc(embed.clone())?),
                },
            }
        };
        if !tied && direct && matches!(embed, Embeddings::File(_)) {
            // Record the table in a file being written, so later loads map it too.
            packs.record(file, "token_embd.weight")?;
        }
        let head_shares_embed = match &embed {
            Embeddings::File(e) => {
                matches!(head.weight(), Some(QMatMul::QTensor(t)) if Arc::ptr_eq(t, e))
            }
            Embeddings::Packed(_) => tied,
        };
        let (cos, sin) = rope_tables(config.head_dim, config.rope_freq_base, max_context, device)?;
        let local_rope = layers
            .iter()
            .any(|l| l.sliding)
            .then(|| {
                rope_tables(
                    config.head_dim,
                    config.rope_local_freq_base,
                    max_context,
                    device,
                )
            })
            .transpose()?;

        let memory_dtype = layers
            .first()
            .map(|l| l.wo.dtype_name())
            .unwrap_or_default();
        let weight_bytes = layers
            .iter()
            .map(|l| l.qkv.bytes() + l.gate_up.bytes() + l.wo.bytes() + l.down.bytes())
            .sum::<usize>()
            + head.bytes()
            + if head_shares_embed { 0 } else { embed.bytes() };
        let report = LoadReport {
            load_seconds: started.elapsed().as_secs_f64(),
            weight_bytes,
            stored_dtype,
            memory_dtype,
            k_padding: pad,
            k_padded: layers.first().is_some_and(|l| l.wo.is_padded()),
            packed_weights: packs.finish(),
        };
        Ok(Self {
            config,
            max_context,
            device: device.clone(),
            embed,
            layers,
            norm,
            head,
            cos,
            sin,
            local_rope,
            cpu_attention: own,
            report,
        })
    }

    /// Whether a step's rows come out bit-identical however the tokens are chunked
    /// (whole prompt, chunks, token by token): true on the fused CPU attention with our
    /// row-wise matmul kernels, so a reused cache prefix changes no token.
    pub fn chunk_invariant(&self) -> bool {
        self.cpu_attention
            && self
                .layers
                .iter()
                .all(|l| l.qkv.is_own() && l.wo.is_own() && l.gate_up.is_own() && l.down.is_own())
    }

    pub fn config(&self) -> &LlamaConfig {
        &self.config
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    pub fn max_context(&self) -> usize {
        self.max_context
    }

    pub fn load_report(&self) -> &LoadReport {
        &self.report
    }

    /// An empty cache for a new sequence; it allocates on first use.
    pub fn new_sequence_cache(&self) -> SeqCache {
        SeqCache::new(
            self.config.n_layer,
            self.config.n_kv_head,
            self.config.head_dim,
            self.max_context,
            self.device.clone(),
        )
    }

    /// Runs one forward step over a packed batch and returns the logits of the
    /// last new token of each item, `[batch.len(), vocab]` f32 on the model's
    /// device. Each cache advances by its item's token count on success and is
    /// left logically unchanged on error.
    pub fn step(&self, batch: &mut [BatchItem<'_>]) -> Result<Tensor> {
        let cfg = &self.config;
        if batch.is_empty() {
            return Err(LlmError::InvalidBatch("empty batch".into()));
        }
        // (offset in the packed matrix, new tokens, tokens already cached)
        let mut spans = Vec::with_capacity(batch.len());
        let mut ids = Vec::new();
        let mut positions = Vec::new();
        for item in batch.iter_mut() {
            item.cache
                .check_compatible(cfg.n_layer, cfg.n_kv_head, cfg.head_dim)?;
            let (past, n) = (item.cache.len(), item.tokens.len());
            if n == 0 {
                return Err(LlmError::InvalidBatch("an item has no tokens".into()));
            }
            if let Some(bad) = item.tokens.iter().find(|&&t| t as usize >= cfg.vocab_size) {
                return Err(LlmError::InvalidBatch(format!(
                    "token id {bad} outside vocabulary of {}",
                    cfg.vocab_size
                )));
            }
            item.cache.reserve(past + n)?;
            spans.push((ids.len(), n, past));
            ids.extend_from_slice(item.tokens);
            positions.extend((past..past + n).map(|p| p as u32));
        }
        let n_total = ids.len();
        let dev = &self.device;
        let positions = Tensor::from_vec(positions, n_total, dev)?;
        // Every packed row is its own "batch" entry of length 1 for rope_i, so
        // rows of different sequences rotate by their own positions in one op.
        let half = cfg.head_dim / 2;
        let tables = |cos: &Tensor, sin: &Tensor| -> Result<(Tensor, Tensor)> {
            Ok((
                cos.index_select(&positions, 0)?
                    .reshape((n_total, 1, half))?,
                sin.index_select(&positions, 0)?
                    .reshape((n_total, 1, half))?,
            ))
        };
        let global_rope = tables(&self.cos, &self.sin)?;
        let local_rope = match &self.local_rope {
            Some((cos, sin)) => Some(tables(cos, sin)?),
            None => None,
        };
        let eps = cfg.rms_norm_eps as f32;
        let (nh, nkv, hd) = (cfg.n_head, cfg.n_kv_head, cfg.head_dim);

        // One mask per multi-token chunk (and per kind of layer), shared by all
        // layers of that kind; the fused kernel masks by position itself.
        let window = cfg.sliding_window.unwrap_or(usize::MAX);
        let chunk_masks = |window: usize| -> Result<Vec<Option<Tensor>>> {
            spans
                .iter()
                .map(|&(_, n, past)| {
                    (n > 1 && !self.cpu_attention)
                        .then(|| causal_mask(n, past, window, dev))
                        .transpose()
                })
                .collect()
        };
        let masks = chunk_masks(usize::MAX)?;
        let local_masks = if local_rope.is_some() {
            chunk_masks(window)?
        } else {
            Vec::new()
        };

        let mut x = self.embed.lookup(ids, dev)?;
        if cfg.architecture == Architecture::Gemma3 {
            x = (x * (cfg.hidden_size as f64).sqrt())?;
        }
        for (li, layer) in self.layers.iter().enumerate() {
            let ((cos, sin), masks, window) = match (&local_rope, layer.sliding) {
                (Some(local), true) => (local, &local_masks, window),
                _ => (&global_rope, &masks, usize::MAX),
            };
            let h = rms_norm(&x, &layer.attn_norm, eps)?;
            let qkv = layer.qkv.forward(&h)?;
            let [q, k, v] = qkv.as_slice() else {
                return Err(LlmError::Unsupported("qkv projection shape".into()));
            };
            let (q, k, v) = match &layer.qkv_bias {
                Some([bq, bk, bv]) => (
                    q.broadcast_add(bq)?,
                    k.broadcast_add(bk)?,
                    v.broadcast_add(bv)?,
                ),
                None => (q.clone(), k.clone(), v.clone()),
            };
            let rotate = |x: &Tensor| match cfg.architecture.rope_style() {
                RopeStyle::Interleaved => rope_i(x, cos, sin),
                RopeStyle::Neox => rope(x, cos, sin),
            };
            // Heads as rows `[n_total, heads, 1, hd]`, RMS-normed per head first
            // where the model has q/k norms.
            let heads = |x: &Tensor, heads: usize, norm: Option<&Tensor>| -> Result<Tensor> {
                let x = x.reshape((n_total, heads, 1, hd))?.contiguous()?;
                Ok(match norm {
                    Some(w) => rms_norm(&x, w, eps)?,
                    None => x,
                })
            };
            let [qn, kn] = match &layer.qk_norm {
                Some([qn, kn]) => [Some(qn), Some(kn)],
                None => [None, None],
            };
            let q = rotate(&heads(&q, nh, qn)?)?;
            let k = rotate(&heads(&k, nkv, kn)?)?;
            let v = v.reshape((n_total, nkv, hd))?;
            let mut outs = Vec::with_capacity(batch.len());
            for ((item, &(off, n, past)), mask) in batch.iter_mut().zip(&spans).zip(masks) {
                let kv = item
                    .cache
                    .layers
                    .get_mut(li)
                    .ok_or_else(|| LlmError::InvalidBatch("cache has too few layers".into()))?;
                let (k, v) = (k.narrow(0, off, n)?, v.narrow(0, off, n)?);
                append_kv(kv, &k, &v, past, self.cpu_attention)?;
                if !self.cpu_attention {
                    let q = q.narrow(0, off, n)?;
                    outs.push(self.attend(kv, &q, past, window, mask.as_ref())?);
                }
            }
            let attn = if self.cpu_attention {
                self.attend_fused(batch, li, &spans, &q, window)?
            } else if outs.len() == 1 {
                outs.swap_remove(0)
            } else {
                Tensor::cat(&outs, 0)?
            };
            let post_norm = |y: Tensor, norm: &Option<Tensor>| -> Result<Tensor> {
                Ok(match norm {
                    Some(w) => rms_norm(&y, w, eps)?,
                    None => y,
                })
            };
            x = (x + post_norm(layer.wo.forward(&attn)?, &layer.post_attn_norm)?)?;
            let h = rms_norm(&x, &layer.ffn_norm, eps)?;
            let gu = layer.gate_up.forward(&h)?;
            let [gate, up] = gu.as_slice() else {
                return Err(LlmError::Unsupported("gate/up projection shape".into()));
            };
            // Gemma gates with GELU (tanh approximation, as llama.cpp), the others SiLU.
            let gate = match cfg.architecture {
                Architecture::Gemma3 if self.cpu_attention => {
                    let mut g = gate.contiguous()?.flatten_all()?.to_vec1::<f32>()?;
                    crate::kernels::softmax::gelu_tanh(&mut g);
                    Tensor::from_vec(g, gate.shape(), dev)?
                }
                Architecture::Gemma3 => gate.gelu()?,
                _ => silu(gate)?,
            };
            let y = layer.down.forward(&(gate * up)?)?;
            x = (x + post_norm(y, &layer.post_ffn_norm)?)?;
        }
        // RMS norm is per row, so norming only the rows whose logits are wanted
        // is exact and keeps the vocabulary projection at one row per sequence.
        let last: Vec<u32> = spans
            .iter()
            .map(|&(off, n, _)| (off + n - 1) as u32)
            .collect();
        let last = Tensor::from_vec(last, spans.len(), dev)?;
        let x = x.index_select(&last, 0)?;
        let logits = self.head.forward(&rms_norm(&x, &self.norm, eps)?)?;
        for (item, &(_, n, _)) in batch.iter_mut().zip(&spans) {
            item.cache.commit(n);
        }
        Ok(logits)
    }
}

/// RoPE angle tables computed exactly as candle-transformers' quantized_llama
/// does (same op sequence), so parity tests compare like with like.
fn rope_tables(
    head_dim: usize,
    base: f32,
    max_pos: usize,
    device: &Device,
) -> Result<(Tensor, Tensor)> {
    let theta: Vec<f32> = (0..head_dim)
        .step_by(2)
        .map(|i| 1f32 / base.powf(i as f32 / head_dim as f32))
        .collect();
    let theta = Tensor::new(theta.as_slice(), device)?;
    let idx_theta = Tensor::arange(0, max_pos as u32, device)?
        .to_dtype(DType::F32)?
        .reshape((max_pos, 1))?
        .matmul(&theta.reshape((1, theta.elem_count()))?)?;
    Ok((idx_theta.cos()?, idx_theta.sin()?))
}
