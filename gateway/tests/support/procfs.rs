//! What `/proc` says about a worker process: its command line and its threads.

/// The process's arguments (`/proc/PID/cmdline`), `None` once it is gone.
pub fn cmdline(pid: u32) -> Option<Vec<String>> {
    let raw = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    Some(
        raw.split(|&b| b == 0)
            .filter(|a| !a.is_empty())
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect(),
    )
}

/// The names (`comm`) of the process's threads.
pub fn thread_names(pid: u32) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/task"))
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("comm")).ok())
        .map(|n| n.trim().to_string())
        .collect();
    names.sort();
    names
}

/// Helper threads of the process's compute pools: `(surge-kernel-N, candle-bp-N)`, the
/// kernel pool's and candle's barrier pool's. A pool of N compute threads has N - 1 of
/// them beside the thread that submits the work (the pools start on first use).
pub fn pool_threads(pid: u32) -> (usize, usize) {
    let names = thread_names(pid);
    let count = |prefix: &str| names.iter().filter(|n| n.starts_with(prefix)).count();
    (count("surge-kernel-"), count("candle-bp-"))
}
