//! The cache on disk, shared by every worker and gateway on the machine:
//!
//! ```text
//! $SURGE_HOME/
//!   blobs/sha256/<hex>      content-addressed, read-only once written
//!   manifests/<name>.json   one per model
//!   locks/<name>.lock       serialises pulls of one model across processes
//!   locks/gc.lock           pulls hold it shared, `rm`'s garbage collection exclusive
//!   tmp/<pid>-…/            staging for in-progress pulls, swept when the pid is gone
//! ```
//!
//! Readers never see partial files: blobs and manifests appear by rename only.

use std::fs::{self, File};
use std::path::{Path, PathBuf};

use crate::error::{ModelsError, Result};
use crate::fsutil::{self, hash_file};
use crate::manifest::Manifest;
use crate::Cancel;

#[derive(Debug, Clone)]
pub struct ModelCache {
    root: PathBuf,
}

/// A cached model with the on-disk path of each of its files, for workers to load.
#[derive(Debug, Clone)]
pub struct ResolvedModel {
    pub manifest: Manifest,
    pub files: Vec<(String, PathBuf)>,
}

impl ResolvedModel {
    pub fn path(&self, file_name: &str) -> Option<&Path> {
        self.files
            .iter()
            .find(|(n, _)| n == file_name)
            .map(|(_, p)| p.as_path())
    }

    /// The first file whose name ends with `suffix` (e.g. the `.gguf` of an LLM).
    pub fn path_with_suffix(&self, suffix: &str) -> Option<&Path> {
        self.files
            .iter()
            .find(|(n, _)| n.ends_with(suffix))
            .map(|(_, p)| p.as_path())
    }
}

/// Outcome of re-hashing one file of a model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FileCheck {
    Ok,
    Missing,
    Corrupt { actual: String },
}

/// An exclusive or shared advisory lock, released on drop.
pub struct CacheLock(#[allow(dead_code)] File);

impl ModelCache {
    /// `$SURGE_HOME`, else the platform cache directory (`~/.cache/surge`).
    pub fn default_root() -> PathBuf {
        if let Some(home) = std::env::var_os("SURGE_HOME").filter(|v| !v.is_empty()) {
            return PathBuf::from(home);
        }
        dirs::cache_dir()
            .unwrap_or_else(|| std::env::temp_dir().join("surge-cache"))
            .join("surge")
    }

    pub fn open_default() -> Result<Self> {
        Self::open(Self::default_root())
    }

    /// Opens (creating if needed) a cache at `root`; never touches the network.
    pub fn open(root: impl Into<PathBuf>) -> Result<Self> {
        let cache = ModelCache { root: root.into() };
        for dir in [
            cache.blob_dir(),
            cache.manifest_dir(),
            cache.lock_dir(),
            cache.tmp_dir(),
        ] {
            fs::create_dir_all(&dir)
                .map_err(|e| ModelsError::io("creating cache directory", &dir, e))?;
        }
        cache.sweep_stale_staging();
        Ok(cache)
    }

    pub fn root(&self) -> &Path {
        &self.root
    }
    fn blob_dir(&self) -> PathBuf {
        self.root.join("blobs").join("sha256")
    }
    fn manifest_dir(&self) -> PathBuf {
        self.root.join("manifests")
    }
    fn lock_dir(&self) -> PathBuf {
        self.root.join("locks")
    }
    pub(crate) fn tmp_dir(&self) -> PathBuf {
        self.root.join("tmp")
    }

    pub fn blob_path(&self, sha256: &str) -> PathBuf {
        self.blob_dir().join(sha256)
    }

    fn manifest_path(&self, name: &str) -> PathBuf {
        self.manifest_dir().join(format!("{name}.json"))
    }

    /// Every manifest in the cache, sorted by name.
    pub fn manifests(&self) -> Result<Vec<Manifest>> {
        let dir = self.manifest_dir();
        let mut out = Vec::new();
        let entries = fs::read_dir(&dir).map_err(|e| ModelsError::io("listing", &dir, e))?;
        for entry in entries {
            let path = entry
                .map_err(|e| ModelsError::io("listing", &dir, e))?
                .path();
            if path.extension().is_some_and(|e| e == "json") {
                out.push(read_manifest(&path)?);
            }
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    /// The manifest answering to `name` (its name or one of its aliases), if cached.
    pub fn get(&self, name: &str) -> Result<Option<Manifest>> {
        let direct = self.manifest_path(name);
        if valid_name(name) && direct.exists() {
            return read_manifest(&direct).map(Some);
        }
        Ok(self.manifests()?.into_iter().find(|m| m.answers_to(name)))
    }

    /// Resolves a name or alias to its files, checking each blob is present. Offline.
    pub fn resolve(&self, name: &str) -> Result<ResolvedModel> {
        let manifest = self
            .get(name)?
            .ok_or_else(|| ModelsError::NotCached(name.to_string()))?;
        let mut files = Vec::with_capacity(manifest.files.len());
        for f in &manifest.files {
            let path = self.blob_path(&f.sha256);
            let size = fs::metadata(&path).map(|m| m.len()).ok();
            if size != Some(f.size) {
                return Err(ModelsError::NotCached(format!(
                    "{} (file {} missing or truncated)",
                    manifest.name, f.name
                )));
            }
            files.push((f.name.clone(), path));
        }
        Ok(ResolvedModel { manifest, files })
    }

    /// Whether every blob of `m` is present at its recorded size (cheap; `verify` re-hashes).
    pub fn is_complete(&self, m: &Manifest) -> bool {
        m.files
            .iter()
            .all(|f| fs::metadata(self.blob_path(&f.sha256)).is_ok_and(|md| md.len() == f.size))
    }

    pub fn write_manifest(&self, m: &Manifest) -> Result<()> {
        check_name(&m.name)?;
        let text = serde_json::to_vec_pretty(m).map_err(|e| ModelsError::BadManifest {
            path: self.manifest_path(&m.name),
            reason: e.to_string(),
        })?;
        fsutil::write_atomic(&self.manifest_path(&m.name), &text)
    }

    /// Moves a fully written, hash-verified staging file into the blob store.
    pub fn commit_blob(&self, staged: &Path, sha256: &str) -> Result<PathBuf> {
        let dest = self.blob_path(sha256);
        if dest.exists() {
            // Same content already stored (shared file, or a concurrent pull won).
            return Ok(dest);
        }
        File::open(staged)
            .and_then(|f| f.sync_all())
            .map_err(|e| ModelsError::io("syncing", staged, e))?;
        fsutil::make_read_only(staged)?;
        fs::rename(staged, &dest)
            .map_err(|e| ModelsError::io("moving blob into place", &dest, e))?;
        fsutil::sync_dir(&self.blob_dir())?;
        Ok(dest)
    }

    /// Removes a model's manifest, then garbage-collects blobs no manifest references.
    /// Returns the removed manifest and the bytes freed.
    pub fn remove(&self, name: &str) -> Result<(Manifest, u64)> {
        let manifest = self
            .get(name)?
            .ok_or_else(|| ModelsError::NotCached(name.to_string()))?;
        let _model = self.lock_model(&manifest.name)?;
        let path = self.manifest_path(&manifest.name);
        fs::remove_file(&path).map_err(|e| ModelsError::io("removing", &path, e))?;
        fsutil::sync_dir(&self.manifest_dir())?;
        let freed = self.gc()?;
        Ok((manifest, freed))
    }

    /// Deletes blobs that no manifest references. Holds the gc lock exclusively so it
    /// cannot delete a blob that an in-progress pull has committed but not yet recorded.
    pub fn gc(&self) -> Result<u64> {
        let _gc = self.lock("gc", true)?;
        let referenced: std::collections::HashSet<String> = self
            .manifests()?
            .into_iter()
            .flat_map(|m| m.files.into_iter().map(|f| f.sha256))
            .collect();
        let dir = self.blob_dir();
        let mut freed = 0;
        for entry in fs::read_dir(&dir).map_err(|e| ModelsError::io("listing", &dir, e))? {
            let entry = entry.map_err(|e| ModelsError::io("listing", &dir, e))?;
            let name = entry.file_name().to_string_lossy().to_string();
            if !referenced.contains(&name) {
                freed += entry.metadata().map(|m| m.len()).unwrap_or(0);
                fs::remove_file(entry.path())
                    .map_err(|e| ModelsError::io("removing", &entry.path(), e))?;
            }
        }
        // Workers' packed weights (`<gguf sha256>-v<layout>.pack`, see surge-runtime's
        // `llm::packed`) go with the GGUF they were built from.
        let packed = self.root().join("packed");
        if let Ok(entries) = fs::read_dir(&packed) {
            for entry in entries.flatten() {
                let name = entry.file_name().to_string_lossy().to_string();
                let source = name.split('-').next().unwrap_or_default();
                if !referenced.contains(source) {
                    freed += entry.metadata().map(|m| m.len()).unwrap_or(0);
                    fs::remove_file(entry.path())
                        .map_err(|e| ModelsError::io("removing", &entry.path(), e))?;
                }
            }
        }
        Ok(freed)
    }

    /// Re-hashes every file of `m` against its manifest.
    pub fn verify(&self, m: &Manifest, cancel: &Cancel) -> Result<Vec<(String, FileCheck)>> {
        let mut out = Vec::new();
        for f in &m.files {
            let path = self.blob_path(&f.sha256);
            let check = if !path.exists() {
                FileCheck::Missing
            } else {
                let (_, actual) = hash_file(&path, cancel)?;
                if actual == f.sha256 {
                    FileCheck::Ok
                } else {
                    FileCheck::Corrupt { actual }
                }
            };
            out.push((f.name.clone(), check));
        }
        Ok(out)
    }

    /// Serialises pulls and removals of one model across processes.
    pub fn lock_model(&self, name: &str) -> Result<CacheLock> {
        check_name(name)?;
        self.lock(&format!("model-{name}"), true)
    }

    /// Held shared by a pull for its whole duration; see [`ModelCache::gc`].
    pub fn lock_gc_shared(&self) -> Result<CacheLock> {
        self.lock("gc", false)
    }

    fn lock(&self, name: &str, exclusive: bool) -> Result<CacheLock> {
        let path = self.lock_dir().join(format!("{name}.lock"));
        let file = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| ModelsError::io("opening lock", &path, e))?;
        let busy = if exclusive {
            file.try_lock().is_err()
        } else {
            file.try_lock_shared().is_err()
        };
        if busy {
            tracing::info!(
                "waiting for another surge process holding {}",
                path.display()
            );
            eprintln!("waiting for another surge process ({name} is locked)");
            let r = if exclusive {
                file.lock()
            } else {
                file.lock_shared()
            };
            r.map_err(|e| ModelsError::io("locking", &path, e))?;
        }
        Ok(CacheLock(file))
    }

    /// A staging directory for one pull, named after our pid so a later process can tell
    /// an abandoned one (killed pull) from a live one and sweep it.
    pub(crate) fn staging(&self) -> Result<tempfile::TempDir> {
        let dir = self.tmp_dir();
        tempfile::Builder::new()
            .prefix(&format!("{}-", std::process::id()))
            .tempdir_in(&dir)
            .map_err(|e| ModelsError::io("creating staging directory", &dir, e))
    }

    fn sweep_stale_staging(&self) {
        let Ok(entries) = fs::read_dir(self.tmp_dir()) else {
            return;
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().to_string();
            let pid = name.split('-').next().and_then(|p| p.parse::<u32>().ok());
            let alive = pid.is_some_and(|p| Path::new(&format!("/proc/{p}")).exists());
            if !alive {
                let _ = fs::remove_dir_all(entry.path());
            }
        }
    }
}

fn read_manifest(path: &Path) -> Result<Manifest> {
    let bytes = fs::read(path).map_err(|e| ModelsError::io("reading manifest", path, e))?;
    serde_json::from_slice(&bytes).map_err(|e| ModelsError::BadManifest {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 128
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
}

/// Model names become file names: keep them to a safe alphabet.
pub fn check_name(name: &str) -> Result<()> {
    if valid_name(name) {
        Ok(())
    } else {
        Err(ModelsError::InvalidSpec {
            spec: name.to_string(),
            reason:
                "model names use letters, digits, '.', '_' and '-' (max 128, not starting with '.')"
                    .into(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::{FileEntry, ModelDefaults, ModelFormat, ModelKind};

    fn manifest(name: &str, sha: &str, size: u64) -> Manifest {
        Manifest {
            name: name.into(),
            kind: ModelKind::Llm,
            format: ModelFormat::Gguf,
            files: vec![FileEntry {
                name: "m.gguf".into(),
                size,
                sha256: sha.into(),
            }],
            source: "local:/dev/null".into(),
            aliases: vec!["alias".into()],
            defaults: ModelDefaults::default(),
            architecture: None,
        }
    }

    #[test]
    fn commit_resolve_verify_remove() {
        let dir = tempfile::tempdir().unwrap();
        let cache = ModelCache::open(dir.path()).unwrap();
        let staged = cache.staging().unwrap();
        let p = staged.path().join("f");
        fs::write(&p, b"hello").unwrap();
        let (size, sha) = hash_file(&p, &Cancel::default()).unwrap();
        cache.commit_blob(&p, &sha).unwrap();
        let m = manifest("a", &sha, size);
        cache.write_manifest(&m).unwrap();

        let r = cache.resolve("alias").unwrap();
        assert_eq!(fs::read(r.path("m.gguf").unwrap()).unwrap(), b"hello");
        assert_eq!(
            cache.verify(&m, &Cancel::default()).unwrap()[0].1,
            FileCheck::Ok
        );

        // A worker's packed weights for the GGUF (and one for a GGUF long gone).
        let packed = dir.path().join("packed");
        fs::create_dir_all(&packed).unwrap();
        let pack = packed.join(format!("{sha}-v1.pack"));
        fs::write(&pack, b"pack").unwrap();
        fs::write(packed.join("0000-v1.pack"), b"old").unwrap();

        // A second model sharing the blob keeps it alive when the first is removed.
        cache.write_manifest(&manifest("b", &sha, size)).unwrap();
        assert_eq!(cache.remove("a").unwrap().1, 3, "only the orphaned pack");
        assert!(cache.blob_path(&sha).exists() && pack.exists());
        assert_eq!(cache.remove("b").unwrap().1, 5 + 4);
        assert!(!cache.blob_path(&sha).exists() && !pack.exists());
        assert!(matches!(cache.resolve("b"), Err(ModelsError::NotCached(_))));
    }

    #[test]
    fn rejects_unsafe_names() {
        for bad in ["", "../x", ".hidden", "a/b", "a b"] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
        assert!(check_name("whisper-tiny.en").is_ok());
    }
}
