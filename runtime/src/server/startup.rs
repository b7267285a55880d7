//! Cold-start accounting: where a worker's spawn → ready time goes.
//!
//! The clock starts when the parent spawned the process. A parent that wants the `exec`
//! phase measured sets [`SPAWNED_AT_ENV`] (`SURGE_SPAWNED_AT_UNIX_NS`, the wall-clock
//! time of its `spawn()` in nanoseconds since the Unix epoch) in the child's environment;
//! without it the process start time from `/proc/self/stat` is used (10 ms resolution,
//! so `exec_source` says which). The binary calls [`mark_main`] first thing in `main`.
//!
//! After that, one owned [`StartupTimer`] travels the critical path (main thread, then
//! the engine thread) and records consecutive laps, so the phases never overlap and their
//! sum never exceeds `total_s`. Binding the listener runs beside the load, so it is an
//! offset (`listening_s`), not a phase. The finished [`StartupReport`] goes into
//! `/health` (see [`super::routes::health_response`]; its shape is
//! [`surge_protocol::worker::health::Startup`]), the `ready` log line and the
//! `surge_worker_startup_seconds{phase}` gauge.

use std::ops::Deref;
use std::sync::OnceLock;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use prometheus::{opts, GaugeVec, Registry};
use surge_protocol::worker::health::Startup;

pub use surge_protocol::worker::health::ExecSource;
/// The environment variable a parent sets to the Unix time (ns) at which it spawned us.
pub use surge_protocol::worker::SPAWNED_AT_ENV;

/// The critical-path phases, in order, as they appear in `/health` and the gauge.
pub const PHASES: [StartupPhase; 6] = [
    StartupPhase::Exec,
    StartupPhase::Init,
    StartupPhase::Resolve,
    StartupPhase::Weights,
    StartupPhase::Tokenizer,
    StartupPhase::Warmup,
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartupPhase {
    /// spawn → `main` entered: fork/exec, dynamic loading, Rust runtime start.
    Exec,
    /// `main` → model lookup: logging, argument parsing, the async runtime.
    Init,
    /// Opening the model cache and reading the model's manifest.
    Resolve,
    /// Reading the weights and bringing them into the in-memory format.
    Weights,
    /// Tokenizer, chat template (LLM), mel filters and decoding rules (Whisper).
    Tokenizer,
    /// Work done once before readiness so the first request pays no extra.
    Warmup,
}

impl StartupPhase {
    pub fn name(self) -> &'static str {
        match self {
            StartupPhase::Exec => "exec",
            StartupPhase::Init => "init",
            StartupPhase::Resolve => "resolve",
            StartupPhase::Weights => "weights",
            StartupPhase::Tokenizer => "tokenizer",
            StartupPhase::Warmup => "warmup",
        }
    }
}

/// What `main` saw when it was entered.
#[derive(Debug, Clone, Copy)]
struct ProcessStart {
    main_at: Instant,
    /// spawn → main, when known.
    exec_s: Option<f64>,
    source: ExecSource,
}

static PROCESS: OnceLock<ProcessStart> = OnceLock::new();

/// Records that `main` was entered; the binary calls it before anything else. Later calls
/// (and a library user that never calls it) are harmless: the first call wins, and
/// without one the clock starts when the first [`StartupTimer`] is made.
pub fn mark_main() {
    PROCESS.get_or_init(|| {
        let main_at = Instant::now();
        let now_ns = unix_ns_now();
        let from_env = std::env::var(SPAWNED_AT_ENV)
            .ok()
            .and_then(|v| v.trim().parse::<u128>().ok());
        let (exec_s, source) = match from_env {
            Some(spawned) => (Some(exec_seconds(spawned, now_ns)), ExecSource::Env),
            None => match proc_exec_seconds() {
                Some(s) => (Some(s), ExecSource::Proc),
                None => (None, ExecSource::None),
            },
        };
        ProcessStart {
            main_at,
            exec_s,
            source,
        }
    });
}

fn unix_ns_now() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0)
}

/// spawn → now in seconds from two Unix-ns stamps; a spawn stamp in the future (a
/// clock step between parent and child) counts as zero.
pub fn exec_seconds(spawned_unix_ns: u128, now_unix_ns: u128) -> f64 {
    now_unix_ns.saturating_sub(spawned_unix_ns) as f64 / 1e9
}

/// Seconds since this process started, from `/proc/self/stat` (field 22, `starttime`, in
/// clock ticks since boot) and `CLOCK_BOOTTIME` via `/proc/uptime`.
fn proc_exec_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    let uptime = std::fs::read_to_string("/proc/uptime").ok()?;
    let start_ticks = proc_start_ticks(&stat)?;
    let uptime_s: f64 = uptime.split_whitespace().next()?.parse().ok()?;
    // USER_HZ is 100 on every Linux ABI Rust targets.
    Some((uptime_s - start_ticks as f64 / 100.0).max(0.0))
}

/// `starttime` (field 22) of a `/proc/PID/stat` line. The command (field 2) may hold
/// spaces and parentheses, so fields are counted after its last `)`.
pub fn proc_start_ticks(stat: &str) -> Option<u64> {
    let (_, rest) = stat.rsplit_once(')')?;
    // rest starts at field 3 (state); starttime is field 22 → index 19.
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// Laps along the startup's critical path. Owned, so it moves from the main thread to
/// the engine thread with the work.
#[derive(Debug, Clone)]
pub struct StartupTimer {
    main_at: Instant,
    exec_s: Option<f64>,
    source: ExecSource,
    last: Instant,
    laps: Vec<(StartupPhase, f64)>,
}

impl Default for StartupTimer {
    fn default() -> Self {
        Self::start()
    }
}

impl StartupTimer {
    /// A timer from `main` (see [`mark_main`]); the `init` phase ends at the first lap.
    pub fn start() -> Self {
        mark_main();
        let p = PROCESS.get().copied().unwrap_or(ProcessStart {
            main_at: Instant::now(),
            exec_s: None,
            source: ExecSource::None,
        });
        Self {
            main_at: p.main_at,
            exec_s: p.exec_s,
            source: p.source,
            last: p.main_at,
            laps: Vec::new(),
        }
    }

    /// Ends `phase` now: it covers the time since the previous lap (or since `main`).
    /// A phase lapped twice adds up.
    pub fn lap(&mut self, phase: StartupPhase) {
        let now = Instant::now();
        let s = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        match self.laps.iter_mut().find(|(p, _)| *p == phase) {
            Some((_, total)) => *total += s,
            None => self.laps.push((phase, s)),
        }
    }

    /// Seconds from spawn (or `main` when the spawn time is unknown) to `at`.
    pub fn since_spawn(&self, at: Instant) -> f64 {
        self.exec_s.unwrap_or(0.0) + at.saturating_duration_since(self.main_at).as_secs_f64()
    }

    fn get(&self, phase: StartupPhase) -> f64 {
        self.laps
            .iter()
            .find(|(p, _)| *p == phase)
            .map_or(0.0, |(_, s)| *s)
    }

    /// The report at readiness (now). `listening_at`: when the socket was bound.
    pub fn finish(&self, listening_at: Option<Instant>) -> StartupReport {
        let now = Instant::now();
        StartupReport(Startup {
            exec_s: self.exec_s,
            exec_source: self.source,
            init_s: self.get(StartupPhase::Init),
            listening_s: listening_at.map(|t| self.since_spawn(t)),
            resolve_s: self.get(StartupPhase::Resolve),
            tokenizer_s: self.get(StartupPhase::Tokenizer),
            total_s: self.since_spawn(now),
            warmup_s: self.get(StartupPhase::Warmup),
            weights_s: self.get(StartupPhase::Weights),
        })
    }
}

/// Where one cold start's time went, in seconds: the `startup` object of `/health`
/// ([`Startup`], which it derefs to), plus what the worker does with it (the gauge, the
/// log line). `exec_s + init_s + resolve_s + weights_s + tokenizer_s + warmup_s <=
/// total_s`; the rest is bookkeeping between phases (well under a millisecond).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StartupReport(pub Startup);

impl Deref for StartupReport {
    type Target = Startup;
    fn deref(&self) -> &Startup {
        &self.0
    }
}

impl StartupReport {
    /// (phase, seconds) in [`PHASES`] order; `exec` is 0 when unknown.
    pub fn phases(&self) -> [(StartupPhase, f64); 6] {
        [
            (StartupPhase::Exec, self.exec_s.unwrap_or(0.0)),
            (StartupPhase::Init, self.init_s),
            (StartupPhase::Resolve, self.resolve_s),
            (StartupPhase::Weights, self.weights_s),
            (StartupPhase::Tokenizer, self.tokenizer_s),
            (StartupPhase::Warmup, self.warmup_s),
        ]
    }

    /// Sets `surge_worker_startup_seconds{phase}` (every phase, plus `total`).
    pub fn export(&self, gauge: &GaugeVec) {
        for (p, s) in self.phases() {
            gauge.with_label_values(&[p.name()]).set(s);
        }
        gauge.with_label_values(&["total"]).set(self.total_s);
    }

    /// Logs the breakdown as one structured line (target `surge::startup`).
    pub fn log(&self, model: &str) {
        tracing::info!(
            target: "surge::startup",
            model,
            exec_s = self.exec_s.unwrap_or(-1.0),
            init_s = self.init_s,
            resolve_s = self.resolve_s,
            weights_s = self.weights_s,
            tokenizer_s = self.tokenizer_s,
            warmup_s = self.warmup_s,
            listening_s = self.listening_s.unwrap_or(-1.0),
            total_s = self.total_s,
            exec_source = ?self.exec_source,
            "startup"
        );
    }
}

/// `surge_worker_startup_seconds{phase}`: the last cold start's breakdown (one per
/// process), phases as in [`PHASES`] plus `total`.
pub fn startup_gauge(r: &Registry) -> prometheus::Result<GaugeVec> {
    super::metrics::register(
        r,
        GaugeVec::new(
            opts!(
                "surge_worker_startup_seconds",
                "This worker's cold start by phase (exec, init, resolve, weights, tokenizer, \
                 warmup) and in total, spawn to ready"
            ),
            &["phase"],
        )?,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_ticks_follow_the_last_paren() {
        // A command with spaces and a ')' of its own.
        let stat = "4242 (surge (x) y) S 1 4242 4242 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 \
                    3 0 98765 1000 200";
        assert_eq!(proc_start_ticks(stat), Some(98765));
        assert_eq!(proc_start_ticks("garbage"), None);
        assert_eq!(proc_start_ticks("1 (x) S 1"), None);
    }

    #[test]
    fn phase_names_are_the_protocol_ones() {
        assert_eq!(PHASES.map(StartupPhase::name), Startup::PHASES);
    }

    #[test]
    fn exec_seconds_never_negative() {
        assert_eq!(exec_seconds(1_000_000_000, 1_250_000_000), 0.25);
        assert_eq!(exec_seconds(2_000_000_000, 1_000_000_000), 0.0);
    }

    #[test]
    fn laps_are_consecutive_and_sum_below_total() {
        let mut t = StartupTimer::start();
        t.lap(StartupPhase::Init);
        std::thread::sleep(std::time::Duration::from_millis(2));
        t.lap(StartupPhase::Weights);
        t.lap(StartupPhase::Tokenizer);
        t.lap(StartupPhase::Weights);
        let bound = Instant::now();
        let r = t.finish(Some(bound));
        assert!(r.weights_s >= 0.002, "{r:?}");
        let sum: f64 = r.phases().iter().map(|(_, s)| s).sum();
        assert!(r.phases().iter().all(|(_, s)| *s >= 0.0));
        assert!(sum <= r.total_s + 1e-9, "{sum} > {}", r.total_s);
        assert!(r.listening_s.unwrap() <= r.total_s);
        assert_eq!(r.resolve_s, 0.0);
        assert_eq!(r.warmup_s, 0.0);
    }

    #[test]
    fn report_serializes_with_the_documented_keys() {
        let r = StartupReport(Startup {
            exec_s: None,
            init_s: 0.001,
            resolve_s: 0.002,
            weights_s: 0.1,
            tokenizer_s: 0.03,
            warmup_s: 0.02,
            total_s: 0.2,
            listening_s: Some(0.004),
            exec_source: ExecSource::None,
        });
        let v = serde_json::to_value(*r).unwrap();
        for k in [
            "exec_s",
            "init_s",
            "resolve_s",
            "weights_s",
            "tokenizer_s",
            "warmup_s",
            "total_s",
            "listening_s",
            "exec_source",
        ] {
            assert!(v.get(k).is_some(), "missing {k} in {v}");
        }
        assert!(v["exec_s"].is_null());
        assert_eq!(v["exec_source"], "none");
        let g = startup_gauge(&Registry::new()).unwrap();
        r.export(&g);
        assert_eq!(g.with_label_values(&["weights"]).get(), 0.1);
        assert_eq!(g.with_label_values(&["total"]).get(), 0.2);
    }
}
