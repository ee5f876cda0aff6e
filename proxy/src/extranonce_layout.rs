//! Extranonce subdivision: how one upstream connection's extranonce2 space is split among miners.
//!
//! The upstream gives the proxy `extranonce1` and `extranonce2_size` bytes to roll. The proxy
//! keeps `k` of those bytes as a miner index and hands the miner the rest:
//! miner extranonce1 = upstream extranonce1 ‖ index (k bytes), miner extranonce2_size =
//! upstream size − k, and upstream extranonce2 = index ‖ miner extranonce2. Because the index is
//! unique per connection, no two miners can ever build the same coinbase. k = 2 when the
//! upstream gives ≥ 6 bytes (miners keep ≥ 4), k = 1 for 3–5 bytes, and k = 0 (one miner per
//! upstream connection) for exactly 2; a miner never keeps fewer than 2 bytes.

use blgv_stratum::Extranonce;

/// Miners need at least this many extranonce2 bytes to roll (65,536 coinbases per job).
pub const MIN_MINER_EXTRANONCE2: usize = 2;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExtranonceLayout {
    pub index_bytes: usize,
    pub upstream_extranonce2_size: usize,
}

impl ExtranonceLayout {
    /// The layout for an upstream's extranonce2 size, `None` when it is too small to share.
    pub fn for_upstream(extranonce2_size: usize) -> Option<ExtranonceLayout> {
        let index_bytes = match extranonce2_size {
            0..=1 => return None,
            2 => 0,
            3..=5 => 1,
            _ => 2,
        };
        Some(ExtranonceLayout {
            index_bytes,
            upstream_extranonce2_size: extranonce2_size,
        })
    }

    /// The same index width on a new upstream, if the new size still leaves miners ≥ 2 bytes.
    /// Keeping the width on failover means miners keep their index and need no new slot.
    pub fn keep_index_width(&self, new_extranonce2_size: usize) -> Option<ExtranonceLayout> {
        (new_extranonce2_size >= self.index_bytes + MIN_MINER_EXTRANONCE2).then_some(
            ExtranonceLayout {
                index_bytes: self.index_bytes,
                upstream_extranonce2_size: new_extranonce2_size,
            },
        )
    }

    /// How many miners one upstream connection can serve.
    pub fn capacity(&self) -> u32 {
        1u32 << (8 * self.index_bytes)
    }

    pub fn miner_extranonce2_size(&self) -> usize {
        self.upstream_extranonce2_size - self.index_bytes
    }

    fn index_bytes_of(&self, index: u32) -> [u8; 2] {
        debug_assert!(index < self.capacity());
        let b = (index as u16).to_be_bytes();
        match self.index_bytes {
            2 => b,
            _ => [b[1], 0],
        }
    }

    pub fn miner_extranonce1(&self, upstream_extranonce1: &Extranonce, index: u32) -> Extranonce {
        upstream_extranonce1.extended_with(&self.index_bytes_of(index)[..self.index_bytes])
    }

    /// Write `index ‖ miner_extranonce2` into `out` (the bytes submitted upstream).
    pub fn upstream_extranonce2(&self, index: u32, miner_extranonce2: &[u8]) -> Extranonce {
        let mut v = Vec::with_capacity(self.upstream_extranonce2_size);
        v.extend_from_slice(&self.index_bytes_of(index)[..self.index_bytes]);
        v.extend_from_slice(miner_extranonce2);
        Extranonce::from_bytes(v)
    }
}

/// Hands out miner indices on one upstream connection; freed indices are reused.
#[derive(Debug, Default)]
pub struct SlotAllocator {
    next: u32,
    free: Vec<u32>,
    in_use: u32,
}

impl SlotAllocator {
    pub fn allocate(&mut self, capacity: u32) -> Option<u32> {
        while let Some(i) = self.free.pop() {
            if i < capacity {
                self.in_use += 1;
                return Some(i);
            }
        }
        if self.next < capacity {
            self.next += 1;
            self.in_use += 1;
            return Some(self.next - 1);
        }
        None
    }

    pub fn release(&mut self, index: u32) {
        self.in_use = self.in_use.saturating_sub(1);
        self.free.push(index);
    }

    pub fn in_use(&self) -> u32 {
        self.in_use
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn index_width_follows_the_design_rule() {
        assert_eq!(ExtranonceLayout::for_upstream(8).unwrap().index_bytes, 2);
        assert_eq!(ExtranonceLayout::for_upstream(6).unwrap().index_bytes, 2);
        assert_eq!(ExtranonceLayout::for_upstream(5).unwrap().index_bytes, 1);
        assert_eq!(ExtranonceLayout::for_upstream(4).unwrap().index_bytes, 1);
        assert_eq!(ExtranonceLayout::for_upstream(2).unwrap().index_bytes, 0);
        assert!(ExtranonceLayout::for_upstream(1).is_none());
        for size in 2..=16 {
            let l = ExtranonceLayout::for_upstream(size).unwrap();
            assert!(l.miner_extranonce2_size() >= MIN_MINER_EXTRANONCE2);
        }
    }

    #[test]
    fn every_index_gives_a_distinct_extranonce1_and_the_same_total_length() {
        let l = ExtranonceLayout::for_upstream(4).unwrap();
        let en1 = Extranonce::from_hex("0a0b0c0d").unwrap();
        let mut seen = HashSet::new();
        for i in 0..l.capacity() {
            let m = l.miner_extranonce1(&en1, i);
            assert_eq!(m.len(), 5);
            assert!(seen.insert(m));
            let up = l.upstream_extranonce2(i, &[0xaa; 3]);
            assert_eq!(up.len(), 4);
            // Upstream coinbase bytes equal the miner's: en1 ‖ index ‖ en2.
            assert_eq!(
                en1.extended_with(up.as_bytes()),
                l.miner_extranonce1(&en1, i).extended_with(&[0xaa; 3])
            );
        }
    }

    #[test]
    fn allocator_fills_then_refuses_then_reuses() {
        let mut a = SlotAllocator::default();
        let got: Vec<u32> = (0..256).map(|_| a.allocate(256).unwrap()).collect();
        assert_eq!(got.len(), 256);
        assert!(a.allocate(256).is_none());
        a.release(17);
        assert_eq!(a.allocate(256), Some(17));
        assert_eq!(a.in_use(), 256);
    }

    #[test]
    fn failover_keeps_width_only_when_miners_keep_two_bytes() {
        let l = ExtranonceLayout::for_upstream(8).unwrap();
        assert_eq!(l.keep_index_width(4).unwrap().miner_extranonce2_size(), 2);
        assert!(l.keep_index_width(3).is_none());
    }
}
