//! Importing weights the user already has: a file, or a directory of files.

use std::fs::File;
use std::path::Path;

use crate::error::{ModelsError, Result};
use crate::fsutil::{copy_hashing, ensure_space, map_copy_err};
use crate::progress::Progress;
use crate::source::{FetchCtx, FetchedFile};

/// Copies (never moves or links: the original may change later) every file under `path`
/// into staging, hashing as it goes.
pub fn fetch(ctx: &FetchCtx, path: &Path) -> Result<Vec<FetchedFile>> {
    let meta = std::fs::metadata(path).map_err(|e| ModelsError::io("reading", path, e))?;
    let mut files = Vec::new();
    if meta.is_dir() {
        collect(path, path, &mut files)?;
        files.sort();
    } else {
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().to_string())
            .unwrap_or_else(|| "model".into());
        files.push(name);
    }
    if files.is_empty() {
        return Err(ModelsError::InvalidSpec {
            spec: path.display().to_string(),
            reason: "directory holds no files".into(),
        });
    }
    let total: u64 = files
        .iter()
        .map(|n| {
            std::fs::metadata(source_path(path, meta.is_dir(), n))
                .map(|m| m.len())
                .unwrap_or(0)
        })
        .sum();
    ensure_space(ctx.staging, total)?;

    let mut out = Vec::new();
    for (i, name) in files.iter().enumerate() {
        let src = source_path(path, meta.is_dir(), name);
        let dest = ctx.staging.join(format!("local-{i}"));
        let mut r = File::open(&src).map_err(|e| ModelsError::io("opening", &src, e))?;
        let mut w = File::create(&dest).map_err(|e| ModelsError::io("creating", &dest, e))?;
        let len = r.metadata().map(|m| m.len()).ok();
        let mut progress = Progress::new(ctx.progress, format!("importing {name}"), len);
        let (size, sha256) = copy_hashing(&mut r, &mut w, ctx.cancel, |n| progress.inc(n))
            .map_err(|e| map_copy_err(e, &dest, ctx.cancel))?;
        progress.finish();
        out.push(FetchedFile {
            name: name.clone(),
            path: dest,
            size,
            sha256,
        });
    }
    Ok(out)
}

fn source_path(root: &Path, is_dir: bool, name: &str) -> std::path::PathBuf {
    if is_dir {
        root.join(name)
    } else {
        root.to_path_buf()
    }
}

fn collect(root: &Path, dir: &Path, out: &mut Vec<String>) -> Result<()> {
    for entry in std::fs::read_dir(dir).map_err(|e| ModelsError::io("listing", dir, e))? {
        let entry = entry.map_err(|e| ModelsError::io("listing", dir, e))?;
        let path = entry.path();
        let ft = entry
            .file_type()
            .map_err(|e| ModelsError::io("stat", &path, e))?;
        if ft.is_dir() {
            collect(root, &path, out)?;
        } else if ft.is_file() || ft.is_symlink() {
            let rel = path.strip_prefix(root).unwrap_or(&path);
            out.push(rel.to_string_lossy().to_string());
        }
    }
    Ok(())
}
