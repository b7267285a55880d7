//! `--fail-on` SLO assertions: `VARIABLE OP NUMBER`, e.g. `status_5xx == 0`,
//! `ttft_p95 < 2.0`, `error_rate < 1%`, `phase.spike.e2e_p99 <= 30s`,
//! `class.chat-stream.goodput >= 0.9`. Each must hold or the run exits 1 naming it: a
//! CI job states its SLO as a list of these. Names are checked before the run starts, so
//! a typo fails in a second rather than after a ten-minute run.

use crate::report::{Check, Group, Report, ServerSummary};
use crate::stats::STATS;

/// Which group a variable is read from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    Total,
    Class(String),
    Phase(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Lt,
    Le,
    Gt,
    Ge,
    Eq,
    Ne,
}

impl Op {
    fn holds(self, a: f64, b: f64) -> bool {
        match self {
            Op::Lt => a < b,
            Op::Le => a <= b,
            Op::Gt => a > b,
            Op::Ge => a >= b,
            Op::Eq => a == b,
            Op::Ne => a != b,
        }
    }
}

/// One parsed expression.
#[derive(Debug, Clone, PartialEq)]
pub struct Expr {
    pub text: String,
    pub scope: Scope,
    pub var: String,
    pub op: Op,
    pub value: f64,
}

/// Counters and rates every group has.
const GROUP_VARS: [&str; 16] = [
    "arrivals",
    "sent",
    "requests",
    "ok",
    "errors",
    "dropped",
    "good",
    "error_rate",
    "goodput",
    "goodput_rps",
    "rps",
    "offered_rps",
    "tok_s",
    "tokens_out",
    "audio_seconds",
    "status_0",
];

/// From the target's `/metrics` (whole run only).
const SERVER_VARS: [&str; 5] = [
    "cold_starts",
    "rejections",
    "max_workers",
    "max_workers_starting",
    "max_queue_depth",
];

/// The distributions, each with every statistic of [`STATS`] (`ttft_p95`, `e2e_max`, …).
const DISTS: [&str; 4] = ["ttft", "itl", "e2e", "send_lag"];

/// Parses `VARIABLE OP NUMBER`. The number may end in `ms`, `s` or `%`.
pub fn parse(text: &str) -> Result<Expr, String> {
    let bad = |why: &str| format!("--fail-on {text:?}: {why}");
    let ops = [
        ("<=", Op::Le),
        (">=", Op::Ge),
        ("==", Op::Eq),
        ("!=", Op::Ne),
        ("<", Op::Lt),
        (">", Op::Gt),
    ];
    let (pos, len, op) = ops
        .iter()
        .filter_map(|(s, op)| text.find(s).map(|p| (p, s.len(), *op)))
        .min_by_key(|(p, l, _)| (*p, usize::MAX - l))
        .ok_or_else(|| bad("expected VARIABLE OP NUMBER with OP one of < <= > >= == !="))?;
    let (lhs, rhs) = (text[..pos].trim(), text[pos + len..].trim());
    let value = number(rhs).ok_or_else(|| bad(&format!("{rhs:?} is not a number")))?;
    let (scope, var) = scoped(lhs).ok_or_else(|| bad(&format!("{lhs:?} is not a variable")))?;
    check_name(&var).map_err(|e| bad(&e))?;
    if scope != Scope::Total && SERVER_VARS.contains(&var.as_str()) {
        return Err(bad(&format!("{var} is only known for the whole run")));
    }
    Ok(Expr {
        text: text.trim().to_string(),
        scope,
        var,
        op,
        value,
    })
}

fn number(s: &str) -> Option<f64> {
    let (n, scale) = if let Some(n) = s.strip_suffix("ms") {
        (n, 1e-3)
    } else if let Some(n) = s.strip_suffix('%') {
        (n, 1e-2)
    } else if let Some(n) = s.strip_suffix('s') {
        (n, 1.0)
    } else {
        (s, 1.0)
    };
    n.trim()
        .parse::<f64>()
        .ok()
        .filter(|x| x.is_finite())
        .map(|x| x * scale)
}

/// `class.NAME.var`, `phase.NAME.var` or `var`; NAME may hold dots.
fn scoped(lhs: &str) -> Option<(Scope, String)> {
    let ident = |s: &str| {
        !s.is_empty()
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || "_-.".contains(c))
    };
    if !ident(lhs) {
        return None;
    }
    for (prefix, make) in [
        ("class.", Scope::Class as fn(String) -> Scope),
        ("phase.", Scope::Phase),
    ] {
        if let Some(rest) = lhs.strip_prefix(prefix) {
            let (name, var) = rest.rsplit_once('.')?;
            return (!name.is_empty()).then(|| (make(name.to_string()), var.to_string()));
        }
    }
    (!lhs.contains('.')).then(|| (Scope::Total, lhs.to_string()))
}

/// Whether `var` names something a report has.
pub fn check_name(var: &str) -> Result<(), String> {
    if GROUP_VARS.contains(&var) || SERVER_VARS.contains(&var) {
        return Ok(());
    }
    if let Some(code) = var.strip_prefix("status_") {
        let b = code.as_bytes();
        let class = b.len() == 3 && (b'1'..=b'5').contains(&b[0]) && &code[1..] == "xx";
        let exact = b.len() == 3 && code.parse::<u16>().is_ok_and(|c| (100..600).contains(&c));
        if class || exact {
            return Ok(());
        }
    }
    if var.strip_prefix("errors_").is_some_and(|k| !k.is_empty()) {
        return Ok(());
    }
    if let Some((dist, stat)) = var.rsplit_once('_') {
        if DISTS.contains(&dist) && STATS.contains(&stat) {
            return Ok(());
        }
    }
    Err(format!(
        "unknown variable {var:?}; known: {}, status_5xx/status_503/…, errors_<kind> (errors_timeout, errors_http_429, …), {{{}}}_{{{}}}, and for the whole run {}",
        GROUP_VARS.join(", "),
        DISTS.join(","),
        STATS.join(","),
        SERVER_VARS.join(", ")
    ))
}

/// A variable's value in `g` (and `server` for the whole run); `None` when there is no
/// data (no latency samples, no `/metrics`).
pub fn value(g: &Group, server: Option<&ServerSummary>, var: &str) -> Option<f64> {
    let n = |x: usize| Some(x as f64);
    Some(match var {
        "arrivals" => return n(g.arrivals),
        "sent" | "requests" => return n(g.sent),
        "ok" => return n(g.ok),
        "errors" => return n(g.errors),
        "dropped" => return n(g.dropped),
        "good" => return n(g.good),
        "error_rate" => g.error_rate,
        "goodput" => g.goodput,
        "goodput_rps" => g.goodput_rps,
        "rps" => g.rps,
        "offered_rps" => g.offered_rps,
        "tok_s" => g.tok_s,
        "tokens_out" => g.tokens_out as f64,
        "audio_seconds" => g.audio_seconds,
        "cold_starts" => server?.cold_starts,
        "rejections" => server?.rejections,
        "max_workers" => server?.max_workers_ready,
        "max_workers_starting" => server?.max_workers_starting,
        "max_queue_depth" => server?.max_queue_depth,
        _ => {
            if let Some(code) = var.strip_prefix("status_") {
                if let Some(d) = code.strip_suffix("xx") {
                    let lo = d.parse::<u16>().ok()? * 100;
                    return n(g.status_between(lo, lo + 99));
                }
                let c = code.parse::<u16>().ok()?;
                return n(g.status_between(c, c));
            }
            if let Some(kind) = var.strip_prefix("errors_") {
                return n(g.errors_by_kind.get(kind).copied().unwrap_or(0));
            }
            let (dist, stat) = var.rsplit_once('_')?;
            let s = match dist {
                "ttft" => &g.ttft,
                "itl" => &g.itl,
                "e2e" => &g.e2e,
                "send_lag" => &g.send_lag,
                _ => return None,
            };
            return s.get(stat).flatten();
        }
    })
}

/// Evaluates `e` on `report`: a check, and a message when it failed.
pub fn evaluate(e: &Expr, report: &Report) -> (Check, Option<String>) {
    let group = report.group(&e.scope);
    let v = group.and_then(|g| {
        let server = (e.scope == Scope::Total)
            .then_some(report.server.as_ref())
            .flatten();
        value(g, server, &e.var)
    });
    let passed = v.is_some_and(|v| e.op.holds(v, e.value));
    let msg = (!passed).then(|| match (group, v) {
        (None, _) => format!("FAILED {}: no such {:?} in this run", e.text, e.scope),
        (Some(_), None) => format!("FAILED {}: {} has no data in this run", e.text, e.var),
        (Some(_), Some(v)) => format!("FAILED {}: {} was {}", e.text, e.var, fmt(v)),
    });
    (
        Check {
            expr: e.text.clone(),
            value: v,
            passed,
        },
        msg,
    )
}

fn fmt(v: f64) -> String {
    if v == v.trunc() && v.abs() < 1e15 {
        format!("{v:.0}")
    } else {
        format!("{v:.4}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::Summary;

    #[test]
    fn parses_expressions() {
        let e = parse("status_5xx == 0").unwrap();
        assert_eq!(
            (e.scope.clone(), e.var.as_str(), e.op, e.value),
            (Scope::Total, "status_5xx", Op::Eq, 0.0)
        );
        let e = parse("ttft_p95<2.0").unwrap();
        assert_eq!((e.op, e.value), (Op::Lt, 2.0));
        assert_eq!(parse("error_rate < 1%").unwrap().value, 0.01);
        assert_eq!(parse("e2e_p99 <= 250ms").unwrap().value, 0.25);
        assert_eq!(parse("e2e_p99 >= 3s").unwrap().op, Op::Ge);
        assert_eq!(parse("errors != 1").unwrap().op, Op::Ne);
        let e = parse("phase.spike.e2e_p99 > 1").unwrap();
        assert_eq!(e.scope, Scope::Phase("spike".into()));
        let e = parse("class.chat.v2.goodput >= 0.9").unwrap();
        assert_eq!(
            (e.scope, e.var.as_str()),
            (Scope::Class("chat.v2".into()), "goodput")
        );
        for ok in [
            "status_503 == 0",
            "errors_timeout == 0",
            "itl_max < 1",
            "cold_starts <= 2",
        ] {
            parse(ok).unwrap();
        }
    }

    #[test]
    fn rejects_bad_expressions_naming_them() {
        for (bad, why) in [
            ("ttft_p96 < 1", "unknown variable \"ttft_p96\""),
            ("latency < 1", "unknown variable"),
            ("status_6xx == 0", "unknown variable"),
            ("ttft_p95 2", "expected VARIABLE OP NUMBER"),
            ("ttft_p95 < fast", "\"fast\" is not a number"),
            ("< 3", "is not a variable"),
            (
                "phase.spike.cold_starts == 0",
                "only known for the whole run",
            ),
            ("class..ok > 1", "is not a variable"),
        ] {
            let e = parse(bad).unwrap_err();
            assert!(e.contains(why) && e.contains(bad), "{bad}: {e}");
        }
    }

    #[test]
    fn values_come_from_the_group() {
        let mut g = Group {
            sent: 10,
            ok: 8,
            errors: 2,
            error_rate: 0.2,
            ttft: Summary::of(&[0.1, 0.2, 0.3]),
            ..Group::default()
        };
        g.status_counts.insert(200, 8);
        g.status_counts.insert(503, 1);
        g.status_counts.insert(502, 1);
        g.errors_by_kind.insert("http_503".into(), 1);
        assert_eq!(value(&g, None, "status_5xx"), Some(2.0));
        assert_eq!(value(&g, None, "status_503"), Some(1.0));
        assert_eq!(value(&g, None, "status_429"), Some(0.0));
        assert_eq!(value(&g, None, "status_2xx"), Some(8.0));
        assert_eq!(value(&g, None, "errors_http_503"), Some(1.0));
        assert_eq!(value(&g, None, "errors_timeout"), Some(0.0));
        assert_eq!(value(&g, None, "ttft_p95"), Some(0.3));
        assert_eq!(value(&g, None, "e2e_p95"), None, "no samples");
        assert_eq!(value(&g, None, "cold_starts"), None, "no /metrics");
        assert_eq!(value(&g, None, "requests"), Some(10.0));
        assert!(Op::Lt.holds(0.19, 0.2) && !Op::Lt.holds(0.2, 0.2));
        assert!(Op::Eq.holds(0.0, 0.0) && Op::Ne.holds(1.0, 0.0));
    }
}
