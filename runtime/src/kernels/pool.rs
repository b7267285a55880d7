//! A tiny persistent thread pool for the matmul kernels.
//!
//! Why not rayon or candle's pool: a decode step issues ~120 small matmuls
//! (tens of µs each), so waking threads must cost well under a microsecond.
//! Workers here spin on an epoch counter for a short while after each job
//! (`SURGE_KERNEL_SPIN_US`, default 50 µs, long enough to bridge the gaps
//! between a layer's matmuls) and then park on a futex, so an idle worker
//! process burns no CPU. The calling thread always runs the job too, so a
//! pool of `threads` has `threads - 1` workers.
//!
//! Joining is optional: the caller never waits for a worker that has not
//! started on the job. When the caller runs out of work it *closes* the job
//! and waits only for workers that joined before that. On a shared 2-core
//! machine a worker is often descheduled for a whole time slice (ms); waiting
//! for it to acknowledge every job made small matmuls 10x slower under load.
//! Jobs therefore must share out work themselves (an atomic task counter)
//! and tolerate running on any number of threads.
//!
//! Ownership: one process-wide pool ([`global_pool`]), because the engine
//! calls matmul from one dedicated thread. It stays correct with several
//! callers: a caller that finds the pool busy runs its job alone on its own
//! thread instead of waiting (tests do this; it is only slower).

use std::cell::UnsafeCell;
use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::{self, Thread};
use std::time::{Duration, Instant};

type Job = dyn Fn() + Sync;

/// State shared between the submitting thread and the workers.
struct Shared {
    /// Bumped once per job; workers run the job when it changes.
    epoch: AtomicU64,
    /// The current job. Written only by the submitter while the job is
    /// closed and no worker is inside it; read by workers only after joining
    /// an open job (see `state`).
    job: UnsafeCell<*const Job>,
    /// Workers inside the current job, plus [`CLOSED`] while no job is open.
    /// Workers join with `fetch_add` and leave with `fetch_sub`; a worker that
    /// finds the job closed leaves without touching it.
    state: AtomicUsize,
    /// A worker's job panicked; re-raised on the submitting thread.
    panicked: AtomicBool,
    /// Per worker: parked (or about to park) and needs an `unpark`.
    sleeping: Vec<AtomicBool>,
    shutdown: AtomicBool,
    spin: Duration,
}

/// Flag in `Shared::state`: the job is closed to new workers.
const CLOSED: usize = 1 << (usize::BITS - 1);

// SAFETY: `job` is only written while no worker reads it (see its doc); the
// pointee is `Sync`, and the submitter keeps it alive until every worker that
// joined has left.
unsafe impl Sync for Shared {}
// SAFETY: as above; the raw pointer is only dereferenced under that protocol.
unsafe impl Send for Shared {}

/// A pool of `threads - 1` worker threads plus the calling thread.
pub struct Pool {
    shared: Arc<Shared>,
    workers: Vec<(Thread, Option<thread::JoinHandle<()>>)>,
    /// Serialises submitters; see the module docs.
    submit: Mutex<()>,
}

impl Pool {
    /// A pool running jobs on `threads` threads (the caller included);
    /// `threads <= 1` runs everything on the caller. `spin` is how long an idle
    /// worker polls before parking.
    pub fn new(threads: usize, spin: Duration) -> Pool {
        let n_workers = threads.max(1) - 1;
        let shared = Arc::new(Shared {
            epoch: AtomicU64::new(0),
            job: UnsafeCell::new(std::ptr::null::<fn()>() as *const Job),
            state: AtomicUsize::new(CLOSED),
            panicked: AtomicBool::new(false),
            sleeping: (0..n_workers).map(|_| AtomicBool::new(false)).collect(),
            shutdown: AtomicBool::new(false),
            spin,
        });
        let mut workers = Vec::with_capacity(n_workers);
        for i in 0..n_workers {
            let sh = Arc::clone(&shared);
            let spawned = thread::Builder::new()
                .name(format!("surge-kernel-{i}"))
                .spawn(move || worker(&sh, i));
            match spawned {
                Ok(h) => workers.push((h.thread().clone(), Some(h))),
                // Out of threads: run with fewer workers rather than fail.
                Err(_) => break,
            }
        }
        Pool {
            shared,
            workers,
            submit: Mutex::new(()),
        }
    }

    /// Threads a job runs on, the caller included.
    pub fn threads(&self) -> usize {
        self.workers.len() + 1
    }

    /// Runs `job` on the calling thread and on every worker that wakes up in
    /// time, returning when the caller's copy and every joined copy have
    /// finished. `job` must share out work itself (e.g. an atomic task
    /// counter) and may run on any number of threads, the caller's always.
    /// A panic in any copy is re-raised here after all finished.
    pub fn run(&self, job: &(dyn Fn() + Sync)) {
        let guard = match self.submit.try_lock() {
            Ok(g) if !self.workers.is_empty() => g,
            // Busy (another caller) or no workers: run alone.
            _ => return job(),
        };
        let sh = &*self.shared;
        // SAFETY: we hold `submit` and the previous job is closed with no
        // worker inside, so no worker reads `job` now. The lifetime is erased
        // because workers only dereference it while joined, and we wait for
        // every joined worker to leave before `job` can go out of scope.
        unsafe {
            *sh.job.get() = std::mem::transmute::<*const (dyn Fn() + Sync + '_), *const Job>(job);
        }
        // Open the job (keeping the count of late leavers from the previous
        // one, who saw it closed and are about to decrement). The RMW chain on
        // `state` publishes the `job` write to workers that join.
        sh.state.fetch_and(!CLOSED, Ordering::SeqCst);
        // SeqCst pairs with the workers' SeqCst `sleeping` store / epoch load
        // so either they see the new epoch or we see them sleeping.
        sh.epoch.fetch_add(1, Ordering::SeqCst);
        for (i, (t, _)) in self.workers.iter().enumerate() {
            if sh.sleeping[i].load(Ordering::SeqCst) {
                t.unpark();
            }
        }
        let mine = catch_unwind(AssertUnwindSafe(job));
        // No work is left once our copy returns: close the job and wait only
        // for workers already inside it (acquire: their writes are visible).
        sh.state.fetch_or(CLOSED, Ordering::SeqCst);
        let mut spins = 0u32;
        while sh.state.load(Ordering::Acquire) & !CLOSED != 0 {
            spins = spins.wrapping_add(1);
            if spins.is_multiple_of(4096) {
                // A worker was descheduled; let it run.
                thread::yield_now();
            } else {
                std::hint::spin_loop();
            }
        }
        let theirs = sh.panicked.swap(false, Ordering::Relaxed);
        drop(guard);
        if let Err(p) = mine {
            resume_unwind(p);
        }
        if theirs {
            panic!("a kernel worker thread panicked");
        }
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        self.shared.shutdown.store(true, Ordering::SeqCst);
        self.shared.epoch.fetch_add(1, Ordering::SeqCst);
        for (t, h) in &mut self.workers {
            t.unpark();
            if let Some(h) = h.take() {
                let _ = h.join();
            }
        }
    }
}

fn worker(sh: &Shared, i: usize) {
    // Start from the pool's initial epoch, not the current one: a job may be
    // submitted before this thread first runs, and it must still take part.
    let mut seen = 0;
    loop {
        let mut since = Instant::now();
        let mut polls = 0u32;
        loop {
            let e = sh.epoch.load(Ordering::Acquire);
            if e != seen {
                seen = e;
                break;
            }
            polls = polls.wrapping_add(1);
            // Reading the clock costs ~20 ns; do it every 64 polls.
            if polls.is_multiple_of(64) && since.elapsed() >= sh.spin {
                sh.sleeping[i].store(true, Ordering::SeqCst);
                if sh.epoch.load(Ordering::SeqCst) == seen {
                    // An `unpark` issued before this call makes it return at
                    // once, so a wake-up cannot be lost; spurious returns just
                    // loop.
                    thread::park();
                }
                sh.sleeping[i].store(false, Ordering::Relaxed);
                since = Instant::now();
            } else {
                std::hint::spin_loop();
            }
        }
        if sh.shutdown.load(Ordering::SeqCst) {
            return;
        }
        let prev = sh.state.fetch_add(1, Ordering::SeqCst);
        if prev & CLOSED == 0 {
            // SAFETY: we joined an open job, so `job` was published before it
            // opened (RMW chain on `state`) and the submitter keeps it alive
            // until we leave below.
            let job = unsafe { &**sh.job.get() };
            if catch_unwind(AssertUnwindSafe(job)).is_err() {
                sh.panicked.store(true, Ordering::Relaxed);
            }
        }
        // Release: the job's writes happen-before the submitter's return.
        sh.state.fetch_sub(1, Ordering::Release);
    }
}

/// The compute thread count set by [`set_threads`] (the worker's `--threads`).
static THREADS: OnceLock<usize> = OnceLock::new();

/// Sets the process's compute thread count: the size of the [`global_pool`], and what
/// [`threads`] answers. Call before the pool is first used (the worker does, from its
/// `--threads`); returns false, changing nothing, when a count was already set or the
/// pool already exists with another size.
pub fn set_threads(n: usize) -> bool {
    let n = n.max(1);
    THREADS.set(n).is_ok() && POOL.get().is_none_or(|p| p.threads() == n)
}

/// The process's compute threads: [`set_threads`]' count, else `SURGE_KERNEL_THREADS`,
/// else every available core. Whatever else sizes itself to the machine (load-time
/// repacking, decoder slots) uses this, so a worker started with `--threads N` keeps to N.
pub fn threads() -> usize {
    if let Some(&n) = THREADS.get() {
        return n;
    }
    std::env::var("SURGE_KERNEL_THREADS")
        .ok()
        .and_then(|v| v.trim().parse::<usize>().ok())
        .filter(|&t| t > 0)
        .unwrap_or_else(|| thread::available_parallelism().map_or(1, |n| n.get()))
}

static POOL: OnceLock<Pool> = OnceLock::new();

/// The process-wide pool used by [`super::matmul`]: [`threads`] threads (the caller
/// included, so `threads() - 1` workers named `surge-kernel-N`), `SURGE_KERNEL_SPIN_US`
/// spin (default 50). Created on first use; lives for the process.
pub fn global_pool() -> &'static Pool {
    POOL.get_or_init(|| {
        let spin = std::env::var("SURGE_KERNEL_SPIN_US")
            .ok()
            .and_then(|v| v.trim().parse::<u64>().ok())
            .unwrap_or(50);
        Pool::new(threads(), Duration::from_micros(spin))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernels_pool_runs_every_task_once_and_wakes_after_parking() {
        let pool = Pool::new(3, Duration::from_micros(20));
        assert_eq!(pool.threads(), 3);
        for round in 0..200 {
            let next = AtomicUsize::new(0);
            let hits: Vec<AtomicUsize> = (0..97).map(|_| AtomicUsize::new(0)).collect();
            pool.run(&|| loop {
                let t = next.fetch_add(1, Ordering::Relaxed);
                if t >= hits.len() {
                    break;
                }
                hits[t].fetch_add(1, Ordering::Relaxed);
            });
            assert!(hits.iter().all(|h| h.load(Ordering::Relaxed) == 1));
            // Every few rounds let the workers park, so wake-up is exercised.
            if round % 50 == 0 {
                thread::sleep(Duration::from_millis(2));
            }
        }
    }

    #[test]
    fn kernels_pool_workers_take_part() {
        let pool = Pool::new(2, Duration::from_millis(50));
        // Each copy blocks until another copy has started, so this returns
        // only if the worker joins the job alongside the caller.
        let started = AtomicUsize::new(0);
        pool.run(&|| {
            started.fetch_add(1, Ordering::SeqCst);
            while started.load(Ordering::SeqCst) < 2 {
                std::hint::spin_loop();
            }
        });
        assert!(started.load(Ordering::SeqCst) >= 2);
    }

    #[test]
    fn kernels_pool_caller_does_not_wait_for_absent_workers() {
        // A parked worker with a long wake-up path must not hold up a job the
        // caller can finish alone: many tiny jobs complete quickly.
        let pool = Pool::new(2, Duration::ZERO);
        let total = AtomicUsize::new(0);
        for _ in 0..10_000 {
            let next = AtomicUsize::new(0);
            pool.run(&|| {
                while next.fetch_add(1, Ordering::Relaxed) < 3 {
                    total.fetch_add(1, Ordering::Relaxed);
                }
            });
        }
        assert_eq!(total.load(Ordering::Relaxed), 30_000);
    }

    #[test]
    fn kernels_pool_names_its_workers() {
        let pool = Pool::new(3, Duration::from_micros(10));
        let names: Vec<_> = pool
            .workers
            .iter()
            .map(|(t, _)| t.name().unwrap_or("").to_string())
            .collect();
        assert_eq!(names, ["surge-kernel-0", "surge-kernel-1"]);
        assert!(Pool::new(1, Duration::ZERO).workers.is_empty());
    }

    #[test]
    fn kernels_pool_propagates_worker_panics() {
        let pool = Pool::new(2, Duration::from_micros(10));
        // The first copy waits for a second one, which panics; whichever
        // thread that is, the panic must surface in the caller.
        let started = AtomicUsize::new(0);
        let r = catch_unwind(AssertUnwindSafe(|| {
            pool.run(&|| {
                if started.fetch_add(1, Ordering::SeqCst) > 0 {
                    panic!("boom");
                }
                while started.load(Ordering::SeqCst) < 2 {
                    std::hint::spin_loop();
                }
            })
        }));
        assert!(r.is_err());
        // The pool still works afterwards.
        let ran = AtomicUsize::new(0);
        pool.run(&|| {
            ran.fetch_add(1, Ordering::Relaxed);
        });
        assert!(ran.load(Ordering::Relaxed) >= 1);
    }
}
