//! Models on the Hugging Face Hub, through the `hf-hub` crate.
//!
//! `HF_ENDPOINT` points at a mirror (or a test server), `HF_TOKEN` authenticates. hf-hub
//! downloads into its own cache layout; we give it a directory inside our staging area
//! and then take the one blob we need, so the user's `~/.cache/huggingface` is untouched.

use std::time::Duration;

use hf_hub::api::sync::{ApiBuilder, ApiError};
use hf_hub::{Repo, RepoType};

use crate::error::{ModelsError, Result};
use crate::fsutil::hash_file;
use crate::progress::{Progress, ProgressMode};
use crate::source::{FetchCtx, FetchedFile};

pub fn fetch(ctx: &FetchCtx, repo: &str, revision: &str, file: &str) -> Result<FetchedFile> {
    let source_name = format!("hf:{repo}@{revision}/{file}");
    let hf_dir = ctx.staging.join("hf");
    let token = std::env::var("HF_TOKEN").ok().filter(|t| !t.is_empty());
    let api = ApiBuilder::from_env()
        .with_cache_dir(hf_dir)
        .with_token(token)
        .with_progress(false)
        .with_retries(ctx.http.attempts().saturating_sub(1) as usize)
        .build()
        .map_err(|e| map_err(&source_name, ctx.http.attempts(), e))?;
    let repo_handle = api.repo(Repo::with_revision(
        repo.to_string(),
        RepoType::Model,
        revision.to_string(),
    ));
    let progress = HfProgress {
        mode: ctx.progress,
        inner: None,
    };
    let file_owned = file.to_string();
    // hf-hub's blocking download cannot be interrupted, so it runs on its own thread
    // while this one watches the Ctrl-C flag; on cancel the staging directory (and the
    // half-written file in it) is removed by the caller and the thread dies with us.
    let handle =
        std::thread::spawn(move || repo_handle.download_with_progress(&file_owned, progress));
    while !handle.is_finished() {
        if ctx.cancel.is_cancelled() {
            return Err(ModelsError::Interrupted);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let pointer = handle
        .join()
        .map_err(|_| ModelsError::SourceRejected {
            source_name: source_name.clone(),
            reason: "download thread panicked".into(),
        })?
        .map_err(|e| map_err(&source_name, ctx.http.attempts(), e))?;
    let blob =
        std::fs::canonicalize(&pointer).map_err(|e| ModelsError::io("resolving", &pointer, e))?;
    let (size, sha256) = hash_file(&blob, ctx.cancel)?;
    Ok(FetchedFile {
        name: file.rsplit('/').next().unwrap_or(file).to_string(),
        path: blob,
        size,
        sha256,
    })
}

fn map_err(source_name: &str, attempts: u32, e: ApiError) -> ModelsError {
    match e {
        ApiError::RequestError(err) => match *err {
            ureq::Error::Status(code, _) if (400..500).contains(&code) => {
                ModelsError::SourceRejected {
                    source_name: source_name.to_string(),
                    reason: format!("HTTP {code}"),
                }
            }
            other => ModelsError::Unreachable {
                source_name: source_name.to_string(),
                attempts,
                reason: other.to_string(),
            },
        },
        ApiError::TooManyRetries(inner) => ModelsError::Unreachable {
            source_name: source_name.to_string(),
            attempts,
            reason: inner.to_string(),
        },
        ApiError::IoError(io) => ModelsError::Io {
            context: format!("downloading {source_name}"),
            source: io,
        },
        other => ModelsError::SourceRejected {
            source_name: source_name.to_string(),
            reason: other.to_string(),
        },
    }
}

/// Adapts our progress display to hf-hub's callback trait (it learns the size late).
struct HfProgress {
    mode: ProgressMode,
    inner: Option<Progress>,
}

impl hf_hub::api::Progress for HfProgress {
    fn init(&mut self, size: usize, filename: &str) {
        if self.inner.is_none() {
            self.inner = Some(Progress::new(
                self.mode,
                format!("downloading {filename}"),
                Some(size as u64),
            ));
        }
    }
    fn update(&mut self, size: usize) {
        if let Some(p) = &mut self.inner {
            p.inc(size as u64);
        }
    }
    fn finish(&mut self) {
        if let Some(p) = &mut self.inner {
            p.finish();
        }
    }
}
