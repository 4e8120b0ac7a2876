//! A persistent (copy-on-write, structurally shared) vector of optional entries.
//!
//! Why not `Vec<Option<T>>`: publishing a new table snapshot clones it, and a million
//! nexthops or labels would be copied for every change. Here entries live in chunks of 256
//! behind `Arc`s: a clone copies only the chunk pointers, and a write copies only the chunk
//! it touches (`Arc::make_mut`), leaving every published snapshot unchanged.

use std::sync::Arc;

const CHUNK_BITS: usize = 8;
const CHUNK: usize = 1 << CHUNK_BITS;

/// A fixed-capacity vector of `Option<T>` indexed by `u32`, cheap to clone.
#[derive(Debug, Clone)]
pub struct PVec<T: Clone> {
    chunks: Vec<Option<Arc<Vec<Option<T>>>>>,
    capacity: u32,
    len: u32,
}

impl<T: Clone> PVec<T> {
    /// An empty vector that accepts indices `0..capacity`.
    pub fn with_capacity(capacity: u32) -> Self {
        let n = (capacity as usize).div_ceil(CHUNK);
        PVec {
            chunks: vec![None; n],
            capacity,
            len: 0,
        }
    }

    /// Largest index + 1 that can be stored.
    pub fn capacity(&self) -> u32 {
        self.capacity
    }

    /// Number of occupied entries.
    pub fn len(&self) -> u32 {
        self.len
    }

    /// True when no entry is occupied.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The entry at `i`.
    #[inline]
    pub fn get(&self, i: u32) -> Option<&T> {
        let i = i as usize;
        self.chunks
            .get(i >> CHUNK_BITS)?
            .as_ref()?
            .get(i & (CHUNK - 1))?
            .as_ref()
    }

    /// Stores `v` at `i` (returns the old entry), or gives `v` back if `i` is out of range.
    pub fn set(&mut self, i: u32, v: T) -> Result<Option<T>, T> {
        if i >= self.capacity {
            return Err(v);
        }
        let (c, o) = ((i as usize) >> CHUNK_BITS, (i as usize) & (CHUNK - 1));
        let chunk = self.chunks[c].get_or_insert_with(|| Arc::new(vec![None; CHUNK]));
        let old = Arc::make_mut(chunk)[o].replace(v);
        if old.is_none() {
            self.len += 1;
        }
        Ok(old)
    }

    /// Removes the entry at `i`.
    pub fn remove(&mut self, i: u32) -> Option<T> {
        let (c, o) = ((i as usize) >> CHUNK_BITS, (i as usize) & (CHUNK - 1));
        let chunk = self.chunks.get_mut(c)?.as_mut()?;
        chunk[o].as_ref()?;
        let old = Arc::make_mut(chunk)[o].take();
        self.len -= 1;
        if chunk.iter().all(Option::is_none) {
            self.chunks[c] = None;
        }
        old
    }

    /// The lowest free index, if any.
    pub fn first_free(&self) -> Option<u32> {
        for (c, chunk) in self.chunks.iter().enumerate() {
            let base = (c * CHUNK) as u32;
            match chunk {
                None => return (base < self.capacity).then_some(base),
                Some(ch) => {
                    if let Some(o) = ch.iter().position(Option::is_none) {
                        let i = base + o as u32;
                        if i < self.capacity {
                            return Some(i);
                        }
                    }
                }
            }
        }
        None
    }

    /// Occupied entries in index order.
    pub fn iter(&self) -> impl Iterator<Item = (u32, &T)> {
        self.chunks.iter().enumerate().flat_map(|(c, chunk)| {
            chunk.iter().flat_map(move |ch| {
                ch.iter()
                    .enumerate()
                    .filter_map(move |(o, v)| v.as_ref().map(|v| ((c * CHUNK + o) as u32, v)))
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_get_remove_and_bounds() {
        let mut v = PVec::with_capacity(1000);
        assert_eq!(v.set(999, "last"), Ok(None));
        assert_eq!(v.set(1000, "out"), Err("out"));
        assert_eq!(v.set(3, "a"), Ok(None));
        assert_eq!(v.set(3, "b"), Ok(Some("a")));
        assert_eq!((v.get(3), v.get(4), v.len()), (Some(&"b"), None, 2));
        assert_eq!(v.first_free(), Some(0));
        assert_eq!(v.remove(3), Some("b"));
        assert_eq!(v.remove(3), None);
        assert_eq!(v.iter().collect::<Vec<_>>(), vec![(999, &"last")]);
    }

    #[test]
    fn clones_are_snapshots() {
        let mut v = PVec::with_capacity(600);
        v.set(10, 1).unwrap();
        let snap = v.clone();
        v.set(10, 2).unwrap();
        v.set(500, 3).unwrap();
        assert_eq!(snap.get(10), Some(&1));
        assert_eq!(snap.get(500), None);
        assert_eq!(v.get(10), Some(&2));
    }

    #[test]
    fn first_free_skips_full_chunks() {
        let mut v = PVec::with_capacity(300);
        for i in 0..256 {
            v.set(i, i).unwrap();
        }
        assert_eq!(v.first_free(), Some(256));
        for i in 256..300 {
            v.set(i, i).unwrap();
        }
        assert_eq!(v.first_free(), None);
    }
}
