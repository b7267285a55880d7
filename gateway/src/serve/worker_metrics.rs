//! Workers' metrics on the gateway's `/metrics`. Workers listen on Unix sockets (or a
//! TCP address with a secret) that Prometheus cannot reach, yet their engine metrics —
//! running and waiting sequences, batch size, KV cache use, step time — are what a
//! dashboard needs beside the gateway's. So every scrape of the gateway also scrapes
//! each live worker (concurrently, with a short timeout: a slow worker is left out of
//! that scrape, never stalls it) and adds its samples with two labels, `model` and
//! `worker` (the worker's id), grouped by metric family as the text format requires.

use std::collections::BTreeMap;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::pool::Pools;
use super::provision::Endpoint;

/// A worker that does not answer within this is left out of the scrape.
const SCRAPE_TIMEOUT: Duration = Duration::from_millis(500);

/// One metric family from the workers: its `# HELP`/`# TYPE` lines once, every
/// worker's samples after them.
#[derive(Default)]
struct Family {
    head: Vec<String>,
    samples: Vec<String>,
}

/// Every live worker's metrics as exposition text, labelled; families the gateway
/// itself exports (`skip`) are left out rather than written twice.
pub async fn scrape(pools: &Pools, skip: &[&str]) -> String {
    let mut jobs = Vec::new();
    for pool in pools.all() {
        for w in pool.workers().await {
            let model = pool.model.clone();
            jobs.push(async move {
                let text = get_text(&w.endpoint, "/metrics").await;
                (model, w.id, text)
            });
        }
    }
    let mut families: BTreeMap<String, Family> = BTreeMap::new();
    for (model, id, text) in futures_util::future::join_all(jobs).await {
        if let Some(text) = text {
            merge(&mut families, &text, &model, id, skip);
        }
    }
    let mut out = String::new();
    for f in families.values() {
        for line in f.head.iter().chain(&f.samples) {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

/// Adds one worker's exposition to `families`, each sample labelled with its model
/// and worker.
fn merge(families: &mut BTreeMap<String, Family>, text: &str, model: &str, id: u64, skip: &[&str]) {
    let mut current: Option<String> = None;
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# ") {
            let mut parts = rest.splitn(3, ' ');
            let (kind, name) = (parts.next(), parts.next());
            if let (Some("HELP" | "TYPE"), Some(name)) = (kind, name) {
                current = Some(name.to_string());
                if skip.contains(&name) {
                    continue;
                }
                let f = families.entry(name.to_string()).or_default();
                if !f.head.iter().any(|h| h == line) {
                    f.head.push(line.to_string());
                }
            }
            continue;
        }
        let (Some(family), false) = (&current, line.trim().is_empty()) else {
            continue;
        };
        if skip.contains(&family.as_str()) {
            continue;
        }
        if let Some(sample) = label(line, model, id) {
            families
                .entry(family.clone())
                .or_default()
                .samples
                .push(sample);
        }
    }
}

/// `name{a="b"} 1` → `name{model="M",worker="N",a="b"} 1`.
fn label(line: &str, model: &str, id: u64) -> Option<String> {
    let extra = format!("model=\"{}\",worker=\"{id}\"", escape(model));
    let name_end = line.find(['{', ' '])?;
    let (name, rest) = line.split_at(name_end);
    Some(match rest.strip_prefix('{') {
        Some(r) if r.starts_with('}') => format!("{name}{{{extra}{r}"),
        Some(r) => format!("{name}{{{extra},{r}"),
        None => format!("{name}{{{extra}}}{rest}"),
    })
}

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// `GET path` from a worker, the body as text; `None` when it does not answer in time
/// or not with 200.
async fn get_text(ep: &Endpoint, path: &str) -> Option<String> {
    tokio::time::timeout(SCRAPE_TIMEOUT, get_inner(ep, path))
        .await
        .ok()
        .flatten()
}

async fn get_inner(ep: &Endpoint, path: &str) -> Option<String> {
    let auth = ep
        .authorization()
        .map(|a| format!("Authorization: {a}\r\n"))
        .unwrap_or_default();
    let request = format!("GET {path} HTTP/1.1\r\nHost: worker\r\n{auth}Connection: close\r\n\r\n");
    let mut buf = Vec::new();
    match ep {
        Endpoint::Unix(p) => {
            let mut s = tokio::net::UnixStream::connect(p).await.ok()?;
            s.write_all(request.as_bytes()).await.ok()?;
            s.read_to_end(&mut buf).await.ok()?;
        }
        Endpoint::Tcp { addr, .. } => {
            let mut s = tokio::net::TcpStream::connect(addr.as_str()).await.ok()?;
            s.write_all(request.as_bytes()).await.ok()?;
            s.read_to_end(&mut buf).await.ok()?;
        }
    }
    let text = String::from_utf8(buf).ok()?;
    let (head, body) = text.split_once("\r\n\r\n")?;
    if head.split_whitespace().nth(1) != Some("200") {
        return None;
    }
    let chunked = head.lines().any(|l| {
        l.to_ascii_lowercase()
            .starts_with("transfer-encoding: chunked")
    });
    Some(if chunked {
        dechunk(body)?
    } else {
        body.to_string()
    })
}

/// A chunked body's data.
fn dechunk(mut body: &str) -> Option<String> {
    let mut out = String::new();
    loop {
        let (size, rest) = body.split_once("\r\n")?;
        let n = usize::from_str_radix(size.split(';').next()?.trim(), 16).ok()?;
        if n == 0 {
            return Some(out);
        }
        out.push_str(rest.get(..n)?);
        body = rest.get(n..)?.strip_prefix("\r\n")?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_get_model_and_worker_and_families_stay_grouped() {
        let a = "# HELP surge_worker_running_sequences Running\n\
                 # TYPE surge_worker_running_sequences gauge\n\
                 surge_worker_running_sequences 2\n\
                 # HELP surge_worker_step_duration_seconds Step\n\
                 # TYPE surge_worker_step_duration_seconds histogram\n\
                 surge_worker_step_duration_seconds_bucket{le=\"0.1\"} 5\n\
                 surge_worker_step_duration_seconds_sum 0.3\n\
                 surge_worker_step_duration_seconds_count 5\n\
                 # TYPE surge_worker_seconds_total counter\n\
                 surge_worker_seconds_total 1\n";
        let b = "# HELP surge_worker_running_sequences Running\n\
                 # TYPE surge_worker_running_sequences gauge\n\
                 surge_worker_running_sequences{} 7\n";
        let mut f = BTreeMap::new();
        merge(&mut f, a, "m", 1, &["surge_worker_seconds_total"]);
        merge(&mut f, b, "m", 2, &["surge_worker_seconds_total"]);
        assert!(!f.contains_key("surge_worker_seconds_total"));
        let running = &f["surge_worker_running_sequences"];
        assert_eq!(running.head.len(), 2, "HELP and TYPE once");
        assert_eq!(
            running.samples,
            [
                "surge_worker_running_sequences{model=\"m\",worker=\"1\"} 2",
                "surge_worker_running_sequences{model=\"m\",worker=\"2\"} 7",
            ]
        );
        assert_eq!(
            f["surge_worker_step_duration_seconds"].samples[0],
            "surge_worker_step_duration_seconds_bucket{model=\"m\",worker=\"1\",le=\"0.1\"} 5"
        );
        // The result reads back as valid exposition.
        let text: String = f
            .values()
            .flat_map(|f| f.head.iter().chain(&f.samples))
            .map(|l| format!("{l}\n"))
            .collect();
        let parsed = surge_protocol::prom::parse(&text);
        assert_eq!(parsed.len(), 5);
        assert!(parsed.iter().all(|s| s.label("worker").is_some()));
    }

    #[test]
    fn chunked_bodies_are_read() {
        assert_eq!(
            dechunk("5\r\nhello\r\n1\r\n!\r\n0\r\n\r\n").unwrap(),
            "hello!"
        );
    }
}
