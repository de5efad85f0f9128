//! The worker's cache of DNS answers for the checks: records already parsed by mail-auth (SPF,
//! DKIM keys, DMARC policies) and addresses, each kept until its TTL runs out.
//!
//! One per worker thread, so there is no lock: a `RefCell` is enough, since the sessions of a
//! worker run on one thread and never hold a borrow across an `.await` (every method here
//! returns before the caller awaits again).

use std::borrow::Borrow;
use std::cell::RefCell;
use std::collections::HashMap;
use std::hash::Hash;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::Instant;

use mail_auth::{Parameters, RecordSet, ResolverCache, Txt, MX};

use crate::clock;

/// Entries kept per record type and worker. A full cache first drops what has expired, then
/// everything: a flood of distinct names (random senders) costs lookups, never memory.
pub const MAX_ENTRIES: usize = 16 * 1024;

/// Answers of one record type, by name, each with the instant it expires.
pub struct TtlCache<K, V> {
    entries: RefCell<HashMap<K, (V, Instant)>>,
}

impl<K, V> Default for TtlCache<K, V> {
    fn default() -> Self {
        TtlCache {
            entries: RefCell::new(HashMap::new()),
        }
    }
}

impl<K: Hash + Eq, V: Clone> ResolverCache<K, V> for TtlCache<K, V> {
    fn get<Q>(&self, name: &Q) -> Option<V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let mut entries = self.entries.borrow_mut();
        match entries.get(name) {
            Some((value, until)) if *until > clock::now() => Some(value.clone()),
            Some(_) => {
                entries.remove(name);
                None
            }
            None => None,
        }
    }

    fn remove<Q>(&self, name: &Q) -> Option<V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.entries.borrow_mut().remove(name).map(|(v, _)| v)
    }

    fn insert(&self, key: K, value: V, valid_until: Instant) {
        let mut entries = self.entries.borrow_mut();
        if entries.len() >= MAX_ENTRIES {
            let now = clock::now();
            entries.retain(|_, (_, until)| *until > now);
            if entries.len() >= MAX_ENTRIES {
                entries.clear();
            }
        }
        entries.insert(key, (value, valid_until));
    }
}

/// The caches of every record type the checks look up.
#[derive(Default)]
pub struct Caches {
    txt: TtlCache<Box<str>, Txt>,
    mx: TtlCache<Box<str>, RecordSet<MX>>,
    ipv4: TtlCache<Box<str>, RecordSet<Ipv4Addr>>,
    ipv6: TtlCache<Box<str>, RecordSet<Ipv6Addr>>,
    ptr: TtlCache<IpAddr, RecordSet<Box<str>>>,
}

/// mail-auth's parameters with every cache of [`Caches`].
pub type Cached<'x, P> = Parameters<
    'x,
    P,
    TtlCache<Box<str>, Txt>,
    TtlCache<Box<str>, RecordSet<MX>>,
    TtlCache<Box<str>, RecordSet<Ipv4Addr>>,
    TtlCache<Box<str>, RecordSet<Ipv6Addr>>,
    TtlCache<IpAddr, RecordSet<Box<str>>>,
>;

impl Caches {
    /// `params` with every cache attached.
    pub fn parameters<P>(&self, params: P) -> Cached<'_, P> {
        Parameters::new(params)
            .with_txt_cache(&self.txt)
            .with_mx_cache(&self.mx)
            .with_ipv4_cache(&self.ipv4)
            .with_ipv6_cache(&self.ipv6)
            .with_ptr_cache(&self.ptr)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn entries_live_until_their_ttl_and_a_full_cache_sheds_the_expired() {
        let cache: TtlCache<Box<str>, u32> = TtlCache::default();
        let now = clock::now();
        cache.insert("live".into(), 1, now + Duration::from_secs(60));
        cache.insert("dead".into(), 2, now);
        assert_eq!(cache.get("live"), Some(1));
        assert_eq!(cache.get("dead"), None);
        for i in 0..MAX_ENTRIES {
            cache.insert(format!("gone{i}").into(), 0, now);
        }
        // Inserting into the full cache dropped the expired entries, not the live one.
        assert_eq!(cache.get("live"), Some(1));
        assert!(cache.entries.borrow().len() < 10);
    }
}
