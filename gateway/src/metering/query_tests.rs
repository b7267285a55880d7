//! `/v1/usage` against a real ledger: who sees what, each grouping, each date form and
//! every refusal.

use rusqlite::params;

use super::*;
use crate::metering::ledger;

const HOUR: i64 = 3_600_000;
const DAY: i64 = 24 * HOUR;
/// 2026-12-05T00:00:00Z.
const DEC5: i64 = 1_796_428_800_000;
const NOW: i64 = DEC5 + 2 * DAY;

#[allow(clippy::too_many_arguments)]
fn put(
    conn: &Connection,
    id: &str,
    time_ms: i64,
    tenant: &str,
    key: Option<&str>,
    model: &str,
    tokens: (i64, i64),
    cost: f64,
) {
    conn.execute(
        "INSERT INTO usage (request_id, time_ms, tenant, key_id, model, route, status,
         finish_reason, prompt_tokens, completion_tokens, audio_seconds, queue_seconds,
         cold_start_seconds, execution_seconds, cost_usd, price_version, device)
         VALUES (?1, ?2, ?3, ?4, ?5, 'chat_completions', 200, 'stop', ?6, ?7, 0.5, 0.25, 0.0,
         1.0, ?8, 'v1', 'cpu')",
        params![id, time_ms, tenant, key, model, tokens.0, tokens.1, cost],
    )
    .unwrap();
}

/// Tenant `a`: four requests over two days (one without a key) and one 40 days old;
/// tenant `b`: one big request.
fn fixture() -> (tempfile::TempDir, Connection) {
    let dir = tempfile::tempdir().unwrap();
    let conn = ledger::open(&dir.path().join("ledger.db")).unwrap();
    put(
        &conn,
        "a0",
        DEC5 - 40 * DAY,
        "a",
        Some("ka"),
        "m1",
        (7, 7),
        0.16,
    );
    put(
        &conn,
        "a1",
        DEC5 + HOUR,
        "a",
        Some("ka"),
        "m1",
        (10, 20),
        0.01,
    );
    put(
        &conn,
        "a2",
        DEC5 + 2 * HOUR,
        "a",
        Some("ka"),
        "m2",
        (5, 5),
        0.02,
    );
    put(
        &conn,
        "a3",
        DEC5 + DAY + HOUR,
        "a",
        Some("kb"),
        "m1",
        (1, 2),
        0.04,
    );
    put(
        &conn,
        "a4",
        DEC5 + DAY + 2 * HOUR,
        "a",
        None,
        "m1",
        (100, 0),
        0.08,
    );
    put(
        &conn,
        "b1",
        DEC5 + 3 * HOUR,
        "b",
        Some("kz"),
        "m1",
        (1000, 1000),
        1.0,
    );
    (dir, conn)
}

fn key(tenant: &str) -> Caller {
    Caller {
        tenant: Some(tenant.into()),
        admin: false,
    }
}

fn admin(tenant: &str) -> Caller {
    Caller {
        tenant: Some(tenant.into()),
        admin: true,
    }
}

fn open_gateway() -> Caller {
    Caller {
        tenant: None,
        admin: false,
    }
}

fn ask(conn: &Connection, caller: &Caller, query: &str) -> Result<Value, ApiError> {
    answer(conn, caller, Some(query), NOW)
}

/// The data rows' `field`s, and their request counts.
fn column(v: &Value, field: &str) -> Vec<Value> {
    v["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r[field].clone())
        .collect()
}

fn requests(v: &Value) -> Vec<i64> {
    column(v, "requests")
        .iter()
        .map(|r| r.as_i64().unwrap())
        .collect()
}

fn close(a: &Value, b: f64) {
    let a = a.as_f64().unwrap();
    assert!((a - b).abs() < 1e-9, "{a} != {b}");
}

#[test]
fn a_tenant_sees_its_own_rows_only() {
    let (_dir, conn) = fixture();
    for q in ["", "tenant=a"] {
        let v = ask(&conn, &key("a"), q).unwrap();
        assert_eq!(v["object"], "usage");
        assert_eq!(v["tenant"], "a");
        assert_eq!(v["start"], (NOW - DEFAULT_WINDOW_MS) / 1000);
        assert_eq!(v["end"], NOW / 1000);
        assert_eq!(v["group_by"], json!([]));
        assert_eq!(
            requests(&v),
            [4],
            "b's request and the old one are not counted"
        );
        let row = &v["data"][0];
        assert_eq!(row["prompt_tokens"], 116);
        assert_eq!(row["completion_tokens"], 27);
        close(&row["audio_seconds"], 2.0);
        close(&row["execution_seconds"], 4.0);
        close(&row["queue_seconds"], 1.0);
        close(&row["cost_usd"], 0.15);
    }
    let by_model = ask(&conn, &key("a"), "group_by=model").unwrap();
    assert_eq!(
        requests(&by_model),
        [3, 1],
        "b's m1 request is not in a's m1 row"
    );
    // A tenant with nothing in the window still gets its one total row, of zeros.
    let none = ask(&conn, &key("c"), "").unwrap();
    assert_eq!(requests(&none), [0]);
    close(&none["data"][0]["cost_usd"], 0.0);
}

#[test]
fn another_tenant_is_forbidden_except_to_admins_and_open_gateways() {
    let (_dir, conn) = fixture();
    let e = ask(&conn, &key("a"), "tenant=b").unwrap_err();
    assert_eq!((e.status(), e.code()), (403, "forbidden"));

    let b = ask(&conn, &admin("a"), "tenant=b").unwrap();
    assert_eq!((b["tenant"].clone(), requests(&b)), (json!("b"), vec![1]));
    assert_eq!(b["data"][0]["prompt_tokens"], 1000);
    let all = ask(&conn, &admin("a"), "").unwrap();
    assert_eq!(
        (all["tenant"].clone(), requests(&all)),
        (Value::Null, vec![5])
    );

    let all = ask(&conn, &open_gateway(), "").unwrap();
    assert_eq!(
        (all["tenant"].clone(), requests(&all)),
        (Value::Null, vec![5])
    );
    let b = ask(&conn, &open_gateway(), "tenant=b").unwrap();
    assert_eq!(requests(&b), [1]);
}

#[test]
fn each_grouping_and_their_combinations() {
    let (_dir, conn) = fixture();
    let a = key("a");
    let v = ask(&conn, &a, "group_by=model").unwrap();
    assert_eq!(column(&v, "model"), [json!("m1"), json!("m2")]);
    assert_eq!(v["group_by"], json!(["model"]));
    close(&v["data"][0]["cost_usd"], 0.13);

    let v = ask(&conn, &a, "group_by=day").unwrap();
    assert_eq!(
        column(&v, "day"),
        [json!("2026-12-05"), json!("2026-12-06")]
    );
    assert_eq!(requests(&v), [2, 2]);

    let v = ask(&conn, &a, "group_by=key").unwrap();
    assert_eq!(
        column(&v, "key_id"),
        [Value::Null, json!("ka"), json!("kb")]
    );
    assert_eq!(requests(&v), [1, 2, 1]);
    assert_eq!(v["group_by"], json!(["key"]));

    for q in [
        "group_by=day,model",
        "group_by=day%2Cmodel",
        "group_by=day&group_by=model",
        "group_by=day,+model,day",
    ] {
        let v = ask(&conn, &a, q).unwrap();
        assert_eq!(v["group_by"], json!(["day", "model"]), "{q}");
        assert_eq!(
            column(&v, "day"),
            [
                json!("2026-12-05"),
                json!("2026-12-05"),
                json!("2026-12-06")
            ]
        );
        assert_eq!(column(&v, "model"), [json!("m1"), json!("m2"), json!("m1")]);
        assert_eq!(requests(&v), [1, 1, 2]);
    }
    // Grouped, an empty window has no rows at all.
    let v = ask(&conn, &a, "group_by=model&end=2026-01-01").unwrap();
    assert_eq!(requests(&v), Vec::<i64>::new());
}

#[test]
fn dates_in_every_form() {
    let (_dir, conn) = fixture();
    let a = key("a");
    let count = |q: &str| requests(&ask(&conn, &a, q).unwrap())[0];
    assert_eq!(count("start=2026-12-06"), 2);
    assert_eq!(count("end=2026-12-06T00%3A00%3A00Z"), 2);
    assert_eq!(count("end=2026-12-06T00:00:00Z"), 2);
    // Arrival at exactly `start` is in; at exactly `end` is out.
    assert_eq!(count("start=1796432400&end=1796436000"), 1);
    assert_eq!(count("start=2026-12-06T01%3A00%3A00%2B00%3A00"), 2);
    assert_eq!(count("start=2026-12-06T02:00:00%2B01:00"), 2);
    assert_eq!(count("start=2026-10-01"), 5, "the old request, asked for");
    let v = ask(&conn, &a, "end=2026-12-06").unwrap();
    assert_eq!(v["end"], (DEC5 + DAY) / 1000);
    assert_eq!(v["start"], (DEC5 + DAY - DEFAULT_WINDOW_MS) / 1000);
    let v = ask(&conn, &a, "start=2026-12-05T00:00:00.900Z").unwrap();
    assert_eq!(v["start"], DEC5 / 1000);
}

#[test]
fn every_bad_input_is_a_400_naming_its_parameter() {
    let (_dir, conn) = fixture();
    for (q, param, says) in [
        ("start=yesterday", "start", "YYYY-MM-DD"),
        ("start=", "start", "YYYY-MM-DD"),
        ("end=2026-13-40", "end", "YYYY-MM-DD"),
        ("end=2026-12-05T08:00:00", "end", "RFC 3339"),
        ("start=%ZZ", "start", "percent-escape"),
        ("start=%C3%28", "start", "UTF-8"),
        ("start=2026-12-06&end=2026-12-05", "start", "before end"),
        ("start=2026-12-05&end=2026-12-05", "start", "before end"),
        ("start=2030-01-01", "start", "before end"),
        ("start=1&start=2", "start", "more than once"),
        ("end=1&end=2", "end", "more than once"),
        ("group_by=tenant", "group_by", "expected model, day or key"),
        (
            "group_by=model,,day",
            "group_by",
            "expected model, day or key",
        ),
        ("group_by=", "group_by", "expected model, day or key"),
        ("tenant=", "tenant", "empty"),
        ("tenant=a&tenant=a", "tenant", "more than once"),
        ("foo=1", "foo", "foo"),
        ("bar=1&start=2026-12-01&baz", "bar", "bar, baz"),
    ] {
        let e = ask(&conn, &key("a"), q).unwrap_err();
        assert_eq!(e.status(), 400, "{q}: {e}");
        assert_eq!(e.kind(), "invalid_request_error");
        assert_eq!(e.param(), Some(param), "{q}: {e}");
        assert!(e.to_string().contains(says), "{q}: {e}");
    }
}

#[test]
fn values_are_percent_decoded() {
    let q = parse(
        Some("tenant=acme+corp%2Feu&group_by=key"),
        &open_gateway(),
        NOW,
    )
    .unwrap();
    assert_eq!(q.tenant.as_deref(), Some("acme corp/eu"));
    assert_eq!(q.group_by, [GroupBy::Key]);
    let q = parse(None, &key("a"), NOW).unwrap();
    assert_eq!(
        q,
        UsageQuery {
            tenant: Some("a".into()),
            start_ms: NOW - DEFAULT_WINDOW_MS,
            end_ms: NOW,
            group_by: vec![],
        }
    );
}
