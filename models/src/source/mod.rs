//! Where model bytes come from. Each source fetches into a staging directory and hands
//! back hashed files; the pull then verifies them and commits them to the blob store.

use std::path::{Path, PathBuf};

use crate::http::Http;
use crate::progress::ProgressMode;
use crate::Cancel;

pub mod hf;
pub mod local;
pub mod parts;
pub mod pypi;

/// A file fetched into staging, already hashed while it was written.
#[derive(Debug, Clone)]
pub struct FetchedFile {
    pub name: String,
    pub path: PathBuf,
    pub size: u64,
    pub sha256: String,
}

/// What every source needs to fetch: the network client, a private staging directory,
/// how to show progress, and the Ctrl-C flag.
pub struct FetchCtx<'a> {
    pub http: &'a Http,
    pub staging: &'a Path,
    pub progress: ProgressMode,
    pub cancel: &'a Cancel,
}
