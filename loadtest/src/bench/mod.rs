//! What the bench binaries (`llm-bench`, `whisper-bench`, `gateway-bench`) share: a
//! whole-run deadline, the closed loop of concurrent clients, markdown table headers, and in
//! [`process`] and [`metrics`] the server processes they start and the `/metrics` they
//! watch. Process basics (free port, readiness, peak memory, stop) are in [`crate::server`].

pub mod metrics;
pub mod process;

use std::time::{Duration, Instant};

/// The time by which a whole run must be over (`--max-seconds`).
pub struct Deadline(Instant);

impl Deadline {
    pub fn after(d: Duration) -> Deadline {
        Deadline(Instant::now() + d)
    }

    /// An error once the deadline has passed.
    pub fn check(&self) -> Result<(), String> {
        if Instant::now() > self.0 {
            Err("--max-seconds passed".into())
        } else {
            Ok(())
        }
    }
}

/// `a / b`, or 0 when `b` is not positive.
pub fn ratio(a: f64, b: f64) -> f64 {
    if b > 0.0 {
        a / b
    } else {
        0.0
    }
}

/// The numbers of a comma-separated list (`--concurrency 1,4,8`); others are skipped.
pub fn list(s: &str) -> Vec<usize> {
    s.split(',').filter_map(|c| c.trim().parse().ok()).collect()
}

/// A closed loop: `clients` threads share `requests` numbered requests, each taking the
/// next number as soon as its last request has returned, and `send` it with the client's
/// own state (made by `init`, e.g. an HTTP agent that keeps its connection). Returns the
/// wall time in seconds and every result, client by client; a client stops at its first
/// error, and the first client's error (once all have finished) fails the loop.
pub fn closed_loop<S, T: Send>(
    clients: usize,
    requests: usize,
    init: impl Fn() -> S + Sync,
    send: impl Fn(&mut S, usize) -> Result<T, String> + Sync,
) -> Result<(f64, Vec<T>), String> {
    let next = std::sync::atomic::AtomicUsize::new(0);
    let wall = Instant::now();
    let per_client: Vec<Result<Vec<T>, String>> = std::thread::scope(|sc| {
        let hs: Vec<_> = (0..clients)
            .map(|_| {
                let (next, init, send) = (&next, &init, &send);
                sc.spawn(move || {
                    let mut state = init();
                    let mut out = Vec::new();
                    loop {
                        let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        if i >= requests {
                            return Ok(out);
                        }
                        out.push(send(&mut state, i)?);
                    }
                })
            })
            .collect();
        hs.into_iter()
            .map(|h| h.join().unwrap_or_else(|_| Err("client panicked".into())))
            .collect()
    });
    let wall = wall.elapsed().as_secs_f64();
    let mut out = Vec::new();
    for r in per_client {
        out.extend(r?);
    }
    Ok((wall, out))
}

/// Prints a markdown table's header row and its separator.
pub fn print_head(columns: &[&str]) {
    println!("| {} |", columns.join(" | "));
    println!("|{}", "---|".repeat(columns.len()));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn closed_loop_sends_each_request_once() {
        let (wall, mut got) = closed_loop(
            3,
            10,
            || 0usize,
            |n, i| {
                *n += 1;
                Ok(i)
            },
        )
        .unwrap();
        got.sort();
        assert_eq!(got, (0..10).collect::<Vec<_>>());
        assert!(wall >= 0.0);
        let r = closed_loop(
            2,
            4,
            || (),
            |_, i| if i == 2 { Err("two".into()) } else { Ok(i) },
        );
        assert_eq!(r.unwrap_err(), "two");
        assert_eq!(
            closed_loop(0, 4, || (), |_, i| Ok(i)).unwrap().1,
            Vec::<usize>::new()
        );
    }

    #[test]
    fn lists_and_ratios() {
        assert_eq!(list("1, 4,x,8"), [1, 4, 8]);
        assert_eq!(ratio(3.0, 2.0), 1.5);
        assert_eq!(ratio(3.0, 0.0), 0.0);
        assert!(Deadline::after(Duration::from_secs(60)).check().is_ok());
        assert!(Deadline(Instant::now() - Duration::from_millis(1))
            .check()
            .is_err());
    }
}
