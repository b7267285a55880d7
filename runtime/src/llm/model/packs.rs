//! Where a load's kernel matrices and embeddings come from: the packed-weights file
//! when it has them (mapped), else repacked from the GGUF (and recorded for the file
//! being written).

use std::path::PathBuf;
use std::sync::Arc;

use candle_core::quantized::QTensor;
use candle_core::{Device, Tensor};

use super::super::error::Result;
use super::super::gguf::GgufFile;
use super::super::packed::{PackWriter, PackedWeights};
use crate::kernels::{QuantFormat, QuantMatrix};

/// Token embeddings: the GGUF's tensor copied into memory, or, when the packed-weights
/// file has them (`token_embd.weight`), rows dequantized straight from the map (exactly
/// the same values; no per-worker copy, which for Gemma's 262,144-token table is 178
/// MB).
pub(super) enum Embeddings {
    File(Arc<QTensor>),
    Packed(QuantMatrix),
}

impl Embeddings {
    /// The rows of `ids`, `[ids.len(), hidden]`.
    pub(super) fn lookup(&self, ids: Vec<u32>, dev: &Device) -> Result<Tensor> {
        match self {
            Embeddings::File(q) => {
                let n = ids.len();
                Ok(q.embedding(&Tensor::from_vec(ids, n, dev)?)?)
            }
            Embeddings::Packed(m) => {
                let h = m.cols();
                let mut x = vec![0f32; ids.len() * h];
                for (row, &id) in x.chunks_exact_mut(h).zip(&ids) {
                    m.dequantize_row(id as usize, row);
                }
                Ok(Tensor::from_vec(x, (ids.len(), h), dev)?)
            }
        }
    }

    pub(super) fn bytes(&self) -> usize {
        match self {
            Embeddings::File(q) => q.storage_size_in_bytes(),
            Embeddings::Packed(m) => m.size_in_bytes(),
        }
    }
}

/// The packed-weights file of a load: read from, or written to (see `super::packed`).
pub(super) struct Packs {
    read: Option<PackedWeights>,
    write: Option<PackWriter>,
    /// Matrices the read file lacked (then it is stale: replaced by a new one).
    missing: std::sync::atomic::AtomicUsize,
}

impl Packs {
    pub(super) fn open(direct: bool, file: Option<&(PathBuf, String)>) -> Self {
        let (read, write) = match file {
            Some((path, sha)) if direct => match PackedWeights::open(path, sha) {
                Some(p) => (Some(p), None),
                None => (None, PackWriter::create(path, sha).ok()),
            },
            _ => (None, None),
        };
        Self {
            read,
            write,
            missing: Default::default(),
        }
    }

    /// Adds matrix `name` to a file being written (built from the GGUF; dropped).
    pub(super) fn record(&self, file: &GgufFile, name: &str) -> Result<()> {
        if let Some(w) = &self.write {
            if let Some((m, splits)) = own_matrix(file, &[name.to_string()])? {
                w.add(name, &m, &splits);
            }
        }
        Ok(())
    }

    /// `key` from the file being read, if any (nothing is built or written).
    pub(super) fn mapped(&self, key: &str) -> Option<QuantMatrix> {
        self.read.as_ref()?.matrix(key).map(|(m, _)| m)
    }

    /// The named matrices as one kernel matrix: mapped from the file when it has
    /// them, else repacked from the GGUF (and recorded for the file being written).
    pub(super) fn matrix(
        &self,
        file: &GgufFile,
        names: &[String],
    ) -> Result<Option<(QuantMatrix, Vec<usize>)>> {
        let key = names.join("+");
        if let Some(found) = self.read.as_ref().and_then(|p| p.matrix(&key)) {
            return Ok(Some(found));
        }
        let built = own_matrix(file, names)?;
        // Names whose formats do not fuse (mixed q/k/v types) are never in a file.
        if self.read.is_some() && built.is_some() {
            self.missing
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        if let (Some(w), Some((m, splits))) = (&self.write, &built) {
            w.add(&key, m, splits);
        }
        Ok(built)
    }

    /// Publishes a file being written; says what happened for the load report.
    pub(super) fn finish(self) -> String {
        match (self.read, self.write) {
            (Some(_), _) if self.missing.into_inner() == 0 => "mapped".into(),
            (Some(_), _) => "mapped in part (stale file)".into(),
            (None, Some(w)) => match w.finish() {
                Ok(n) => format!("written ({n} matrices)"),
                Err(e) => format!("not written: {e}"),
            },
            (None, None) => "off".into(),
        }
    }
}

/// The named GGUF matrices repacked as one matrix for our kernels (rows in order) and
/// their row counts, read straight from the mapped file; `None` when their
/// quantization or shapes do not fit the kernels (the caller falls back to candle).
fn own_matrix(file: &GgufFile, names: &[String]) -> Result<Option<(QuantMatrix, Vec<usize>)>> {
    let mut parts = Vec::with_capacity(names.len());
    let mut splits = Vec::with_capacity(names.len());
    let mut format = None;
    let mut cols = None;
    for name in names {
        let (bytes, dims, dtype) = file.tensor_bytes(name)?;
        let Some(f) = QuantFormat::from_ggml_dtype(dtype) else {
            return Ok(None);
        };
        let &[rows, c] = dims else {
            return Ok(None);
        };
        if format.is_some_and(|g| g != f) || cols.is_some_and(|k| k != c) {
            return Ok(None);
        }
        format = Some(f);
        cols = Some(c);
        parts.push(bytes);
        splits.push(rows);
    }
    let (Some(format), Some(cols)) = (format, cols) else {
        return Ok(None);
    };
    let m = QuantMatrix::from_ggml_parts(format, cols, &parts)
        .map_err(|e| candle_core::Error::Msg(e.to_string()))?;
    Ok(Some((m, splits)))
}
