//! Where tests and benchmarks find a real model: `$SURGE_TEST_GGUF`, else the default
//! LLM from the shared model cache, pulled there by the project's own code if missing
//! (concurrent pulls from parallel tests are serialised by the cache's lock).

use std::path::PathBuf;
use std::sync::OnceLock;

use surge_models::{catalog, pull, ModelCache, ProgressMode, PullOptions, PullRequest};

/// The catalog model the tests run.
pub const TEST_MODEL: &str = "smollm2-135m-instruct";

/// A Qwen2 catalog model (Q4_K_M, mixed k-quant types) for the `qwen2` tests.
pub const QWEN_TEST_MODEL: &str = "qwen2.5-coder-0.5b-instruct";

/// A Gemma 3 catalog model (base, Q4_K_M) for the `gemma3` tests.
pub const GEMMA_TEST_MODEL: &str = "gemma-3-270m";

/// Path of the test GGUF; panics with the reason when it cannot be had (tests only).
pub fn test_gguf_path() -> PathBuf {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| catalog_gguf_path(TEST_MODEL, "SURGE_TEST_GGUF"))
        .clone()
}

/// Path of the Qwen2 test GGUF (`$SURGE_TEST_QWEN_GGUF`, else pulled like
/// [`test_gguf_path`]).
pub fn qwen_test_gguf_path() -> PathBuf {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| catalog_gguf_path(QWEN_TEST_MODEL, "SURGE_TEST_QWEN_GGUF"))
        .clone()
}

/// Path of the Gemma 3 test GGUF (`$SURGE_TEST_GEMMA_GGUF`, else pulled like
/// [`test_gguf_path`]).
pub fn gemma_test_gguf_path() -> PathBuf {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| catalog_gguf_path(GEMMA_TEST_MODEL, "SURGE_TEST_GEMMA_GGUF"))
        .clone()
}

/// `$env_var` when set, else the catalog model `name` from the shared cache,
/// pulled there first if missing; panics with the reason (tests only).
pub fn catalog_gguf_path(name: &str, env_var: &str) -> PathBuf {
    if let Some(p) = std::env::var_os(env_var) {
        return PathBuf::from(p);
    }
    let resolve = || -> surge_models::Result<PathBuf> {
        let cache = ModelCache::open_default()?;
        let entry =
            catalog::find(name).ok_or_else(|| surge_models::ModelsError::NotCached(name.into()))?;
        let opts = PullOptions {
            progress: ProgressMode::Quiet,
            ..Default::default()
        };
        pull(&cache, &PullRequest::from_catalog(entry)?, &opts)?;
        let model = cache.resolve(name)?;
        model
            .path_with_suffix(".gguf")
            .map(|p| p.to_path_buf())
            .ok_or_else(|| surge_models::ModelsError::NotCached(name.into()))
    };
    resolve().unwrap_or_else(|e| panic!("test model {name}: {e}"))
}
