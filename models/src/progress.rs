//! Download progress: a live bar on a terminal, plain periodic lines otherwise (CI logs,
//! the gateway's log when it pulls missing models at start-up).

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ProgressMode {
    /// Bar when stderr is a terminal, plain lines otherwise.
    #[default]
    Auto,
    Plain,
    Quiet,
}

pub struct Progress {
    label: String,
    total: Option<u64>,
    done: u64,
    started: Instant,
    bar: Option<ProgressBar>,
    plain: bool,
    last_line: Instant,
}

/// Plain mode stays quiet for small files and prints at most one line per interval, so
/// CI logs show progress without drowning in it.
const PLAIN_MIN_BYTES: u64 = 16 << 20;
const PLAIN_INTERVAL: Duration = Duration::from_secs(2);

impl Progress {
    pub fn new(mode: ProgressMode, label: impl Into<String>, total: Option<u64>) -> Self {
        let label = label.into();
        let use_bar = mode == ProgressMode::Auto && std::io::stderr().is_terminal();
        let bar = use_bar.then(|| {
            let bar = match total {
                Some(t) => ProgressBar::new(t),
                None => ProgressBar::no_length(),
            };
            let style = ProgressStyle::with_template(
                "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} ETA {eta}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> ");
            bar.set_style(style);
            bar.set_message(label.clone());
            bar
        });
        let plain = !use_bar && mode != ProgressMode::Quiet;
        if plain && total.is_none_or(|t| t >= PLAIN_MIN_BYTES) {
            eprintln!(
                "{label}: starting ({})",
                total.map(fmt_bytes).unwrap_or("size unknown".into())
            );
        }
        Progress {
            label,
            total,
            done: 0,
            started: Instant::now(),
            bar,
            plain,
            last_line: Instant::now(),
        }
    }

    /// Restarts the count, e.g. when a resumed download begins at an offset.
    pub fn set_position(&mut self, pos: u64) {
        self.done = pos;
        if let Some(b) = &self.bar {
            b.set_position(pos);
        }
    }

    pub fn inc(&mut self, n: u64) {
        self.done += n;
        if let Some(b) = &self.bar {
            b.inc(n);
        } else if self.plain && self.last_line.elapsed() >= PLAIN_INTERVAL {
            self.last_line = Instant::now();
            eprintln!("{}", self.line());
        }
    }

    pub fn finish(&mut self) {
        let had_bar = self.bar.take().map(|b| b.finish_and_clear()).is_some();
        if had_bar || self.plain {
            eprintln!(
                "{}: done, {} in {:.1}s",
                self.label,
                fmt_bytes(self.done),
                self.started.elapsed().as_secs_f64()
            );
        }
    }

    fn line(&self) -> String {
        let secs = self.started.elapsed().as_secs_f64().max(1e-3);
        let rate = self.done as f64 / secs;
        match self.total {
            Some(t) => {
                let eta = (t.saturating_sub(self.done)) as f64 / rate.max(1.0);
                format!(
                    "{}: {:>3}% {}/{} {}/s ETA {:.0}s",
                    self.label,
                    self.done * 100 / t.max(1),
                    fmt_bytes(self.done),
                    fmt_bytes(t),
                    fmt_bytes(rate as u64),
                    eta
                )
            }
            None => format!(
                "{}: {} {}/s",
                self.label,
                fmt_bytes(self.done),
                fmt_bytes(rate as u64)
            ),
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        if let Some(b) = self.bar.take() {
            b.abandon();
        }
    }
}

/// Human-readable byte count (binary units), as `ls` and progress lines show sizes.
pub fn fmt_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut i = 0;
    while v >= 1024.0 && i < UNITS.len() - 1 {
        v /= 1024.0;
        i += 1;
    }
    if i == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[i])
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn formats_bytes() {
        assert_eq!(super::fmt_bytes(12), "12 B");
        assert_eq!(super::fmt_bytes(98_362_432), "93.8 MiB");
    }
}
