//! Config unit tests: the documented example parses, bad values name their key.

use super::*;

/// The example in the README parses and means what it says.
#[test]
fn readme_example_parses() {
    let readme = include_str!("../../../docs/gateway.md");
    let start = readme
        .find("```toml\n")
        .expect("a toml block in the README")
        + 8;
    let end = start + readme[start..].find("```").unwrap();
    let cfg = GatewayConfig::from_toml_str(&readme[start..end]).unwrap();
    assert_eq!(cfg.keys.len(), 1);
    assert_eq!(cfg.pool("smollm2-135m-instruct", &[]).max_workers, 2);
    assert_eq!(cfg.drain_grace, Duration::from_secs(30));
    assert_eq!(cfg.cpu_budget, 16.0);
    // `[models.X]` inherits the autoscaling keys from `[defaults]`.
    let m = cfg.pool("smollm2-135m-instruct", &[]);
    assert_eq!(m.panic_window, Duration::from_secs(6));
    assert_eq!(m.target_utilization, 0.7);
}

/// The gateway config of the README's spike run parses.
#[test]
fn spike_run_config_parses() {
    let text = include_str!("../../../loadtest/configs/surge-spike-gateway.toml");
    let cfg = GatewayConfig::from_toml_str(text).unwrap();
    assert_eq!(cfg.pool("smollm2-135m-instruct", &[]).max_workers, 2);
}

#[test]
fn empty_file_is_the_defaults() {
    let c = GatewayConfig::from_toml_str("").unwrap();
    let d = GatewayConfig::default();
    assert_eq!(c.listen, d.listen);
    assert_eq!(c.defaults, d.defaults);
    assert!(c.models.is_empty() && c.keys.is_empty());
    assert_eq!(c.drain_grace, d.drain_grace);
}

#[test]
fn full_file() {
    let c = GatewayConfig::from_toml_str(
        r#"
listen = "0.0.0.0:9000"
home = "/var/cache/surge"
pull_defaults = false
max_body_bytes = 1000
max_audio_bytes = 2000
drain_grace = 2.5

[defaults]
max_workers = 4
idle_timeout = 30
device = "cpu"

[models.smollm2]
max_workers = 8
worker_args = ["--max-num-seqs", "32"]

[[keys]]
key = "sk-one"
name = "team-a"
requests_per_second = 5

[[keys]]
key = "sk-two"
"#,
    )
    .unwrap();
    assert_eq!(c.listen, "0.0.0.0:9000".parse().unwrap());
    assert_eq!(
        c.home.as_deref(),
        Some(std::path::Path::new("/var/cache/surge"))
    );
    assert!(!c.pull_defaults);
    assert_eq!((c.max_body_bytes, c.max_audio_bytes), (1000, 2000));
    assert_eq!(c.drain_grace, Duration::from_millis(2500));
    assert_eq!(c.defaults.max_workers, 4);
    assert_eq!(c.defaults.idle_timeout, Duration::from_secs(30));
    assert_eq!(c.defaults.concurrency, PoolConfig::default().concurrency);
    // A model entry inherits what it does not set from [defaults].
    let m = c.pool("smollm2-135m-instruct", &["smollm2".into()]);
    assert_eq!(m.max_workers, 8);
    assert_eq!(m.idle_timeout, Duration::from_secs(30));
    assert_eq!(m.device, "cpu");
    assert_eq!(m.worker_args.args(), ["--max-num-seqs", "32"]);
    assert_eq!(m.worker_args.options().max_num_seqs, 32);
    assert_eq!(c.pool("other", &[]), c.defaults);
    assert_eq!(c.keys.len(), 2);
    assert_eq!(c.keys[0].name.as_deref(), Some("team-a"));
    assert_eq!(c.keys[0].requests_per_second, Some(5));
    assert_eq!(c.keys[1].name, None);
}

#[test]
fn unknown_keys_are_named() {
    for (text, key) in [
        ("lisen = \"1.2.3.4:5\"", "lisen"),
        ("[defaults]\nmax_worker = 3", "max_worker"),
        ("[models.x]\nconcurency = 3", "concurency"),
        ("[[keys]]\nkey = \"k\"\nrps = 3", "rps"),
    ] {
        let e = GatewayConfig::from_toml_str(text).unwrap_err();
        assert!(e.contains(key), "{text:?} -> {e}");
    }
}

/// `worker_args` are parsed when the config is read: a typo is clap's error at start
/// (not a crash loop of workers), and flags the gateway sets are refused.
#[test]
fn worker_args_are_checked_when_the_config_is_read() {
    let e = GatewayConfig::from_toml_str("[defaults]\nworker_args = [\"--max-num-seq\", \"32\"]")
        .unwrap_err();
    assert!(e.contains("unexpected argument '--max-num-seq'"), "{e}");
    assert!(e.contains("'--max-num-seqs'"), "{e}");
    assert!(!e.contains("Usage"), "{e}");
    let e = GatewayConfig::from_toml_str("[models.m]\nworker_args = [\"--kv-cache-mb\", \"lots\"]")
        .unwrap_err();
    assert!(e.contains("[models.m]") && e.contains("lots"), "{e}");
    for flag in [
        "--device",
        "--listen=unix:/x",
        "--model",
        "--home",
        "--exit-with-parent",
    ] {
        let text = format!("[defaults]\nworker_args = [\"{flag}\", \"x\"]");
        let e = GatewayConfig::from_toml_str(&text).unwrap_err();
        assert!(e.contains("set by the gateway"), "{flag}: {e}");
    }
    // --threads beyond what the worker is charged would make the CPU budget fiction.
    let e = GatewayConfig::from_toml_str(
        "[defaults]\nworker_cores = 1.5\nworker_args = [\"--threads\", \"3\"]",
    )
    .unwrap_err();
    assert!(e.contains("worker_cores"), "{e}");
    let c = GatewayConfig::from_toml_str(
        "[defaults]\nworker_cores = 1.5\nworker_args = [\"--threads\", \"2\", \"--max-batch\", \"4\"]",
    )
    .unwrap();
    let o = c.defaults.worker_args.options();
    assert_eq!((o.threads, o.max_batch, o.max_num_seqs), (Some(2), 4, 16));
    assert_eq!(c.defaults.worker_args.cpu_threads(), 2);
}

/// `default_worker_cores` fills an unset `worker_cores` only (the share itself is
/// `sizing::cpu_shares`).
#[test]
fn a_default_share_does_not_override_worker_cores() {
    let mut p = GatewayConfig::default().pool("m", &[]);
    p.default_worker_cores(4.0);
    assert_eq!((p.cpu_threads(), p.worker_args.cpu_threads()), (4, 4));
    let mut p = GatewayConfig::from_toml_str("[models.m]\nworker_cores = 1")
        .unwrap()
        .pool("m", &[]);
    p.default_worker_cores(4.0);
    assert_eq!(p.cpu_threads(), 1, "a configured worker_cores stays");
}

/// `cpu_memory_budget` takes bytes or a size string; bad ones name the key.
#[test]
fn cpu_memory_budget_takes_sizes() {
    let parse = |t: &str| GatewayConfig::from_toml_str(t).map(|c| c.cpu_memory_budget);
    assert_eq!(parse("cpu_memory_budget = 1000"), Ok(1000.0));
    assert_eq!(
        parse("cpu_memory_budget = \"16GiB\""),
        Ok((16u64 << 30) as f64)
    );
    assert_eq!(parse("cpu_memory_budget = \"1.5 GB\""), Ok(1.5e9));
    assert_eq!(
        parse("cpu_memory_budget = \"512M\""),
        Ok((512u64 << 20) as f64)
    );
    if let Some(total) = crate::serve::sizing::mem_total() {
        assert_eq!(parse("cpu_memory_budget = \"50%\""), Ok((total / 2) as f64));
        let d = GatewayConfig::default().cpu_memory_budget;
        assert_eq!(d, (total as f64 * 0.9).floor(), "default: 90% of MemTotal");
    }
    for bad in ["0", "-5", "\"lots\"", "\"12 parsecs\"", "\"150%\"", "true"] {
        let e = parse(&format!("cpu_memory_budget = {bad}")).unwrap_err();
        assert!(e.contains("cpu_memory_budget"), "{bad}: {e}");
    }
}

#[test]
fn cpu_threads_are_worker_cores_rounded_up() {
    for (cores, threads) in [(0.0, 1), (0.5, 1), (1.0, 1), (1.01, 2), (2.0, 2), (3.5, 4)] {
        let c =
            GatewayConfig::from_toml_str(&format!("[models.m]\nworker_cores = {cores:?}")).unwrap();
        let p = c.pool("m", &[]);
        assert_eq!(
            (p.cpu_threads(), p.worker_args.cpu_threads()),
            (threads, threads),
            "{cores}"
        );
    }
    assert_eq!(
        GatewayConfig::default()
            .pool("x", &[])
            .worker_args
            .cpu_threads(),
        1
    );
}

/// A CPU-only build refuses an explicit CUDA device at start, naming the feature.
#[test]
fn cuda_devices_need_a_cuda_build() {
    for device in ["cuda", "cuda:0", "cuda:3"] {
        let c = GatewayConfig::from_toml_str("")
            .map(|mut c| {
                c.models.insert(
                    "m".into(),
                    PoolConfig {
                        device: device.into(),
                        ..PoolConfig::default()
                    },
                );
                c
            })
            .unwrap();
        let e = c.validate_for(false).unwrap_err();
        assert!(
            e.contains("[models.m]") && e.contains("`cuda` feature"),
            "{e}"
        );
        assert!(c.validate_for(true).is_ok(), "{device}");
    }
    for device in ["gpu", "cuda:x", "cuda0", ""] {
        let mut c = GatewayConfig::default();
        c.defaults.device = device.into();
        assert!(c.validate_for(true).is_err(), "{device:?}");
    }
    let mut c = GatewayConfig::default();
    c.defaults.device = "cpu".into();
    assert!(c.validate_for(false).is_ok());
    if !surge_runtime::CUDA {
        assert!(GatewayConfig::from_toml_str("[defaults]\ndevice = \"cuda:0\"").is_err());
    }
}

#[test]
fn bad_values_are_errors() {
    for text in [
        "listen = \"nope\"",
        "drain_grace = -1",
        "sse_heartbeat = 0",
        "cpu_budget = 0",
        "cpu_memory_budget = \"0GiB\"",
        "[defaults]\nevict_idle_after = -1",
        "[defaults]\ntarget_utilization = 0",
        "[defaults]\nstable_window = 1\npanic_window = 2",
        "[defaults]\nscale_down_step = 0",
        "[defaults]\nidle_timeout = -3",
        "[defaults]\nmax_workers = 0",
        "[models.m]\nmin_workers = 3\nmax_workers = 2",
        "[defaults]\nmax_workers = \"many\"",
        "[[keys]]\nkey = \"\"",
        "[[keys]]\nkey = \"k\"\nbudget_usd = -1\nbudget_period = \"day\"",
        "[[keys]]\nkey = \"k\"\nbudget_usd = 5",
        "[[keys]]\nkey = \"k\"\nbudget_usd = 5\nbudget_period = \"week\"",
        "[billing]\nbill = \"vibes\"",
        "[billing]\nprice_version = \"\"",
        "[billing]\ncurrency = \"EUR\"",
        "[[billing.prices]]\nexecution_second = -0.1",
        "[usage_export]\nfile = \"a\"\nurl = \"http://127.0.0.1:1/\"",
        "[usage_export]\ninterval = 1",
        "otlp_sampling_ratio = 1.5",
    ] {
        assert!(GatewayConfig::from_toml_str(text).is_err(), "{text:?}");
    }
}

#[test]
fn billing_budgets_and_export_parse() {
    let c = GatewayConfig::from_toml_str(
        r#"
metering = true
[billing]
price_version = "2026-12"
bill = "both"
[[billing.prices]]
model = "smollm2-135m-instruct"
device = "cuda"
execution_second = 0.0004
[[billing.prices]]
completion_per_1k = 0.5
reserved_worker_hour = 0.2

[[keys]]
key = "k"
budget_usd = 25
budget_period = "month"
admin = true

[usage_export]
url = "http://127.0.0.1:8888/api/v1/events"
"#,
    )
    .unwrap();
    use crate::metering::prices::BillFor;
    assert_eq!(c.billing.bill, BillFor::Both);
    assert_eq!(c.billing.prices.len(), 2);
    let gpu = c.billing.price("smollm2-135m-instruct", "cuda:1").unwrap();
    assert_eq!(gpu.execution_second, 0.0004);
    assert_eq!(
        c.billing.price("other", "cpu").unwrap().completion_per_1k,
        0.5
    );
    assert_eq!(c.keys[0].budget_usd, Some(25.0));
    assert!(c.keys[0].admin);
    let e = c.usage_export.unwrap();
    assert_eq!(e.source, "surge");
    assert_eq!(e.interval, std::time::Duration::from_secs(1));
    // No [billing]: the illustrative default prices, billed by execution.
    let d = GatewayConfig::from_toml_str("").unwrap();
    assert_eq!(d.billing.bill, BillFor::Execution);
    assert!(d.metering);
}

#[test]
fn trace_settings_parse() {
    let c = GatewayConfig::from_toml_str(
        "otlp_endpoint = \"http://127.0.0.1:4318\"\notlp_sampling_ratio = 0.25",
    )
    .unwrap();
    assert_eq!(c.otlp_endpoint.as_deref(), Some("http://127.0.0.1:4318"));
    assert_eq!(c.otlp_sampling_ratio, 0.25);
    let d = GatewayConfig::default();
    assert_eq!((d.otlp_endpoint, d.otlp_sampling_ratio), (None, 1.0));
}
