//! `surge-loadtest run`: scenario in, report out. Loads and checks everything first
//! (scenario, `--fail-on` names, audio files) so mistakes fail before any load is sent,
//! then runs the load with the metrics scraper and the progress line beside it, and
//! writes `report.json`, `requests.jsonl` and `plot.svg`. The integration test calls this
//! function directly, so CI exercises exactly what the command does.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

use crate::client::{Record, Target};
use crate::failon::{self, Expr};
use crate::report::{Group, Report, ScheduleInfo, ServerSummary};
use crate::runner::{run_closed, run_open, Ctx, Live};
use crate::scenario::{Limits, Scenario, ScheduleSpec};
use crate::timeline::{bucket_width, timeline};
use crate::workload::Planner;

/// Default bound on requests when neither the scenario nor the command line sets one.
pub const DEFAULT_MAX_REQUESTS: usize = 10_000;
pub const DEFAULT_MAX_IN_FLIGHT: usize = 1024;

/// The command line of `run`.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    pub scenario: PathBuf,
    /// Overrides the scenario's `target`.
    pub target: Option<String>,
    /// Output directory (default `loadtest-results/NAME-UNIXTIME`).
    pub out: Option<PathBuf>,
    /// Assertions added to the scenario's `fail_on`.
    pub fail_on: Vec<String>,
    pub max_requests: Option<usize>,
    pub max_duration: Option<f64>,
    /// No progress line and no table.
    pub quiet: bool,
}

/// What a finished run produced.
#[derive(Debug)]
pub struct RunOutcome {
    pub report: Report,
    pub out_dir: PathBuf,
    /// One message per failed `--fail-on` expression (empty: the run passed).
    pub failures: Vec<String>,
}

/// Runs a scenario end to end. `Err` is a usage or setup error (nothing was measured).
pub fn run(opts: &RunOptions) -> Result<RunOutcome, String> {
    let scenario = Scenario::load(&opts.scenario)?;
    let exprs: Vec<Expr> = scenario
        .fail_on
        .iter()
        .chain(&opts.fail_on)
        .map(|e| failon::parse(e))
        .collect::<Result<_, _>>()?;
    let target = opts
        .target
        .clone()
        .or(scenario.target.clone())
        .ok_or("no target: set `target` in the scenario or pass --target URL")?;
    let dir = opts.scenario.parent().unwrap_or(Path::new("."));
    let classes = Arc::new(scenario.resolve_classes(dir)?);
    let limits = Limits {
        max_requests: Some(
            opts.max_requests
                .or(scenario.limits.max_requests)
                .unwrap_or(DEFAULT_MAX_REQUESTS),
        ),
        max_duration: Some(
            opts.max_duration
                .or(scenario.limits.max_duration)
                .unwrap_or(scenario.schedule_duration() + scenario.timeout),
        ),
        max_in_flight: Some(
            scenario
                .limits
                .max_in_flight
                .unwrap_or(DEFAULT_MAX_IN_FLIGHT),
        ),
    };
    let (max_requests, max_duration) = (
        limits.max_requests.unwrap_or(DEFAULT_MAX_REQUESTS),
        limits.max_duration.unwrap_or(0.0),
    );
    if max_requests == 0 || max_duration.is_nan() || max_duration <= 0.0 {
        return Err("--max-requests and --max-duration must be positive".into());
    }
    let name = scenario.name.clone().unwrap_or_else(|| {
        opts.scenario
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or("scenario")
            .to_string()
    });
    let started_unix = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64());
    let out_dir = match &opts.out {
        Some(d) => d.clone(),
        None => {
            // Like cargo's target/: results are not for version control.
            let root = PathBuf::from("loadtest-results");
            let _ = std::fs::create_dir_all(&root);
            let _ = std::fs::write(root.join(".gitignore"), "*\n");
            root.join(format!("{name}-{}", started_unix as u64))
        }
    };
    let target = Arc::new(Target::new(
        &target,
        Duration::from_secs_f64(scenario.timeout),
    )?);
    let profile = scenario.profile();
    let mut planner = Planner::new(classes.clone(), scenario.seed);
    let plan = profile
        .as_ref()
        .map(|p| planner.plan(&p.arrivals(scenario.seed, max_requests)));
    let planned = plan.as_ref().map_or(0, Vec::len);

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let (records, metrics, wall_s, interrupted) = rt.block_on(async {
        let start = Instant::now();
        let live = Arc::new(Live::default());
        let (interrupt_tx, interrupt) = watch::channel(false);
        let ctrl_c = tokio::spawn(async move {
            if tokio::signal::ctrl_c().await.is_ok() {
                eprintln!("\ninterrupted: cancelling running requests, writing the report");
                let _ = interrupt_tx.send(true);
            }
        });
        let ctx = Arc::new(Ctx {
            target: target.clone(),
            classes: classes.clone(),
            phase_names: profile
                .as_ref()
                .map(|p| p.phases.iter().map(|p| p.name.clone()).collect())
                .unwrap_or_default(),
            start,
            hard_deadline: start + Duration::from_secs_f64(max_duration),
            max_in_flight: limits.max_in_flight.unwrap_or(DEFAULT_MAX_IN_FLIGHT),
            live: live.clone(),
            interrupt: interrupt.clone(),
        });
        let (stop_tx, stop_rx) = watch::channel(false);
        let scraper = tokio::spawn(crate::scrape::scrape_loop(
            target.clone(),
            start,
            Duration::from_secs(1),
            stop_rx.clone(),
        ));
        let progress = tokio::spawn(crate::progress::show(
            live.clone(),
            if plan.is_some() {
                planned
            } else {
                max_requests
            },
            start,
            opts.quiet,
            stop_rx,
        ));
        let records = match (&scenario.schedule, plan) {
            (
                ScheduleSpec::Closed {
                    users,
                    duration,
                    think_time,
                },
                _,
            ) => run_closed(ctx, planner, *users, *duration, *think_time, max_requests).await,
            (_, Some(plan)) => run_open(ctx, plan).await,
            (_, None) => Vec::new(),
        };
        let wall_s = start.elapsed().as_secs_f64();
        let _ = stop_tx.send(true);
        let metrics = scraper.await.unwrap_or_default();
        let _ = progress.await;
        let interrupted = *interrupt.borrow();
        ctrl_c.abort();
        (records, metrics, wall_s, interrupted)
    });

    // Rates are per second of sending: the schedule, cut short by max_duration or Ctrl-C.
    let sending_end = scenario.schedule_duration().min(max_duration).min(wall_s);
    let window = sending_end;
    let slo_of = |r: &Record| {
        classes
            .iter()
            .find(|c| c.name == r.class)
            .map_or(scenario.slo, |c| c.slo)
    };
    let totals = Group::build("total", window, &records, slo_of);
    let class_groups = classes
        .iter()
        .map(|c| {
            Group::build(
                &c.name,
                window,
                records.iter().filter(|r| r.class == c.name),
                slo_of,
            )
        })
        .collect();
    let phase_groups = match &profile {
        Some(p) => p
            .phases
            .iter()
            .map(|ph| {
                let w = ph.duration.min((sending_end - ph.start).max(0.0));
                Group::build(
                    &ph.name,
                    w,
                    records.iter().filter(|r| r.phase == ph.name),
                    slo_of,
                )
            })
            .collect(),
        None => vec![Group::build("closed", window, &records, slo_of)],
    };
    let (kind, users) = match &scenario.schedule {
        ScheduleSpec::Constant { .. } => ("constant", None),
        ScheduleSpec::Poisson { .. } => ("poisson", None),
        ScheduleSpec::Steps { .. } => ("steps", None),
        ScheduleSpec::Spike { .. } => ("spike", None),
        ScheduleSpec::Closed { users, .. } => ("closed", Some(*users)),
    };
    let span = records.iter().map(|r| r.done).fold(window, f64::max);
    let mut report = Report {
        name,
        target: target.base.clone(),
        started_unix,
        wall_s,
        interrupted,
        schedule: ScheduleInfo {
            kind: kind.into(),
            duration_s: scenario.schedule_duration(),
            expected_requests: profile.as_ref().map(|p| p.expected_requests()),
            spacing: profile.as_ref().map(|p| p.spacing),
            phases: profile
                .as_ref()
                .map(|p| p.phases.clone())
                .unwrap_or_default(),
            users,
        },
        limits,
        seed: scenario.seed,
        slo: scenario.slo,
        planned: if profile.is_some() {
            planned
        } else {
            totals.arrivals
        },
        not_sent: if profile.is_some() {
            planned.saturating_sub(totals.arrivals)
        } else {
            0
        },
        timeline: timeline(&records, bucket_width(span), profile.as_ref()),
        server: ServerSummary::of(&metrics),
        metrics,
        totals,
        classes: class_groups,
        phases: phase_groups,
        checks: Vec::new(),
    };
    let mut failures = Vec::new();
    for e in &exprs {
        let (check, msg) = failon::evaluate(e, &report);
        report.checks.push(check);
        failures.extend(msg);
    }
    report.write(&out_dir, &records)?;
    crate::plot::write_svg(&report, &out_dir.join("plot.svg"))?;
    if !opts.quiet {
        print!("{}", crate::table::render(&report));
        println!("report: {}", out_dir.display());
    }
    Ok(RunOutcome {
        report,
        out_dir,
        failures,
    })
}
