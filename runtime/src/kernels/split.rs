//! How one call's row groups are shared out among the pool's threads.
//!
//! Each participating thread owns a contiguous range of groups and walks it
//! in chunks; when done it takes leftover chunks from the other ranges. Why
//! not one shared chunk counter: the output is `n × rows` row-major, so
//! neighbouring groups write neighbouring parts of the same cache lines for
//! every activation row; handing neighbouring chunks to different cores made
//! those lines bounce and cost ~30% at n = 16 on 2 cores. Contiguous ranges
//! leave one shared boundary per thread, while stealing still covers a
//! thread that a neighbour process descheduled.

use std::ops::Range;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Ranges beyond this many threads are merged (2-core target; 16 is ample).
const MAX_PARTS: usize = 16;

/// A counter on its own cache line, so threads claiming chunks in different
/// ranges do not contend.
#[derive(Default)]
#[repr(align(64))]
struct Counter(AtomicUsize);

pub(crate) struct Split {
    groups: usize,
    parts: usize,
    part_len: usize,
    chunk: usize,
    /// Chunks claimed so far in each range.
    next: [Counter; MAX_PARTS],
    /// Hands each arriving thread a different starting range.
    ticket: AtomicUsize,
}

impl Split {
    /// `groups` split into `threads` ranges, walked in chunks of at most
    /// `max_chunk` groups (at least 4 chunks per range for stealing).
    pub fn new(groups: usize, threads: usize, max_chunk: usize) -> Split {
        let parts = threads.clamp(1, MAX_PARTS).min(groups.max(1));
        let part_len = groups.div_ceil(parts);
        Split {
            groups,
            parts,
            part_len,
            chunk: part_len.div_ceil(4).min(max_chunk).max(1),
            next: Default::default(),
            ticket: AtomicUsize::new(0),
        }
    }

    /// Calls `f` on chunks until no group is left; each group is passed to
    /// exactly one call across all threads running `run`.
    pub fn run(&self, mut f: impl FnMut(Range<usize>)) {
        let first = self.ticket.fetch_add(1, Ordering::Relaxed);
        for i in 0..self.parts {
            let p = (first + i) % self.parts;
            let lo = p * self.part_len;
            let hi = ((p + 1) * self.part_len).min(self.groups);
            loop {
                let start = lo + self.next[p].0.fetch_add(1, Ordering::Relaxed) * self.chunk;
                if start >= hi {
                    break;
                }
                f(start..(start + self.chunk).min(hi));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Split;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn kernels_split_covers_every_group_once() {
        for (groups, threads, max_chunk) in
            [(1, 2, 8), (12, 2, 1), (97, 3, 5), (3072, 2, 13), (5, 40, 2)]
        {
            let split = Split::new(groups, threads, max_chunk);
            let hits: Vec<AtomicUsize> = (0..groups).map(|_| AtomicUsize::new(0)).collect();
            std::thread::scope(|s| {
                for _ in 0..threads.min(4) {
                    s.spawn(|| {
                        split.run(|r| {
                            for g in r {
                                hits[g].fetch_add(1, Ordering::Relaxed);
                            }
                        })
                    });
                }
            });
            assert!(
                hits.iter().all(|h| h.load(Ordering::Relaxed) == 1),
                "{groups} {threads}"
            );
        }
    }
}
