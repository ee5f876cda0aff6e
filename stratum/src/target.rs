//! Targets and difficulties.
//!
//! A share is valid when its header hash, read as a little-endian 256-bit number, is at most the
//! target. Stratum speaks in difficulties: difficulty 1 is the target
//! `0x00000000FFFF0000…0000` (the "pool difficulty 1" of bdiff), and `target(d) = diff1 / d`.
//! Difficulties below 1 are legal here because tests, regtest and benchmarks need shares that take
//! only a few hashes; real firmware is only ever sent integers (see [`Difficulty::is_integer`]).

use std::cmp::Ordering;
use std::fmt;

/// 256-bit unsigned integer as four little-endian u64 limbs (limb 0 is least significant).
/// Only the handful of operations share math needs; no general arithmetic.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
struct U256([u64; 4]);

impl U256 {
    const MAX: U256 = U256([u64::MAX; 4]);

    /// `value << shift`, saturating to MAX when bits would fall off the top.
    fn from_u64_shifted(value: u64, shift: i32) -> U256 {
        if value == 0 {
            return U256::default();
        }
        if shift < 0 {
            let s = (-shift) as u32;
            return if s >= 64 {
                U256::default()
            } else {
                U256([value >> s, 0, 0, 0])
            };
        }
        let shift = shift as u32;
        let top_bit = 63 - value.leading_zeros() + shift; // index of the highest set bit
        if top_bit >= 256 {
            return U256::MAX;
        }
        let limb = (shift / 64) as usize;
        let bit = shift % 64;
        let mut out = [0u64; 4];
        out[limb] = value << bit;
        if bit != 0 && limb + 1 < 4 {
            out[limb + 1] = value >> (64 - bit);
        }
        U256(out)
    }

    fn to_f64(self) -> f64 {
        let mut v = 0f64;
        for limb in self.0.iter().rev() {
            v = v * 18446744073709551616.0 + *limb as f64;
        }
        v
    }

    fn from_le_bytes(bytes: &[u8; 32]) -> U256 {
        let mut limbs = [0u64; 4];
        for (i, limb) in limbs.iter_mut().enumerate() {
            let mut chunk = [0u8; 8];
            chunk.copy_from_slice(&bytes[i * 8..i * 8 + 8]);
            *limb = u64::from_le_bytes(chunk);
        }
        U256(limbs)
    }

    fn to_be_bytes(self) -> [u8; 32] {
        let mut out = [0u8; 32];
        for i in 0..4 {
            out[i * 8..i * 8 + 8].copy_from_slice(&self.0[3 - i].to_be_bytes());
        }
        out
    }
}

impl Ord for U256 {
    fn cmp(&self, other: &Self) -> Ordering {
        for i in (0..4).rev() {
            match self.0[i].cmp(&other.0[i]) {
                Ordering::Equal => continue,
                ord => return ord,
            }
        }
        Ordering::Equal
    }
}

impl PartialOrd for U256 {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// The 0xFFFF mantissa of difficulty 1 sits at bit 208.
const DIFF1_SHIFT: i32 = 208;
const DIFF1_MANTISSA: f64 = 65535.0;

/// A share or block target: a hash meets it when `hash <= target`.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Target(U256);

impl Target {
    /// The easiest possible target (every hash meets it).
    pub const MAX: Target = Target(U256::MAX);

    /// The target of difficulty 1: `0x00000000FFFF0000…`.
    pub fn difficulty_1() -> Target {
        Target(U256::from_u64_shifted(0xFFFF, DIFF1_SHIFT))
    }

    /// `diff1 / d`, computed with the 53-bit precision of f64 (exact for powers of two and for
    /// every integer difficulty below 2^37), saturating at [`Target::MAX`].
    pub fn from_difficulty(d: Difficulty) -> Target {
        let q = DIFF1_MANTISSA / d.0;
        if !q.is_finite() {
            return Target::MAX;
        }
        // Decompose q = mantissa * 2^exp with an integer mantissa of up to 53 bits.
        let bits = q.to_bits();
        let raw_exp = ((bits >> 52) & 0x7ff) as i32;
        let frac = bits & ((1u64 << 52) - 1);
        let (mantissa, exp) = if raw_exp == 0 {
            (frac, -1074)
        } else {
            (frac | (1u64 << 52), raw_exp - 1075)
        };
        Target(U256::from_u64_shifted(mantissa, DIFF1_SHIFT + exp))
    }

    /// Decode Bitcoin's compact `nBits` encoding. Returns `None` for negative or overflowing
    /// encodings, which no valid block header carries.
    pub fn from_compact(nbits: u32) -> Option<Target> {
        let exponent = (nbits >> 24) as i32;
        let mantissa = nbits & 0x007f_ffff;
        if nbits & 0x0080_0000 != 0 && mantissa != 0 {
            return None; // negative
        }
        let shift = 8 * (exponent - 3);
        if mantissa != 0 && (63 - (mantissa as u64).leading_zeros() as i32) + shift >= 256 {
            return None; // overflow
        }
        Some(Target(U256::from_u64_shifted(mantissa as u64, shift)))
    }

    /// Big-endian bytes (the usual display order, leading zeros first).
    pub fn to_be_bytes(self) -> [u8; 32] {
        self.0.to_be_bytes()
    }

    /// The difficulty this target stands for.
    pub fn to_difficulty(self) -> Difficulty {
        let t = self.0.to_f64();
        if t == 0.0 {
            return Difficulty(f64::MAX);
        }
        Difficulty(DIFF1_MANTISSA * 2f64.powi(DIFF1_SHIFT) / t)
    }

    /// Whether a header hash (sha256d output in internal byte order) meets this target.
    pub fn is_met_by(&self, hash: &crate::ShareHash) -> bool {
        U256::from_le_bytes(hash.as_bytes()) <= self.0
    }
}

impl fmt::Debug for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Target({})", hex::encode(self.to_be_bytes()))
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.to_be_bytes()))
    }
}

/// Read a little-endian 256-bit number (a header hash) as a target.
pub(crate) fn target_from_le_bytes(bytes: &[u8; 32]) -> Target {
    Target(U256::from_le_bytes(bytes))
}

/// A share difficulty: finite and strictly positive by construction.
#[derive(Clone, Copy, PartialEq, PartialOrd)]
pub struct Difficulty(f64);

/// Why a number is not a difficulty.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("difficulty must be a finite number greater than 0, got {0}")]
pub struct InvalidDifficulty(pub f64);

impl Difficulty {
    pub const ONE: Difficulty = Difficulty(1.0);

    pub fn new(value: f64) -> Result<Difficulty, InvalidDifficulty> {
        if value.is_finite() && value > 0.0 {
            Ok(Difficulty(value))
        } else {
            Err(InvalidDifficulty(value))
        }
    }

    pub fn as_f64(self) -> f64 {
        self.0
    }

    pub fn to_target(self) -> Target {
        Target::from_difficulty(self)
    }

    /// Whether firmware that only understands integers can take this difficulty as is.
    pub fn is_integer(self) -> bool {
        self.0.fract() == 0.0
    }

    /// The nearest power of two at or below `self` (for fractions: 2^-k). Powers of two are what
    /// firmware handles most reliably, and they make targets exact.
    pub fn floor_power_of_two(self) -> Difficulty {
        // Clearing the mantissa of a normal f64 leaves exactly 2^exponent.
        if self.0.is_normal() {
            Difficulty(f64::from_bits(self.0.to_bits() & 0xfff0_0000_0000_0000))
        } else {
            self
        }
    }

    /// Clamp into `[min, max]`.
    pub fn clamp(self, min: Difficulty, max: Difficulty) -> Difficulty {
        Difficulty(self.0.clamp(min.0, max.0.max(min.0)))
    }

    pub fn min(self, other: Difficulty) -> Difficulty {
        if other.0 < self.0 {
            other
        } else {
            self
        }
    }

    /// The JSON number to put on the wire: an integer when the difficulty is one, because some
    /// firmware rejects `1024.0`.
    pub fn to_json(self) -> serde_json::Value {
        if self.is_integer() && self.0 < 9.0e15 {
            serde_json::Value::from(self.0 as u64)
        } else {
            serde_json::Value::from(self.0)
        }
    }
}

impl fmt::Debug for Difficulty {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Difficulty({})", self.0)
    }
}

impl fmt::Display for Difficulty {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_integer() {
            write!(f, "{}", self.0 as u64)
        } else {
            write!(f, "{}", self.0)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn difficulty_one_target_is_ffff_at_bit_208() {
        let t = Target::difficulty_1();
        assert_eq!(
            t.to_string(),
            "00000000ffff0000000000000000000000000000000000000000000000000000"
        );
        assert_eq!(Difficulty::ONE.to_target(), t);
    }

    #[test]
    fn power_of_two_difficulties_are_exact() {
        let t = Difficulty::new(1024.0).unwrap().to_target();
        assert_eq!(
            t.to_string(),
            "00000000003fffc0000000000000000000000000000000000000000000000000"
        );
        let t = Difficulty::new(0.5).unwrap().to_target();
        assert_eq!(
            t.to_string(),
            "00000001fffe0000000000000000000000000000000000000000000000000000"
        );
        assert_eq!(t.to_difficulty().as_f64(), 0.5);
    }

    #[test]
    fn tiny_difficulty_saturates_instead_of_overflowing() {
        let t = Difficulty::new(1e-300).unwrap().to_target();
        assert_eq!(t, Target::MAX);
    }

    #[test]
    fn compact_decoding_matches_known_values() {
        // Mainnet genesis bits: 0x1d00ffff = difficulty 1.
        assert_eq!(
            Target::from_compact(0x1d00ffff).unwrap(),
            Target::difficulty_1()
        );
        let t = Target::from_compact(0x170ed0eb).unwrap();
        assert_eq!(
            t.to_string(),
            "0000000000000000000ed0eb0000000000000000000000000000000000000000"
        );
        assert!(Target::from_compact(0x04923456).is_none(), "negative");
        assert!(Target::from_compact(0xff123456).is_none(), "overflow");
    }

    #[test]
    fn bad_difficulties_are_refused() {
        assert!(Difficulty::new(0.0).is_err());
        assert!(Difficulty::new(-1.0).is_err());
        assert!(Difficulty::new(f64::NAN).is_err());
        assert!(Difficulty::new(f64::INFINITY).is_err());
    }

    #[test]
    fn integers_go_on_the_wire_without_fraction() {
        assert_eq!(
            Difficulty::new(1024.0).unwrap().to_json().to_string(),
            "1024"
        );
        assert_eq!(Difficulty::new(0.25).unwrap().to_json().to_string(), "0.25");
        assert_eq!(
            Difficulty::new(1500.0)
                .unwrap()
                .floor_power_of_two()
                .as_f64(),
            1024.0
        );
        assert_eq!(
            Difficulty::new(0.3).unwrap().floor_power_of_two().as_f64(),
            0.25
        );
    }
}
