//! Money and work as integers, and the exact proportional split.
//!
//! * [`Sats`]: an amount in satoshis (`u64`). Money is never a float.
//! * [`Work`]: a share's or a network's difficulty as an integer number of expected hashes,
//!   `round(d · 2^32)` (difficulty 1 is 2^32 expected hashes). Multiplying an `f64` by 2^32 is
//!   exact, so the only rounding is of the fraction below one hash; that is the single lossy
//!   step between the share ledger's `REAL` difficulties and the money. Even regtest's network
//!   difficulty (≈ 4.66e-10, i.e. 2 hashes) is represented exactly.
//! * [`split_exact`]: divides an amount among integer weights with 256-bit intermediates; the
//!   parts always sum to exactly the amount (largest remainder, ties to the lower index).

use bitcoin::Network;
use rusqlite::types::{FromSql, FromSqlError, FromSqlResult, ToSql, ToSqlOutput, ValueRef};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::iter::Sum;
use std::ops::{Add, AddAssign};

/// An amount of bitcoin in satoshis.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct Sats(pub u64);

impl Sats {
    pub const ZERO: Sats = Sats(0);
    /// 21 million BTC: no valid amount is larger.
    pub const MAX_MONEY: Sats = Sats(21_000_000 * 100_000_000);

    pub const fn to_sat(self) -> u64 {
        self.0
    }

    pub fn checked_add(self, other: Sats) -> Option<Sats> {
        self.0.checked_add(other.0).map(Sats)
    }

    pub fn checked_sub(self, other: Sats) -> Option<Sats> {
        self.0.checked_sub(other.0).map(Sats)
    }

    pub fn saturating_sub(self, other: Sats) -> Sats {
        Sats(self.0.saturating_sub(other.0))
    }

    pub fn to_amount(self) -> bitcoin::Amount {
        bitcoin::Amount::from_sat(self.0)
    }
}

impl fmt::Display for Sats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} sat", self.0)
    }
}

/// Panics on overflow: sums of real amounts stay below 2^51, so an overflow is a bug, never
/// a value to wrap silently.
impl Add for Sats {
    type Output = Sats;
    fn add(self, other: Sats) -> Sats {
        self.checked_add(other).expect("satoshi amount overflow")
    }
}

impl AddAssign for Sats {
    fn add_assign(&mut self, other: Sats) {
        *self = *self + other;
    }
}

impl Sum for Sats {
    fn sum<I: Iterator<Item = Sats>>(iter: I) -> Sats {
        iter.fold(Sats::ZERO, Add::add)
    }
}

impl ToSql for Sats {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        let v = i64::try_from(self.0)
            .map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e)))?;
        Ok(ToSqlOutput::from(v))
    }
}

impl FromSql for Sats {
    fn column_result(value: ValueRef<'_>) -> FromSqlResult<Self> {
        let v = i64::column_result(value)?;
        u64::try_from(v)
            .map(Sats)
            .map_err(|_| FromSqlError::OutOfRange(v))
    }
}

/// Expected hashes: `round(difficulty · 2^32)`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Work(pub u128);

/// Hashes per difficulty-1 share.
pub const HASHES_PER_DIFFICULTY_1: f64 = 4_294_967_296.0;

impl Work {
    /// `None` for a negative, NaN or infinite difficulty, or one of 2^64 or more (10^5 times
    /// today's mainnet; the cap keeps every window sum and weight product within 128 bits).
    pub fn from_difficulty(difficulty: f64) -> Option<Work> {
        if !difficulty.is_finite() || difficulty < 0.0 {
            return None;
        }
        let hashes = (difficulty * HASHES_PER_DIFFICULTY_1).round();
        if hashes >= 2f64.powi(96) {
            return None;
        }
        Some(Work(hashes as u128))
    }

    /// Decimal text, as stored in SQLite (values can exceed `i64`).
    pub fn to_text(self) -> String {
        self.0.to_string()
    }
}

/// `floor(a · b / c)` and `(a · b) mod c`, exactly, with a 256-bit product.
///
/// Panics if `c == 0` or if the quotient does not fit 128 bits (callers only divide by a total
/// at least as large as one factor); see [`checked_mul_div`].
pub fn mul_div(a: u128, b: u128, c: u128) -> (u128, u128) {
    checked_mul_div(a, b, c).expect("mul_div: zero divisor or quotient over 128 bits")
}

/// As [`mul_div`], `None` when `c == 0` or the quotient needs more than 128 bits.
pub fn checked_mul_div(a: u128, b: u128, c: u128) -> Option<(u128, u128)> {
    if c == 0 {
        return None;
    }
    if let Some(p) = a.checked_mul(b) {
        return Some((p / c, p % c));
    }
    let (hi, lo) = mul_wide(a, b);
    if hi >= c {
        return None;
    }
    // Long division of hi:lo by c, one bit at a time; `rem < c` throughout.
    let mut rem = hi;
    let mut q: u128 = 0;
    for i in (0..128).rev() {
        let carry = rem >> 127;
        rem = (rem << 1) | ((lo >> i) & 1);
        q <<= 1;
        if carry == 1 || rem >= c {
            rem = rem.wrapping_sub(c);
            q |= 1;
        }
    }
    Some((q, rem))
}

/// The full 256-bit product as (high, low) 128-bit halves.
fn mul_wide(a: u128, b: u128) -> (u128, u128) {
    const M: u128 = u64::MAX as u128;
    let (a1, a0) = (a >> 64, a & M);
    let (b1, b0) = (b >> 64, b & M);
    let p00 = a0 * b0;
    let p01 = a0 * b1;
    let p10 = a1 * b0;
    let p11 = a1 * b1;
    let mid = (p00 >> 64) + (p01 & M) + (p10 & M);
    let lo = (p00 & M) | (mid << 64);
    let hi = p11 + (p01 >> 64) + (p10 >> 64) + (mid >> 64);
    (hi, lo)
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SplitError {
    #[error("cannot split {0} among weights that are all zero")]
    NoWeight(Sats),
    #[error("split weights overflow 128 bits")]
    Overflow,
}

/// Split `amount` in proportion to `weights`, exactly.
///
/// Part `i` is `floor(amount · wᵢ / W)` (W = Σw) plus one satoshi for the parts with the
/// largest remainders `(amount · wᵢ) mod W`, ties going to the lower index, until the parts sum
/// to `amount`. So every part is within one satoshi below or above its exact share, the sum is
/// always exactly `amount`, and the result depends only on the inputs and their order.
pub fn split_exact(amount: Sats, weights: &[u128]) -> Result<Vec<Sats>, SplitError> {
    let total = weights
        .iter()
        .try_fold(0u128, |t, w| t.checked_add(*w))
        .ok_or(SplitError::Overflow)?;
    if amount == Sats::ZERO {
        return Ok(vec![Sats::ZERO; weights.len()]);
    }
    if total == 0 {
        return Err(SplitError::NoWeight(amount));
    }
    let mut parts = Vec::with_capacity(weights.len());
    let mut remainders = Vec::with_capacity(weights.len());
    let mut given: u128 = 0;
    for (i, w) in weights.iter().enumerate() {
        let (q, r) = mul_div(amount.0 as u128, *w, total);
        given += q;
        parts.push(q as u64);
        remainders.push((r, i));
    }
    let mut left = amount.0 as u128 - given; // < weights.len(): Σr = left·W and each r < W
    remainders.sort_by(|x, y| y.0.cmp(&x.0).then(x.1.cmp(&y.1)));
    for (_, i) in remainders {
        if left == 0 {
            break;
        }
        parts[i] += 1;
        left -= 1;
    }
    Ok(parts.into_iter().map(Sats).collect())
}

/// Blocks between halvings: 150 on regtest, 210,000 elsewhere.
pub fn halving_interval(network: Network) -> u32 {
    match network {
        Network::Regtest => 150,
        _ => 210_000,
    }
}

/// The block subsidy at `height` (50 BTC halved every [`halving_interval`] blocks).
pub fn block_subsidy(height: u32, network: Network) -> Sats {
    let halvings = height / halving_interval(network);
    if halvings >= 64 {
        return Sats::ZERO;
    }
    Sats((50 * 100_000_000u64) >> halvings)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mul_div_matches_native_and_wide_identity() {
        assert_eq!(mul_div(10, 7, 3), (23, 1));
        // (2^100 · 2^100) / 2^110 = 2^90, no remainder.
        assert_eq!(mul_div(1 << 100, 1 << 100, 1 << 110), (1 << 90, 0));
        // Near the top of the range: check q·c + r = a·b with the wide product.
        let (a, b, c) = (u128::MAX - 5, u128::MAX - 7, u128::MAX);
        let (q, r) = mul_div(a, b, c);
        assert!(r < c);
        let (qh, ql) = mul_wide(q, c);
        let (sum_lo, carry) = ql.overflowing_add(r);
        assert_eq!((qh + carry as u128, sum_lo), mul_wide(a, b));
        assert_eq!(checked_mul_div(u128::MAX, 2, 1), None);
        assert_eq!(checked_mul_div(1, 2, 0), None);
    }

    #[test]
    fn split_assigns_remainders_to_largest_then_lowest_index() {
        // 10 over 1:1:1 → 3.33 each; remainders equal, so index 0 gets the extra satoshi.
        assert_eq!(
            split_exact(Sats(10), &[1, 1, 1]).unwrap(),
            vec![Sats(4), Sats(3), Sats(3)]
        );
        // 10 over 1:2 → 3.33, 6.67: the larger remainder (index 1) gets it.
        assert_eq!(
            split_exact(Sats(10), &[1, 2]).unwrap(),
            vec![Sats(3), Sats(7)]
        );
        assert_eq!(
            split_exact(Sats(5), &[0, 0]),
            Err(SplitError::NoWeight(Sats(5)))
        );
        assert_eq!(
            split_exact(Sats(0), &[0, 0]).unwrap(),
            vec![Sats(0), Sats(0)]
        );
    }

    #[test]
    fn work_and_subsidy() {
        assert_eq!(Work::from_difficulty(1.0), Some(Work(1 << 32)));
        // Regtest's network difficulty (target 0x207fffff) is 2 expected hashes.
        assert_eq!(Work::from_difficulty(4.656542373906925e-10), Some(Work(2)));
        assert_eq!(Work::from_difficulty(-1.0), None);
        assert_eq!(Work::from_difficulty(f64::NAN), None);
        assert_eq!(block_subsidy(0, Network::Bitcoin), Sats(5_000_000_000));
        assert_eq!(block_subsidy(840_000, Network::Bitcoin), Sats(312_500_000));
        assert_eq!(block_subsidy(150, Network::Regtest), Sats(2_500_000_000));
        assert_eq!(block_subsidy(64 * 150, Network::Regtest), Sats(0));
    }
}
