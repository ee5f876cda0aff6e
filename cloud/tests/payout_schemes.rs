//! Each scheme against payouts computed by hand (the arithmetic is in the comments).

mod payout_support;

use blgv_cloud::payout::{
    split_exact, AccountBalance, Allocation, CreditKind, PayoutError, Sats, Scheme,
};
use payout_support::{settings, Chain};

fn credits(list: &[Allocation]) -> Vec<(&str, CreditKind, u64)> {
    list.iter()
        .map(|a| (a.account.as_str(), a.kind, a.amount.0))
        .collect()
}

#[test]
fn pplns_window_is_difficulty_weighted_and_cut_at_x_times_d() {
    // D = 1, X = 2: the window is 2 difficulty-1 shares of work. Fee 2 %.
    // id 1 carol d=1.0, id 2 alice d=0.5, id 3 bob d=0.25, id 4 alice d=0.75 (block).
    // Walking back: alice .75 (Σ .75), bob .25 (1.0), alice .5 (1.5), carol 1.0 of which only
    // .5 fits (2.0). So alice 1.25, bob .25, carol .5 of N = 2.
    // Reward 1 000 000 001:
    //   alice  0.98 · R · 1.25/2 = 612 500 000.6125
    //   bob    0.98 · R · 0.25/2 = 122 500 000.1225
    //   carol  0.98 · R · 0.50/2 = 245 000 000.245
    //   fee    0.02 · R · 2/2    =  20 000 000.02
    // Floors sum to 1 000 000 000; the one satoshi left goes to the largest remainder (alice).
    let mut chain = Chain::new();
    let mut payout = chain.open(settings(
        "2",
        2.0,
        &[
            ("alice", Scheme::Pplns),
            ("bob", Scheme::Pplns),
            ("carol", Scheme::Pplns),
        ],
    ));
    chain.share("carol.rig1", 1.0);
    chain.share("alice.a", 0.5);
    chain.share("bob", 0.25);
    let hash = chain.block("alice.b", 0.75, 1_000_000_001);
    let c = payout.credit_block(&hash).unwrap().unwrap();
    assert_eq!(c.scheme, Scheme::Pplns);
    assert_eq!(
        credits(&c.allocations),
        vec![
            ("alice", CreditKind::Pplns, 612_500_001),
            ("bob", CreditKind::Pplns, 122_500_000),
            ("carol", CreditKind::Pplns, 245_000_000),
            ("pool-fee", CreditKind::PplnsFee, 20_000_000),
        ]
    );
    let w = c.window.unwrap();
    assert_eq!((w.target.0, w.filled.0), (2 << 32, 2 << 32));
    assert_eq!((w.shares, w.oldest_share), (4, Some(1)));
    // Crediting twice is a no-op.
    assert!(payout.credit_block(&hash).unwrap().is_none());
}

#[test]
fn pplns_with_solo_and_pps_accounts_in_history() {
    // D = 1, X = 2, fee 1 %. id 1 alice (pplns) 1.0, id 2 dave (solo) 5.0, id 3 erin (pps) 0.5,
    // id 4 bob (pplns) 0.5 wins. Dave's SOLO share is not pool work and is skipped; Erin's PPS
    // work belongs to the pool. Window: bob .5, erin .5, alice 1.0 → full at 2.0.
    // Reward 2 000 000 000:
    //   alice  0.99 · R · 1.0/2 = 990 000 000
    //   bob    0.99 · R · 0.5/2 = 495 000 000
    //   fee    0.01 · R · 1.5/2 =  15 000 000
    //   pps    1.00 · R · 0.5/2 = 500 000 000 (to the fee account)
    let mut chain = Chain::new();
    let mut payout = chain.open(settings(
        "1",
        2.0,
        &[
            ("alice", Scheme::Pplns),
            ("bob", Scheme::Pplns),
            ("dave", Scheme::Solo),
            ("erin", Scheme::Pps),
        ],
    ));
    chain.share("alice", 1.0);
    chain.share("dave", 5.0);
    chain.share("erin", 0.5);
    let hash = chain.block("bob", 0.5, 2_000_000_000);
    let c = payout.credit_block(&hash).unwrap().unwrap();
    assert_eq!(
        credits(&c.allocations),
        vec![
            ("alice", CreditKind::Pplns, 990_000_000),
            ("bob", CreditKind::Pplns, 495_000_000),
            ("pool-fee", CreditKind::PplnsFee, 15_000_000),
            ("pool-fee", CreditKind::PpsWindow, 500_000_000),
        ]
    );
}

#[test]
fn pplns_short_history_leaves_the_unfilled_window_to_the_fee_account() {
    // D = 1, X = 2, fee 0: only 1.0 of work exists (alice .5, bob .5 wins); N = 2.
    // Each share is paid as in a full window: R · 0.5/2 = 250 000 000 each; the unfilled 1.0
    // of the window, R · 1/2 = 500 000 000, goes to the fee account.
    let mut chain = Chain::new();
    let mut payout = chain.open(settings("0", 2.0, &[]));
    chain.share("alice", 0.5);
    let hash = chain.block("bob", 0.5, 1_000_000_000);
    let c = payout.credit_block(&hash).unwrap().unwrap();
    assert_eq!(
        credits(&c.allocations),
        vec![
            ("alice", CreditKind::Pplns, 250_000_000),
            ("bob", CreditKind::Pplns, 250_000_000),
            ("pool-fee", CreditKind::ShortWindow, 500_000_000),
        ]
    );
}

#[test]
fn pplns_window_uses_the_network_difficulty_of_the_block() {
    // Shares at D = 1, then D = 4 for the block: X = 0.5 → N = 0.5 · 4 = 2 (in D=1 units).
    // id 1 alice 3.0 (D=1), id 2 bob 1.0 (D=4, wins). Window: bob 1.0, alice 1.0 of her 3.0.
    // Fee 0, reward 800: alice 400, bob 400.
    let mut chain = Chain::new();
    let mut payout = chain.open(settings("0", 0.5, &[]));
    chain.share("alice", 3.0);
    chain.network_difficulty = 4.0;
    let hash = chain.block("bob", 1.0, 800);
    let c = payout.credit_block(&hash).unwrap().unwrap();
    assert_eq!(
        credits(&c.allocations),
        vec![
            ("alice", CreditKind::Pplns, 400),
            ("bob", CreditKind::Pplns, 400),
        ]
    );
}

#[test]
fn solo_block_goes_to_the_finder_minus_the_fee_paid_in_the_coinbase() {
    // Reward 312 512 345, fee 1.5 %: fee 4 687 685.175, finder 307 824 659.825; floors sum to
    // 312 512 344 and the extra satoshi goes to the larger remainder (the finder).
    let mut chain = Chain::new();
    let mut payout = chain.open(settings("1.5", 2.0, &[("sam", Scheme::Solo)]));
    chain.share("alice", 10.0); // pool shares do not take part in a SOLO block
    let hash = chain.block("sam.bitaxe", 0.01, 312_512_345);
    let c = payout.credit_block(&hash).unwrap().unwrap();
    assert_eq!(c.scheme, Scheme::Solo);
    assert_eq!(
        credits(&c.allocations),
        vec![
            ("sam", CreditKind::Solo, 307_824_660),
            ("pool-fee", CreditKind::SoloFee, 4_687_685),
        ]
    );
    assert_eq!(
        blgv_cloud::payout::solo_split(Sats(312_512_345), 150),
        (Sats(307_824_660), Sats(4_687_685))
    );
    // Paid in the coinbase: never a balance, even once mature.
    payout.update_confirmations(chain.height + 1000).unwrap();
    let b = payout.balance("sam").unwrap();
    assert_eq!(
        (b.mature, b.immature, b.paid_in_coinbase),
        (Sats(0), Sats(0), Sats(307_824_660))
    );
    assert_eq!(payout.balance("pool-fee").unwrap().mature, Sats(0));
}

#[test]
fn pps_pays_each_share_by_its_own_network_difficulty_and_subsidy() {
    // Regtest halves every 150 blocks: height 100 → 50 BTC, height 150 → 25 BTC. Fee 2 %.
    //   share 1: d=1, D=1000, h=100: 5e9/1000 = 5 000 000 gross, 4 900 000 net
    //   share 2: d=1, D=2000, h=100: 2 500 000 gross, 2 450 000 net
    //   share 3: d=3, D=1000, h=150: 2.5e9·3/1000 = 7 500 000 gross, 7 350 000 net
    // alice (pps) earns 4 900 000 + 2 450 000 + 7 350 000 = 14 700 000 (fee 300 000);
    // bob is PPLNS and earns nothing from PPS.
    let mut chain = Chain::new();
    let mut payout = chain.open(settings("2", 2.0, &[("alice", Scheme::Pps)]));
    chain.network_difficulty = 1000.0;
    chain.share("alice", 1.0);
    chain.share("bob", 50.0);
    chain.network_difficulty = 2000.0;
    chain.share("alice.r2", 1.0);
    chain.height = 150;
    chain.network_difficulty = 1000.0;
    chain.share("alice", 3.0);
    let r = payout.credit_pps_shares(None).unwrap();
    assert_eq!((r.shares_seen, r.pps_shares, r.watermark), (4, 3, 4));
    assert_eq!(
        credits(&r.credits),
        vec![("alice", CreditKind::Pps, 14_700_000)]
    );
    let acc = payout.pps_accrual("alice").unwrap().unwrap();
    assert_eq!(acc.fee(), Sats(300_000));
    assert_eq!(acc.gross_psat, 15_000_000 * 1_000_000_000_000);
    // PPS is mature at once (pps_delay_blocks = 0).
    assert_eq!(payout.balance("alice").unwrap().mature, Sats(14_700_000));
    // Nothing new: no credit.
    assert!(payout.credit_pps_shares(None).unwrap().credits.is_empty());
}

#[test]
fn pps_fractions_carry_over_between_passes() {
    // d = 2^-20 (4096 hashes), D = 1000, 50 BTC, fee 2 %: net per share
    //   floor(5e9 · 0.98 · 10^12 · 4096 / (1000 · 2^32)) psat = floor(4 673 004 150 390.625)
    //   = 4 673 004 150 390 psat ≈ 4.673 sat.
    // After 1 share: floor(4.673) = 4 sat. After 3 shares: floor(14.019…) = 14 → +10.
    // Per-pass flooring would give 4 + 9 = 13; the running total gives 14.
    let mut chain = Chain::new();
    let mut payout = chain.open(settings("2", 2.0, &[("alice", Scheme::Pps)]));
    chain.network_difficulty = 1000.0;
    let d = 2f64.powi(-20);
    chain.share("alice", d);
    assert_eq!(
        credits(&payout.credit_pps_shares(None).unwrap().credits),
        vec![("alice", CreditKind::Pps, 4)]
    );
    chain.share("alice", d);
    chain.share("alice", d);
    assert_eq!(
        credits(&payout.credit_pps_shares(None).unwrap().credits),
        vec![("alice", CreditKind::Pps, 10)]
    );
    let e = payout.earnings("alice", 10, None).unwrap();
    assert_eq!(
        e.iter()
            .map(|e| (e.amount.0, e.share_from, e.share_to))
            .collect::<Vec<_>>(),
        vec![(10, Some(2), Some(3)), (4, Some(1), Some(1))]
    );
}

#[test]
fn pps_blocks_are_shared_with_the_pool_not_paid_twice() {
    // A PPS miner finds a block: it is a pool block. The whole window is PPS work, so the
    // reward goes to the fee account (the miner was paid by PPS).
    let mut chain = Chain::new();
    let mut payout = chain.open(settings("2", 1.0, &[("alice", Scheme::Pps)]));
    chain.share("alice", 0.5);
    let hash = chain.block("alice", 0.5, 1_000);
    let c = payout.credit_block(&hash).unwrap().unwrap();
    assert_eq!(
        credits(&c.allocations),
        vec![("pool-fee", CreditKind::PpsWindow, 1_000)]
    );
}

#[test]
fn scheme_changes_apply_to_later_shares_only() {
    // alice mines 1.0 as PPLNS, then the operator switches her to SOLO and she mines 1.0 more;
    // bob (PPLNS) then wins with 1.0. Window X=3, D=1: bob 1.0, alice's SOLO share skipped,
    // alice's PPLNS share 1.0 → 2.0 of 3.0 filled; fee 0, reward 3000: alice 1000, bob 1000,
    // short window 1000.
    let mut chain = Chain::new();
    drop(chain.open(settings("0", 3.0, &[]))); // the payout tables exist before her share
    chain.share("alice", 1.0);
    let mut payout = chain.open(settings("0", 3.0, &[("alice", Scheme::Solo)]));
    assert_eq!(payout.scheme_at("alice", 1).unwrap(), Scheme::Pplns);
    assert_eq!(payout.scheme_at("alice", 2).unwrap(), Scheme::Solo);
    chain.share("alice", 1.0);
    let hash = chain.block("bob", 1.0, 3_000);
    let c = payout.credit_block(&hash).unwrap().unwrap();
    assert_eq!(
        credits(&c.allocations),
        vec![
            ("alice", CreditKind::Pplns, 1_000),
            ("bob", CreditKind::Pplns, 1_000),
            ("pool-fee", CreditKind::ShortWindow, 1_000),
        ]
    );
    let b: AccountBalance = payout.balance("alice").unwrap();
    assert_eq!((b.scheme, b.immature), (Scheme::Solo, Sats(1_000)));
}

#[test]
fn blocks_not_accepted_are_not_credited() {
    let mut chain = Chain::new();
    let mut payout = chain.open(settings("0", 2.0, &[]));
    let hash = chain.block("alice", 1.0, 1_000);
    chain.set_status(&hash, blgv_cloud::ledger::BlockStatus::Rejected);
    assert!(matches!(
        payout.credit_block(&hash),
        Err(PayoutError::BlockNotAccepted { .. })
    ));
    assert!(matches!(
        payout.credit_block("00ff"),
        Err(PayoutError::BlockNotFound { .. })
    ));
    assert!(payout.credit_new_blocks().unwrap().is_empty());
}

#[test]
fn split_exact_by_hand() {
    // 100 over 1:1:1 → 33.33 each; floors give 99, the 1 left goes to the lowest index among
    // equal remainders.
    assert_eq!(
        split_exact(Sats(100), &[1, 1, 1]).unwrap(),
        vec![Sats(34), Sats(33), Sats(33)]
    );
    // 7 over 5:3:2 → 3.5, 2.1, 1.4: floors 3+2+1 = 6, the extra to .5 (index 0).
    assert_eq!(
        split_exact(Sats(7), &[5, 3, 2]).unwrap(),
        vec![Sats(4), Sats(2), Sats(1)]
    );
}
