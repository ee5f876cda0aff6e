//! The payout engine: PPS, PPLNS and SOLO credits, balances, and payout batches as PSBTs.
//!
//! It lives in the share ledger's SQLite database (its own `payout_*` tables next to `shares`
//! and `blocks`) and is driven by the coordinator:
//!
//! 1. [`PayoutLedger::credit_pps_shares`] pays PPS shares added since the last call (a
//!    watermark on `shares.id`, which the single ledger writer assigns in commit order).
//! 2. [`PayoutLedger::credit_block`] / [`PayoutLedger::credit_new_blocks`] credit blocks the
//!    node accepted: PPLNS over the window ending at the winning share, or SOLO to the finder.
//! 3. [`PayoutLedger::update_confirmations`] matures block credits after
//!    `payout.confirmations`; [`PayoutLedger::orphan_block`] reverses an orphaned block's.
//!    [`PayoutLedger::process`] does 1–3, also reversing blocks the ledger marked orphaned.
//! 4. [`PayoutLedger::create_payout_batch`] builds an unsigned PSBT paying every mature balance
//!    at or over `payout.min_payout_sats` and reserves those amounts;
//!    [`PayoutLedger::record_sent`] debits them once the signed transaction is broadcast, and
//!    [`PayoutLedger::cancel_batch`] releases them. No private key is ever held here.
//!
//! Accounts: a worker `alice.rig7` mines for account `alice` (the text before the first `.`).
//! Each account has a scheme (from `payout.accounts`, else `payout.default_scheme`); scheme
//! changes apply to shares accepted after the change (the history is in
//! `payout_account_schemes`), so no share is ever paid under two schemes. An unlisted account
//! whose name is a valid address for the network is paid to that address; other unlisted
//! accounts accrue a balance that is paid once an address is configured.
//!
//! Money is [`Sats`] (integer satoshis); difficulties become integer [`Work`] (expected hashes)
//! before any arithmetic; every distribution sums exactly to what it distributes
//! ([`split_exact`]). See [`scheme`] for the formulas and rounding.

pub mod balances;
pub mod batch;
pub mod config;
pub mod psbt;
pub mod sats;
pub mod scheme;

pub use balances::{
    account_of_worker, AccountBalance, BlockCredit, CreditStatus, Earning, MaturityReport,
    PayoutLedger, PpsAccrual, PpsReport, ProcessReport, WindowSummary,
};
pub use batch::{BatchStatus, PayoutBatch, PayoutItem};
pub use config::{AccountConfig, FeeRate, PayoutConfig, PayoutSettings, Percent, Scheme};
pub use psbt::{InputKind, PoolUtxo};
pub use sats::{block_subsidy, split_exact, Sats, Work};
pub use scheme::{solo_split, Allocation, CreditKind, PplnsWindow};

use crate::ledger::LedgerError;

/// What can go wrong in the payout engine; each message says what to do.
#[derive(Debug, thiserror::Error)]
pub enum PayoutError {
    #[error(transparent)]
    Ledger(#[from] LedgerError),
    #[error("payout database error: {0}")]
    Sql(#[from] rusqlite::Error),
    #[error("block {hash} is not in the ledger; fix: pass the hash of a block the pool found")]
    BlockNotFound { hash: String },
    #[error("block {hash} is {status}, not accepted; fix: credit a block only once the node accepted it (rejected and orphaned blocks pay nothing)")]
    BlockNotAccepted { hash: String, status: String },
    #[error("block {hash}: its share {share_id} has network difficulty {difficulty}, not a positive number; fix: the ledger row is damaged, correct shares.network_difficulty")]
    BadNetworkDifficulty {
        hash: String,
        share_id: i64,
        difficulty: f64,
    },
    #[error("no account has a mature balance of {threshold} or more (payout.min_payout_sats){}{}; fix: wait for more credits to mature or lower payout.min_payout_sats",
        largest.as_ref().map(|(a, s)| format!("; the largest is {a:?} with {s}")).unwrap_or_default(),
        if without_address.is_empty() { String::new() } else { format!("; accounts over the threshold without an address: {}", without_address.join(", ")) })]
    NothingToPay {
        threshold: Sats,
        largest: Option<(String, Sats)>,
        without_address: Vec<String>,
    },
    #[error("payout.change_address is not set; fix: set it to an address of the pool's wallet to create payout batches")]
    NoChangeAddress,
    #[error("account {account:?} has address {address:?}: {reason}; fix: give account {account:?} a {network} address in payout.accounts")]
    InvalidAddress {
        account: String,
        address: String,
        network: bitcoin::Network,
        reason: String,
    },
    #[error("the pool's spendable UTXOs hold {available} in {coins} coins, but paying {payouts} accounts needs {needed} including the transaction fee; fix: add funded UTXOs to payout.utxos (or wait for a sent batch's change)")]
    InsufficientFunds {
        needed: Sats,
        available: Sats,
        coins: usize,
        payouts: usize,
    },
    #[error("payout batch {0} does not exist; fix: list pending batches for valid ids")]
    BatchNotFound(i64),
    #[error("payout batch {id} is {status}, not pending; fix: only a pending batch can be recorded as sent or cancelled")]
    BatchNotPending { id: i64, status: String },
    #[error("{given:?} is neither a txid (64 hex digits) nor a signed transaction in hex ({reason}); fix: pass the txid or the raw transaction returned by the signer")]
    BadSentProof { given: String, reason: String },
    #[error("the transaction recorded for payout batch {id} is not the batch's: {problem}; fix: sign and broadcast exactly this batch's PSBT, then record that transaction")]
    TxMismatch { id: i64, problem: String },
    #[error("cannot build the payout PSBT: {0}")]
    Psbt(String),
    #[error("payout database holds an invalid value: {0}; fix: the payout tables were edited by hand or are damaged")]
    Corrupt(String),
}
