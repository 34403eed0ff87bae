//! Opened split indexes, kept between queries of one engine: splits never
//! change, so an index read once answers the next search of its split
//! without fetching and unpacking it again (a forensic session searches the
//! same hours over and over). Bounded by the indexes' packed size; the least
//! recently used goes first.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use sluice_archive::split::terms::TermFilter;

use tantivy::Index;

#[derive(Debug)]
pub struct IndexCache {
    capacity_bytes: u64,
    inner: Mutex<Inner>,
    /// Term filters of splits (`None`: the split has none), for the
    /// splits a search skips without opening their index. Emptied when
    /// they take more than a sixteenth of the capacity.
    filters: Mutex<Filters>,
}

/// Split key → its term filter (if any), and their bytes.
type Filters = (HashMap<String, Option<Arc<TermFilter>>>, u64);

#[derive(Debug, Default)]
struct Inner {
    /// Split key → index and its packed size.
    entries: HashMap<String, (Index, u64)>,
    /// Keys, least recently used first.
    order: VecDeque<String>,
    bytes: u64,
}

impl IndexCache {
    pub fn new(capacity_bytes: u64) -> IndexCache {
        IndexCache {
            capacity_bytes,
            inner: Mutex::new(Inner::default()),
            filters: Mutex::default(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn get(&self, key: &str) -> Option<Index> {
        let mut inner = self.lock();
        let index = inner.entries.get(key)?.0.clone();
        if let Some(at) = inner.order.iter().position(|k| k == key) {
            let key = inner.order.remove(at).expect("in bounds");
            inner.order.push_back(key);
        }
        Some(index)
    }

    pub fn insert(&self, key: &str, index: Index, bytes: u64) {
        if bytes > self.capacity_bytes {
            return;
        }
        let mut inner = self.lock();
        if inner.entries.contains_key(key) {
            return;
        }
        while inner.bytes + bytes > self.capacity_bytes {
            let Some(oldest) = inner.order.pop_front() else {
                break;
            };
            if let Some((_, size)) = inner.entries.remove(&oldest) {
                inner.bytes -= size;
            }
        }
        inner.entries.insert(key.to_string(), (index, bytes));
        inner.order.push_back(key.to_string());
        inner.bytes += bytes;
    }

    /// The term filter of a split, if asked for before.
    pub fn filter(&self, key: &str) -> Option<Option<Arc<TermFilter>>> {
        let filters = self.filters.lock().unwrap_or_else(|e| e.into_inner());
        filters.0.get(key).cloned()
    }

    pub fn insert_filter(&self, key: &str, filter: Option<Arc<TermFilter>>, bytes: u64) {
        let mut filters = self.filters.lock().unwrap_or_else(|e| e.into_inner());
        if filters.1 + bytes > self.capacity_bytes / 16 {
            filters.0.clear();
            filters.1 = 0;
        }
        filters.0.insert(key.to_string(), filter);
        filters.1 += bytes;
    }

    /// Indexes held, and their packed bytes.
    pub fn usage(&self) -> (usize, u64) {
        let inner = self.lock();
        (inner.entries.len(), inner.bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn index() -> Index {
        let (schema, _) = sluice_archive::split::index::index_schema(
            sluice_archive::split::IndexPostings::DocIds,
        );
        Index::create_in_ram(schema)
    }

    #[test]
    fn least_recently_used_goes_first_within_capacity() {
        let cache = IndexCache::new(100);
        cache.insert("a", index(), 40);
        cache.insert("b", index(), 40);
        assert!(cache.get("a").is_some());
        cache.insert("c", index(), 40);
        assert!(cache.get("b").is_none(), "b was least recently used");
        assert!(cache.get("a").is_some() && cache.get("c").is_some());
        assert_eq!(cache.usage(), (2, 80));
        cache.insert("huge", index(), 101);
        assert!(cache.get("huge").is_none());
    }
}
