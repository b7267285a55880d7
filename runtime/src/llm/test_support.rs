//! Where tests and benchmarks find a real model.
//!
//! Kept in one function so that it can later resolve the model through the
//! shared model cache instead of a fixed path.

use std::path::PathBuf;

/// Fallback used on development machines where the default model was copied.
pub const DEFAULT_TEST_GGUF: &str = "/tmp/models/smollm2.gguf";

/// The GGUF used by model tests: `$SURGE_TEST_GGUF`, else [`DEFAULT_TEST_GGUF`].
pub fn test_gguf_path() -> PathBuf {
    std::env::var_os("SURGE_TEST_GGUF")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(DEFAULT_TEST_GGUF))
}
