//! Reader for CTranslate2's `model.bin` (format version 6).
//!
//! The catalog ships Whisper as a CTranslate2 conversion (it is what faster-whisper
//! consumes), so rather than converting it offline we read the CT2 container directly
//! and hand candle ordinary tensors. The layout, verified against the pinned
//! `whisper-tiny.en` file:
//!
//! ```text
//! u32 version (6) | string spec ("WhisperSpec") | u32 revision | u32 n_vars
//! n_vars × { string name | u8 rank | u32 dims[rank] | u8 dtype | u32 nbytes | data }
//! u32 n_aliases × { string alias | string target }
//! ```
//!
//! Strings are a `u16` byte length followed by the bytes, which include a trailing NUL.
//! Everything is little-endian.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Device, Tensor};

use super::{Result, WhisperError};

/// One variable as stored in the file, before any renaming.
#[derive(Debug)]
pub struct Ct2Model {
    /// The spec name, e.g. `WhisperSpec`; tells which architecture the names follow.
    pub spec: String,
    pub revision: u32,
    /// Every variable, and every alias resolved to (a cheap clone of) its target.
    pub vars: HashMap<String, Tensor>,
}

impl Ct2Model {
    /// Reads the whole file into tensors on `device`, in their stored dtypes (f16 stays
    /// f16: the engine widens one tensor at a time while building its own weights, which
    /// keeps the load's peak memory near the file's size).
    ///
    /// The file is memory-mapped read-only rather than read: after the first load it
    /// sits in the page cache of the shared model cache, so a cold start copies each
    /// variable once (into its tensor) instead of twice.
    pub fn load(path: &Path, device: &Device) -> Result<Self> {
        let err = |e: std::io::Error| WhisperError::Load(format!("{}: {e}", path.display()));
        let file = std::fs::File::open(path).map_err(err)?;
        // SAFETY: model-cache blobs are content-addressed and replaced by rename, never
        // rewritten in place, so the mapped bytes stay as they are while we parse them.
        let map = unsafe { memmap2::Mmap::map(&file) }.map_err(err)?;
        let _ = map.advise(memmap2::Advice::Sequential);
        Self::parse(&map, device)
    }

    pub fn parse(bytes: &[u8], device: &Device) -> Result<Self> {
        let mut r = Reader { bytes, pos: 0 };
        let version = r.u32()?;
        if version != 6 {
            return Err(WhisperError::Load(format!(
                "unsupported CTranslate2 model version {version} (expected 6)"
            )));
        }
        let spec = r.string()?;
        let revision = r.u32()?;
        let n_vars = r.u32()? as usize;
        let mut vars = HashMap::with_capacity(n_vars);
        for _ in 0..n_vars {
            let name = r.string()?;
            let rank = r.u8()? as usize;
            let dims = (0..rank)
                .map(|_| r.u32().map(|d| d as usize))
                .collect::<Result<Vec<_>>>()?;
            let dtype = r.u8()?;
            let nbytes = r.u32()? as usize;
            let data = r.take(nbytes)?;
            let t = to_tensor(&name, data, dtype, &dims, device)?;
            vars.insert(name, t);
        }
        let n_aliases = r.u32()? as usize;
        for _ in 0..n_aliases {
            let alias = r.string()?;
            let target = r.string()?;
            let t = vars.get(&target).cloned().ok_or_else(|| {
                WhisperError::Load(format!("alias {alias} points at missing {target}"))
            })?;
            vars.insert(alias, t);
        }
        Ok(Self {
            spec,
            revision,
            vars,
        })
    }

    pub fn get(&self, name: &str) -> Result<&Tensor> {
        self.vars
            .get(name)
            .ok_or_else(|| WhisperError::Load(format!("model.bin lacks variable {name}")))
    }

    /// A scalar integer variable such as `decoder/num_heads`.
    pub fn scalar_usize(&self, name: &str) -> Result<usize> {
        let v = self.get(name)?.to_dtype(DType::I64)?.flatten_all()?;
        let v = v.to_vec1::<i64>()?;
        v.first()
            .map(|&x| x as usize)
            .ok_or_else(|| WhisperError::Load(format!("{name} is empty")))
    }
}

/// Builds a tensor from raw little-endian data. Integer types go to the nearest type
/// candle has (i8/i16 → i64 via u8/i64) since they only appear as small scalars
/// (flags, head counts) in Whisper specs; quantized int8 weights are not supported yet.
fn to_tensor(name: &str, data: &[u8], dtype: u8, dims: &[usize], dev: &Device) -> Result<Tensor> {
    let n: usize = dims.iter().product();
    let bad = || WhisperError::Load(format!("{name}: {} bytes for {dims:?}", data.len()));
    let t = match dtype {
        0 => {
            let v = le_words::<4>(data, n).ok_or_else(bad)?;
            let v: Vec<f32> = v.map(f32::from_le_bytes).collect();
            Tensor::from_vec(v, dims, dev)?
        }
        1 => {
            (data.len() == n).then_some(()).ok_or_else(bad)?;
            let v: Vec<i64> = data.iter().map(|&b| b as i8 as i64).collect();
            Tensor::from_vec(v, dims, dev)?
        }
        2 => {
            let v = le_words::<2>(data, n).ok_or_else(bad)?;
            let v: Vec<i64> = v.map(|b| i16::from_le_bytes(b) as i64).collect();
            Tensor::from_vec(v, dims, dev)?
        }
        3 => {
            let v = le_words::<4>(data, n).ok_or_else(bad)?;
            let v: Vec<i64> = v.map(|b| i32::from_le_bytes(b) as i64).collect();
            Tensor::from_vec(v, dims, dev)?
        }
        4 => {
            let v = le_words::<2>(data, n).ok_or_else(bad)?;
            let v: Vec<half::f16> = v.map(half::f16::from_le_bytes).collect();
            Tensor::from_vec(v, dims, dev)?
        }
        5 => {
            let v = le_words::<2>(data, n).ok_or_else(bad)?;
            let v: Vec<half::bf16> = v.map(half::bf16::from_le_bytes).collect();
            Tensor::from_vec(v, dims, dev)?
        }
        other => {
            return Err(WhisperError::Load(format!(
                "{name}: unknown CTranslate2 dtype {other}"
            )))
        }
    };
    Ok(t)
}

/// Splits `data` into `n` little-endian words of `N` bytes, or `None` on a size mismatch.
fn le_words<const N: usize>(data: &[u8], n: usize) -> Option<impl Iterator<Item = [u8; N]> + '_> {
    (data.len() == n * N).then(|| {
        data.chunks_exact(N)
            .map(|c| <[u8; N]>::try_from(c).expect("chunks_exact yields N bytes"))
    })
}

struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.bytes.len());
        let end = end.ok_or_else(|| {
            WhisperError::Load(format!("model.bin truncated at byte {}", self.pos))
        })?;
        let s = &self.bytes[self.pos..end];
        self.pos = end;
        Ok(s)
    }
    fn u8(&mut self) -> Result<u8> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<u16> {
        let b = self.take(2)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }
    fn u32(&mut self) -> Result<u32> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
    /// A u16-length string; the stored bytes end in NUL, which we drop.
    fn string(&mut self) -> Result<String> {
        let n = self.u16()? as usize;
        let b = self.take(n)?;
        let b = b.strip_suffix(&[0]).unwrap_or(b);
        String::from_utf8(b.to_vec())
            .map_err(|_| WhisperError::Load("non-UTF-8 name in model.bin".into()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A hand-built v6 file: one f16 vector, one i16 scalar, one alias.
    #[test]
    fn parses_a_minimal_file() {
        fn s(out: &mut Vec<u8>, v: &str) {
            out.extend(((v.len() + 1) as u16).to_le_bytes());
            out.extend(v.as_bytes());
            out.push(0);
        }
        let mut b = Vec::new();
        b.extend(6u32.to_le_bytes());
        s(&mut b, "WhisperSpec");
        b.extend(3u32.to_le_bytes());
        b.extend(2u32.to_le_bytes());
        s(&mut b, "w");
        b.push(1);
        b.extend(2u32.to_le_bytes());
        b.push(4);
        b.extend(4u32.to_le_bytes());
        b.extend(half::f16::from_f32(1.5).to_le_bytes());
        b.extend(half::f16::from_f32(-2.0).to_le_bytes());
        s(&mut b, "heads");
        b.push(0);
        b.push(2);
        b.extend(2u32.to_le_bytes());
        b.extend(6i16.to_le_bytes());
        b.extend(1u32.to_le_bytes());
        s(&mut b, "alias");
        s(&mut b, "w");
        let m = Ct2Model::parse(&b, &Device::Cpu).unwrap();
        assert_eq!(m.spec, "WhisperSpec");
        assert_eq!(m.revision, 3);
        assert_eq!(
            m.get("alias")
                .unwrap()
                .to_dtype(DType::F32)
                .unwrap()
                .to_vec1::<f32>()
                .unwrap(),
            [1.5, -2.0]
        );
        assert_eq!(m.scalar_usize("heads").unwrap(), 6);
        assert!(Ct2Model::parse(&b[..b.len() - 3], &Device::Cpu).is_err());
    }
}
