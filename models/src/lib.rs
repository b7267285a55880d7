//! The shared model cache.
//!
//! Every worker and gateway on a machine reads weights from one cache directory
//! (`$SURGE_HOME`, default `~/.cache/surge`): content-addressed blobs plus one manifest
//! per model. Pulls are atomic and safe across processes; reads never touch the network.
//!
//! ```no_run
//! let cache = surge_models::ModelCache::open_default()?;
//! let model = cache.resolve("whisper-1")?; // name or alias
//! let weights = model.path("model.bin");
//! # Ok::<(), surge_models::ModelsError>(())
//! ```

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub mod cache;
pub mod catalog;
pub mod error;
pub mod fsutil;
pub mod gguf;
pub mod http;
pub mod manifest;
pub mod progress;
pub mod pull;
pub mod source;
pub mod spec;

pub use cache::{FileCheck, ModelCache, ResolvedModel};
pub use error::{ModelsError, Result};
pub use manifest::{FileEntry, Manifest, ModelDefaults, ModelFormat, ModelKind};
pub use progress::ProgressMode;
pub use pull::{pull, pull_defaults, PullOptions, PullOutcome, PullRequest};
pub use spec::Source;

/// A cancellation flag shared with a Ctrl-C handler; long copies check it between chunks.
#[derive(Debug, Clone, Default)]
pub struct Cancel(Arc<AtomicBool>);

impl Cancel {
    pub fn cancel(&self) {
        self.0.store(true, Ordering::SeqCst);
    }

    pub fn is_cancelled(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }

    /// Sleeps up to `d`, waking early when cancelled.
    pub fn sleep(&self, d: Duration) {
        let end = Instant::now() + d;
        while !self.is_cancelled() && Instant::now() < end {
            std::thread::sleep(Duration::from_millis(20).min(end - Instant::now()));
        }
    }
}
