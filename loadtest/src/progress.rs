//! The live progress line: elapsed time, sent/planned, in flight, ok, errors, dropped and
//! tokens, redrawn on a terminal (indicatif) or printed every few seconds otherwise
//! (CI logs), so a long run shows it is alive and whether the server is keeping up.

use std::io::IsTerminal;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use tokio::sync::watch;
use tokio::time::Instant;

use crate::runner::Live;

/// Shows progress until `stop` turns true. `quiet`: nothing at all.
pub async fn show(
    live: Arc<Live>,
    planned: usize,
    start: Instant,
    quiet: bool,
    mut stop: watch::Receiver<bool>,
) {
    if quiet {
        return;
    }
    let tty = std::io::stderr().is_terminal();
    let bar = if tty {
        let b = ProgressBar::with_draw_target(Some(planned as u64), ProgressDrawTarget::stderr());
        b.set_style(
            ProgressStyle::with_template("{elapsed:>4} [{bar:30}] {pos}/{len} {msg}")
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> "),
        );
        Some(b)
    } else {
        None
    };
    let every = if tty {
        Duration::from_millis(200)
    } else {
        Duration::from_secs(5)
    };
    let mut tick = tokio::time::interval(every);
    loop {
        let last = tokio::select! {
            _ = tick.tick() => false,
            _ = stop.changed() => true,
        };
        let line = status(&live);
        match &bar {
            Some(b) => {
                b.set_position(
                    live.sent.load(Ordering::Relaxed) + live.dropped.load(Ordering::Relaxed),
                );
                b.set_message(line);
            }
            None => eprintln!(
                "[{:6.1} s] sent {}/{planned} {line}",
                start.elapsed().as_secs_f64(),
                live.sent.load(Ordering::Relaxed)
            ),
        }
        if last || *stop.borrow() {
            if let Some(b) = bar {
                b.finish_and_clear();
            }
            return;
        }
    }
}

fn status(l: &Live) -> String {
    let get = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
    format!(
        "in flight {}  ok {}  errors {}  dropped {}  tokens {}",
        l.in_flight(),
        get(&l.ok),
        get(&l.errors),
        get(&l.dropped),
        get(&l.tokens)
    )
}
