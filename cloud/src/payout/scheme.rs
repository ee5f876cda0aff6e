//! The three schemes as pure functions over work and satoshis (no storage).
//!
//! With `f` the fee in basis points (`bp`), `R` a block's reward (coinbase value: subsidy and
//! transaction fees), `w` a share's work and `W(D)` the network difficulty's work (both
//! [`Work`], expected hashes):
//!
//! * **PPLNS.** The window is `N = floor(W(D) · X_ppm / 10^6)` with D the network difficulty of
//!   the winning share. Walking back from the winning share (inclusive) over the shares of PPS
//!   and PPLNS accounts (SOLO shares are not pool work and are skipped), each share fills the
//!   window with its work, the last one only with the part that fits. The reward is split
//!   exactly ([`split_exact`]) over the weights
//!   - each PPLNS account: `w_a · (10000 − bp)`: it earns `(1 − f) · R · w_a / N`;
//!   - the fee account, `pplns_fee`: `Σ w_a · bp`;
//!   - the fee account, `pps_window`: `w_pps · 10000`: the window's PPS work belongs to the
//!     pool, which already paid for it share by share (so PPS accounts do not dilute PPLNS
//!     ones, and the pool's PPS risk is paid back on average);
//!   - the fee account, `short_window`: `(N − filled) · 10000`: if the ledger holds less than
//!     X·D of work (a young pool), the part of the window nobody filled goes to the pool
//!     rather than inflating the few shares there are: every share is still paid exactly as
//!     in a full window.
//!
//!   The weights add up to `N · 10000`, so each account gets `floor` or `floor + 1` of its
//!   exact share and the parts sum to `R`.
//! * **SOLO.** The finder gets `R` split as `[(10000 − bp), bp]` with the fee account.
//! * **PPS.** Every share is worth `subsidy(height) · w / W(D)` with D the network difficulty of
//!   its job (the pool keeps transaction fees); the account earns `(1 − f)` of it. Values are
//!   kept in pico-satoshis (10^-12 sat), floored per share, summed per account forever; the
//!   account's credited total is `floor(Σ net / 10^12)`. So a stream of tiny shares is paid in
//!   full (nothing is lost to per-credit rounding) and the result does not depend on how often
//!   PPS shares are processed.

use super::config::Scheme;
use super::sats::{checked_mul_div, mul_div, split_exact, Sats, Work};
use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

/// Basis points in 100 %.
pub const BP_PER_UNIT: u32 = 10_000;
/// PPS values are kept in pico-satoshis.
pub const PSAT_PER_SAT: u128 = 1_000_000_000_000;

/// Why an account was credited.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum CreditKind {
    /// A PPLNS account's part of a block.
    Pplns,
    /// The fee on the PPLNS parts (fee account).
    PplnsFee,
    /// The window's PPS work (fee account).
    PpsWindow,
    /// The unfilled part of a window longer than the ledger's history (fee account).
    ShortWindow,
    /// PPS earnings for a range of shares.
    Pps,
    /// A SOLO block, paid in its coinbase.
    Solo,
    /// The fee on a SOLO block, paid in its coinbase (fee account).
    SoloFee,
}

impl CreditKind {
    pub const ALL: [CreditKind; 7] = [
        CreditKind::Pplns,
        CreditKind::PplnsFee,
        CreditKind::PpsWindow,
        CreditKind::ShortWindow,
        CreditKind::Pps,
        CreditKind::Solo,
        CreditKind::SoloFee,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            CreditKind::Pplns => "pplns",
            CreditKind::PplnsFee => "pplns_fee",
            CreditKind::PpsWindow => "pps_window",
            CreditKind::ShortWindow => "short_window",
            CreditKind::Pps => "pps",
            CreditKind::Solo => "solo",
            CreditKind::SoloFee => "solo_fee",
        }
    }

    /// SOLO credits were paid in the block's coinbase: they never enter a balance.
    pub fn paid_in_coinbase(self) -> bool {
        matches!(self, CreditKind::Solo | CreditKind::SoloFee)
    }
}

impl serde::Serialize for CreditKind {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl fmt::Display for CreditKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for CreditKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        CreditKind::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| format!("unknown credit kind {s:?}"))
    }
}

/// One credit of a distribution.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Allocation {
    pub account: String,
    pub kind: CreditKind,
    pub amount: Sats,
}

/// `N = max(1, floor(W(D) · window_ppm / 10^6))`.
pub fn pplns_window_work(network: Work, window_ppm: u64) -> Work {
    let (n, _) = mul_div(network.0, window_ppm as u128, 1_000_000);
    Work(n.max(1))
}

/// A PPLNS window being filled from the winning share backwards.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PplnsWindow {
    target: u128,
    filled: u128,
    pplns: BTreeMap<String, u128>,
    pps: u128,
    shares: u64,
    oldest_share: Option<i64>,
}

impl PplnsWindow {
    /// A window of `target` work (capped at 2^112, 10^10 times today's mainnet window, so the
    /// fee-weighted sums stay within 128 bits).
    pub fn new(target: Work) -> PplnsWindow {
        PplnsWindow {
            target: target.0.min(1 << 112),
            filled: 0,
            pplns: BTreeMap::new(),
            pps: 0,
            shares: 0,
            oldest_share: None,
        }
    }

    pub fn is_full(&self) -> bool {
        self.filled >= self.target
    }

    /// Add the next older share. SOLO shares are skipped (they are not pool work). Returns
    /// `false` once the window is full: the share (and every older one) is outside it.
    pub fn push(&mut self, share_id: i64, account: &str, scheme: Scheme, work: Work) -> bool {
        if self.is_full() {
            return false;
        }
        let take = work.0.min(self.target - self.filled);
        match scheme {
            Scheme::Solo => return true,
            Scheme::Pplns => *self.pplns.entry(account.to_string()).or_default() += take,
            Scheme::Pps => self.pps += take,
        }
        self.filled += take;
        self.shares += 1;
        self.oldest_share = Some(share_id);
        true
    }

    pub fn target(&self) -> Work {
        Work(self.target)
    }

    /// Work of the window filled by shares (≤ target).
    pub fn filled(&self) -> Work {
        Work(self.filled)
    }

    /// Work per PPLNS account inside the window.
    pub fn pplns_work(&self) -> &BTreeMap<String, u128> {
        &self.pplns
    }

    pub fn pps_work(&self) -> Work {
        Work(self.pps)
    }

    /// Shares (of PPS and PPLNS accounts) inside the window, the oldest partially.
    pub fn share_count(&self) -> u64 {
        self.shares
    }

    pub fn oldest_share(&self) -> Option<i64> {
        self.oldest_share
    }

    /// Split `reward` (see the module documentation). The allocations sum to `reward`;
    /// zero amounts are left out. Accounts come in name order, then the fee account's parts.
    ///
    /// Panics if `fee_bp` is over 10000 (the config validates it).
    pub fn distribute(&self, reward: Sats, fee_bp: u32, fee_account: &str) -> Vec<Allocation> {
        assert!(fee_bp <= BP_PER_UNIT, "fee over 100%");
        let miner = (BP_PER_UNIT - fee_bp) as u128;
        let full = BP_PER_UNIT as u128;
        let mut parties: Vec<(&str, CreditKind)> = Vec::with_capacity(self.pplns.len() + 3);
        let mut weights = Vec::with_capacity(self.pplns.len() + 3);
        let mut pplns_total = 0u128;
        for (account, w) in &self.pplns {
            parties.push((account, CreditKind::Pplns));
            weights.push(w * miner);
            pplns_total += w;
        }
        parties.push((fee_account, CreditKind::PplnsFee));
        weights.push(pplns_total * fee_bp as u128);
        parties.push((fee_account, CreditKind::PpsWindow));
        weights.push(self.pps * full);
        parties.push((fee_account, CreditKind::ShortWindow));
        weights.push((self.target - self.filled) * full);
        // Σ weights = target · 10000 > 0 and < 2^126: no overflow, never all zero.
        let parts = split_exact(reward, &weights).expect("window weights positive, in range");
        parties
            .into_iter()
            .zip(parts)
            .filter(|(_, amount)| *amount > Sats::ZERO)
            .map(|((account, kind), amount)| Allocation {
                account: account.to_string(),
                kind,
                amount,
            })
            .collect()
    }
}

/// A SOLO block: `(finder, fee)`, exactly `reward` together. The coinbase pays these two.
/// Panics if `fee_bp` is over 10000.
pub fn solo_split(reward: Sats, fee_bp: u32) -> (Sats, Sats) {
    assert!(fee_bp <= BP_PER_UNIT, "fee over 100%");
    let parts = split_exact(reward, &[(BP_PER_UNIT - fee_bp) as u128, fee_bp as u128])
        .expect("weights sum to 10000");
    (parts[0], parts[1])
}

/// A share's PPS value in pico-satoshis: gross (before the fee) and net (the miner's part).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PpsValue {
    /// `floor(subsidy · 10^12 · w / W(D))`.
    pub gross_psat: u128,
    /// `floor(subsidy · (10000 − bp) · 10^8 · w / W(D))`.
    pub net_psat: u128,
}

/// `None` if the network work is zero, the value is absurd (over 2^128 psat) or `fee_bp` is
/// over 10000.
pub fn pps_share_value(subsidy: Sats, share: Work, network: Work, fee_bp: u32) -> Option<PpsValue> {
    if fee_bp > BP_PER_UNIT {
        return None;
    }
    let gross_num = subsidy.0 as u128 * PSAT_PER_SAT;
    let net_num = subsidy.0 as u128 * (BP_PER_UNIT - fee_bp) as u128 * (PSAT_PER_SAT / 10_000);
    let (gross_psat, _) = checked_mul_div(gross_num, share.0, network.0)?;
    let (net_psat, _) = checked_mul_div(net_num, share.0, network.0)?;
    Some(PpsValue {
        gross_psat,
        net_psat,
    })
}
