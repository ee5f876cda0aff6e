//! Property tests: every distribution sums exactly to what it distributes, and each account's
//! credit matches the scheme's formula computed here independently with exact integers.
//!
//! Difficulties are generated as m · 2^e (m < 1024, −12 ≤ e ≤ 12), which an `f64` holds
//! exactly, so the test knows each share's work (m · 2^(e+32) expected hashes) without using
//! the engine's conversion. Network difficulty is 2^k with k changing from share to share.

mod payout_support;

use bitcoin::Network;
use blgv_cloud::ledger::{self, BlockStatus, LedgerEvent, ShareRecord};
use blgv_cloud::payout::{
    split_exact, AccountConfig, CreditKind, PayoutConfig, PayoutLedger, Percent, PplnsWindow, Sats,
    Scheme, Work,
};
use proptest::prelude::*;
use std::collections::BTreeMap;
use std::sync::Arc;

const ACCOUNTS: [&str; 5] = ["a0", "a1", "a2", "a3", "a4"];
const PSAT: u128 = 1_000_000_000_000;

#[derive(Debug, Clone)]
struct Share {
    account: usize,
    m: u64,
    e: i32,
    /// Network difficulty 2^k.
    k: u32,
    block: Option<u64>,
}

impl Share {
    fn difficulty(&self) -> f64 {
        self.m as f64 * 2f64.powi(self.e)
    }
    fn work(&self) -> u128 {
        (self.m as u128) << (self.e + 32)
    }
    fn network_work(&self) -> u128 {
        1u128 << (self.k + 32)
    }
}

fn share_strategy() -> impl Strategy<Value = Share> {
    (
        0..ACCOUNTS.len(),
        1u64..1024,
        -12i32..=12,
        0u32..=12,
        prop::option::weighted(0.15, 1u64..=8_000_000_000),
    )
        .prop_map(|(account, m, e, k, block)| Share {
            account,
            m,
            e,
            k,
            block,
        })
}

fn scheme_strategy() -> impl Strategy<Value = Scheme> {
    prop_oneof![Just(Scheme::Pps), Just(Scheme::Pplns), Just(Scheme::Solo)]
}

/// Regtest subsidy (halving every 150 blocks), written out independently.
fn subsidy(height: u32) -> u128 {
    let halvings = height / 150;
    if halvings >= 64 {
        0
    } else {
        5_000_000_000u128 >> halvings
    }
}

/// `(floor(num/den), num % den == 0)`.
fn floor_exact(num: u128, den: u128) -> (u64, bool) {
    ((num / den) as u64, num.checked_rem(den) == Some(0))
}

/// `got` must be the floor of the exact value, or one more when there is a remainder.
fn assert_rounded(got: u64, num: u128, den: u128, what: &str) -> Result<(), TestCaseError> {
    let (fl, exact) = floor_exact(num, den);
    if exact {
        prop_assert_eq!(got, fl, "{} should be exactly {}", what, fl);
    } else {
        prop_assert!(
            got == fl || got == fl + 1,
            "{} is {}, exact value is {}/{} (floor {})",
            what,
            got,
            num,
            den,
            fl
        );
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn split_sums_exactly_and_rounds_by_at_most_one(
        amount in 0u64..=2_100_000_000_000_000,
        weights in prop::collection::vec(prop_oneof![Just(0u64), 1u64..1000, any::<u64>()], 1..20),
    ) {
        let w: Vec<u128> = weights.iter().map(|w| *w as u128).collect();
        let total: u128 = w.iter().sum();
        match split_exact(Sats(amount), &w) {
            Err(_) => prop_assert!(total == 0 && amount > 0),
            Ok(parts) => {
                prop_assert_eq!(parts.len(), w.len());
                prop_assert_eq!(parts.iter().map(|p| p.0 as u128).sum::<u128>(), amount as u128);
                if total > 0 {
                    for (i, (p, wi)) in parts.iter().zip(&w).enumerate() {
                        assert_rounded(p.0, amount as u128 * wi, total, &format!("part {i}"))?;
                    }
                }
            }
        }
    }

    #[test]
    fn split_with_huge_weights_still_sums_exactly(
        amount in 1u64..=2_100_000_000_000_000,
        weights in prop::collection::vec(1u128..=(1u128 << 120), 1..8),
    ) {
        let parts = split_exact(Sats(amount), &weights).unwrap();
        prop_assert_eq!(parts.iter().map(|p| p.0).sum::<u64>(), amount);
        // Proportionality without a 256-bit reference: a part with a larger weight is never
        // more than one satoshi smaller.
        for i in 0..weights.len() {
            for j in 0..weights.len() {
                if weights[i] >= weights[j] {
                    prop_assert!(parts[i].0 + 1 >= parts[j].0);
                }
            }
        }
    }

    /// PPLNS on its own, over long histories: the pure window against the formula.
    #[test]
    fn pplns_window_matches_the_formula(
        shares in prop::collection::vec((0usize..5, 0u64..1024, -12i32..=12, scheme_strategy()), 1..400),
        k in 0u32..=16,
        ppm in prop_oneof![Just(500_000u64), Just(1_000_000), Just(2_000_000), 1u64..5_000_000],
        fee_bp in 0u32..=10_000,
        reward in 0u64..=8_000_000_000,
    ) {
        let n = (((1u128 << (k + 32)) * ppm as u128) / 1_000_000).max(1);
        let mut window = PplnsWindow::new(Work(n));
        for (id, (acct, m, e, scheme)) in shares.iter().enumerate().rev() {
            let w = (*m as u128) << (e + 32);
            if !window.push(id as i64, ACCOUNTS[*acct], *scheme, Work(w)) {
                break;
            }
        }
        // Independent walk.
        let mut filled = 0u128;
        let mut per: BTreeMap<&str, u128> = BTreeMap::new();
        let mut pps = 0u128;
        for (acct, m, e, scheme) in shares.iter().rev() {
            if filled == n {
                break;
            }
            let take = ((*m as u128) << (e + 32)).min(n - filled);
            match scheme {
                Scheme::Solo => continue,
                Scheme::Pplns => *per.entry(ACCOUNTS[*acct]).or_default() += take,
                Scheme::Pps => pps += take,
            }
            filled += take;
        }
        let alloc = window.distribute(Sats(reward), fee_bp, "fee");
        prop_assert_eq!(alloc.iter().map(|a| a.amount.0).sum::<u64>(), reward);
        let r = reward as u128;
        let den = 10_000 * n;
        let got = |acct: &str, kind: CreditKind| {
            alloc.iter().filter(|a| a.account == acct && a.kind == kind).map(|a| a.amount.0).sum::<u64>()
        };
        let mut pplns_work = 0u128;
        for (acct, w) in &per {
            pplns_work += w;
            assert_rounded(got(acct, CreditKind::Pplns), r * (10_000 - fee_bp as u128) * w, den, acct)?;
        }
        assert_rounded(got("fee", CreditKind::PplnsFee), r * fee_bp as u128 * pplns_work, den, "fee")?;
        assert_rounded(got("fee", CreditKind::PpsWindow), r * pps, n, "pps window")?;
        assert_rounded(got("fee", CreditKind::ShortWindow), r * (n - filled), n, "short window")?;
    }
}

/// Write `shares` to a fresh ledger (one transaction, as the writer batches them), heights
/// `base_height + index`; blocks are accepted at once.
fn write_history(path: &std::path::Path, shares: &[Share], base_height: u32) -> Vec<String> {
    let mut conn = ledger::open_database(path).unwrap();
    let mut events = Vec::new();
    let mut hashes = Vec::new();
    for (i, s) in shares.iter().enumerate() {
        let record = ShareRecord {
            time_ms: i as i64,
            worker: Arc::from(format!("{}.rig{}", ACCOUNTS[s.account], i % 3)),
            difficulty: s.difficulty(),
            network_difficulty: 2f64.powi(s.k as i32),
            height: base_height + i as u32,
            job_id: "j".into(),
        };
        match s.block {
            None => events.push(LedgerEvent::Share(record)),
            Some(reward) => {
                let hash = format!("{i:064x}");
                events.push(LedgerEvent::Block {
                    share: record,
                    hash: hash.clone(),
                    reward_sats: reward,
                });
                events.push(LedgerEvent::BlockStatus {
                    hash: hash.clone(),
                    status: BlockStatus::Accepted,
                    reason: None,
                });
                hashes.push(hash);
            }
        }
    }
    ledger::write_batch(&mut conn, &events).unwrap();
    hashes
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    /// The whole engine over SQLite: random schemes, fee, window, history, PPS passes.
    #[test]
    fn ledger_credits_match_every_scheme(
        schemes in prop::collection::vec(scheme_strategy(), ACCOUNTS.len()),
        fee_cents in 0u32..=10_000,
        x in prop_oneof![Just(0.5f64), Just(1.0), Just(2.0), Just(3.25)],
        shares in prop::collection::vec(share_strategy(), 1..60),
        base_height in prop_oneof![Just(0u32), Just(140), Just(290)],
        cuts in prop::collection::vec(0i64..60, 0..4),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cloud.db");
        let config = PayoutConfig {
            fee_percent: Percent::Text(format!("{}.{:02}", fee_cents / 100, fee_cents % 100)),
            pplns_window_x: x,
            accounts: ACCOUNTS
                .iter()
                .zip(&schemes)
                .map(|(name, scheme)| AccountConfig {
                    name: name.to_string(),
                    address: None,
                    scheme: Some(*scheme),
                })
                .collect(),
            ..PayoutConfig::default()
        };
        let settings = config.resolve(Network::Regtest).unwrap();
        prop_assert_eq!(settings.fee_bp, fee_cents);
        let fee_bp = fee_cents as u128;
        let ppm = (x * 1e6) as u128;
        let mut payout = PayoutLedger::open(&path, settings).unwrap();
        let hashes = write_history(&path, &shares, base_height);

        // PPS in several passes (the result must not depend on them), then blocks.
        let mut cuts = cuts;
        cuts.sort();
        for c in cuts {
            payout.credit_pps_shares(Some(c)).unwrap();
        }
        payout.credit_pps_shares(None).unwrap();
        let credited = payout.credit_new_blocks().unwrap();
        prop_assert_eq!(credited.len(), hashes.len());

        let conn = payout.connection();
        let block_credits = |hash: &str| -> Vec<(String, String, u64)> {
            let mut stmt = conn
                .prepare("SELECT account, kind, amount_sats FROM payout_credits WHERE block_hash = ?1")
                .unwrap();
            stmt.query_map([hash], |r| Ok((r.get(0)?, r.get(1)?, r.get::<_, i64>(2)? as u64)))
                .unwrap()
                .map(Result::unwrap)
                .collect()
        };

        let mut total_rewards = 0u128;
        for (b, s) in shares.iter().enumerate() {
            let Some(reward) = s.block else { continue };
            total_rewards += reward as u128;
            let r = reward as u128;
            let hash = format!("{b:064x}");
            let rows = block_credits(&hash);
            prop_assert_eq!(rows.iter().map(|x| x.2 as u128).sum::<u128>(), r, "block {}", b);
            let got = |acct: &str, kind: &str| {
                rows.iter().filter(|x| x.0 == acct && x.1 == kind).map(|x| x.2).sum::<u64>()
            };
            let finder = ACCOUNTS[s.account];
            if schemes[s.account] == Scheme::Solo {
                assert_rounded(got(finder, "solo"), r * (10_000 - fee_bp), 10_000, "solo finder")?;
                prop_assert_eq!(got(finder, "solo") + got("pool-fee", "solo_fee"), reward);
                continue;
            }
            // The window, walked here from the shares as generated.
            let n = (s.network_work() * ppm / 1_000_000).max(1);
            let mut filled = 0u128;
            let mut per = [0u128; ACCOUNTS.len()];
            let mut pps = 0u128;
            for t in shares[..=b].iter().rev() {
                if filled == n {
                    break;
                }
                let take = t.work().min(n - filled);
                match schemes[t.account] {
                    Scheme::Solo => continue,
                    Scheme::Pplns => per[t.account] += take,
                    Scheme::Pps => pps += take,
                }
                filled += take;
            }
            let den = 10_000 * n;
            for (i, w) in per.iter().enumerate() {
                assert_rounded(got(ACCOUNTS[i], "pplns"), r * (10_000 - fee_bp) * w, den, ACCOUNTS[i])?;
            }
            let pplns_work: u128 = per.iter().sum();
            assert_rounded(got("pool-fee", "pplns_fee"), r * fee_bp * pplns_work, den, "pplns fee")?;
            assert_rounded(got("pool-fee", "pps_window"), r * pps, n, "pps window")?;
            assert_rounded(got("pool-fee", "short_window"), r * (n - filled), n, "short window")?;
        }

        // PPS: per account, floor(Σ per-share net psat / 10^12), and net + fee = gross.
        let mut total_pps = 0u128;
        for (i, name) in ACCOUNTS.iter().enumerate() {
            let (mut gross, mut net) = (0u128, 0u128);
            for (j, s) in shares.iter().enumerate() {
                if s.account != i || schemes[i] != Scheme::Pps {
                    continue;
                }
                let sub = subsidy(base_height + j as u32);
                gross += sub * PSAT * s.work() / s.network_work();
                net += sub * (10_000 - fee_bp) * (PSAT / 10_000) * s.work() / s.network_work();
            }
            let credited: i64 = conn
                .query_row(
                    "SELECT COALESCE(SUM(amount_sats), 0) FROM payout_credits WHERE account = ?1 AND kind = 'pps'",
                    [name],
                    |r| r.get(0),
                )
                .unwrap();
            prop_assert_eq!(credited as u128, net / PSAT, "PPS of {}", name);
            total_pps += net / PSAT;
            if let Some(acc) = payout.pps_accrual(name).unwrap() {
                prop_assert_eq!((acc.gross_psat, acc.net_psat), (gross, net));
                prop_assert_eq!(acc.credited.0 as u128 + acc.fee().0 as u128, gross / PSAT);
            } else {
                prop_assert_eq!(gross, 0);
            }
        }

        // Balances account for every credit: blocks' rewards plus PPS, nothing more or less.
        payout.update_confirmations(u32::MAX / 2).unwrap();
        let balances = payout.balances().unwrap();
        let sum: u128 = balances
            .iter()
            .map(|b| (b.mature.0 + b.immature.0 + b.paid_in_coinbase.0) as u128)
            .sum();
        prop_assert_eq!(sum, total_rewards + total_pps);
    }
}
