//! Bootstrapping `surge serve`: the model cache and registry, the worker pools, and a
//! pingora server with the proxy service; SIGTERM/SIGINT drain the gateway ourselves
//! (pingora's own graceful shutdown always sleeps its whole grace period).

use std::net::TcpListener;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use pingora::server::configuration::ServerConf;
use pingora::server::{RunArgs, Server, ShutdownSignal, ShutdownSignalWatch};
use pingora::services::background::background_service;
use surge_models::{Cancel, ModelCache, ProgressMode, PullOptions, PullOutcome};

use super::auth::Keys;
use super::config::GatewayConfig;
use super::metrics::GatewayMetrics;
use super::pool::{Autoscaling, Pools};
use super::provision::LocalProvisioner;
use super::proxy::Gateway;
use super::registry::Registry;
use super::spend::{now_ms, Spending};
use crate::metering::export::Exporter;
use crate::metering::keys::ledger_path;
use crate::metering::prices;
use crate::metering::{ledger, Ledger, LedgerOptions};

/// Runs the gateway until SIGTERM/SIGINT; returns the process exit code.
pub fn run(cfg: GatewayConfig) -> i32 {
    match serve(cfg) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("error: {e}");
            1
        }
    }
}

fn serve(cfg: GatewayConfig) -> Result<(), String> {
    cfg.validate()?;
    let root = cfg.home.clone().unwrap_or_else(ModelCache::default_root);
    let cache = ModelCache::open(&root).map_err(|e| e.to_string())?;
    if cfg.pull_defaults {
        let opts = PullOptions {
            cancel: Cancel::default(),
            progress: ProgressMode::Auto,
            force: false,
        };
        let pulled = surge_models::pull_defaults(&cache, &opts)
            .map_err(|e| format!("pulling the default models: {e}"))?;
        for outcome in pulled {
            let fresh = matches!(outcome, PullOutcome::Pulled(_));
            tracing::info!(model = %outcome.manifest().name, fresh, "default model in the cache");
        }
    }
    let registry = Registry::from_cache(&cache).map_err(|e| e.to_string())?;
    if registry.entries().is_empty() {
        tracing::warn!(
            "the model cache at {} holds no complete model; every request will get 404",
            root.display()
        );
    }
    for e in registry.entries() {
        tracing::info!(model = %e.name, kind = e.kind_name(), aliases = ?e.aliases, "serving");
    }

    // Fail early, with a clear message, when the address is taken.
    drop(TcpListener::bind(cfg.listen).map_err(|e| format!("listening on {}: {e}", cfg.listen))?);

    let (socket_dir, own_socket_dir) = match &cfg.socket_dir {
        Some(d) => (d.clone(), false),
        None => (fresh_socket_dir()?, true),
    };
    std::fs::create_dir_all(&socket_dir)
        .map_err(|e| format!("creating {}: {e}", socket_dir.display()))?;
    let exe = std::env::current_exe().map_err(|e| format!("finding the surge executable: {e}"))?;
    let provisioner = Arc::new(
        LocalProvisioner::new(exe, cfg.home.clone(), socket_dir.clone()).with_trace(cfg.trace()),
    );
    let metrics = Arc::new(GatewayMetrics::new().map_err(|e| e.to_string())?);
    // The pools' actors outlive pingora's services (they drain after the proxy stops
    // taking requests), so they get a runtime of their own.
    let pool_runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("surge-pools")
        .enable_all()
        .build()
        .map_err(|e| format!("starting the pool runtime: {e}"))?;
    let ledger_file = ledger_path(cfg.data_dir.as_deref(), &root);
    let ledger =
        Arc::new(Ledger::start(&ledger_file, LedgerOptions::default()).map_err(|e| e.to_string())?);
    let pools = Pools::new(
        &cfg,
        &registry,
        provisioner,
        metrics.clone(),
        pool_runtime.handle().clone(),
        cfg.metering.then(|| ledger.clone()),
    );
    let draining = Arc::new(AtomicBool::new(false));
    let store = ledger::open(&ledger_file).map_err(|e| e.to_string())?;
    prices::store(&store, &cfg.billing, now_ms())?;
    tracing::info!(ledger = %ledger_file.display(), price_version = %cfg.billing.price_version, "usage ledger");
    let keys = Keys::with_store(&cfg.keys, Some(store));
    let exporter = match &cfg.usage_export {
        Some(e) if cfg.metering => Some(Exporter::start(&ledger_file, e.clone())?),
        _ => None,
    };
    if !cfg.metering {
        tracing::warn!("metering is off: no usage records, budgets, export or capacity ledger");
    }
    let spending = Spending::new(Some(
        ledger::open_read_only(&ledger_file).map_err(|e| e.to_string())?,
    ));
    let cfg = Arc::new(cfg);

    let conf = ServerConf {
        threads: std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(2)
            .clamp(1, 8),
        grace_period_seconds: Some(0),
        graceful_shutdown_timeout_seconds: Some(1),
        ..ServerConf::default()
    };
    let mut server = Server::new_with_opt_and_conf(None, conf);
    server.bootstrap();
    let gateway = Gateway {
        registry: Arc::new(registry),
        pools: pools.clone(),
        metrics,
        cfg: cfg.clone(),
        draining: draining.clone(),
        keys: Arc::new(keys),
        spending: Arc::new(spending),
        ledger: cfg.metering.then(|| ledger.clone()),
        export: exporter.as_ref().map(Exporter::counters),
    };
    let mut proxy = pingora::proxy::http_proxy_service(&server.configuration, gateway);
    proxy.add_tcp(&cfg.listen.to_string());
    server.add_service(proxy);
    server.add_service(background_service(
        "autoscaler",
        Autoscaling {
            pools: pools.clone(),
            interval: cfg.autoscale_interval,
        },
    ));
    tracing::info!(listen = %cfg.listen, sockets = %socket_dir.display(), "surge serve ready");
    server.run(RunArgs {
        shutdown_signal: Box::new(Drain {
            pools,
            draining,
            grace: cfg.drain_grace,
        }),
    });
    // Waits (briefly) for the pool actors to be dropped, so the ledger is ours alone.
    pool_runtime.shutdown_timeout(Duration::from_secs(1));
    // Commits the usage of the last requests and the spans of the workers just
    // stopped: the clean shutdown loses none.
    if let Err(e) = ledger.flush() {
        tracing::error!(error = %e, "flushing the ledger");
    }
    // The export's last pass, now that every record is committed.
    if let Some(e) = exporter {
        e.stop();
    }
    if let Ok(l) = Arc::try_unwrap(ledger) {
        if let Err(e) = l.close() {
            tracing::error!(error = %e, "closing the ledger");
        }
    }
    if own_socket_dir {
        let _ = std::fs::remove_dir_all(&socket_dir);
    }
    tracing::info!("surge serve stopped");
    Ok(())
}

/// A new private directory for worker sockets (short, under the system temp dir:
/// Unix socket paths are limited to ~108 bytes).
fn fresh_socket_dir() -> Result<PathBuf, String> {
    let base = std::env::temp_dir();
    for n in 0..100u32 {
        let d = base.join(format!("surge-{}-{n}", std::process::id()));
        match std::fs::create_dir(&d) {
            Ok(()) => {
                #[cfg(unix)]
                {
                    use std::os::unix::fs::PermissionsExt;
                    let _ = std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o700));
                }
                return Ok(d);
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(format!("creating {}: {e}", d.display())),
        }
    }
    Err(format!("no free socket directory under {}", base.display()))
}

/// Waits for SIGTERM or SIGINT, then drains: `/ready` turns 503, new inference requests
/// get 503, in-flight ones finish (at most `grace`), workers stop; then pingora stops at
/// once.
struct Drain {
    pools: Arc<Pools>,
    draining: Arc<AtomicBool>,
    grace: Duration,
}

#[async_trait]
impl ShutdownSignalWatch for Drain {
    async fn recv(&self) -> ShutdownSignal {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
        let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler");
        let which = tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
        };
        tracing::info!(grace = ?self.grace, "{which}: draining");
        self.draining.store(true, Ordering::SeqCst);
        self.pools.shutdown(self.grace).await;
        ShutdownSignal::FastShutdown
    }
}
