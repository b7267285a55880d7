//! The read side of `GET /v1/usage`: a tenant's usage from the ledger, totalled or
//! grouped by model, day and key, over a time window.
//!
//! Who may see what is decided here, not by the caller of [`answer`]: a key sees its own
//! tenant's rows only (naming another tenant is a 403, never an empty answer that would
//! confirm or deny the tenant exists); an admin key, or anyone on an open gateway (no
//! keys configured), may name any tenant and sees every tenant when it names none.

use rusqlite::types::Value as SqlValue;
use rusqlite::{params_from_iter, Connection};
use serde_json::{json, Map, Value};
use surge_protocol::error::ApiError;

use super::dates::{parse_instant, INSTANT_FORMS};

/// The window when `start` is not given: this long before `end`.
pub const DEFAULT_WINDOW_MS: i64 = 30 * 86_400_000;

/// The query parameters `/v1/usage` takes.
const PARAMS: [&str; 4] = ["start", "end", "group_by", "tenant"];

/// Who is asking, as the gateway authenticated them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// The key's tenant; `None` on an open gateway (no API keys: everything visible).
    pub tenant: Option<String>,
    /// An admin key may read every tenant's usage.
    pub admin: bool,
}

/// What rows are split by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupBy {
    Model,
    /// The UTC day a request arrived on.
    Day,
    /// The API key (`null` for requests made without one).
    Key,
}

impl GroupBy {
    fn parse(s: &str) -> Option<Self> {
        match s {
            "model" => Some(GroupBy::Model),
            "day" => Some(GroupBy::Day),
            "key" => Some(GroupBy::Key),
            _ => None,
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            GroupBy::Model => "model",
            GroupBy::Day => "day",
            GroupBy::Key => "key",
        }
    }

    /// The field each data row carries it in.
    fn field(self) -> &'static str {
        match self {
            GroupBy::Model => "model",
            GroupBy::Day => "day",
            GroupBy::Key => "key_id",
        }
    }

    fn sql(self) -> &'static str {
        match self {
            GroupBy::Model => "model",
            GroupBy::Day => "date(time_ms / 1000, 'unixepoch')",
            GroupBy::Key => "key_id",
        }
    }
}

/// A checked `/v1/usage` request.
#[derive(Debug, Clone, PartialEq)]
pub struct UsageQuery {
    /// Whose rows; `None`: every tenant's (admins and open gateways only).
    pub tenant: Option<String>,
    /// The window, `start_ms <= time_ms < end_ms` (request arrival times).
    pub start_ms: i64,
    pub end_ms: i64,
    /// Empty: one total row.
    pub group_by: Vec<GroupBy>,
}

fn invalid_param(message: String, param: &str) -> ApiError {
    ApiError::InvalidRequest {
        message,
        param: Some(param.to_string()),
        code: None,
    }
}

/// Decodes one `application/x-www-form-urlencoded` component (`%XX` and `+`).
fn decode(s: &str) -> Result<String, String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let digit = |j: usize| bytes.get(j).and_then(|b| (*b as char).to_digit(16));
                let (Some(hi), Some(lo)) = (digit(i + 1), digit(i + 2)) else {
                    return Err(format!("'{s}' has a bad percent-escape"));
                };
                out.push((hi * 16 + lo) as u8);
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).map_err(|_| format!("'{s}' is not UTF-8 once decoded"))
}

/// Checks a `/v1/usage` query string (without the `?`) for `caller` at `now_ms`.
pub fn parse(query: Option<&str>, caller: &Caller, now_ms: i64) -> Result<UsageQuery, ApiError> {
    let mut pairs = Vec::new();
    for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let key = decode(k).map_err(|e| ApiError::invalid(format!("Bad query: {e}"), None))?;
        let value = decode(v).map_err(|e| invalid_param(format!("Bad {key}: {e}"), &key))?;
        pairs.push((key, value));
    }
    let unknown: Vec<&str> = pairs
        .iter()
        .map(|(k, _)| k.as_str())
        .filter(|k| !PARAMS.contains(k))
        .collect();
    if let Some(first) = unknown.first() {
        return Err(invalid_param(
            format!(
                "Unknown query parameter(s): {}; /v1/usage takes {}",
                unknown.join(", "),
                PARAMS.join(", ")
            ),
            first,
        ));
    }
    // `group_by` may repeat (its values add up); the others may not.
    let single = |name: &'static str| -> Result<Option<&str>, ApiError> {
        let mut given = pairs.iter().filter(|(k, _)| k == name);
        let first = given.next().map(|(_, v)| v.as_str());
        if given.next().is_some() {
            return Err(ApiError::invalid(
                format!("{name} is given more than once"),
                name,
            ));
        }
        Ok(first)
    };
    let instant = |name: &'static str| -> Result<Option<i64>, ApiError> {
        single(name)?
            .map(|v| {
                parse_instant(v)
                    .map_err(|e| ApiError::invalid(format!("Invalid {name}: {e}"), name))
            })
            .transpose()
    };
    let end_ms = instant("end")?.unwrap_or(now_ms);
    let start_ms = instant("start")?.unwrap_or(end_ms.saturating_sub(DEFAULT_WINDOW_MS));
    if start_ms >= end_ms {
        return Err(ApiError::invalid(
            format!(
                "start must be before end (got start {} s, end {} s); times are {INSTANT_FORMS}",
                start_ms.div_euclid(1000),
                end_ms.div_euclid(1000)
            ),
            "start",
        ));
    }
    let mut group_by = Vec::new();
    for (_, value) in pairs.iter().filter(|(k, _)| k == "group_by") {
        for name in value.split(',').map(str::trim) {
            let g = GroupBy::parse(name).ok_or_else(|| {
                ApiError::invalid(
                    format!(
                        "Invalid group_by '{name}': expected model, day or key (several comma-separated)"
                    ),
                    "group_by",
                )
            })?;
            if !group_by.contains(&g) {
                group_by.push(g);
            }
        }
    }
    let tenant = visible_tenant(single("tenant")?, caller)?;
    Ok(UsageQuery {
        tenant,
        start_ms,
        end_ms,
        group_by,
    })
}

/// Whose rows `caller` gets when it asks for `asked`.
fn visible_tenant(asked: Option<&str>, caller: &Caller) -> Result<Option<String>, ApiError> {
    if asked.is_some_and(|t| t.trim().is_empty()) {
        return Err(ApiError::invalid("tenant must not be empty", "tenant"));
    }
    match (&caller.tenant, asked) {
        // Open gateway or admin: what they ask for, every tenant if nothing.
        (None, asked) => Ok(asked.map(str::to_string)),
        (Some(_), asked) if caller.admin => Ok(asked.map(str::to_string)),
        (Some(own), None) => Ok(Some(own.clone())),
        (Some(own), Some(asked)) if asked == own => Ok(Some(own.clone())),
        (Some(_), Some(_)) => Err(ApiError::Forbidden(
            "This API key may only read its own tenant's usage (an admin key may read others')"
                .into(),
        )),
    }
}

/// The usage `q` asks for, as the `/v1/usage` JSON object.
pub fn usage(conn: &Connection, q: &UsageQuery) -> rusqlite::Result<Value> {
    let groups: Vec<String> = q
        .group_by
        .iter()
        .map(|g| format!("{} AS {}", g.sql(), g.field()))
        .collect();
    let fields: Vec<&str> = q.group_by.iter().map(|g| g.field()).collect();
    let mut sql = String::from("SELECT ");
    for g in &groups {
        sql.push_str(g);
        sql.push_str(", ");
    }
    sql.push_str(
        "COUNT(*), COALESCE(SUM(prompt_tokens), 0), COALESCE(SUM(completion_tokens), 0),
         COALESCE(SUM(audio_seconds), 0.0), COALESCE(SUM(execution_seconds), 0.0),
         COALESCE(SUM(queue_seconds), 0.0), COALESCE(SUM(cost_usd), 0.0)
         FROM usage WHERE time_ms >= ?1 AND time_ms < ?2",
    );
    let mut args = vec![SqlValue::Integer(q.start_ms), SqlValue::Integer(q.end_ms)];
    if let Some(t) = &q.tenant {
        sql.push_str(" AND tenant = ?3");
        args.push(SqlValue::Text(t.clone()));
    }
    if !fields.is_empty() {
        let list = fields.join(", ");
        sql.push_str(&format!(" GROUP BY {list} ORDER BY {list}"));
    }
    let mut stmt = conn.prepare(&sql)?;
    let n = fields.len();
    let rows = stmt.query_map(params_from_iter(args), |r| {
        let mut row = Map::new();
        for (i, f) in fields.iter().enumerate() {
            row.insert((*f).into(), json!(r.get::<_, Option<String>>(i)?));
        }
        row.insert("requests".into(), json!(r.get::<_, i64>(n)?));
        row.insert("prompt_tokens".into(), json!(r.get::<_, i64>(n + 1)?));
        row.insert("completion_tokens".into(), json!(r.get::<_, i64>(n + 2)?));
        row.insert("audio_seconds".into(), json!(r.get::<_, f64>(n + 3)?));
        row.insert("execution_seconds".into(), json!(r.get::<_, f64>(n + 4)?));
        row.insert("queue_seconds".into(), json!(r.get::<_, f64>(n + 5)?));
        row.insert("cost_usd".into(), json!(r.get::<_, f64>(n + 6)?));
        Ok(Value::Object(row))
    })?;
    let data = rows.collect::<rusqlite::Result<Vec<_>>>()?;
    let group_by: Vec<&str> = q.group_by.iter().map(|g| g.label()).collect();
    Ok(json!({
        "object": "usage",
        "tenant": q.tenant,
        "start": q.start_ms.div_euclid(1000),
        "end": q.end_ms.div_euclid(1000),
        "group_by": group_by,
        "data": data,
    }))
}

/// `GET /v1/usage?{query}` for `caller`: the body of a 200, or the error to answer with.
pub fn answer(
    conn: &Connection,
    caller: &Caller,
    query: Option<&str>,
    now_ms: i64,
) -> Result<Value, ApiError> {
    let q = parse(query, caller, now_ms)?;
    usage(conn, &q).map_err(|e| ApiError::Internal(format!("Reading the usage ledger failed: {e}")))
}

#[cfg(test)]
#[path = "query_tests.rs"]
mod tests;
