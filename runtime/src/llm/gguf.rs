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

/// Llama hyper-parameters as stored under the `llama.*` GGUF keys.
#[derive(Debug, Clone, PartialEq)]
pub struct LlamaConfig {
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
}

impl LlamaConfig {
    /// Reads and validates the hyper-parameters.
    ///
    /// Only `general.architecture = "llama"` is accepted: other architectures
    /// that reuse llama tensor names differ in RoPE layout or biases, and a
    /// silently wrong forward is worse than a clear refusal.
    pub fn from_gguf(f: &GgufFile) -> Result<Self> {
        let arch = f.get_string("general.architecture")?.unwrap_or("llama");
        if arch != "llama" {
            return Err(LlmError::Unsupported(format!(
                "architecture `{arch}` (only `llama` is implemented)"
            )));
        }
        let n_layer = f.require_usize("llama.block_count")?;
        let n_head = f.require_usize("llama.attention.head_count")?;
        let n_kv_head = f
            .get_usize("llama.attention.head_count_kv")?
            .unwrap_or(n_head);
        let hidden_size = f.require_usize("llama.embedding_length")?;
        let intermediate_size = f.require_usize("llama.feed_forward_length")?;
        let context_length = f.get_usize("llama.context_length")?.unwrap_or(2048);
        let rope_freq_base = f.get_f32("llama.rope.freq_base")?.unwrap_or(10_000.0);
        let rms_norm_eps = f
            .get_f32("llama.attention.layer_norm_rms_epsilon")?
            .unwrap_or(1e-5) as f64;

        if n_head == 0 || n_kv_head == 0 || hidden_size % n_head != 0 || n_head % n_kv_head != 0 {
            return Err(bad(
                "llama.attention.head_count",
                format!("{n_head} heads, {n_kv_head} kv heads, hidden {hidden_size}"),
            ));
        }
        let head_dim = hidden_size / n_head;
        if head_dim % 2 != 0 {
            return Err(bad("llama.embedding_length", "odd head dimension"));
        }
        // Partial rotary embeddings would need a different RoPE kernel call.
        if let Some(rope_dim) = f.get_usize("llama.rope.dimension_count")? {
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
        Ok(Self {
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
