//! The payout ledger in SQLite: accounts, scheme history, credits, PPS accrual, balances.
//!
//! Tables (all created with `CREATE … IF NOT EXISTS` in the share ledger's database):
//!
//! * `payout_accounts` — name → payout address (NULL: not payable yet), configured or seen.
//! * `payout_account_schemes` — (account, from_share_id) → scheme; account `*` is the default
//!   for accounts without their own row; a NULL scheme means "follow the default again".
//! * `payout_blocks` — one row per block the engine handled: scheme, window, status
//!   (immature → mature, or orphaned).
//! * `payout_credits` — every credit: account, kind, amount, status (immature, mature,
//!   orphaned), `paid_in_coinbase` (SOLO), the block (hash, height) or PPS share range.
//! * `payout_pps_accrual` — per PPS account, the running pico-satoshi totals (decimal text:
//!   they exceed 64 bits) and the satoshis credited so far.
//! * `payout_state` — `pps_watermark`: the last share id PPS processing has seen.
//! * `payout_batches`, `payout_batch_items`, `payout_batch_inputs` — see [`super::batch`].
//! * view `payout_balances` — the balance columns per account, derived from the above.
//!
//! **Balances are derived, never stored**: mature = Σ mature credits (not paid in the
//! coinbase) − Σ payouts of pending and sent batches, so a balance cannot drift from its
//! history. An orphaned block's credits turn `orphaned` and drop out of every sum; if a block
//! is orphaned after its credits were paid (a reorg deeper than `payout.confirmations`) the
//! account shows a `deficit` that later credits pay back first.
//!
//! **PPS maturity**: PPS pays the pool's risk, not the miner's, so with `pps_delay_blocks = 0`
//! (the default) PPS credits are mature when created; with N > 0 they mature once the chain
//! tip is N blocks past the highest share height they pay for (`tip − height + 1 ≥ N`), which
//! bounds what a miner can withdraw on shares the pool has not had time to check.

use super::config::{PayoutSettings, Scheme};
use super::sats::{block_subsidy, Sats, Work};
use super::scheme::{
    pplns_window_work, pps_share_value, solo_split, Allocation, CreditKind, PplnsWindow,
    PSAT_PER_SAT,
};
use super::PayoutError;
use crate::config::validate_address;
use rusqlite::{params, Connection, OptionalExtension, Transaction, TransactionBehavior};
use serde::Serialize;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;
use std::str::FromStr;
use std::time::{SystemTime, UNIX_EPOCH};

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS payout_accounts (
    name TEXT PRIMARY KEY,
    address TEXT,                          -- NULL: balance accrues, not paid until set
    configured INTEGER NOT NULL DEFAULT 0, -- listed in payout.accounts
    first_seen_ms INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS payout_account_schemes (
    account TEXT NOT NULL,                 -- '*': the default scheme
    from_share_id INTEGER NOT NULL,        -- applies to shares with id >= this
    scheme TEXT CHECK (scheme IN ('pps', 'pplns', 'solo')), -- NULL: follow the default
    PRIMARY KEY (account, from_share_id)
);
CREATE TABLE IF NOT EXISTS payout_blocks (
    hash TEXT PRIMARY KEY,                 -- blocks.hash
    height INTEGER NOT NULL,
    reward_sats INTEGER NOT NULL,
    scheme TEXT CHECK (scheme IN ('pplns', 'solo')), -- NULL: orphaned before crediting
    finder_account TEXT NOT NULL,
    share_id INTEGER NOT NULL,             -- the winning share
    window_work TEXT,                      -- PPLNS: N = X·D in expected hashes (decimal)
    filled_work TEXT,                      -- PPLNS: the part of N filled by shares
    window_shares INTEGER,
    oldest_share_id INTEGER,
    status TEXT NOT NULL CHECK (status IN ('immature', 'mature', 'orphaned')),
    credited_at_ms INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS payout_credits (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    account TEXT NOT NULL,
    kind TEXT NOT NULL CHECK (kind IN ('pplns', 'pplns_fee', 'pps_window', 'short_window', 'pps', 'solo', 'solo_fee')),
    amount_sats INTEGER NOT NULL CHECK (amount_sats >= 0),
    paid_in_coinbase INTEGER NOT NULL DEFAULT 0, -- SOLO: never part of a balance or batch
    status TEXT NOT NULL CHECK (status IN ('immature', 'mature', 'orphaned')),
    block_hash TEXT,                       -- NULL for PPS credits
    height INTEGER NOT NULL,               -- the block's height, or PPS: highest share height
    share_from INTEGER,                    -- PPS: the share ids this credit pays for
    share_to INTEGER,
    created_at_ms INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS payout_credits_by_account ON payout_credits (account, id);
CREATE INDEX IF NOT EXISTS payout_credits_by_block ON payout_credits (block_hash);
CREATE INDEX IF NOT EXISTS payout_credits_immature ON payout_credits (status, height);
CREATE TABLE IF NOT EXISTS payout_pps_accrual (
    account TEXT PRIMARY KEY,
    gross_psat TEXT NOT NULL,              -- Σ floor(subsidy·w·10^12 / W(D)), decimal
    net_psat TEXT NOT NULL,                -- Σ floor(subsidy·(1-fee)·w·10^12 / W(D)), decimal
    credited_sats INTEGER NOT NULL,        -- = floor(net_psat / 10^12)
    uncredited_from INTEGER                -- first share id not yet in a credit
);
CREATE TABLE IF NOT EXISTS payout_state (
    key TEXT PRIMARY KEY,
    value INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS payout_batches (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    status TEXT NOT NULL CHECK (status IN ('pending', 'sent', 'cancelled')),
    created_at_ms INTEGER NOT NULL,
    psbt TEXT NOT NULL,                    -- base64, unsigned
    unsigned_txid TEXT NOT NULL,
    txid TEXT,                             -- once sent
    total_sats INTEGER NOT NULL,           -- Σ payouts
    fee_sats INTEGER NOT NULL,             -- inputs − outputs
    estimated_vsize INTEGER NOT NULL,
    fee_rate_msat_per_vb INTEGER NOT NULL,
    change_vout INTEGER,
    change_sats INTEGER,
    change_script TEXT,                    -- hex
    finished_at_ms INTEGER                 -- sent or cancelled
);
CREATE TABLE IF NOT EXISTS payout_batch_items (
    batch_id INTEGER NOT NULL REFERENCES payout_batches (id),
    account TEXT NOT NULL,
    address TEXT NOT NULL,
    amount_sats INTEGER NOT NULL CHECK (amount_sats > 0),
    vout INTEGER NOT NULL,
    PRIMARY KEY (batch_id, account)
);
CREATE INDEX IF NOT EXISTS payout_batch_items_by_account ON payout_batch_items (account);
CREATE TABLE IF NOT EXISTS payout_batch_inputs (
    batch_id INTEGER NOT NULL REFERENCES payout_batches (id),
    txid TEXT NOT NULL,
    vout INTEGER NOT NULL,
    value_sats INTEGER NOT NULL,
    script_pubkey TEXT NOT NULL,           -- hex
    PRIMARY KEY (batch_id, txid, vout)
);
CREATE VIEW IF NOT EXISTS payout_balances AS
SELECT a.name AS account,
    (SELECT COALESCE(SUM(amount_sats), 0) FROM payout_credits c
        WHERE c.account = a.name AND c.status = 'immature' AND c.paid_in_coinbase = 0) AS immature_sats,
    (SELECT COALESCE(SUM(amount_sats), 0) FROM payout_credits c
        WHERE c.account = a.name AND c.status = 'mature' AND c.paid_in_coinbase = 0)
    - (SELECT COALESCE(SUM(i.amount_sats), 0) FROM payout_batch_items i
        JOIN payout_batches b ON b.id = i.batch_id
        WHERE i.account = a.name AND b.status IN ('pending', 'sent')) AS mature_sats,
    (SELECT COALESCE(SUM(i.amount_sats), 0) FROM payout_batch_items i
        JOIN payout_batches b ON b.id = i.batch_id
        WHERE i.account = a.name AND b.status = 'pending') AS pending_sats,
    (SELECT COALESCE(SUM(i.amount_sats), 0) FROM payout_batch_items i
        JOIN payout_batches b ON b.id = i.batch_id
        WHERE i.account = a.name AND b.status = 'sent') AS paid_sats
FROM payout_accounts a;
";

/// PPS shares read per transaction.
const PPS_CHUNK: i64 = 50_000;

pub(crate) fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// The account a worker mines for: the text before its first `.`.
pub fn account_of_worker(worker: &str) -> &str {
    worker.split('.').next().unwrap_or(worker)
}

/// Credit status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CreditStatus {
    Immature,
    Mature,
    Orphaned,
}

impl CreditStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            CreditStatus::Immature => "immature",
            CreditStatus::Mature => "mature",
            CreditStatus::Orphaned => "orphaned",
        }
    }

    fn parse(s: &str) -> Result<CreditStatus, PayoutError> {
        match s {
            "immature" => Ok(CreditStatus::Immature),
            "mature" => Ok(CreditStatus::Mature),
            "orphaned" => Ok(CreditStatus::Orphaned),
            other => Err(PayoutError::Corrupt(format!("credit status {other:?}"))),
        }
    }
}

/// An account's money, for the API.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AccountBalance {
    pub account: String,
    /// Where payouts go; `None`: the balance accrues but is not paid.
    pub address: Option<String>,
    /// The scheme of its next share.
    pub scheme: Scheme,
    /// Credits of blocks still waiting for confirmations (and delayed PPS credits).
    pub immature: Sats,
    /// Spendable: mature credits minus pending and sent payouts.
    pub mature: Sats,
    /// Reserved by pending payout batches.
    pub pending: Sats,
    /// Paid by sent payout batches.
    pub paid: Sats,
    /// SOLO blocks (mature or not) paid directly in their coinbase.
    pub paid_in_coinbase: Sats,
    /// Paid out beyond mature credits (a block orphaned after paying out); repaid first.
    pub deficit: Sats,
}

/// One credit, for an account's earnings history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Earning {
    pub credit_id: i64,
    pub kind: CreditKind,
    pub amount: Sats,
    pub status: CreditStatus,
    pub paid_in_coinbase: bool,
    pub block_hash: Option<String>,
    /// The block's height, or for PPS the highest share height paid.
    pub height: u32,
    pub share_from: Option<i64>,
    pub share_to: Option<i64>,
    pub created_at_ms: i64,
}

/// What crediting one block did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockCredit {
    pub hash: String,
    pub height: u32,
    pub reward: Sats,
    /// `Pplns` for any pool-mode block (PPS and PPLNS finders), `Solo` for a SOLO finder.
    pub scheme: Scheme,
    pub finder_account: String,
    /// The winning share's id.
    pub share_id: i64,
    pub allocations: Vec<Allocation>,
    pub window: Option<WindowSummary>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WindowSummary {
    pub target: Work,
    pub filled: Work,
    pub shares: u64,
    pub oldest_share: Option<i64>,
}

/// What a PPS pass did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PpsReport {
    /// Shares read (all schemes).
    pub shares_seen: u64,
    /// Of which PPS shares valued.
    pub pps_shares: u64,
    /// PPS shares with an unusable difficulty (negative, NaN, zero network difficulty): unpaid.
    pub skipped_shares: u64,
    /// Credits created, per account.
    pub credits: Vec<Allocation>,
    /// The last share id processed.
    pub watermark: i64,
}

/// A PPS account's running totals.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PpsAccrual {
    pub account: String,
    /// Σ per-share gross values, pico-satoshis.
    pub gross_psat: u128,
    /// Σ per-share net values (after the fee), pico-satoshis.
    pub net_psat: u128,
    /// `floor(net_psat / 10^12)`: credited so far.
    pub credited: Sats,
}

impl PpsAccrual {
    /// The pool's fee on these shares so far: `floor(gross) − floor(net)` in satoshis. PPS
    /// fees are not credits: the pool keeps them by keeping the blocks.
    pub fn fee(&self) -> Sats {
        Sats((self.gross_psat / PSAT_PER_SAT) as u64 - (self.net_psat / PSAT_PER_SAT) as u64)
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MaturityReport {
    pub matured_blocks: u64,
    pub matured_credits: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProcessReport {
    pub pps: PpsReport,
    /// Blocks whose credits were reversed because the ledger marks them orphaned or rejected.
    pub orphaned: Vec<String>,
    pub credited: Vec<BlockCredit>,
    pub maturity: MaturityReport,
}

/// The scheme history, in memory for a pass.
struct SchemeBook {
    default_scheme: Scheme,
    default_rows: Vec<(i64, Scheme)>,
    accounts: HashMap<String, Vec<(i64, Option<Scheme>)>>,
}

fn parse_scheme(s: &str) -> Result<Scheme, PayoutError> {
    Scheme::from_str(s).map_err(PayoutError::Corrupt)
}

impl SchemeBook {
    fn load(conn: &Connection, default_scheme: Scheme) -> Result<SchemeBook, PayoutError> {
        let mut book = SchemeBook {
            default_scheme,
            default_rows: Vec::new(),
            accounts: HashMap::new(),
        };
        let mut stmt = conn.prepare(
            "SELECT account, from_share_id, scheme FROM payout_account_schemes ORDER BY account, from_share_id",
        )?;
        let mut rows = stmt.query([])?;
        while let Some(r) = rows.next()? {
            let account: String = r.get(0)?;
            let from: i64 = r.get(1)?;
            let scheme = r
                .get::<_, Option<String>>(2)?
                .map(|s| parse_scheme(&s))
                .transpose()?;
            if account == "*" {
                book.default_rows
                    .push((from, scheme.unwrap_or(default_scheme)));
            } else {
                book.accounts
                    .entry(account)
                    .or_default()
                    .push((from, scheme));
            }
        }
        Ok(book)
    }

    fn at(&self, account: &str, share_id: i64) -> Scheme {
        if let Some(rows) = self.accounts.get(account) {
            if let Some((_, Some(s))) = rows.iter().rev().find(|(from, _)| *from <= share_id) {
                return *s;
            }
        }
        self.default_rows
            .iter()
            .rev()
            .find(|(from, _)| *from <= share_id)
            .map(|(_, s)| *s)
            .unwrap_or(self.default_scheme)
    }

    /// The latest row for `account`: `None` if it has none.
    fn latest(&self, account: &str) -> Option<Option<Scheme>> {
        if account == "*" {
            return self.default_rows.last().map(|(_, s)| Some(*s));
        }
        self.accounts
            .get(account)
            .and_then(|rows| rows.last())
            .map(|(_, s)| *s)
    }
}

/// Whether the engine credited (or orphaned) `hash` already.
fn block_handled(conn: &Connection, hash: &str) -> Result<bool, PayoutError> {
    Ok(conn
        .query_row(
            "SELECT 1 FROM payout_blocks WHERE hash = ?1",
            [hash],
            |_| Ok(()),
        )
        .optional()?
        .is_some())
}

fn parse_u128(text: &str) -> Result<u128, PayoutError> {
    text.parse()
        .map_err(|_| PayoutError::Corrupt(format!("{text:?} is not a pico-satoshi total")))
}

/// The payout engine over one SQLite connection (the share ledger's database).
pub struct PayoutLedger {
    pub(super) conn: Connection,
    pub(super) settings: PayoutSettings,
}

impl PayoutLedger {
    /// Open (or create) the payout tables in the share ledger's database at `path`.
    pub fn open(path: &Path, settings: PayoutSettings) -> Result<PayoutLedger, PayoutError> {
        let conn = crate::ledger::open_database(path)?;
        PayoutLedger::with_connection(conn, settings)
    }

    /// Use a connection from [`crate::ledger::open_database`] (the `shares` and `blocks`
    /// tables must exist). Creates the payout tables and applies the configured accounts.
    pub fn with_connection(
        conn: Connection,
        settings: PayoutSettings,
    ) -> Result<PayoutLedger, PayoutError> {
        conn.execute_batch(SCHEMA)?;
        let mut ledger = PayoutLedger { conn, settings };
        ledger.sync_accounts()?;
        Ok(ledger)
    }

    pub fn settings(&self) -> &PayoutSettings {
        &self.settings
    }

    /// Read-only access for queries the engine does not offer.
    pub fn connection(&self) -> &Connection {
        &self.conn
    }

    pub(super) fn begin(&mut self) -> Result<Transaction<'_>, PayoutError> {
        Ok(self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?)
    }

    /// Apply `payout.accounts` and `payout.default_scheme`: addresses, and scheme changes that
    /// take effect from the next share (or from the first share, the very first time).
    fn sync_accounts(&mut self) -> Result<(), PayoutError> {
        let settings = self.settings.clone();
        let tx = self.begin()?;
        let history_rows: i64 =
            tx.query_row("SELECT COUNT(*) FROM payout_account_schemes", [], |r| {
                r.get(0)
            })?;
        let next_share: i64 = if history_rows == 0 {
            0
        } else {
            tx.query_row("SELECT COALESCE(MAX(id), 0) + 1 FROM shares", [], |r| {
                r.get(0)
            })?
        };
        let book = SchemeBook::load(&tx, settings.default_scheme)?;
        let set_scheme = |account: &str, scheme: Option<Scheme>| -> rusqlite::Result<()> {
            tx.execute(
                "INSERT OR REPLACE INTO payout_account_schemes (account, from_share_id, scheme) VALUES (?1, ?2, ?3)",
                params![account, next_share, scheme.map(Scheme::as_str)],
            )?;
            Ok(())
        };
        if book.latest("*") != Some(Some(settings.default_scheme)) {
            set_scheme("*", Some(settings.default_scheme))?;
        }
        let mut listed = HashSet::new();
        for a in &settings.accounts {
            listed.insert(a.name.as_str());
            let wanted = if a.name == settings.fee_account {
                None
            } else {
                a.scheme
            };
            match book.latest(&a.name) {
                None if wanted.is_none() => {}
                Some(current) if current == wanted => {}
                _ => set_scheme(&a.name, wanted)?,
            }
        }
        for (account, rows) in &book.accounts {
            let following_default = rows.last().is_some_and(|(_, s)| s.is_none());
            if !listed.contains(account.as_str()) && !following_default {
                set_scheme(account, None)?;
            }
        }
        let now = now_ms();
        for a in &settings.accounts {
            tx.execute(
                "INSERT INTO payout_accounts (name, address, configured, first_seen_ms) VALUES (?1, ?2, 1, ?3)
                 ON CONFLICT (name) DO UPDATE SET address = excluded.address, configured = 1",
                params![a.name, a.address, now],
            )?;
        }
        let unlisted: Vec<String> = {
            let mut stmt = tx.prepare("SELECT name FROM payout_accounts WHERE configured = 1")?;
            let names = stmt.query_map([], |r| r.get::<_, String>(0))?;
            names
                .filter(|n| !n.as_ref().is_ok_and(|n| listed.contains(n.as_str())))
                .collect::<Result<_, _>>()?
        };
        for name in unlisted {
            let address = validate_address(&name, settings.network)
                .ok()
                .map(|_| &name);
            tx.execute(
                "UPDATE payout_accounts SET configured = 0, address = ?2 WHERE name = ?1",
                params![name, address],
            )?;
        }
        tx.commit()?;
        Ok(())
    }

    /// Make sure a credited account has a row: an unlisted account named by a valid address is
    /// paid to it.
    fn ensure_account(
        tx: &Connection,
        settings: &PayoutSettings,
        name: &str,
    ) -> Result<(), PayoutError> {
        let address = validate_address(name, settings.network)
            .ok()
            .map(|_| name.to_string());
        tx.execute(
            "INSERT OR IGNORE INTO payout_accounts (name, address, configured, first_seen_ms) VALUES (?1, ?2, 0, ?3)",
            params![name, address, now_ms()],
        )?;
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    fn insert_credit(
        tx: &Connection,
        a: &Allocation,
        status: CreditStatus,
        block_hash: Option<&str>,
        height: u32,
        share_from: Option<i64>,
        share_to: Option<i64>,
        now: i64,
    ) -> Result<(), PayoutError> {
        tx.prepare_cached(
            "INSERT INTO payout_credits (account, kind, amount_sats, paid_in_coinbase, status, block_hash, height, share_from, share_to, created_at_ms)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
        )?
        .execute(params![
            a.account,
            a.kind.as_str(),
            a.amount,
            a.kind.paid_in_coinbase(),
            status.as_str(),
            block_hash,
            height,
            share_from,
            share_to,
            now
        ])?;
        Ok(())
    }

    /// The scheme `account` mines under for share `share_id`.
    pub fn scheme_at(&self, account: &str, share_id: i64) -> Result<Scheme, PayoutError> {
        Ok(SchemeBook::load(&self.conn, self.settings.default_scheme)?.at(account, share_id))
    }

    /// Credit PPS for shares after the watermark up to `up_to_share_id` (all shares when
    /// `None`). Each share of an account that is PPS at that share is valued (see
    /// [`super::scheme`]); the account is credited the whole satoshis its running total
    /// crossed. Idempotent: the watermark advances in the same transaction as the credits.
    pub fn credit_pps_shares(
        &mut self,
        up_to_share_id: Option<i64>,
    ) -> Result<PpsReport, PayoutError> {
        let mut report = PpsReport::default();
        let limit = up_to_share_id.unwrap_or(i64::MAX);
        loop {
            let settings = self.settings.clone();
            let tx = self.begin()?;
            let watermark: i64 = tx
                .query_row(
                    "SELECT value FROM payout_state WHERE key = 'pps_watermark'",
                    [],
                    |r| r.get(0),
                )
                .optional()?
                .unwrap_or(0);
            report.watermark = watermark;
            let book = SchemeBook::load(&tx, settings.default_scheme)?;
            #[derive(Default)]
            struct Acc {
                gross: u128,
                net: u128,
                from: Option<i64>,
                to: i64,
                height: u32,
            }
            let mut accs: BTreeMap<String, Acc> = BTreeMap::new();
            let mut rows_read = 0i64;
            let mut last = watermark;
            {
                let mut stmt = tx.prepare_cached(
                    "SELECT id, worker, difficulty, network_difficulty, height FROM shares
                     WHERE id > ?1 AND id <= ?2 ORDER BY id LIMIT ?3",
                )?;
                let mut rows = stmt.query(params![watermark, limit, PPS_CHUNK])?;
                while let Some(r) = rows.next()? {
                    rows_read += 1;
                    let id: i64 = r.get(0)?;
                    last = id;
                    let worker: String = r.get(1)?;
                    let account = account_of_worker(&worker);
                    if book.at(account, id) != Scheme::Pps {
                        continue;
                    }
                    report.pps_shares += 1;
                    let d: f64 = r.get(2)?;
                    let nd: f64 = r.get(3)?;
                    let height: i64 = r.get(4)?;
                    let height = u32::try_from(height).unwrap_or(0);
                    let value = match (Work::from_difficulty(d), Work::from_difficulty(nd)) {
                        (Some(w), Some(n)) if n.0 > 0 => pps_share_value(
                            block_subsidy(height, settings.network),
                            w,
                            n,
                            settings.fee_bp,
                        ),
                        _ => None,
                    };
                    let Some(value) = value else {
                        report.skipped_shares += 1;
                        tracing::warn!(
                            share = id,
                            d,
                            nd,
                            "PPS share with an unusable difficulty is not paid"
                        );
                        continue;
                    };
                    let acc = accs.entry(account.to_string()).or_default();
                    acc.gross += value.gross_psat;
                    acc.net += value.net_psat;
                    acc.from.get_or_insert(id);
                    acc.to = id;
                    acc.height = acc.height.max(height);
                }
            }
            report.shares_seen += rows_read as u64;
            let now = now_ms();
            for (account, acc) in accs {
                PayoutLedger::ensure_account(&tx, &settings, &account)?;
                let prev: Option<(String, String, Sats, Option<i64>)> = tx
                    .query_row(
                        "SELECT gross_psat, net_psat, credited_sats, uncredited_from FROM payout_pps_accrual WHERE account = ?1",
                        [&account],
                        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
                    )
                    .optional()?;
                let (gross, net, credited, from) = match prev {
                    Some((g, n, c, f)) => (parse_u128(&g)?, parse_u128(&n)?, c, f),
                    None => (0, 0, Sats::ZERO, None),
                };
                let gross = gross + acc.gross;
                let net = net + acc.net;
                let from = from.or(acc.from);
                let total = Sats(u64::try_from(net / PSAT_PER_SAT).map_err(|_| {
                    PayoutError::Corrupt(format!("PPS total of {account:?} overflows"))
                })?);
                let increment = total.saturating_sub(credited);
                let from = if increment > Sats::ZERO {
                    let status = if settings.pps_delay_blocks == 0 {
                        CreditStatus::Mature
                    } else {
                        CreditStatus::Immature
                    };
                    let a = Allocation {
                        account: account.clone(),
                        kind: CreditKind::Pps,
                        amount: increment,
                    };
                    PayoutLedger::insert_credit(
                        &tx,
                        &a,
                        status,
                        None,
                        acc.height,
                        from,
                        Some(acc.to),
                        now,
                    )?;
                    report.credits.push(a);
                    None
                } else {
                    from
                };
                tx.execute(
                    "INSERT INTO payout_pps_accrual (account, gross_psat, net_psat, credited_sats, uncredited_from) VALUES (?1, ?2, ?3, ?4, ?5)
                     ON CONFLICT (account) DO UPDATE SET gross_psat = ?2, net_psat = ?3, credited_sats = ?4, uncredited_from = ?5",
                    params![account, gross.to_string(), net.to_string(), total, from],
                )?;
            }
            tx.execute(
                "INSERT INTO payout_state (key, value) VALUES ('pps_watermark', ?1)
                 ON CONFLICT (key) DO UPDATE SET value = ?1",
                [last],
            )?;
            tx.commit()?;
            report.watermark = last;
            if rows_read < PPS_CHUNK {
                return Ok(report);
            }
        }
    }

    /// A PPS account's running totals (`None` if it never had a PPS share).
    pub fn pps_accrual(&self, account: &str) -> Result<Option<PpsAccrual>, PayoutError> {
        let row: Option<(String, String, Sats)> = self
            .conn
            .query_row(
                "SELECT gross_psat, net_psat, credited_sats FROM payout_pps_accrual WHERE account = ?1",
                [account],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .optional()?;
        row.map(|(g, n, c)| {
            Ok(PpsAccrual {
                account: account.to_string(),
                gross_psat: parse_u128(&g)?,
                net_psat: parse_u128(&n)?,
                credited: c,
            })
        })
        .transpose()
    }

    /// Credit an accepted block: PPLNS over the window ending at its winning share, or SOLO to
    /// the finder. Credits are immature until [`Self::update_confirmations`]. `Ok(None)` if the
    /// block was credited (or orphaned) before.
    ///
    /// The window is read before the write transaction starts (shares up to the winning one
    /// never change, and WAL readers do not block the share writer), so a long window does not
    /// hold up share recording.
    pub fn credit_block(&mut self, hash: &str) -> Result<Option<BlockCredit>, PayoutError> {
        if block_handled(&self.conn, hash)? {
            return Ok(None);
        }
        let credit = self.compute_block_credit(hash)?;
        let settings = &self.settings;
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        if block_handled(&tx, hash)? {
            return Ok(None); // credited by another pass meanwhile
        }
        let now = now_ms();
        let window = credit.window.as_ref();
        tx.execute(
            "INSERT INTO payout_blocks (hash, height, reward_sats, scheme, finder_account, share_id, window_work, filled_work, window_shares, oldest_share_id, status, credited_at_ms)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, 'immature', ?11)",
            params![
                hash,
                credit.height,
                credit.reward,
                credit.scheme.as_str(),
                credit.finder_account,
                credit.share_id,
                window.map(|w| w.target.to_text()),
                window.map(|w| w.filled.to_text()),
                window.map(|w| w.shares as i64),
                window.and_then(|w| w.oldest_share),
                now
            ],
        )?;
        for a in &credit.allocations {
            PayoutLedger::ensure_account(&tx, settings, &a.account)?;
            PayoutLedger::insert_credit(
                &tx,
                a,
                CreditStatus::Immature,
                Some(hash),
                credit.height,
                None,
                None,
                now,
            )?;
        }
        tx.commit()?;
        Ok(Some(credit))
    }

    /// What crediting `hash` would do, without writing anything.
    pub fn compute_block_credit(&self, hash: &str) -> Result<BlockCredit, PayoutError> {
        let settings = &self.settings;
        let conn = &self.conn;
        let (height, reward, finder, share_id, status): (i64, Sats, String, i64, String) = conn
            .query_row(
                "SELECT height, reward_sats, finder, share_id, status FROM blocks WHERE hash = ?1",
                [hash],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)),
            )
            .optional()?
            .ok_or_else(|| PayoutError::BlockNotFound {
                hash: hash.to_string(),
            })?;
        if status != "accepted" {
            return Err(PayoutError::BlockNotAccepted {
                hash: hash.to_string(),
                status,
            });
        }
        let height = u32::try_from(height)
            .map_err(|_| PayoutError::Corrupt(format!("block height {height}")))?;
        let finder_account = account_of_worker(&finder).to_string();
        let book = SchemeBook::load(conn, settings.default_scheme)?;
        let finder_scheme = book.at(&finder_account, share_id);
        let (scheme, allocations, window) = if finder_scheme == Scheme::Solo {
            let (to_finder, fee) = solo_split(reward, settings.fee_bp);
            let allocations = [
                (finder_account.clone(), CreditKind::Solo, to_finder),
                (settings.fee_account.clone(), CreditKind::SoloFee, fee),
            ]
            .into_iter()
            .filter(|(_, _, amount)| *amount > Sats::ZERO)
            .map(|(account, kind, amount)| Allocation {
                account,
                kind,
                amount,
            })
            .collect();
            (Scheme::Solo, allocations, None)
        } else {
            let nd: f64 = conn.query_row(
                "SELECT network_difficulty FROM shares WHERE id = ?1",
                [share_id],
                |r| r.get(0),
            )?;
            let network = Work::from_difficulty(nd)
                .filter(|w| w.0 > 0)
                .ok_or_else(|| PayoutError::BadNetworkDifficulty {
                    hash: hash.to_string(),
                    share_id,
                    difficulty: nd,
                })?;
            let mut window = PplnsWindow::new(pplns_window_work(network, settings.window_ppm));
            {
                let mut stmt = conn.prepare_cached(
                    "SELECT id, worker, difficulty FROM shares WHERE id <= ?1 ORDER BY id DESC",
                )?;
                let mut rows = stmt.query([share_id])?;
                while let Some(r) = rows.next()? {
                    let id: i64 = r.get(0)?;
                    let worker: String = r.get(1)?;
                    let d: f64 = r.get(2)?;
                    let account = account_of_worker(&worker);
                    let work = Work::from_difficulty(d).unwrap_or_default();
                    if !window.push(id, account, book.at(account, id), work) {
                        break;
                    }
                }
            }
            let allocations = window.distribute(reward, settings.fee_bp, &settings.fee_account);
            let summary = WindowSummary {
                target: window.target(),
                filled: window.filled(),
                shares: window.share_count(),
                oldest_share: window.oldest_share(),
            };
            (Scheme::Pplns, allocations, Some(summary))
        };
        Ok(BlockCredit {
            hash: hash.to_string(),
            height,
            reward,
            scheme,
            finder_account,
            share_id,
            allocations,
            window,
        })
    }

    /// Credit every block the ledger marks accepted and the engine has not handled yet, in the
    /// order they were found.
    pub fn credit_new_blocks(&mut self) -> Result<Vec<BlockCredit>, PayoutError> {
        let hashes: Vec<String> = {
            let mut stmt = self.conn.prepare(
                "SELECT b.hash FROM blocks b WHERE b.status = 'accepted'
                 AND NOT EXISTS (SELECT 1 FROM payout_blocks p WHERE p.hash = b.hash)
                 ORDER BY b.share_id",
            )?;
            let rows = stmt.query_map([], |r| r.get(0))?;
            rows.collect::<Result<_, _>>()?
        };
        let mut out = Vec::new();
        for h in hashes {
            if let Some(c) = self.credit_block(&h)? {
                out.push(c);
            }
        }
        Ok(out)
    }

    /// Reverse an orphaned block's credits (they drop out of every balance). Returns the amount
    /// reversed. A block not credited yet is marked so it never will be. Idempotent.
    pub fn orphan_block(&mut self, hash: &str) -> Result<Sats, PayoutError> {
        let tx = self.begin()?;
        let status: Option<String> = tx
            .query_row(
                "SELECT status FROM payout_blocks WHERE hash = ?1",
                [hash],
                |r| r.get(0),
            )
            .optional()?;
        let reversed = match status.as_deref() {
            Some("orphaned") => Sats::ZERO,
            Some(_) => {
                let sum: Sats = tx.query_row(
                    "SELECT COALESCE(SUM(amount_sats), 0) FROM payout_credits WHERE block_hash = ?1 AND status != 'orphaned'",
                    [hash],
                    |r| r.get(0),
                )?;
                tx.execute(
                    "UPDATE payout_credits SET status = 'orphaned' WHERE block_hash = ?1",
                    [hash],
                )?;
                tx.execute(
                    "UPDATE payout_blocks SET status = 'orphaned' WHERE hash = ?1",
                    [hash],
                )?;
                sum
            }
            None => {
                let inserted = tx.execute(
                    "INSERT INTO payout_blocks (hash, height, reward_sats, scheme, finder_account, share_id, status, credited_at_ms)
                     SELECT hash, height, reward_sats, NULL, finder, share_id, 'orphaned', ?2 FROM blocks WHERE hash = ?1",
                    params![hash, now_ms()],
                )?;
                if inserted == 0 {
                    return Err(PayoutError::BlockNotFound {
                        hash: hash.to_string(),
                    });
                }
                Sats::ZERO
            }
        };
        tx.commit()?;
        if reversed > Sats::ZERO {
            tracing::warn!(%hash, %reversed, "block orphaned; its credits are reversed");
        }
        Ok(reversed)
    }

    /// With the chain tip at `tip_height`: block credits with `tip − height + 1 ≥
    /// payout.confirmations` become mature; delayed PPS credits with `tip − height + 1 ≥
    /// payout.pps_delay_blocks` too.
    pub fn update_confirmations(&mut self, tip_height: u32) -> Result<MaturityReport, PayoutError> {
        let conf = self.settings.confirmations as i64;
        let delay = self.settings.pps_delay_blocks as i64;
        let tip = tip_height as i64;
        let tx = self.begin()?;
        let blocks = tx.execute(
            "UPDATE payout_blocks SET status = 'mature' WHERE status = 'immature' AND ?1 - height + 1 >= ?2",
            params![tip, conf],
        )?;
        let mut credits = tx.execute(
            "UPDATE payout_credits SET status = 'mature'
             WHERE status = 'immature' AND block_hash IS NOT NULL AND ?1 - height + 1 >= ?2",
            params![tip, conf],
        )?;
        credits += tx.execute(
            "UPDATE payout_credits SET status = 'mature'
             WHERE status = 'immature' AND block_hash IS NULL AND ?1 - height + 1 >= ?2",
            params![tip, delay],
        )?;
        tx.commit()?;
        Ok(MaturityReport {
            matured_blocks: blocks as u64,
            matured_credits: credits as u64,
        })
    }

    /// One round of bookkeeping with the chain tip at `tip_height`: PPS for new shares,
    /// reversal of credited blocks the ledger now marks orphaned or rejected, crediting of
    /// newly accepted blocks, maturity.
    pub fn process(&mut self, tip_height: u32) -> Result<ProcessReport, PayoutError> {
        let pps = self.credit_pps_shares(None)?;
        let gone: Vec<String> = {
            let mut stmt = self.conn.prepare(
                "SELECT p.hash FROM payout_blocks p JOIN blocks b ON b.hash = p.hash
                 WHERE p.status != 'orphaned' AND b.status IN ('orphaned', 'rejected')",
            )?;
            let rows = stmt.query_map([], |r| r.get(0))?;
            rows.collect::<Result<_, _>>()?
        };
        for h in &gone {
            self.orphan_block(h)?;
        }
        let credited = self.credit_new_blocks()?;
        let maturity = self.update_confirmations(tip_height)?;
        Ok(ProcessReport {
            pps,
            orphaned: gone,
            credited,
            maturity,
        })
    }

    /// Every known account's balance, by name.
    pub fn balances(&self) -> Result<Vec<AccountBalance>, PayoutError> {
        self.balances_where(None)
    }

    /// One account's balance (zeros for an account never credited).
    pub fn balance(&self, account: &str) -> Result<AccountBalance, PayoutError> {
        let mut all = self.balances_where(Some(account))?;
        Ok(all.pop().unwrap_or_else(|| AccountBalance {
            account: account.to_string(),
            address: None,
            scheme: self.settings.default_scheme,
            immature: Sats::ZERO,
            mature: Sats::ZERO,
            pending: Sats::ZERO,
            paid: Sats::ZERO,
            paid_in_coinbase: Sats::ZERO,
            deficit: Sats::ZERO,
        }))
    }

    fn balances_where(&self, only: Option<&str>) -> Result<Vec<AccountBalance>, PayoutError> {
        balances_in(&self.conn, self.settings.default_scheme, only)
    }

    /// An account's credits, newest first: at most `limit`, older than credit `before_id`.
    pub fn earnings(
        &self,
        account: &str,
        limit: usize,
        before_id: Option<i64>,
    ) -> Result<Vec<Earning>, PayoutError> {
        let mut stmt = self.conn.prepare(
            "SELECT id, kind, amount_sats, status, paid_in_coinbase, block_hash, height, share_from, share_to, created_at_ms
             FROM payout_credits WHERE account = ?1 AND id < ?2 ORDER BY id DESC LIMIT ?3",
        )?;
        let mut rows = stmt.query(params![
            account,
            before_id.unwrap_or(i64::MAX),
            limit.min(i64::MAX as usize) as i64
        ])?;
        let mut out = Vec::new();
        while let Some(r) = rows.next()? {
            let kind: String = r.get(1)?;
            let status: String = r.get(3)?;
            let height: i64 = r.get(6)?;
            out.push(Earning {
                credit_id: r.get(0)?,
                kind: CreditKind::from_str(&kind).map_err(PayoutError::Corrupt)?,
                amount: r.get(2)?,
                status: CreditStatus::parse(&status)?,
                paid_in_coinbase: r.get(4)?,
                block_hash: r.get(5)?,
                height: u32::try_from(height).unwrap_or(0),
                share_from: r.get(7)?,
                share_to: r.get(8)?,
                created_at_ms: r.get(9)?,
            });
        }
        Ok(out)
    }
}

/// Balances of every account (or just `only`), computed in `conn` (possibly a transaction).
pub(super) fn balances_in(
    conn: &Connection,
    default_scheme: Scheme,
    only: Option<&str>,
) -> Result<Vec<AccountBalance>, PayoutError> {
    #[derive(Default)]
    struct Sums {
        address: Option<String>,
        immature: u64,
        mature: u64,
        coinbase: u64,
        pending: u64,
        paid: u64,
    }
    let mut sums: BTreeMap<String, Sums> = BTreeMap::new();
    {
        let mut stmt = conn
            .prepare("SELECT name, address FROM payout_accounts WHERE ?1 IS NULL OR name = ?1")?;
        let mut rows = stmt.query([only])?;
        while let Some(r) = rows.next()? {
            sums.entry(r.get(0)?).or_default().address = r.get(1)?;
        }
    }
    {
        let mut stmt = conn.prepare(
            "SELECT account, status, paid_in_coinbase, SUM(amount_sats) FROM payout_credits
             WHERE (?1 IS NULL OR account = ?1) AND status != 'orphaned'
             GROUP BY account, status, paid_in_coinbase",
        )?;
        let mut rows = stmt.query([only])?;
        while let Some(r) = rows.next()? {
            let s = sums.entry(r.get(0)?).or_default();
            let status: String = r.get(1)?;
            let coinbase: bool = r.get(2)?;
            let amount: Sats = r.get(3)?;
            match (coinbase, status.as_str()) {
                (true, _) => s.coinbase += amount.0,
                (false, "mature") => s.mature += amount.0,
                (false, _) => s.immature += amount.0,
            }
        }
    }
    {
        let mut stmt = conn.prepare(
            "SELECT i.account, b.status, SUM(i.amount_sats) FROM payout_batch_items i
             JOIN payout_batches b ON b.id = i.batch_id
             WHERE (?1 IS NULL OR i.account = ?1) AND b.status IN ('pending', 'sent')
             GROUP BY i.account, b.status",
        )?;
        let mut rows = stmt.query([only])?;
        while let Some(r) = rows.next()? {
            let s = sums.entry(r.get(0)?).or_default();
            let status: String = r.get(1)?;
            let amount: Sats = r.get(2)?;
            if status == "pending" {
                s.pending += amount.0;
            } else {
                s.paid += amount.0;
            }
        }
    }
    let book = SchemeBook::load(conn, default_scheme)?;
    Ok(sums
        .into_iter()
        .map(|(account, s)| {
            let out = s.pending + s.paid;
            AccountBalance {
                scheme: book.at(&account, i64::MAX),
                account,
                address: s.address,
                immature: Sats(s.immature),
                mature: Sats(s.mature.saturating_sub(out)),
                pending: Sats(s.pending),
                paid: Sats(s.paid),
                paid_in_coinbase: Sats(s.coinbase),
                deficit: Sats(out.saturating_sub(s.mature)),
            }
        })
        .collect())
}
