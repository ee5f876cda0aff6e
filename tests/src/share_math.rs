//! The Stratum V1 share maths, done with `rust-bitcoin` primitives only.
//!
//! Shared by the pool (which referees) and the miner (which searches). The pool then builds a
//! real `bitcoin::block::Header` and hashes it with rust-bitcoin, while the miner uses its own
//! midstate shortcut, so the two paths cross-check each other; the mainnet vector test in
//! `pool.rs` pins this module to reality.

use bitcoin::hashes::{sha256d, Hash};
use bitcoin::pow::Target;

/// The difficulty-1 target, 0x00000000FFFF0000…0 (`Target::MAX` in rust-bitcoin).
pub const DIFF1_TARGET: Target = Target::MAX;

/// `diff1 / d` as a 256-bit target.
///
/// Difficulties below 1 are normal here (tests use 1e-5 so a share takes tens of thousands of
/// hashes), so the target can be far above diff1. f64 is used only for the division; the result
/// is then turned into an integer exactly (dividing by powers of two and `%` are exact in IEEE
/// 754), which is exact enough: the relative error is 2^-53.
///
/// A target above 2^256 - 1, a zero, negative or non-finite difficulty gives the all-ones target
/// (every hash meets it) rather than a panic.
pub fn difficulty_to_target(d: f64) -> Target {
    let diff1 = 65535.0 * 2f64.powi(208);
    let v = diff1 / d;
    if !(d.is_finite() && d > 0.0 && v.is_finite() && v < 2f64.powi(256)) {
        return Target::from_le_bytes([0xff; 32]);
    }
    let mut le = [0u8; 32];
    for (i, byte) in le.iter_mut().enumerate() {
        *byte = ((v / 2f64.powi(8 * i as i32)).floor() % 256.0) as u8;
    }
    Target::from_le_bytes(le)
}

/// Whether a hash, in rust-bitcoin's internal byte order (a little-endian number), is ≤ the
/// target given as little-endian bytes. This is the miner's hot-path check.
#[inline]
pub fn hash_meets_target_le(hash: &[u8; 32], target_le: &[u8; 32]) -> bool {
    for i in (0..32).rev() {
        if hash[i] != target_le[i] {
            return hash[i] < target_le[i];
        }
    }
    true
}

/// Stratum's `prevhash` is the header's prevhash with each 4-byte word byte-reversed. The
/// transformation is its own inverse, so this converts in both directions.
pub fn swap_prevhash_words(bytes: [u8; 32]) -> [u8; 32] {
    let mut out = bytes;
    for chunk in out.chunks_exact_mut(4) {
        chunk.reverse();
    }
    out
}

/// coinb1 ‖ extranonce1 ‖ extranonce2 ‖ coinb2: the legacy-serialized coinbase transaction.
pub fn assemble_coinbase(coinb1: &[u8], en1: &[u8], en2: &[u8], coinb2: &[u8]) -> Vec<u8> {
    [coinb1, en1, en2, coinb2].concat()
}

/// sha256d of the bytes, in internal byte order (a txid's raw bytes).
pub fn sha256d(bytes: &[u8]) -> [u8; 32] {
    sha256d::Hash::hash(bytes).to_byte_array()
}

/// Folds the Stratum merkle branch onto the coinbase txid: `root = sha256d(root ‖ branch_i)`,
/// the branch entries taken as their raw decoded bytes.
pub fn merkle_root(coinbase_txid: [u8; 32], branch: &[[u8; 32]]) -> [u8; 32] {
    branch.iter().fold(coinbase_txid, |root, step| {
        let mut pair = [0u8; 64];
        pair[..32].copy_from_slice(&root);
        pair[32..].copy_from_slice(step);
        sha256d(&pair)
    })
}

/// BIP310: the header version is the job's version with the masked bits replaced by the
/// miner's.
pub fn rolled_version(job_version: u32, mask: u32, version_bits: u32) -> u32 {
    (job_version & !mask) | (version_bits & mask)
}

/// Spreads the low bits of `counter` over the set bits of `mask` (a software PDEP): the
/// miner's way of enumerating version-bit patterns inside whatever mask it was granted.
pub fn deposit_bits(mut counter: u32, mask: u32) -> u32 {
    let mut out = 0;
    let mut m = mask;
    while m != 0 && counter != 0 {
        let lowest = m & m.wrapping_neg();
        if counter & 1 == 1 {
            out |= lowest;
        }
        counter >>= 1;
        m &= m - 1;
    }
    out
}

/// Parses a Stratum u32 field: exactly 8 hex digits, big-endian. Strict on purpose: the pool
/// referees the proxy, and sloppy widths are exactly the bugs it should surface.
pub fn parse_u32_hex8(s: &str) -> Option<u32> {
    if s.len() != 8 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    u32::from_str_radix(s, 16).ok()
}

/// Parses exactly 64 hex digits into 32 bytes.
pub fn parse_hex32(s: &str) -> Option<[u8; 32]> {
    let v = hex::decode(s).ok()?;
    v.try_into().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn difficulty_one_is_diff1_and_scales_exactly_by_powers_of_two() {
        assert_eq!(difficulty_to_target(1.0), DIFF1_TARGET);
        let mut expect = [0u8; 32];
        expect[26] = 0xff;
        expect[27] = 0xff;
        assert_eq!(difficulty_to_target(1.0).to_le_bytes(), expect);
        // d = 1/256 shifts diff1 up by one byte.
        let mut up = [0u8; 32];
        up[27] = 0xff;
        up[28] = 0xff;
        assert_eq!(difficulty_to_target(1.0 / 256.0).to_le_bytes(), up);
        // d = 2 halves it.
        let half = difficulty_to_target(2.0).to_be_bytes();
        assert_eq!(&half[..6], &[0, 0, 0, 0, 0x7f, 0xff]);
        assert_eq!(&half[6..8], &[0x80, 0]);
    }

    #[test]
    fn tiny_difficulty_target_is_about_diff1_over_d() {
        // 1e-5: target ≈ 0xFFFF·2^208·1e5 ≈ 2^240.6 (15 leading zero bits), so about 1 hash
        // in 42950 meets it.
        let be = difficulty_to_target(1e-5).to_be_bytes();
        assert_eq!(&be[..2], &[0, 1]);
        let top = u64::from_be_bytes(be[..8].try_into().unwrap()) as f64;
        let expected = 65535.0 * 2f64.powi(208 - 192) * 1e5;
        assert!((top / expected - 1.0).abs() < 1e-12);
    }

    #[test]
    fn silly_difficulties_do_not_panic() {
        let all = Target::from_le_bytes([0xff; 32]);
        assert_eq!(difficulty_to_target(0.0), all);
        assert_eq!(difficulty_to_target(-1.0), all);
        assert_eq!(difficulty_to_target(f64::NAN), all);
        assert_eq!(difficulty_to_target(1e-300), all);
        assert!(difficulty_to_target(1e300) < DIFF1_TARGET);
    }

    #[test]
    fn le_comparison_matches_target_ordering() {
        let t = difficulty_to_target(1e-3).to_le_bytes();
        let mut h = t;
        assert!(hash_meets_target_le(&h, &t));
        h[0] = h[0].wrapping_add(1);
        assert_eq!(
            hash_meets_target_le(&h, &t),
            Target::from_le_bytes(h) <= Target::from_le_bytes(t)
        );
        let mut big = [0u8; 32];
        big[31] = 1;
        assert!(!hash_meets_target_le(&big, &t));
    }

    #[test]
    fn word_swap_is_an_involution_and_reverses_each_word() {
        let mut b = [0u8; 32];
        for (i, x) in b.iter_mut().enumerate() {
            *x = i as u8;
        }
        let s = swap_prevhash_words(b);
        assert_eq!(&s[..8], &[3, 2, 1, 0, 7, 6, 5, 4]);
        assert_eq!(swap_prevhash_words(s), b);
    }

    #[test]
    fn version_helpers() {
        assert_eq!(
            rolled_version(0x2000_0000, 0x1fff_e000, 0x0000_6000),
            0x2000_6000
        );
        assert_eq!(rolled_version(0x3fff_e004, 0x1fff_e000, 0), 0x2000_0004);
        assert_eq!(deposit_bits(0, 0x1fff_e000), 0);
        assert_eq!(deposit_bits(1, 0x1fff_e000), 0x2000);
        assert_eq!(deposit_bits(3, 0x1fff_e000), 0x6000);
        assert_eq!(deposit_bits(0xffff_ffff, 0x1fff_e000), 0x1fff_e000);
        assert_eq!(deposit_bits(5, 0), 0);
    }

    #[test]
    fn strict_hex_fields() {
        assert_eq!(parse_u32_hex8("6155a491"), Some(0x6155_a491));
        assert_eq!(parse_u32_hex8("6155A491"), Some(0x6155_a491));
        assert_eq!(parse_u32_hex8("155a491"), None);
        assert_eq!(parse_u32_hex8("+155a491"), None);
        assert_eq!(parse_u32_hex8("6155a4910"), None);
        assert!(parse_hex32(&"00".repeat(32)).is_some());
        assert!(parse_hex32(&"00".repeat(31)).is_none());
        assert!(parse_hex32("zz").is_none());
    }
}
