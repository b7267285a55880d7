//! One error type for every cache operation, so the CLI can print a single clear line
//! and callers (gateway, workers) can match on the cases they care about.

use std::path::PathBuf;

/// Result alias for the model cache.
pub type Result<T, E = ModelsError> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum ModelsError {
    #[error("unknown model '{name}' (known: {known})")]
    UnknownModel { name: String, known: String },

    #[error("{0}")]
    Usage(String),

    #[error(
        "model '{name}': architecture `{architecture}` is not supported (supported \
         architectures: {})",
        crate::gguf::SUPPORTED_ARCHITECTURES.join(", ")
    )]
    UnsupportedArchitecture { name: String, architecture: String },

    #[error("model '{0}' is not in the cache; run `surge models pull {0}`")]
    NotCached(String),

    #[error("invalid model spec '{spec}': {reason}")]
    InvalidSpec { spec: String, reason: String },

    #[error("source {source_name} unreachable after {attempts} attempts: {reason}")]
    Unreachable {
        source_name: String,
        attempts: u32,
        reason: String,
    },

    #[error("source {source_name} answered: {reason}")]
    SourceRejected { source_name: String, reason: String },

    #[error("checksum mismatch for {what}: expected sha256 {expected}, got {actual}")]
    ChecksumMismatch {
        what: String,
        expected: String,
        actual: String,
    },

    #[error("member '{member}' is missing from {archive}")]
    MemberMissing { member: String, archive: String },

    #[error("corrupt archive {archive}: {reason}")]
    CorruptArchive { archive: String, reason: String },

    #[error("disk full under {}: {detail}", path.display())]
    DiskFull { path: PathBuf, detail: String },

    #[error("interrupted; the cache was left as it was")]
    Interrupted,

    #[error("invalid manifest {}: {reason}", path.display())]
    BadManifest { path: PathBuf, reason: String },

    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
}

impl ModelsError {
    /// Wraps an I/O error with what we were doing, mapping ENOSPC to [`ModelsError::DiskFull`]
    /// so a full disk reads as such rather than as a generic write failure.
    pub fn io(context: impl Into<String>, path: &std::path::Path, source: std::io::Error) -> Self {
        if source.kind() == std::io::ErrorKind::StorageFull {
            return ModelsError::DiskFull {
                path: path.to_path_buf(),
                detail: format!("{}: {source}", context.into()),
            };
        }
        ModelsError::Io {
            context: format!("{}: {}", context.into(), path.display()),
            source,
        }
    }

    /// Process exit code for the CLI: 130 for Ctrl-C as shells expect, 1 otherwise.
    pub fn exit_code(&self) -> i32 {
        match self {
            ModelsError::Interrupted => 130,
            _ => 1,
        }
    }
}
