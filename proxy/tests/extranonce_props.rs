//! Property tests: extranonce subdivision never lets two miners build the same coinbase
//! (issue #10), for any upstream layout and any sequence of connects, disconnects and index
//! reuse, including a failover that keeps the index width.

use blgv_proxy::extranonce_layout::{ExtranonceLayout, SlotAllocator, MIN_MINER_EXTRANONCE2};
use blgv_stratum::Extranonce;
use proptest::prelude::*;
use std::collections::HashMap;

/// What a miner at `index` may put in the coinbase between coinb1 and coinb2, seen from the
/// upstream: upstream extranonce1 ‖ upstream extranonce2, where the latter is built by the
/// proxy from the miner's extranonce2.
fn upstream_bytes(l: &ExtranonceLayout, en1: &Extranonce, index: u32, miner_en2: &[u8]) -> Vec<u8> {
    en1.extended_with(l.upstream_extranonce2(index, miner_en2).as_bytes())
        .as_bytes()
        .to_vec()
}

#[derive(Debug, Clone)]
enum Op {
    Connect,
    /// Disconnect the n-th live miner (modulo the number live).
    Disconnect(usize),
    /// Failover to an upstream with this extranonce2 size (kept only if the width fits).
    Failover(usize),
}

fn ops() -> impl Strategy<Value = Vec<Op>> {
    prop::collection::vec(
        prop_oneof![
            4 => Just(Op::Connect),
            2 => any::<usize>().prop_map(Op::Disconnect),
            1 => (2usize..=16).prop_map(Op::Failover),
        ],
        1..600,
    )
}

proptest! {
    /// The layout rule itself: for every upstream size the miner keeps ≥ 2 bytes, the index
    /// bytes plus the miner's bytes fill the upstream's extranonce2 exactly, and the miner's
    /// coinbase bytes (extranonce1 ‖ extranonce2) are the upstream's.
    #[test]
    fn layout_is_consistent(
        size in 0usize..=32,
        en1 in prop::collection::vec(any::<u8>(), 0..=8),
        index in any::<u32>(),
        en2_seed in any::<u64>(),
    ) {
        let Some(l) = ExtranonceLayout::for_upstream(size) else {
            prop_assert!(size < MIN_MINER_EXTRANONCE2);
            return Ok(());
        };
        prop_assert!(l.miner_extranonce2_size() >= MIN_MINER_EXTRANONCE2);
        prop_assert_eq!(l.index_bytes + l.miner_extranonce2_size(), size);
        prop_assert_eq!(u64::from(l.capacity()), 1u64 << (8 * l.index_bytes));
        let index = index % l.capacity();
        let en1 = Extranonce::from_bytes(en1);
        let miner_en2: Vec<u8> = (0..l.miner_extranonce2_size())
            .map(|i| (en2_seed >> ((i % 8) * 8)) as u8)
            .collect();
        let up = l.upstream_extranonce2(index, &miner_en2);
        prop_assert_eq!(up.len(), size);
        let miner_side = l.miner_extranonce1(&en1, index).extended_with(&miner_en2);
        prop_assert_eq!(
            miner_side.as_bytes().to_vec(),
            upstream_bytes(&l, &en1, index, &miner_en2)
        );
    }

    /// Any sequence of connects, disconnects (index reuse) and failovers on one upstream
    /// connection: the live miners' extranonce1 values are pairwise distinct and equally long,
    /// so their extranonce2 spaces (same length, distinct prefix) are disjoint; and two miners'
    /// coinbase bytes differ for every choice of their extranonce2.
    #[test]
    fn no_two_live_miners_share_a_coinbase(
        size in 2usize..=16,
        en1 in prop::collection::vec(any::<u8>(), 1..=8),
        ops in ops(),
        en2_a in any::<u64>(),
        en2_b in any::<u64>(),
    ) {
        let en1 = Extranonce::from_bytes(en1);
        let mut layout = ExtranonceLayout::for_upstream(size).unwrap();
        let mut slots = SlotAllocator::default();
        // miner id → index (what the proxy's session keeps).
        let mut live: HashMap<u64, u32> = HashMap::new();
        let mut next_id = 0u64;
        for op in ops {
            match op {
                Op::Connect => {
                    if let Some(i) = slots.allocate(layout.capacity()) {
                        prop_assert!(i < layout.capacity());
                        live.insert(next_id, i);
                        next_id += 1;
                    } else {
                        // Full: only when every index is in use.
                        prop_assert_eq!(live.len() as u64, u64::from(layout.capacity()));
                    }
                }
                Op::Disconnect(n) if !live.is_empty() => {
                    let mut ids: Vec<u64> = live.keys().copied().collect();
                    ids.sort();
                    let id = ids[n % ids.len()];
                    let i = live.remove(&id).unwrap();
                    slots.release(i);
                }
                Op::Disconnect(_) => {}
                Op::Failover(new_size) => {
                    // The proxy keeps miners (and their indices) only when the width fits.
                    if let Some(l) = layout.keep_index_width(new_size) {
                        prop_assert_eq!(l.index_bytes, layout.index_bytes);
                        prop_assert!(l.miner_extranonce2_size() >= MIN_MINER_EXTRANONCE2);
                        layout = l;
                    }
                }
            }
            prop_assert_eq!(slots.in_use() as usize, live.len());
            let mut seen: HashMap<Vec<u8>, u64> = HashMap::new();
            for (id, i) in &live {
                let m = layout.miner_extranonce1(&en1, *i);
                prop_assert_eq!(m.len(), en1.len() + layout.index_bytes);
                let other = seen.insert(m.as_bytes().to_vec(), *id);
                prop_assert!(other.is_none(), "miners {other:?} and {id} share extranonce1 {m}");
            }
        }
        // Two live miners never produce the same upstream coinbase bytes, whatever extranonce2
        // each of them rolls.
        let mut ids: Vec<(&u64, &u32)> = live.iter().collect();
        ids.sort();
        let n = layout.miner_extranonce2_size();
        let e2 = |seed: u64| -> Vec<u8> { (0..n).map(|k| (seed >> ((k % 8) * 8)) as u8).collect() };
        for w in ids.windows(2) {
            let a = upstream_bytes(&layout, &en1, *w[0].1, &e2(en2_a));
            let b = upstream_bytes(&layout, &en1, *w[1].1, &e2(en2_b));
            prop_assert_ne!(a, b);
        }
    }

    /// Two upstream connections (distinct extranonce1 from the pool, equal length): miners on
    /// different connections never collide either, even at the same index.
    #[test]
    fn distinct_upstreams_keep_miners_apart(
        size in 2usize..=16,
        en1_a in prop::collection::vec(any::<u8>(), 4),
        en1_b in prop::collection::vec(any::<u8>(), 4),
        index in any::<u32>(),
        en2 in any::<u64>(),
    ) {
        prop_assume!(en1_a != en1_b);
        let l = ExtranonceLayout::for_upstream(size).unwrap();
        let index = index % l.capacity();
        let e2: Vec<u8> = (0..l.miner_extranonce2_size()).map(|k| (en2 >> ((k % 8) * 8)) as u8).collect();
        let a = upstream_bytes(&l, &Extranonce::from_bytes(en1_a), index, &e2);
        let b = upstream_bytes(&l, &Extranonce::from_bytes(en1_b), index, &e2);
        prop_assert_ne!(a, b);
    }
}
