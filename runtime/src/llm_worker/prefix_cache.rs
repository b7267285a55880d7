//! The prefix cache: the KV caches of finished sequences, kept in the part of the KV
//! budget that running sequences do not reserve, and copied into a new sequence whose
//! prompt starts with the same tokens. A chat's next turn (which re-sends the whole
//! history) and requests sharing a long system prompt then prefill only what is new,
//! as vLLM's automatic prefix caching and llama.cpp's slot cache do.
//!
//! Only finished sequences are kept, so evicting an entry never touches a running
//! sequence; a reused prefix is copied, so entries are never shared. Eviction is least
//! recently used first. (Prefixes of sequences still running are shared by copy at
//! admission too: `admission.rs`.)

use crate::llm::{Result, SeqCache};

/// Shorter common prefixes are not worth a lookup's copy.
pub const MIN_REUSE: usize = 8;

struct Entry {
    /// The tokens whose keys and values `cache` holds, in order.
    tokens: Vec<u32>,
    cache: SeqCache,
    used: u64,
}

#[derive(Default)]
pub struct PrefixCache {
    entries: Vec<Entry>,
    clock: u64,
}

/// Tokens shared at the start of two token sequences.
pub fn common_prefix_len<'a>(
    a: impl IntoIterator<Item = &'a u32>,
    b: impl IntoIterator<Item = &'a u32>,
) -> usize {
    a.into_iter().zip(b).take_while(|(x, y)| x == y).count()
}

impl PrefixCache {
    /// KV-cache tokens held (allocated capacity, which is what they cost).
    pub fn tokens(&self) -> usize {
        self.entries.iter().map(|e| e.cache.capacity()).sum()
    }

    /// Keeps a finished sequence's cache; `tokens` are the prompt then the generated
    /// tokens, of which the cache holds the first `cache.len()`. An entry the new one
    /// extends is dropped; one that already covers it is only marked used.
    pub fn insert(&mut self, mut tokens: Vec<u32>, cache: SeqCache) {
        tokens.truncate(cache.len());
        if tokens.len() < MIN_REUSE {
            return;
        }
        self.clock += 1;
        let clock = self.clock;
        if let Some(e) = self
            .entries
            .iter_mut()
            .find(|e| e.tokens.starts_with(&tokens))
        {
            e.used = clock;
            return;
        }
        self.entries.retain(|e| !tokens.starts_with(&e.tokens));
        self.entries.push(Entry {
            tokens,
            cache,
            used: clock,
        });
    }

    /// Evicts least recently used entries until at most `limit` tokens are held.
    pub fn shrink_to(&mut self, limit: usize) {
        while self.tokens() > limit {
            let Some(oldest) = (0..self.entries.len()).min_by_key(|&i| self.entries[i].used) else {
                return;
            };
            self.entries.swap_remove(oldest);
        }
    }

    /// Copies the longest kept prefix of `prompt` into the empty `cache`, leaving at
    /// least the prompt's last token to prefill (its logits choose the first output
    /// token). Returns how many tokens were reused (0: none long enough).
    pub fn reuse(&mut self, prompt: &[u32], cache: &mut SeqCache) -> Result<usize> {
        let limit = prompt.len().saturating_sub(1);
        let best = self
            .entries
            .iter_mut()
            .map(|e| (common_prefix_len(&e.tokens, prompt).min(limit), e))
            .max_by_key(|(n, _)| *n);
        let Some((n, e)) = best.filter(|(n, _)| *n >= MIN_REUSE) else {
            return Ok(0);
        };
        self.clock += 1;
        e.used = self.clock;
        cache.copy_prefix(&e.cache, n)?;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use candle_core::Device;

    use super::*;

    /// A cache holding `n` tokens of a 1-layer toy model.
    fn cache(n: usize) -> SeqCache {
        let mut c = SeqCache::new(1, 1, 2, 1024, Device::Cpu);
        c.reserve(n).unwrap();
        c.commit(n);
        c
    }

    fn empty() -> SeqCache {
        cache(0)
    }

    #[test]
    fn the_longest_prefix_is_reused_leaving_the_last_prompt_token() {
        let mut p = PrefixCache::default();
        let a: Vec<u32> = (0..20).collect();
        p.insert(a.clone(), cache(20));
        // Same prompt: all but its last token.
        let mut c = empty();
        assert_eq!(p.reuse(&a, &mut c).unwrap(), 19);
        assert_eq!(c.len(), 19);
        // A longer prompt starting the same: the whole entry.
        let longer: Vec<u32> = (0..30).collect();
        assert_eq!(p.reuse(&longer, &mut empty()).unwrap(), 20);
        // Diverging after 10 tokens: 10; after 5: too short to reuse.
        let mut b: Vec<u32> = (0..10).collect();
        b.extend([99, 98, 97]);
        assert_eq!(p.reuse(&b, &mut empty()).unwrap(), 10);
        let mut c5: Vec<u32> = (0..5).collect();
        c5.extend(50..70);
        assert_eq!(p.reuse(&c5, &mut empty()).unwrap(), 0);
    }

    #[test]
    fn extended_entries_are_replaced_and_the_least_recently_used_evicted() {
        let mut p = PrefixCache::default();
        p.insert((0..20).collect(), cache(20));
        // The next turn extends it: one entry remains.
        p.insert((0..40).collect(), cache(40));
        assert_eq!(p.entries.len(), 1);
        // A prefix of what is kept adds nothing.
        p.insert((0..30).collect(), cache(30));
        assert_eq!(p.entries.len(), 1);
        p.insert((100..140).collect(), cache(40));
        // Use the first, then shrink to room for one: the second (older use) goes.
        let first: Vec<u32> = (0..41).collect();
        assert_eq!(p.reuse(&first, &mut empty()).unwrap(), 40);
        p.shrink_to(p.entries[0].cache.capacity());
        assert_eq!(p.entries.len(), 1);
        assert_eq!(p.entries[0].tokens[0], 0);
        p.shrink_to(0);
        assert_eq!(p.tokens(), 0);
    }

    /// Only the tokens the cache holds are kept: the last sampled token was never fed.
    #[test]
    fn tokens_are_cut_to_what_the_cache_holds() {
        let mut p = PrefixCache::default();
        p.insert((0..25).collect(), cache(24));
        assert_eq!(p.entries[0].tokens.len(), 24);
    }
}
