//! The process shape every worker kind shares: the model loads and runs on a dedicated
//! engine thread while the HTTP server answers (`/health` is 503 until the engine says
//! ready); SIGTERM/SIGINT drains and exits 0; an engine failure (load error or panic)
//! marks the worker failed, stops accepting, and exits 1 so the gateway replaces it.

use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use axum::Router;
use tokio::sync::oneshot;

use super::{Lifecycle, Listen};

/// The engine thread's way to report a fatal failure to the serving side.
pub type EngineFailure = oneshot::Sender<String>;

/// Spawns `engine` on the `surge-engine` thread, serves `router` on `listen` until a
/// termination signal (drain, exit code 0) or an engine failure (exit code 1), then waits
/// for the engine thread to finish.
///
/// The engine loop must end once every handle on it is dropped: the handles live in the
/// router's state, which is dropped when serving stops, so the caller must not keep its
/// own reference to that state across this call.
pub async fn run_worker(
    router: Router,
    listen: &Listen,
    life: Lifecycle,
    engine: impl FnOnce(EngineFailure) + Send + 'static,
) -> i32 {
    let (failed_tx, failed_rx) = oneshot::channel::<String>();
    let engine = std::thread::Builder::new()
        .name("surge-engine".into())
        .spawn(move || engine(failed_tx));
    let engine = match engine {
        Ok(h) => h,
        Err(e) => {
            tracing::error!("cannot start the engine thread: {e}");
            return 1;
        }
    };

    let failed = Arc::new(AtomicBool::new(false));
    let failed_flag = failed.clone();
    let bound_life = life.clone();
    let shutdown = async move {
        tokio::select! {
            _ = super::termination_signal() => life.set_draining(),
            Ok(why) = failed_rx => {
                tracing::error!("engine failed, exiting so the worker can be replaced: {why}");
                life.set_failed(why);
                failed_flag.store(true, Ordering::SeqCst);
            }
        }
    };
    let served = super::serve(router, listen, shutdown, move || bound_life.set_listening()).await;
    if let Err(e) = served {
        tracing::error!("server error on {listen}: {e}");
        return 1;
    }
    // Serving has stopped and the router (with the last engine handles) is gone, so the
    // engine loop ends once it is idle.
    let _ = tokio::task::spawn_blocking(move || engine.join()).await;
    if failed.load(Ordering::SeqCst) {
        1
    } else {
        0
    }
}

/// Runs an engine loop, turning a panic into an error message so the worker can report
/// it and exit instead of hanging with a dead engine.
pub fn catch_engine_panic(run: impl FnOnce() -> Result<(), String>) -> Result<(), String> {
    match std::panic::catch_unwind(AssertUnwindSafe(run)) {
        Ok(r) => r,
        Err(panic) => Err(format!(
            "engine panicked: {}",
            panic
                .downcast_ref::<String>()
                .map(String::as_str)
                .or_else(|| panic.downcast_ref::<&str>().copied())
                .unwrap_or("unknown panic")
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn panics_become_errors() {
        assert_eq!(catch_engine_panic(|| Ok(())), Ok(()));
        assert_eq!(catch_engine_panic(|| Err("x".into())), Err("x".into()));
        let e = catch_engine_panic(|| panic!("boom {}", 1)).unwrap_err();
        assert_eq!(e, "engine panicked: boom 1");
        let e = catch_engine_panic(|| panic!("static")).unwrap_err();
        assert_eq!(e, "engine panicked: static");
    }
}
