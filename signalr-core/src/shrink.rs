//! Maps that give back the capacity a burst made them grow to.
//!
//! A hash table keeps its largest capacity after its entries are removed, so after a storm of
//! connections (tens of thousands of long-polling clients lingering for their disconnect
//! timeout, say) the registries would hold megabytes of empty buckets for the rest of the
//! process's life. Each registry counts its removals and, every [`CHECK_EVERY`] of them, shrinks
//! the map when it is under a quarter full: the check costs a read lock per shard, so it is done
//! rarely, and the quarter keeps a map that shrinks from growing straight back.

#[cfg(feature = "server")]
use std::collections::HashMap;
use std::collections::HashSet;
use std::hash::{BuildHasher, Hash};
use std::sync::atomic::{AtomicUsize, Ordering};

use dashmap::DashMap;

/// Removals between two looks at a map's capacity.
pub(crate) const CHECK_EVERY: usize = 1024;

/// Below this capacity a map is left alone: the memory is small and the map is likely to need
/// it again.
const KEEP_CAPACITY: usize = 1024;

fn too_sparse(len: usize, capacity: usize) -> bool {
    sparse_above(len, capacity, KEEP_CAPACITY)
}

/// The rule: over `keep` and under a quarter full.
fn sparse_above(len: usize, capacity: usize, keep: usize) -> bool {
    capacity > keep && len.saturating_mul(4) < capacity
}

/// For a set behind a lock the caller already holds, with a floor of its own: a group's member
/// set is one of many, and most are small.
pub(crate) fn shrink_set_if_sparse<T: Eq + Hash, S: BuildHasher>(
    set: &mut HashSet<T, S>,
    keep: usize,
) {
    if sparse_above(set.len(), set.capacity(), keep) {
        set.shrink_to(set.len() * 2);
    }
}

/// Counts removals from one map and shrinks it now and then (see the module doc).
#[derive(Default)]
pub(crate) struct Shrinker {
    removals: AtomicUsize,
}

impl Shrinker {
    /// Call after a removal from `map`, holding no guard into it (the check takes its locks).
    pub(crate) fn removed<K, V, S>(&self, map: &DashMap<K, V, S>)
    where
        K: Eq + Hash,
        S: BuildHasher + Clone,
    {
        if self.due() && too_sparse(map.len(), map.capacity()) {
            map.shrink_to_fit();
        }
    }

    fn due(&self) -> bool {
        self.removals.fetch_add(1, Ordering::Relaxed) % CHECK_EVERY == CHECK_EVERY - 1
    }
}

/// For a map behind a lock the caller already holds: capacity is free to read, so no count.
#[cfg(feature = "server")]
pub(crate) fn shrink_if_sparse<K: Eq + Hash, V, S: BuildHasher>(map: &mut HashMap<K, V, S>) {
    if too_sparse(map.len(), map.capacity()) {
        map.shrink_to(map.len() * 2);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_registry_gives_back_the_capacity_of_a_burst() {
        let map: DashMap<u32, u32> = DashMap::new();
        let shrinker = Shrinker::default();
        for i in 0..100_000 {
            map.insert(i, i);
        }
        let peak = map.capacity();
        assert!(peak >= 100_000);
        for i in 0..99_990 {
            map.remove(&i);
            shrinker.removed(&map);
        }
        assert_eq!(map.len(), 10);
        assert!(
            map.capacity() <= KEEP_CAPACITY * 4,
            "capacity {} of {peak} kept for 10 entries",
            map.capacity()
        );
        // What is left is still there.
        assert!((99_990..100_000).all(|i| map.get(&i).is_some()));
    }

    #[test]
    fn a_small_or_busy_map_is_left_alone() {
        assert!(!too_sparse(0, KEEP_CAPACITY));
        assert!(!too_sparse(300, 1024));
        assert!(!too_sparse(30_000, 100_000));
        assert!(too_sparse(20_000, 100_000));
    }

    #[cfg(feature = "server")]
    #[test]
    fn a_locked_map_shrinks_when_sparse() {
        let mut locked: HashMap<u32, u32> = (0..50_000).map(|i| (i, i)).collect();
        locked.retain(|&k, _| k < 10);
        shrink_if_sparse(&mut locked);
        assert!(locked.capacity() < 1_000, "{}", locked.capacity());
    }
}
