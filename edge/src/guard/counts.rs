//! How many of something each source has in use (connections, password checks), each taken
//! under a cap and given back when done. Shared by every worker; touched once per connection
//! or AUTH attempt, so a mutex is cheap at that rate.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Mutex, MutexGuard, PoisonError};

/// Counts in use per key; keys at zero are forgotten, so the map holds only sources with
/// something open.
#[derive(Debug)]
pub struct PerSource<K> {
    counts: Mutex<HashMap<K, u32>>,
}

impl<K> Default for PerSource<K> {
    fn default() -> Self {
        PerSource {
            counts: Mutex::new(HashMap::new()),
        }
    }
}

impl<K: Hash + Eq> PerSource<K> {
    /// Counts one more for `key`, unless it already holds `cap` (`None`: no cap); false then.
    pub fn take(&self, key: K, cap: Option<u32>) -> bool {
        let mut counts = self.lock();
        let n = counts.entry(key).or_insert(0);
        if cap.is_some_and(|cap| *n >= cap) {
            return false;
        }
        *n += 1;
        true
    }

    /// Gives back one taken for `key`.
    pub fn release(&self, key: &K) {
        let mut counts = self.lock();
        if let Some(n) = counts.get_mut(key) {
            *n -= 1;
            if *n == 0 {
                counts.remove(key);
            }
        }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<K, u32>> {
        // Plain counters: a panic elsewhere cannot leave them inconsistent.
        self.counts.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_are_capped_per_key_and_forgotten_at_zero() {
        let c = PerSource::default();
        assert!(c.take("a", Some(2)) && c.take("a", Some(2)));
        assert!(!c.take("a", Some(2)), "a third over a cap of two");
        assert!(c.take("b", Some(2)), "other keys are unaffected");
        assert!(c.take("a", None), "no cap");
        c.release(&"a");
        c.release(&"a");
        assert!(c.take("a", Some(2)));
        c.release(&"a");
        c.release(&"a");
        c.release(&"b");
        assert!(c.lock().is_empty());
        c.release(&"never taken");
    }
}
