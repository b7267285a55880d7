//! Just enough of the GGUF format to read a model's `general.architecture` (`llama`,
//! `qwen2`, `gemma3`…) from its header, recorded in the manifest at pull time.

use std::fs::File;
use std::io::{BufReader, Read};
use std::path::Path;

/// The `general.architecture` values the LLM engine implements (`surge worker` refuses
/// the others at start, `surge models pull`/`import` before writing a manifest). Kept
/// here, where both the worker and the cache can see it, so the two cannot disagree.
pub const SUPPORTED_ARCHITECTURES: &[&str] = &["llama", "qwen2", "gemma3"];

/// The `general.architecture` of the GGUF file at `path`; `None` when the file is not
/// GGUF (v2 or v3) or does not say.
pub fn architecture(path: &Path) -> Option<String> {
    let mut r = BufReader::new(File::open(path).ok()?);
    let mut magic = [0u8; 4];
    r.read_exact(&mut magic).ok()?;
    if &magic != b"GGUF" || !matches!(read_u32(&mut r)?, 2 | 3) {
        return None;
    }
    let _tensors = read_u64(&mut r)?;
    let kvs = read_u64(&mut r)?;
    for _ in 0..kvs.min(100_000) {
        let key = read_string(&mut r, 1 << 16)?;
        let ty = read_u32(&mut r)?;
        if key == "general.architecture" {
            return (ty == STRING).then(|| read_string(&mut r, 256)).flatten();
        }
        skip_value(&mut r, ty, 0)?;
    }
    None
}

const STRING: u32 = 8;
const ARRAY: u32 = 9;

/// Bytes of a fixed-size value type.
fn scalar_size(ty: u32) -> Option<u64> {
    match ty {
        0 | 1 | 7 => Some(1),
        2 | 3 => Some(2),
        4..=6 => Some(4),
        10..=12 => Some(8),
        _ => None,
    }
}

fn skip_value(r: &mut BufReader<File>, ty: u32, depth: u32) -> Option<()> {
    if let Some(n) = scalar_size(ty) {
        return r.seek_relative(n as i64).ok();
    }
    match ty {
        STRING => {
            let n = read_u64(r)?;
            r.seek_relative(i64::try_from(n).ok()?).ok()
        }
        ARRAY if depth < 4 => {
            let elem = read_u32(r)?;
            let count = read_u64(r)?;
            if let Some(n) = scalar_size(elem) {
                return r
                    .seek_relative(i64::try_from(n.checked_mul(count)?).ok()?)
                    .ok();
            }
            for _ in 0..count {
                skip_value(r, elem, depth + 1)?;
            }
            Some(())
        }
        _ => None,
    }
}

fn read_u32(r: &mut impl Read) -> Option<u32> {
    let mut b = [0u8; 4];
    r.read_exact(&mut b).ok()?;
    Some(u32::from_le_bytes(b))
}

fn read_u64(r: &mut impl Read) -> Option<u64> {
    let mut b = [0u8; 8];
    r.read_exact(&mut b).ok()?;
    Some(u64::from_le_bytes(b))
}

fn read_string(r: &mut impl Read, max: u64) -> Option<String> {
    let n = read_u64(r)?;
    if n > max {
        return None;
    }
    let mut b = vec![0u8; n as usize];
    r.read_exact(&mut b).ok()?;
    String::from_utf8(b).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(out: &mut Vec<u8>, v: &str) {
        out.extend((v.len() as u64).to_le_bytes());
        out.extend(v.as_bytes());
    }

    #[test]
    fn reads_the_architecture_after_other_keys() {
        let mut h = b"GGUF".to_vec();
        h.extend(3u32.to_le_bytes());
        h.extend(0u64.to_le_bytes()); // tensors
        h.extend(4u64.to_le_bytes()); // key/values
        s(&mut h, "general.name");
        h.extend(STRING.to_le_bytes());
        s(&mut h, "Tiny");
        s(&mut h, "tokenizer.ggml.tokens");
        h.extend(ARRAY.to_le_bytes());
        h.extend(STRING.to_le_bytes());
        h.extend(2u64.to_le_bytes());
        s(&mut h, "<s>");
        s(&mut h, "</s>");
        s(&mut h, "tokenizer.ggml.scores");
        h.extend(ARRAY.to_le_bytes());
        h.extend(6u32.to_le_bytes()); // f32
        h.extend(2u64.to_le_bytes());
        h.extend([0u8; 8]);
        s(&mut h, "general.architecture");
        h.extend(STRING.to_le_bytes());
        s(&mut h, "qwen2");
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("m.gguf");
        std::fs::write(&p, &h).unwrap();
        assert_eq!(architecture(&p).as_deref(), Some("qwen2"));

        // Truncated, or not GGUF at all: no answer, no panic.
        std::fs::write(&p, &h[..h.len() - 3]).unwrap();
        assert_eq!(architecture(&p), None);
        std::fs::write(&p, b"not a gguf file").unwrap();
        assert_eq!(architecture(&p), None);
    }
}
