//! Property tests: difficulty ↔ target conversions and vardiff bounds (issue #10).
//!
//! Case counts are proptest's default (256) unless a test says otherwise; the numbers are in
//! docs/RELIABILITY.md ("Fuzzing and property tests").

use blgv_stratum::{hash_difficulty, Difficulty, ShareHash, Target, Vardiff, VardiffRules};
use proptest::prelude::*;
use std::time::{Duration, Instant};

/// Relative error allowed on `d → target → d`: two roundings to f64 (the division and the
/// 256-bit → f64 conversion), each within 2^-53.
const ROUND_TRIP_REL: f64 = 1e-12;

/// Difficulties whose target is neither saturated at [`Target::MAX`] (below about 2^-32) nor so
/// small that it has fewer than 53 significant bits (above about 2^170).
fn exact_range() -> impl Strategy<Value = f64> {
    (-31.0f64..170.0).prop_map(|e| 2f64.powf(e))
}

fn big_endian_le(hash: &[u8; 32]) -> [u8; 32] {
    let mut be = *hash;
    be.reverse();
    be
}

proptest! {
    /// Any f64: a difficulty exactly when finite and > 0; its target never panics and is at
    /// most MAX; the target's difficulty is finite and > 0.
    #[test]
    fn any_f64_is_a_difficulty_or_refused(bits in any::<u64>()) {
        let v = f64::from_bits(bits);
        match Difficulty::new(v) {
            Ok(d) => {
                prop_assert!(v.is_finite() && v > 0.0);
                let t = d.to_target();
                let back = t.to_difficulty().as_f64();
                prop_assert!(back.is_finite() && back > 0.0, "{v} → {back}");
                // Wire form: an integer difficulty goes out as a JSON integer.
                let json = d.to_json();
                prop_assert!(json.is_number());
            }
            Err(e) => prop_assert!(!(v.is_finite() && v > 0.0), "{v} refused: {e}"),
        }
    }

    /// d → target → d within the documented precision.
    #[test]
    fn round_trip_within_precision(d in exact_range()) {
        let back = Difficulty::new(d).unwrap().to_target().to_difficulty().as_f64();
        prop_assert!(((back - d) / d).abs() <= ROUND_TRIP_REL, "{d} → {back}");
    }

    /// Powers of two are exact both ways (vardiff only sends those).
    #[test]
    fn powers_of_two_are_exact(k in -31i32..=160) {
        let d = 2f64.powi(k);
        prop_assert_eq!(Difficulty::new(d).unwrap().to_target().to_difficulty().as_f64(), d);
    }

    /// Higher difficulty never gives a higher (easier) target, over the whole f64 range.
    #[test]
    fn higher_difficulty_never_raises_the_target(a in any::<u64>(), b in any::<u64>()) {
        let (Ok(a), Ok(b)) = (Difficulty::new(f64::from_bits(a)), Difficulty::new(f64::from_bits(b)))
        else {
            return Ok(());
        };
        let (lo, hi) = if a.as_f64() <= b.as_f64() { (a, b) } else { (b, a) };
        prop_assert!(lo.to_target() >= hi.to_target(), "{lo:?} vs {hi:?}");
    }

    /// Clamping at the edges: a difficulty below the easiest target saturates at MAX, which every
    /// hash meets; a difficulty above every target gives a target no non-zero hash... at least no
    /// panic and a difficulty that is finite.
    #[test]
    fn edges_clamp(tiny in 1e-300f64..1e-12, huge in 1e200f64..f64::MAX, hash in any::<[u8; 32]>()) {
        let t = Difficulty::new(tiny).unwrap().to_target();
        prop_assert_eq!(t, Target::MAX);
        prop_assert!(t.is_met_by(&ShareHash::from_internal_bytes(hash)));
        let t = Difficulty::new(huge).unwrap().to_target();
        prop_assert!(t <= Difficulty::new(1e200).unwrap().to_target());
        let back = t.to_difficulty().as_f64();
        prop_assert!(back.is_finite() && back > 0.0);
    }

    /// Any 256-bit number read as a hash: its difficulty is finite and > 0, and a larger hash
    /// never has a higher difficulty.
    #[test]
    fn any_256_bit_hash_has_a_difficulty(a in any::<[u8; 32]>(), b in any::<[u8; 32]>()) {
        let da = hash_difficulty(&ShareHash::from_internal_bytes(a)).as_f64();
        let db = hash_difficulty(&ShareHash::from_internal_bytes(b)).as_f64();
        prop_assert!(da.is_finite() && da > 0.0 && db.is_finite() && db > 0.0);
        if big_endian_le(&a) <= big_endian_le(&b) {
            prop_assert!(da >= db, "{a:?} {da} vs {b:?} {db}");
        } else {
            prop_assert!(db >= da);
        }
    }

    /// Any compact nBits: decodes without panic; a decoded target has a finite difficulty and is
    /// met by the zero hash.
    #[test]
    fn any_compact_bits(nbits in any::<u32>()) {
        if let Some(t) = Target::from_compact(nbits) {
            let d = t.to_difficulty().as_f64();
            prop_assert!(d.is_finite() && d > 0.0);
            prop_assert!(t.is_met_by(&ShareHash::from_internal_bytes([0; 32])));
        }
    }

    /// Difficulty::clamp always lands inside [min, max] (max below min means min).
    #[test]
    fn clamp_stays_inside(v in exact_range(), a in exact_range(), b in exact_range()) {
        let (min, max) = (Difficulty::new(a.min(b)).unwrap(), Difficulty::new(a.max(b)).unwrap());
        let c = Difficulty::new(v).unwrap().clamp(min, max).as_f64();
        prop_assert!((min.as_f64()..=max.as_f64()).contains(&c));
        let p = Difficulty::new(v).unwrap().floor_power_of_two().as_f64();
        prop_assert!(p <= v && p > v / 2.0 && p.log2().fract() == 0.0);
    }
}

/// Vardiff rules with integer bounds (`min ≥ 1`) or fractional ones, a target rate and an
/// interval chosen so that at least 4 shares are expected per window (fewer makes one window's
/// count too noisy to steer by, which is the configuration's problem, not vardiff's).
fn rules() -> impl Strategy<Value = (VardiffRules, bool)> {
    (any::<bool>(), 0u32..20, 0u32..30, 1.0f64..60.0, 10u64..=120).prop_filter_map(
        "at least 4 shares per window",
        |(integer, min_exp, span, spm, secs)| {
            if spm * secs as f64 / 60.0 < 4.0 {
                return None;
            }
            // Integer configs: min an integer ≥ 1, not necessarily a power of two.
            let min = if integer {
                f64::from((1u32 << min_exp.min(16)) + min_exp % 3)
            } else {
                2f64.powi(min_exp as i32 - 24)
            };
            let max = min * 2f64.powi(span as i32) + if integer { 0.0 } else { 0.3 };
            Some((
                VardiffRules {
                    min: Difficulty::new(min).unwrap(),
                    max: Difficulty::new(max).unwrap(),
                    target_shares_per_minute: spm,
                    retarget_interval: Duration::from_secs(secs),
                },
                integer,
            ))
        },
    )
}

fn in_bounds(d: Difficulty, rules: &VardiffRules, ceiling: Difficulty) -> bool {
    let lo = rules.min.as_f64();
    let hi = rules.max.as_f64().min(ceiling.as_f64()).max(lo);
    (lo..=hi).contains(&d.as_f64())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Any sequence of share gaps and ticks: the difficulty stays in [min, min(max, ceiling)],
    /// is an integer when the bounds are, and every change is announced (returned).
    #[test]
    fn vardiff_stays_within_bounds(
        (rules, integer) in rules(),
        wish in 1e-9f64..1e12,
        ceiling in prop::option::of(1e-6f64..1e9),
        events in prop::collection::vec((any::<bool>(), 0u64..400_000), 1..400),
    ) {
        let ceiling = Difficulty::new(ceiling.unwrap_or(f64::MAX)).unwrap();
        let t0 = Instant::now();
        let initial = rules.snap(Difficulty::new(wish).unwrap(), ceiling);
        prop_assert!(in_bounds(initial, &rules, ceiling), "initial {initial:?}");
        let mut v = Vardiff::new(initial, t0);
        let mut now = t0;
        for (share, gap_ms) in events {
            now += Duration::from_millis(gap_ms);
            let before = v.current();
            let changed = if share {
                v.on_share(&rules, ceiling, now)
            } else {
                v.on_tick(&rules, ceiling, now)
            };
            let d = v.current();
            prop_assert!(in_bounds(d, &rules, ceiling), "{d:?} outside {rules:?} / {ceiling:?}");
            if integer {
                prop_assert!(d.is_integer(), "{d:?} not an integer with {rules:?}");
            }
            match changed {
                Some(new) => prop_assert!(new == d && new != before),
                None => prop_assert!(d == before),
            }
        }
    }

    /// A miner of constant hashrate: every retarget moves toward the difficulty that gives the
    /// target rate (up only when shares come faster than the target, down only when slower), and
    /// after 200 intervals the difficulty is within 4× of that ideal or at a bound. The ideal
    /// lies between min/4 and 4·max (further out, vardiff can only sit at the bound).
    #[test]
    fn vardiff_moves_toward_the_target_rate(
        (rules, _) in rules(),
        where_ in 0.0f64..=1.0,
        start_off in -8i32..=8,
    ) {
        let ceiling = Difficulty::new(f64::MAX).unwrap();
        // Difficulty at which this miner makes exactly the target rate.
        let (lo, hi) = (rules.min.as_f64().log2() - 2.0, rules.max.as_f64().log2() + 2.0);
        let ideal = 2f64.powf(lo + where_ * (hi - lo));
        let hash_per_min = ideal * rules.target_shares_per_minute; // difficulty units / minute
        let initial = rules.snap(Difficulty::new(ideal * 2f64.powi(start_off)).unwrap(), ceiling);
        let t0 = Instant::now();
        let mut v = Vardiff::new(initial, t0);
        let mut now = t0;
        let end = t0 + rules.retarget_interval * 200;
        // Next share in exact share-time, next tick every second.
        let mut next_share = now + Duration::from_secs_f64(60.0 * initial.as_f64() / hash_per_min);
        let mut next_tick = now + Duration::from_secs(1);
        let mut events = 0u32;
        while now < end {
            events += 1;
            prop_assert!(events < 2_000_000, "simulation ran away");
            let before = v.current();
            let changed = if next_share <= next_tick {
                now = next_share;
                v.on_share(&rules, ceiling, now)
            } else {
                now = next_tick;
                next_tick += Duration::from_secs(1);
                v.on_tick(&rules, ceiling, now)
            };
            if let Some(new) = changed {
                let true_ratio = ideal / before.as_f64(); // shares come this many times too fast
                if new.as_f64() > before.as_f64() {
                    prop_assert!(true_ratio > 1.0, "raised {before:?} → {new:?}, ideal {ideal}");
                } else {
                    prop_assert!(true_ratio < 1.0, "lowered {before:?} → {new:?}, ideal {ideal}");
                }
            }
            if now == next_share || changed.is_some() {
                // A new difficulty applies from the next share on.
                next_share = now + Duration::from_secs_f64(60.0 * v.current().as_f64() / hash_per_min);
            }
        }
        // One tick a second for 200 intervals of ≥ 10 s: the simulation really ran.
        prop_assert!(events >= 2000, "{events} events");
        let d = v.current().as_f64();
        let at_min = d == rules.min.as_f64() && ideal < d;
        let at_max = d >= rules.max.as_f64() / 2.0 && ideal > d;
        prop_assert!(
            at_min || at_max || (ideal / 4.0..=ideal * 4.0).contains(&d),
            "ended at {d}, ideal {ideal}, rules {rules:?}"
        );
    }
}
