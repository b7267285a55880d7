//! The report on a hand-made ledger: overlapping workers, a scale-to-zero gap, a worker
//! running past the window, and the three prices of it all.

use rusqlite::params;

use super::*;
use crate::metering::ledger;
use crate::metering::prices::Price;

const S: i64 = 1000;
/// 2026-12-05T00:00:00Z: the window is its first hour.
const T0: i64 = 1_796_428_800_000;
const UNTIL: i64 = T0 + 3600 * S;

fn span(conn: &Connection, worker: &str, model: &str, device: &str, phases: &[(&str, i64, i64)]) {
    for (phase, start, end) in phases {
        conn.execute(
            "INSERT INTO worker_spans VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![worker, model, device, phase, T0 + start * S, T0 + end * S],
        )
        .unwrap();
    }
}

fn request(
    conn: &Connection,
    id: &str,
    at_s: i64,
    tenant: &str,
    model: &str,
    device: &str,
    cost: f64,
) {
    conn.execute(
        "INSERT INTO usage (request_id, time_ms, tenant, key_id, model, route, status,
         finish_reason, prompt_tokens, completion_tokens, audio_seconds, queue_seconds,
         cold_start_seconds, execution_seconds, cost_usd, price_version, device)
         VALUES (?1, ?2, ?3, NULL, ?4, 'chat_completions', 200, 'stop', 10, 5, 0.0, 2.0, 1.5,
         3.0, ?5, 'v2', ?6)",
        params![id, T0 + at_s * S, tenant, model, cost, device],
    )
    .unwrap();
}

fn prices(conn: &Connection, version: &str, first_used_s: i64, billing: &Billing) {
    conn.execute(
        "INSERT INTO prices VALUES (?1, ?2, ?3)",
        params![
            version,
            serde_json::to_string(billing).unwrap(),
            T0 + first_used_s * S
        ],
    )
    .unwrap();
}

/// Model `m` on the CPU: w1 and w2 overlap (peak 2), nothing runs from 1800 s to 2400 s,
/// w3 runs past the window's end; w0 ran before it. Model `g` on `cuda:0`: one worker
/// for the second half hour.
fn fixture() -> (tempfile::TempDir, Connection) {
    let dir = tempfile::tempdir().unwrap();
    let conn = ledger::open(&dir.path().join("ledger.db")).unwrap();
    let (m, g) = ("m", "g");
    span(&conn, "w0", m, "cpu", &[("busy", -1000, -100)]);
    let w1 = [
        ("starting", 0, 60),
        ("busy", 60, 660),
        ("idle", 660, 1260),
        ("draining", 1260, 1320),
    ];
    span(&conn, "w1", m, "cpu", &w1);
    span(
        &conn,
        "w2",
        m,
        "cpu",
        &[
            ("starting", 600, 630),
            ("busy", 630, 900),
            ("idle", 900, 1800),
        ],
    );
    span(
        &conn,
        "w3",
        m,
        "cpu",
        &[
            ("starting", 2400, 2410),
            ("busy", 2410, 3000),
            ("idle", 3000, 4200),
        ],
    );
    span(&conn, "w4", g, "cuda:0", &[("busy", 1800, 3600)]);
    request(&conn, "old", -500, "a", m, "cpu", 0.25);
    request(&conn, "r1", 100, "a", m, "cpu", 0.01);
    request(&conn, "r2", 700, "a", m, "cpu", 0.01);
    request(&conn, "r3", 800, "b", m, "cpu", 0.03);
    request(&conn, "r4", 2000, "b", g, "cuda:0", 0.5);
    // The older price list is not the one used.
    let old = Billing {
        price_version: "v1".into(),
        prices: vec![Price {
            reserved_worker_hour: 100.0,
            ..Price::default()
        }],
        ..Billing::default()
    };
    prices(&conn, "v1", -86_400, &old);
    let current = Billing {
        price_version: "v2".into(),
        prices: vec![
            Price {
                model: Some(g.into()),
                device: Some("cuda".into()),
                reserved_worker_hour: 3.6,
                ..Price::default()
            },
            Price {
                reserved_worker_hour: 0.36,
                ..Price::default()
            },
        ],
        ..Billing::default()
    };
    prices(&conn, "v2", 0, &current);
    (dir, conn)
}

fn close(a: f64, b: f64) {
    assert!((a - b).abs() < 1e-9, "{a} != {b}");
}

#[test]
fn capacity_is_clipped_to_the_window() {
    let (_dir, conn) = fixture();
    let r = report(&conn, Some(T0), UNTIL).unwrap();
    assert_eq!(
        (r.since.as_str(), r.until.as_str()),
        ("2026-12-05T00:00:00Z", "2026-12-05T01:00:00Z")
    );
    close(r.window_seconds, 3600.0);
    assert_eq!(r.capacity.len(), 2);
    let g = &r.capacity[0];
    assert_eq!((g.model.as_str(), g.device.as_str()), ("g", "cuda:0"));
    close(g.busy_seconds, 1800.0);
    assert_eq!(g.peak_workers, 1);
    close(g.zero_worker_seconds, 1800.0);
    let m = &r.capacity[1];
    assert_eq!((m.model.as_str(), m.device.as_str()), ("m", "cpu"));
    close(m.starting_seconds, 100.0);
    close(m.busy_seconds, 1460.0);
    close(m.idle_seconds, 2100.0);
    close(m.draining_seconds, 60.0);
    close(m.worker_seconds, 3720.0);
    assert_eq!(m.peak_workers, 2);
    close(m.zero_worker_seconds, 600.0);
}

#[test]
fn usage_is_per_tenant_and_model_in_the_window() {
    let (_dir, conn) = fixture();
    let r = report(&conn, Some(T0), UNTIL).unwrap();
    let rows: Vec<(&str, &str, i64)> = r
        .usage
        .iter()
        .map(|u| (u.tenant.as_str(), u.model.as_str(), u.requests))
        .collect();
    assert_eq!(rows, [("a", "m", 2), ("b", "g", 1), ("b", "m", 1)]);
    let a = &r.usage[0];
    assert_eq!((a.prompt_tokens, a.completion_tokens), (20, 10));
    close(a.execution_seconds, 6.0);
    close(a.queue_seconds, 4.0);
    close(a.cold_start_seconds, 3.0);
    close(a.cost_usd, 0.02);
}

#[test]
fn the_three_costs_use_the_latest_price_list() {
    let (_dir, conn) = fixture();
    let r = report(&conn, Some(T0), UNTIL).unwrap();
    assert_eq!(r.price_version.as_deref(), Some("v2"));
    assert!(r.notes.is_empty(), "{:?}", r.notes);
    let [g, m] = &r.comparison.rows[..] else {
        panic!("{:?}", r.comparison.rows)
    };
    assert_eq!((m.model.as_str(), g.model.as_str()), ("m", "g"));
    close(m.reserved_worker_hour, 0.36);
    close(m.costs.pay_per_execution_usd, 0.05);
    // 3720 worker-seconds at $0.0001 a second.
    close(m.costs.worker_capacity_usd, 0.372);
    // Two workers, one hour, $0.36 an hour each.
    close(m.costs.reserved_peak_usd, 0.72);
    close(m.costs.reserved_peak_usd_per_day, 17.28);
    close(m.costs.idle_worker_seconds, 2100.0);
    close(g.reserved_worker_hour, 3.6);
    close(g.costs.pay_per_execution_usd, 0.5);
    close(g.costs.worker_capacity_usd, 1.8);
    close(g.costs.reserved_peak_usd, 3.6);
    close(g.costs.reserved_peak_usd_per_day, 86.4);
    let t = &r.comparison.total;
    close(t.pay_per_execution_usd, 0.55);
    close(t.worker_capacity_usd, 2.172);
    close(t.reserved_peak_usd, 4.32);
    close(t.reserved_peak_usd_per_day, 103.68);
    close(t.idle_worker_seconds, 2100.0);
}

#[test]
fn the_window_defaults_to_the_earliest_record() {
    let (_dir, conn) = fixture();
    let r = report(&conn, None, UNTIL).unwrap();
    assert_eq!(r.since_ms, T0 - 1000 * S, "w0's start");
    assert_eq!(r.usage[0].requests, 3, "the old request is in");
    let m = &r.capacity[1];
    assert_eq!(m.peak_workers, 2);
    // Before w0, between w0 and w1, and the gap.
    close(m.zero_worker_seconds, 100.0 + 600.0);
    close(m.busy_seconds, 1460.0 + 900.0);
}

#[test]
fn without_a_price_list_reserved_costs_are_zero_and_noted() {
    let dir = tempfile::tempdir().unwrap();
    let conn = ledger::open(&dir.path().join("ledger.db")).unwrap();
    let r = report(&conn, None, UNTIL).unwrap();
    assert_eq!((r.since_ms, r.window_seconds), (UNTIL, 0.0));
    assert!(r.usage.is_empty() && r.capacity.is_empty() && r.comparison.rows.is_empty());
    assert_eq!(r.notes.len(), 2, "{:?}", r.notes);

    span(&conn, "w", "m", "cpu", &[("busy", 0, 3600)]);
    request(&conn, "r", 10, "acme, \"eu\"", "m", "cpu", 0.2);
    let r = report(&conn, Some(T0), UNTIL).unwrap();
    assert_eq!(r.price_version, None);
    assert!(r.notes[0].contains("No price list"), "{:?}", r.notes);
    let c = &r.comparison.total;
    close(c.pay_per_execution_usd, 0.2);
    close(
        c.worker_capacity_usd + c.reserved_peak_usd + c.reserved_peak_usd_per_day,
        0.0,
    );

    // The CSV: one header, six fields a line, the odd tenant quoted.
    let csv = render_csv(&r);
    assert!(csv.starts_with("section,tenant,model,device,metric,value\n"));
    assert!(
        csv.contains("usage,\"acme, \"\"eu\"\"\",m,,requests,1\n"),
        "{csv}"
    );
    assert!(
        csv.contains("total,,,,pay_per_execution_usd,0.2\n"),
        "{csv}"
    );
    assert!(csv.contains("capacity,,m,cpu,peak_workers,1\n"), "{csv}");
    for line in csv.lines().filter(|l| !l.contains('"')) {
        assert_eq!(line.split(',').count(), 6, "{line}");
    }
}

#[test]
fn a_replacement_worker_is_not_a_second_one() {
    assert_eq!(sweep(&[(0, 10), (10, 20)], 0, 30), (1, 10));
    assert_eq!(sweep(&[(5, 10), (0, 20), (8, 12)], 0, 20), (3, 0));
    assert_eq!(sweep(&[], 0, 30), (0, 30));
}

#[test]
fn the_text_report_has_every_table() {
    let (_dir, conn) = fixture();
    let text = render_text(&report(&conn, Some(T0), UNTIL).unwrap());
    for want in [
        "price list 'v2'",
        "Usage (pay-per-execution",
        "Capacity",
        "Serverless vs reserved",
        "RESERVED_PEAK/DAY",
        "17.280000",
        "103.680000",
    ] {
        assert!(text.contains(want), "{want}:\n{text}");
    }
    // Every line of a table is as wide as its header or narrower (numbers right-aligned).
    let capacity: Vec<&str> = text
        .lines()
        .skip_while(|l| !l.starts_with("MODEL  DEVICE  STARTING"))
        .take(3)
        .collect();
    assert_eq!(capacity.len(), 3, "{text}");
    assert!(
        capacity.iter().all(|l| l.len() == capacity[0].len()),
        "{capacity:#?}"
    );
}
