//! Small filesystem helpers: durable atomic writes, free-space checks, hashing.

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use sha2::{Digest, Sha256};

use crate::error::{ModelsError, Result};
use crate::Cancel;

/// Bytes available to an unprivileged writer on the filesystem holding `path`.
pub fn available_space(path: &Path) -> io::Result<u64> {
    use std::ffi::CString;
    use std::os::unix::ffi::OsStrExt;
    let c = CString::new(path.as_os_str().as_bytes())
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is a valid NUL-terminated path and `st` is a properly sized out-parameter.
    let rc = unsafe { libc::statvfs(c.as_ptr(), &mut st) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(st.f_bavail as u64 * st.f_frsize as u64)
}

/// Fails early with [`ModelsError::DiskFull`] when `needed` bytes cannot fit under `dir`,
/// so a large download does not run for minutes only to die on ENOSPC.
pub fn ensure_space(dir: &Path, needed: u64) -> Result<()> {
    let available = available_space(dir).map_err(|e| ModelsError::io("statvfs", dir, e))?;
    if needed > available {
        return Err(ModelsError::DiskFull {
            path: dir.to_path_buf(),
            detail: format!("need {needed} bytes, {available} available"),
        });
    }
    Ok(())
}

/// Writes `bytes` to `path` so that readers see either the old file or the whole new one:
/// temp file in the same directory, fsync, rename, fsync the directory.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut tmp = tempfile::NamedTempFile::new_in(dir)
        .map_err(|e| ModelsError::io("creating temp file", dir, e))?;
    tmp.write_all(bytes)
        .and_then(|_| {
            tmp.as_file()
                .set_permissions(fs::Permissions::from_mode(0o644))
        })
        .and_then(|_| tmp.as_file().sync_all())
        .map_err(|e| ModelsError::io("writing", tmp.path(), e))?;
    tmp.persist(path)
        .map_err(|e| ModelsError::io("renaming into place", path, e.error))?;
    sync_dir(dir)
}

/// fsyncs a directory so a rename inside it survives a crash.
pub fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| ModelsError::io("syncing directory", dir, e))
}

/// Copies `reader` into `writer` while hashing, checking `cancel` between chunks.
/// Returns (bytes copied, lowercase hex sha256).
pub fn copy_hashing(
    reader: &mut dyn Read,
    writer: &mut dyn Write,
    cancel: &Cancel,
    mut on_bytes: impl FnMut(u64),
) -> io::Result<(u64, String)> {
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 256 * 1024];
    let mut total = 0u64;
    loop {
        if cancel.is_cancelled() {
            return Err(io::Error::new(io::ErrorKind::Interrupted, "cancelled"));
        }
        let n = match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted && !cancel.is_cancelled() => continue,
            Err(e) => return Err(e),
        };
        hasher.update(&buf[..n]);
        writer.write_all(&buf[..n])?;
        total += n as u64;
        on_bytes(n as u64);
    }
    Ok((total, hex::encode(hasher.finalize())))
}

/// sha256 of a whole file, lowercase hex.
pub fn hash_file(path: &Path, cancel: &Cancel) -> Result<(u64, String)> {
    let mut f = File::open(path).map_err(|e| ModelsError::io("opening", path, e))?;
    copy_hashing(&mut f, &mut io::sink(), cancel, |_| {}).map_err(|e| map_copy_err(e, path, cancel))
}

/// Maps an I/O error from a cancellable copy: cancellation wins over whatever error it caused.
pub fn map_copy_err(e: io::Error, path: &Path, cancel: &Cancel) -> ModelsError {
    if cancel.is_cancelled() {
        ModelsError::Interrupted
    } else {
        ModelsError::io("copying", path, e)
    }
}

/// Marks a finished blob read-only for everyone: the cache is shared by every worker
/// (possibly other users) and nothing should modify a blob in place.
pub fn make_read_only(path: &Path) -> Result<()> {
    fs::set_permissions(path, fs::Permissions::from_mode(0o444))
        .map_err(|e| ModelsError::io("chmod", path, e))
}
