//! GGUF access: hyper-parameters, tokenizer metadata and weights.
//!
//! The GGUF file is the single source of truth for a model (weights, tokenizer,
//! chat template), so everything the engine needs is read from here and not
//! from side files.

use std::fs::File;
use std::io::Cursor;
use std::path::{Path, PathBuf};

use candle_core::quantized::gguf_file::{Content, Value};
use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::Device;
use memmap2::Mmap;

use super::error::{LlmError, Result};

/// An opened GGUF file: the parsed header plus a read-only memory map of the file.
///
/// The map is what makes a cold start cheap: the model cache is shared by every worker
/// on the machine, so after the first load the file's pages sit in the page cache and
/// mapping them costs no read copy; the header (which holds the whole vocabulary)
/// parses from memory instead of through ~100k small reads and seeks; and weights can
/// be repacked straight from the map ([`GgufFile::tensor_bytes`]) without an
/// intermediate owned copy. Tensors are still converted one at a time, so peak memory
/// stays near the size of the converted weights.
pub struct GgufFile {
    path: PathBuf,
    content: Content,
    map: Mmap,
}

impl GgufFile {
    /// Maps the file and parses the header (metadata and tensor index); no tensor data
    /// is read yet, but the kernel is asked to start reading it ahead.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        let io_err = |source| LlmError::Io {
            path: path.display().to_string(),
            source,
        };
        let file = File::open(&path).map_err(io_err)?;
        // SAFETY: the model cache's blobs are content-addressed and never rewritten in
        // place (a pull writes a new file and renames it), so the mapped bytes do not
        // change under us; a truncation would be an operator error that also breaks
        // every other reader.
        let map = unsafe { Mmap::map(&file) }.map_err(io_err)?;
        // Start reading the weights in while the header parses (a no-op when the file
        // is already in the page cache).
        let _ = map.advise(memmap2::Advice::WillNeed);
        let content = Content::read(&mut Cursor::new(&map[..]))?;
        Ok(Self { path, content, map })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The raw parsed header, for callers that need keys this module does not wrap.
    pub fn content(&self) -> &Content {
        &self.content
    }

    pub fn get(&self, key: &str) -> Option<&Value> {
        self.content.metadata.get(key)
    }

    pub fn require(&self, key: &str) -> Result<&Value> {
        self.get(key)
            .ok_or_else(|| LlmError::MissingMetadata(key.to_string()))
    }

    pub fn get_string(&self, key: &str) -> Result<Option<&str>> {
        self.get(key)
            .map(|v| v.to_string().map(String::as_str).map_err(|e| bad(key, e)))
            .transpose()
    }

    /// Integer keys are stored as u32 by llama.cpp but other writers use other
    /// widths, so accept any integer type.
    pub fn get_usize(&self, key: &str) -> Result<Option<usize>> {
        self.get(key).map(|v| value_to_usize(key, v)).transpose()
    }

    pub fn require_usize(&self, key: &str) -> Result<usize> {
        self.get_usize(key)?
            .ok_or_else(|| LlmError::MissingMetadata(key.to_string()))
    }

    pub fn get_f32(&self, key: &str) -> Result<Option<f32>> {
        self.get(key)
            .map(|v| match v {
                Value::F32(x) => Ok(*x),
                Value::F64(x) => Ok(*x as f32),
                other => Err(bad(key, format!("expected a float, got {other:?}"))),
            })
            .transpose()
    }

    pub fn require_array(&self, key: &str) -> Result<&Vec<Value>> {
        self.require(key)?.to_vec().map_err(|e| bad(key, e))
    }

    /// Shape and stored quantization of a tensor, without reading it.
    pub fn tensor_info(&self, name: &str) -> Option<(&[usize], GgmlDType)> {
        self.content
            .tensor_infos
            .get(name)
            .map(|i| (i.shape.dims(), i.ggml_dtype))
    }

    pub fn has_tensor(&self, name: &str) -> bool {
        self.content.tensor_infos.contains_key(name)
    }

    fn missing(&self, name: &str) -> LlmError {
        LlmError::Unsupported(format!(
            "tensor `{name}` is missing from {}",
            self.path.display()
        ))
    }

    /// Reads one tensor in its stored quantization onto `device`.
    pub fn tensor(&self, name: &str, device: &Device) -> Result<QTensor> {
        if !self.has_tensor(name) {
            return Err(self.missing(name));
        }
        Ok(self
            .content
            .tensor(&mut Cursor::new(&self.map[..]), name, device)?)
    }

    /// A tensor's stored bytes (GGML blocks, row-major), borrowed from the map, with
    /// its dims (GGUF order reversed, as candle reports them: `[rows, cols]` for a
    /// matrix) and quantization.
    pub fn tensor_bytes(&self, name: &str) -> Result<(&[u8], &[usize], GgmlDType)> {
        let info = self
            .content
            .tensor_infos
            .get(name)
            .ok_or_else(|| self.missing(name))?;
        let dtype = info.ggml_dtype;
        let elems = info.shape.elem_count();
        let len = elems / dtype.block_size() * dtype.type_size();
        let start = usize::try_from(self.content.tensor_data_offset + info.offset)
            .ok()
            .filter(|&s| s.checked_add(len).is_some_and(|e| e <= self.map.len()))
            .ok_or_else(|| {
                LlmError::Unsupported(format!(
                    "tensor `{name}` lies outside {}",
                    self.path.display()
                ))
            })?;
        Ok((&self.map[start..start + len], info.shape.dims(), dtype))
    }
}

pub(crate) fn bad(key: &str, reason: impl ToString) -> LlmError {
    LlmError::BadMetadata {
        key: key.to_string(),
        reason: reason.to_string(),
    }
}

pub(crate) fn value_to_usize(key: &str, v: &Value) -> Result<usize> {
    let n: i128 = match v {
        Value::U8(x) => (*x).into(),
        Value::I8(x) => (*x).into(),
        Value::U16(x) => (*x).into(),
        Value::I16(x) => (*x).into(),
        Value::U32(x) => (*x).into(),
        Value::I32(x) => (*x).into(),
        Value::U64(x) => (*x).into(),
        Value::I64(x) => (*x).into(),
        other => return Err(bad(key, format!("expected an integer, got {other:?}"))),
    };
    usize::try_from(n).map_err(|_| bad(key, format!("{n} is out of range")))
}

/// The model architectures the engine implements, as named by
/// `general.architecture`.
pub use surge_models::gguf::SUPPORTED_ARCHITECTURES;

/// How RoPE pairs the dimensions of a head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RopeStyle {
    /// Adjacent pairs `(2i, 2i + 1)`: llama GGUFs (the converter permutes the
    /// q/k weights into this layout), candle's `rope_i`.
    Interleaved,
    /// Halves `(i, i + head_dim / 2)` (GPT-NeoX layout, llama.cpp's
    /// `LLAMA_ROPE_TYPE_NEOX`): Qwen2, candle's `rope`.
    Neox,
}

/// A supported `general.architecture`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Architecture {
    Llama,
    /// Llama plus biases on the q/k/v projections and NeoX-style RoPE, with
    /// its hyper-parameters under `qwen2.*`.
    Qwen2,
    /// Gemma 3: NeoX RoPE, RMS norms on q and k per head, norms after attention
    /// and after the MLP too, a GELU-gated MLP, embeddings scaled by
    /// `sqrt(hidden)`, head dimension from `attention.key_length` (not
    /// `hidden / heads`), and sliding-window attention on five of every six
    /// layers with their own RoPE base.
    Gemma3,
}

impl Architecture {
    /// Parses `general.architecture`, refusing anything not implemented with
    /// a message that names what is.
    pub fn parse(name: &str) -> Result<Self> {
        match name {
            "llama" => Ok(Self::Llama),
            "qwen2" => Ok(Self::Qwen2),
            "gemma3" => Ok(Self::Gemma3),
            other => Err(LlmError::Unsupported(format!(
                "architecture `{other}` is not supported (supported architectures: {})",
                SUPPORTED_ARCHITECTURES.join(", ")
            ))),
        }
    }

    /// The GGUF name, which is also the prefix of its hyper-parameter keys.
    pub fn name(self) -> &'static str {
        match self {
            Self::Llama => "llama",
            Self::Qwen2 => "qwen2",
            Self::Gemma3 => "gemma3",
        }
    }

    pub fn rope_style(self) -> RopeStyle {
        match self {
            Self::Llama => RopeStyle::Interleaved,
            Self::Qwen2 | Self::Gemma3 => RopeStyle::Neox,
        }
    }

    /// Whether every layer must have `attn_{q,k,v}.bias` (optional otherwise).
    pub fn requires_qkv_bias(self) -> bool {
        matches!(self, Self::Qwen2)
    }
}

/// Hyper-parameters of a llama-family model, read from the `<arch>.*` GGUF
/// keys (`llama.*` or `qwen2.*`; see [`Architecture`]).
#[derive(Debug, Clone, PartialEq)]
pub struct LlamaConfig {
    pub architecture: Architecture,
    pub n_layer: usize,
    pub n_head: usize,
    pub n_kv_head: usize,
    pub hidden_size: usize,
    pub head_dim: usize,
    pub intermediate_size: usize,
    pub vocab_size: usize,
    /// Longest sequence the model was trained for; the KV cache refuses to
    /// grow past it because RoPE quality degrades beyond it.
    pub context_length: usize,
    pub rope_freq_base: f32,
    pub rms_norm_eps: f64,
    pub bos_token_id: Option<u32>,
    pub eos_token_id: Option<u32>,
    /// Keys a sliding-window layer attends to, counting the query's own
    /// position (Gemma 3: 512); `None` when every layer attends to everything.
    pub sliding_window: Option<usize>,
    /// Every `sliding_window_pattern`-th layer (1-based) attends globally, the
    /// others through the window (Gemma 3: 6, llama.cpp's default for it).
    pub sliding_window_pattern: usize,
    /// RoPE base of the sliding-window layers (Gemma 3: 10,000).
    pub rope_local_freq_base: f32,
}

impl LlamaConfig {
    /// Whether layer `i` attends through the sliding window.
    pub fn is_sliding_layer(&self, i: usize) -> bool {
        self.sliding_window.is_some()
            && self.sliding_window_pattern > 0
            && !(i + 1).is_multiple_of(self.sliding_window_pattern)
    }
}

impl LlamaConfig {
    /// Reads and validates the hyper-parameters.
    ///
    /// Only the architectures in [`SUPPORTED_ARCHITECTURES`] are accepted
    /// (a missing `general.architecture` means `llama`): other architectures
    /// that reuse llama tensor names differ in RoPE layout, norms or biases,
    /// and a silently wrong forward is worse than a clear refusal.
    pub fn from_gguf(f: &GgufFile) -> Result<Self> {
        let architecture =
            Architecture::parse(f.get_string("general.architecture")?.unwrap_or("llama"))?;
        let a = architecture.name();
        let key = |k: &str| format!("{a}.{k}");
        let n_layer = f.require_usize(&key("block_count"))?;
        let n_head = f.require_usize(&key("attention.head_count"))?;
        let n_kv_head = f
            .get_usize(&key("attention.head_count_kv"))?
            .unwrap_or(n_head);
        let hidden_size = f.require_usize(&key("embedding_length"))?;
        let intermediate_size = f.require_usize(&key("feed_forward_length"))?;
        let context_length = f.get_usize(&key("context_length"))?.unwrap_or(2048);
        let rope_freq_base = f.get_f32(&key("rope.freq_base"))?.unwrap_or(10_000.0);
        let rms_norm_eps = f
            .get_f32(&key("attention.layer_norm_rms_epsilon"))?
            .unwrap_or(1e-5) as f64;

        if n_head == 0 || n_kv_head == 0 || n_head % n_kv_head != 0 {
            return Err(bad(
                &key("attention.head_count"),
                format!("{n_head} heads, {n_kv_head} kv heads"),
            ));
        }
        // Gemma's heads are wider than hidden / heads; llama files may omit the key.
        let head_dim = match f.get_usize(&key("attention.key_length"))? {
            Some(d) => d,
            None if hidden_size % n_head == 0 => hidden_size / n_head,
            None => {
                return Err(bad(
                    &key("attention.head_count"),
                    format!("{n_head} heads do not divide hidden size {hidden_size}"),
                ))
            }
        };
        if let Some(v) = f.get_usize(&key("attention.value_length"))? {
            if v != head_dim {
                return Err(LlmError::Unsupported(format!(
                    "value head dimension {v} differs from key head dimension {head_dim}"
                )));
            }
        }
        if head_dim == 0 || head_dim % 2 != 0 {
            return Err(bad(&key("embedding_length"), "odd head dimension"));
        }
        // Partial rotary embeddings would need a different RoPE kernel call.
        if let Some(rope_dim) = f.get_usize(&key("rope.dimension_count"))? {
            if rope_dim != head_dim {
                return Err(LlmError::Unsupported(format!(
                    "rope dimension {rope_dim} differs from head dimension {head_dim}"
                )));
            }
        }
        let (embd_dims, _) = f
            .tensor_info("token_embd.weight")
            .ok_or_else(|| LlmError::Unsupported("no token_embd.weight".into()))?;
        let vocab_size = match embd_dims {
            [v, h] if *h == hidden_size => *v,
            other => {
                return Err(LlmError::Unsupported(format!(
                    "token_embd.weight has shape {other:?}, expected [vocab, {hidden_size}]"
                )))
            }
        };
        let token_id = |key: &str| -> Result<Option<u32>> {
            f.get_usize(key)?
                .map(|v| u32::try_from(v).map_err(|_| bad(key, "token id out of range")))
                .transpose()
        };
        let is_gemma = architecture == Architecture::Gemma3;
        let sliding_window = if is_gemma {
            f.get_usize(&key("attention.sliding_window"))?
        } else {
            None
        };
        // llama.cpp hard-codes Gemma 3's pattern; newer files may carry it.
        let sliding_window_pattern = f
            .get_usize(&key("attention.sliding_window_pattern"))?
            .unwrap_or(if is_gemma { 6 } else { 0 });
        let rope_local_freq_base = f.get_f32(&key("rope.local_freq_base"))?.unwrap_or(10_000.0);
        Ok(Self {
            architecture,
            sliding_window,
            sliding_window_pattern,
            rope_local_freq_base,
            n_layer,
            n_head,
            n_kv_head,
            hidden_size,
            head_dim,
            intermediate_size,
            vocab_size,
            context_length,
            rope_freq_base,
            rms_norm_eps,
            bos_token_id: token_id("tokenizer.ggml.bos_token_id")?,
            eos_token_id: token_id("tokenizer.ggml.eos_token_id")?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::quantized::gguf_file;
    use candle_core::Tensor;

    /// A header-only GGUF (one tiny f32 tensor) declaring `arch`.
    fn write_gguf(path: &Path, arch: &str) {
        let arch = Value::String(arch.to_string());
        let n = Value::U32(1);
        let md = [("general.architecture", &arch), ("phi3.block_count", &n)];
        let t = Tensor::zeros((4, 4), candle_core::DType::F32, &Device::Cpu).unwrap();
        let q = QTensor::quantize(&t, GgmlDType::F32).unwrap();
        let mut w = std::io::BufWriter::new(File::create(path).unwrap());
        gguf_file::write(&mut w, &md, &[("token_embd.weight", &q)]).unwrap();
    }

    #[test]
    fn unknown_architecture_error_names_the_supported_ones() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("phi3.gguf");
        write_gguf(&path, "phi3");
        let f = GgufFile::open(&path).unwrap();
        let err = LlamaConfig::from_gguf(&f).unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, LlmError::Unsupported(_)), "{msg}");
        assert!(msg.contains("`phi3`"), "{msg}");
        for arch in SUPPORTED_ARCHITECTURES {
            assert!(msg.contains(arch), "{msg}");
        }
        assert_eq!(
            msg,
            "unsupported model: architecture `phi3` is not supported \
             (supported architectures: llama, qwen2, gemma3)"
        );
    }

    #[test]
    fn supported_architectures_parse() {
        for name in SUPPORTED_ARCHITECTURES {
            assert_eq!(Architecture::parse(name).unwrap().name(), *name);
        }
        assert_eq!(Architecture::Llama.rope_style(), RopeStyle::Interleaved);
        assert_eq!(Architecture::Qwen2.rope_style(), RopeStyle::Neox);
        assert!(Architecture::parse("qwen3").is_err());
    }
}
