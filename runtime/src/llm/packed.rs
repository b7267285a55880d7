//! Packed weights on disk: the kernels' interleaved layout of a GGUF's matrices,
//! written once per machine and mapped by every later worker of the model.
//!
//! Repacking GGML blocks into the kernels' layout (`crate::kernels::QuantMatrix`) is
//! most of a cold start, and it grows with the model (a 1.1 GB file is ~1.1 GB of
//! copying and shuffling per worker). The first worker to load a model therefore writes
//! what it built to `<model cache>/packed/<gguf sha256>-v<LAYOUT_VERSION>.pack`; later
//! workers map that file read-only and point their matrices into it, so spawn → ready no
//! longer depends on repacking, and workers of one model share one copy of the weights
//! in the page cache instead of holding one each.
//!
//! The file is content-addressed by the GGUF's hash plus [`LAYOUT_VERSION`], written
//! to a temporary name and renamed into place (a crash leaves no half file under the
//! real name; two workers racing write identical files), and made read-only. It is
//! `[matrix bytes, each 64-byte aligned][JSON index][index length: u64 LE][MAGIC]`.
//! Anything that does not check out (wrong magic, version or source, a matrix out of
//! bounds) is ignored with a warning and the weights are repacked as if it were absent.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use candle_core::quantized::GgmlDType;
use serde::{Deserialize, Serialize};

use crate::kernels::{QuantFormat, QuantMatrix};

/// Bump when the kernels' packed layout changes: old files are then never read.
pub const LAYOUT_VERSION: u32 = 1;

const MAGIC: &[u8; 8] = b"SRGPACK1";
const ALIGN: u64 = 64;

/// The pack file for the GGUF whose sha256 is `gguf_sha256`, under a model cache root.
pub fn pack_path(cache_root: &Path, gguf_sha256: &str) -> PathBuf {
    cache_root
        .join("packed")
        .join(format!("{gguf_sha256}-v{LAYOUT_VERSION}.pack"))
}

#[derive(Serialize, Deserialize)]
struct Index {
    layout_version: u32,
    /// The source GGUF's sha256, as in the file name (a renamed file is refused).
    source: String,
    matrices: BTreeMap<String, Entry>,
}

#[derive(Serialize, Deserialize, Clone)]
struct Entry {
    /// `QuantFormat` as its GGML dtype name (`Q4K`, `Q8_0`, ...).
    format: String,
    rows: usize,
    cols: usize,
    offset: u64,
    bytes: u64,
    /// Row counts of the fused parts (q/k/v, gate/up), in order.
    splits: Vec<usize>,
}

fn format_name(f: QuantFormat) -> String {
    format!("{:?}", f.ggml_dtype())
}

fn format_from_name(name: &str) -> Option<QuantFormat> {
    [
        GgmlDType::Q4_1,
        GgmlDType::Q8_0,
        GgmlDType::Q5_0,
        GgmlDType::Q5_1,
        GgmlDType::Q4K,
        GgmlDType::Q5K,
        GgmlDType::Q6K,
    ]
    .into_iter()
    .filter_map(QuantFormat::from_ggml_dtype)
    .find(|f| format_name(*f) == name)
}

/// A pack file opened for reading.
pub struct PackedWeights {
    map: Arc<memmap2::Mmap>,
    index: Index,
}

impl PackedWeights {
    /// Maps `path` if it exists and is a valid pack of `source` for this layout.
    pub fn open(path: &Path, source: &str) -> Option<Self> {
        let file = File::open(path).ok()?;
        match Self::read(&file, source) {
            Ok(p) => Some(p),
            Err(why) => {
                tracing::warn!(path = %path.display(), why, "ignoring packed weights");
                None
            }
        }
    }

    fn read(file: &File, source: &str) -> Result<Self, String> {
        // SAFETY: the file is written once under a temporary name, renamed into
        // place and made read-only; nothing writes to it while it is mapped.
        let map = unsafe { memmap2::Mmap::map(file) }.map_err(|e| e.to_string())?;
        let len = map.len();
        if len < 16 || &map[len - 8..] != MAGIC {
            return Err("not a packed-weights file".into());
        }
        let index_len = u64::from_le_bytes(map[len - 16..len - 8].try_into().expect("8 bytes"));
        let start = (len as u64 - 16)
            .checked_sub(index_len)
            .ok_or("index length out of bounds")? as usize;
        let index: Index =
            serde_json::from_slice(&map[start..len - 16]).map_err(|e| e.to_string())?;
        if index.layout_version != LAYOUT_VERSION || index.source != source {
            return Err(format!(
                "layout {} of {}, want {LAYOUT_VERSION} of {source}",
                index.layout_version, index.source
            ));
        }
        if let Some((name, _)) = index
            .matrices
            .iter()
            .find(|(_, e)| e.offset.saturating_add(e.bytes) > start as u64)
        {
            return Err(format!("matrix {name} out of bounds"));
        }
        Ok(Self {
            map: Arc::new(map),
            index,
        })
    }

    /// The matrix stored under `key` and its fused parts' row counts, pointing into
    /// the map; `None` when absent or inconsistent (the caller repacks).
    pub fn matrix(&self, key: &str) -> Option<(QuantMatrix, Vec<usize>)> {
        let e = self.index.matrices.get(key)?;
        let format = format_from_name(&e.format)?;
        let m =
            QuantMatrix::from_mapped(format, e.rows, e.cols, self.map.clone(), e.offset as usize)
                .ok()?;
        (m.size_in_bytes() as u64 == e.bytes && e.splits.iter().sum::<usize>() == e.rows)
            .then(|| (m, e.splits.clone()))
    }

    pub fn len(&self) -> usize {
        self.index.matrices.len()
    }

    pub fn is_empty(&self) -> bool {
        self.index.matrices.is_empty()
    }
}

/// Collects matrices as they are built (from several loading threads) into a
/// temporary file; [`PackWriter::finish`] publishes it under its real name.
pub struct PackWriter {
    dest: PathBuf,
    tmp: PathBuf,
    source: String,
    /// `None` once finished.
    state: Mutex<Option<WriterState>>,
}

impl Drop for PackWriter {
    /// A load that failed midway leaves no temporary file (after `finish` renamed
    /// it, there is nothing to remove).
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.tmp);
    }
}

struct WriterState {
    out: BufWriter<File>,
    at: u64,
    matrices: BTreeMap<String, Entry>,
    failed: Option<String>,
}

impl PackWriter {
    /// Starts writing the pack for `source` (the GGUF's sha256) at `dest`.
    pub fn create(dest: &Path, source: &str) -> std::io::Result<Self> {
        if let Some(dir) = dest.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let tmp = dest.with_extension(format!("tmp.{}", std::process::id()));
        let out = BufWriter::with_capacity(1 << 20, File::create(&tmp)?);
        Ok(Self {
            dest: dest.to_path_buf(),
            tmp,
            source: source.to_string(),
            state: Mutex::new(Some(WriterState {
                out,
                at: 0,
                matrices: BTreeMap::new(),
                failed: None,
            })),
        })
    }

    /// Appends `m` under `key`. An I/O error is remembered (and reported by
    /// `finish`) rather than failing the load: the pack is only an optimisation.
    pub fn add(&self, key: &str, m: &QuantMatrix, splits: &[usize]) {
        let mut guard = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let Some(s) = guard.as_mut() else {
            return;
        };
        if s.failed.is_some() {
            return;
        }
        let pad = s.at.next_multiple_of(ALIGN) - s.at;
        let written = s
            .out
            .write_all(&[0u8; ALIGN as usize][..pad as usize])
            .and_then(|_| s.out.write_all(m.bytes()));
        if let Err(e) = written {
            s.failed = Some(e.to_string());
            return;
        }
        let offset = s.at + pad;
        s.at = offset + m.size_in_bytes() as u64;
        s.matrices.insert(
            key.to_string(),
            Entry {
                format: format_name(m.format()),
                rows: m.rows(),
                cols: m.cols(),
                offset,
                bytes: m.size_in_bytes() as u64,
                splits: splits.to_vec(),
            },
        );
    }

    /// Writes the index and renames the file into place, read-only. Returns the
    /// number of matrices written.
    pub fn finish(self) -> Result<usize, String> {
        let state = self
            .state
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
            .ok_or("already finished")?;
        // On any error `Drop` removes the temporary file.
        if let Some(e) = state.failed {
            return Err(e);
        }
        let n = state.matrices.len();
        let index = serde_json::to_vec(&Index {
            layout_version: LAYOUT_VERSION,
            source: self.source.clone(),
            matrices: state.matrices,
        })
        .map_err(|e| e.to_string())?;
        let mut out = state.out;
        out.write_all(&index)
            .and_then(|_| out.write_all(&(index.len() as u64).to_le_bytes()))
            .and_then(|_| out.write_all(MAGIC))
            .and_then(|_| out.flush())
            .map_err(|e| e.to_string())?;
        let file = out.into_inner().map_err(|e| e.to_string())?;
        let mut perms = file.metadata().map_err(|e| e.to_string())?.permissions();
        perms.set_readonly(true);
        file.set_permissions(perms).map_err(|e| e.to_string())?;
        std::fs::rename(&self.tmp, &self.dest).map_err(|e| e.to_string())?;
        Ok(n)
    }

    /// Gives up: `Drop` removes the temporary file.
    pub fn abandon(self) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    fn matrix(seed: u32, rows: usize, cols: usize) -> QuantMatrix {
        let w: Vec<f32> = (0..rows * cols)
            .map(|i| {
                ((i as u32).wrapping_mul(2654435761).wrapping_add(seed) % 1000) as f32 / 500.0 - 1.0
            })
            .collect();
        QuantMatrix::quantize_q8_0(rows, cols, &w).expect("quantize")
    }

    #[test]
    fn round_trip_maps_the_same_bytes() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = pack_path(dir.path(), "abc");
        let (a, b) = (matrix(1, 40, 64), matrix(2, 16, 96));
        let w = PackWriter::create(&path, "abc").expect("create");
        w.add("blk.0.qkv", &a, &[24, 8, 8]);
        w.add("output.weight", &b, &[16]);
        assert_eq!(w.finish().expect("finish"), 2);
        assert!(std::fs::metadata(&path)
            .expect("meta")
            .permissions()
            .readonly());

        let p = PackedWeights::open(&path, "abc").expect("open");
        assert_eq!(p.len(), 2);
        let (ma, splits) = p.matrix("blk.0.qkv").expect("a");
        assert_eq!(splits, [24, 8, 8]);
        assert_eq!((ma.rows(), ma.cols(), ma.format()), (40, 64, a.format()));
        assert_eq!(ma.bytes(), a.bytes());
        assert_eq!(ma.dequantize(), a.dequantize());
        assert_eq!(p.matrix("output.weight").expect("b").0.bytes(), b.bytes());
        assert!(p.matrix("missing").is_none());
    }

    #[test]
    fn another_source_or_garbage_is_ignored() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = pack_path(dir.path(), "abc");
        let w = PackWriter::create(&path, "abc").expect("create");
        w.add("m", &matrix(3, 16, 32), &[16]);
        w.finish().expect("finish");
        assert!(PackedWeights::open(&path, "other").is_none());
        let junk = dir.path().join("junk.pack");
        std::fs::write(&junk, b"not a pack at all, just bytes").expect("write");
        assert!(PackedWeights::open(&junk, "abc").is_none());
        assert!(PackedWeights::open(&dir.path().join("absent"), "abc").is_none());
    }

    #[test]
    fn an_abandoned_writer_leaves_nothing() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = pack_path(dir.path(), "abc");
        let w = PackWriter::create(&path, "abc").expect("create");
        w.add("m", &matrix(4, 16, 32), &[16]);
        w.abandon();
        let left: Vec<_> = std::fs::read_dir(path.parent().expect("dir"))
            .expect("list")
            .collect();
        assert!(left.is_empty(), "{left:?}");
    }
}
