//! Where tests and benchmarks find a real model: `$SURGE_TEST_GGUF`, else the default
//! LLM from the shared model cache, pulled there by the project's own code if missing
//! (concurrent pulls from parallel tests are serialised by the cache's lock).

use std::path::PathBuf;
use std::sync::OnceLock;

use surge_models::{catalog, pull, ModelCache, ProgressMode, PullOptions, PullRequest};

/// The catalog model the tests run.
pub const TEST_MODEL: &str = "smollm2-135m-instruct";

/// Path of the test GGUF; panics with the reason when it cannot be had (tests only).
pub fn test_gguf_path() -> PathBuf {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        if let Some(p) = std::env::var_os("SURGE_TEST_GGUF") {
            return PathBuf::from(p);
        }
        let resolve = || -> surge_models::Result<PathBuf> {
            let cache = ModelCache::open_default()?;
            let entry = catalog::find(TEST_MODEL)
                .ok_or_else(|| surge_models::ModelsError::NotCached(TEST_MODEL.into()))?;
            let opts = PullOptions {
                progress: ProgressMode::Quiet,
                ..Default::default()
            };
            pull(&cache, &PullRequest::from_catalog(entry)?, &opts)?;
            let model = cache.resolve(TEST_MODEL)?;
            model
                .path_with_suffix(".gguf")
                .map(|p| p.to_path_buf())
                .ok_or_else(|| surge_models::ModelsError::NotCached(TEST_MODEL.into()))
        };
        resolve().unwrap_or_else(|e| panic!("test model {TEST_MODEL}: {e}"))
    })
    .clone()
}
