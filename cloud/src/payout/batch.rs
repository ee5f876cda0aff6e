//! Payout batches: an unsigned PSBT paying every mature balance at or over the threshold.
//!
//! A batch is `pending` when created: its amounts are reserved (they leave `mature` and show
//! as `pending`) and its inputs are not offered to another batch. The operator signs the PSBT
//! with the pool wallet (offline or in Bitcoin Core) and broadcasts it, then calls
//! [`PayoutLedger::record_sent`]: only then are the balances debited (`paid`), and the batch's
//! change output becomes spendable by later batches. [`PayoutLedger::cancel_batch`] releases
//! the reservation and the inputs instead.
//!
//! Tables: `payout_batches` (status, PSBT, fee, change), `payout_batch_items` (account,
//! address, amount, output index), `payout_batch_inputs` (the coins it spends).

use super::balances::{balances_in, now_ms};
use super::psbt::{build_psbt, check_signed, select_coins, InputKind, Payment, PoolUtxo};
use super::sats::Sats;
use super::{PayoutError, PayoutLedger};
use crate::config::validate_address;
use base64::Engine;
use bitcoin::consensus::encode::deserialize_hex;
use bitcoin::psbt::Psbt;
use bitcoin::{OutPoint, ScriptBuf, Transaction, Txid};
use rusqlite::{params, Connection, OptionalExtension};
use serde::Serialize;
use std::collections::HashSet;
use std::str::FromStr;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum BatchStatus {
    Pending,
    Sent,
    Cancelled,
}

impl BatchStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            BatchStatus::Pending => "pending",
            BatchStatus::Sent => "sent",
            BatchStatus::Cancelled => "cancelled",
        }
    }

    fn parse(s: &str) -> Result<BatchStatus, PayoutError> {
        match s {
            "pending" => Ok(BatchStatus::Pending),
            "sent" => Ok(BatchStatus::Sent),
            "cancelled" => Ok(BatchStatus::Cancelled),
            other => Err(PayoutError::Corrupt(format!("batch status {other:?}"))),
        }
    }
}

/// One payout of a batch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PayoutItem {
    pub account: String,
    pub address: String,
    pub amount: Sats,
    /// Its output index in the transaction.
    pub vout: u32,
}

/// A coin a batch spends.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BatchInput {
    pub outpoint: String,
    pub value: Sats,
}

/// A payout batch, for the operator and the API.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PayoutBatch {
    pub id: i64,
    pub status: BatchStatus,
    pub created_at_ms: i64,
    /// The unsigned PSBT, base64 (what `walletprocesspsbt` and hardware signers take).
    pub psbt_base64: String,
    pub unsigned_txid: String,
    /// Set once sent.
    pub txid: Option<String>,
    pub items: Vec<PayoutItem>,
    pub inputs: Vec<BatchInput>,
    /// Σ payouts.
    pub total: Sats,
    /// Inputs − outputs.
    pub fee: Sats,
    pub estimated_vsize: u64,
    pub fee_rate_msat_per_vb: u64,
    /// (output index, amount) of the change back to `payout.change_address`.
    pub change: Option<(u32, Sats)>,
    pub finished_at_ms: Option<i64>,
}

impl PayoutBatch {
    /// The PSBT, decoded.
    pub fn psbt(&self) -> Result<Psbt, PayoutError> {
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(&self.psbt_base64)
            .map_err(|e| PayoutError::Corrupt(format!("batch {} PSBT: {e}", self.id)))?;
        Psbt::deserialize(&bytes)
            .map_err(|e| PayoutError::Corrupt(format!("batch {} PSBT: {e}", self.id)))
    }
}

fn parse_txid(text: &str) -> Result<Txid, PayoutError> {
    Txid::from_str(text).map_err(|e| PayoutError::Corrupt(format!("txid {text:?}: {e}")))
}

fn parse_script(hex: &str) -> Result<ScriptBuf, PayoutError> {
    ScriptBuf::from_hex(hex).map_err(|e| PayoutError::Corrupt(format!("script {hex:?}: {e}")))
}

/// Coins that pending or sent batches spend.
fn reserved_outpoints(conn: &Connection) -> Result<HashSet<OutPoint>, PayoutError> {
    let mut stmt = conn.prepare(
        "SELECT i.txid, i.vout FROM payout_batch_inputs i JOIN payout_batches b ON b.id = i.batch_id
         WHERE b.status IN ('pending', 'sent')",
    )?;
    let mut rows = stmt.query([])?;
    let mut out = HashSet::new();
    while let Some(r) = rows.next()? {
        let txid: String = r.get(0)?;
        out.insert(OutPoint::new(parse_txid(&txid)?, r.get(1)?));
    }
    Ok(out)
}

/// Change outputs of sent batches.
fn sent_change(conn: &Connection) -> Result<Vec<PoolUtxo>, PayoutError> {
    let mut stmt = conn.prepare(
        "SELECT txid, change_vout, change_sats, change_script FROM payout_batches
         WHERE status = 'sent' AND change_vout IS NOT NULL ORDER BY id",
    )?;
    let mut rows = stmt.query([])?;
    let mut out = Vec::new();
    while let Some(r) = rows.next()? {
        let txid: String = r.get(0)?;
        let script = parse_script(&r.get::<_, String>(3)?)?;
        let Some(kind) = InputKind::from_script(&script) else {
            continue;
        };
        out.push(PoolUtxo {
            outpoint: OutPoint::new(parse_txid(&txid)?, r.get(1)?),
            value: r.get(2)?,
            script_pubkey: script,
            kind,
        });
    }
    Ok(out)
}

fn spendable(conn: &Connection, utxos: &[PoolUtxo]) -> Result<Vec<PoolUtxo>, PayoutError> {
    let reserved = reserved_outpoints(conn)?;
    let mut seen = HashSet::new();
    Ok(utxos
        .iter()
        .cloned()
        .chain(sent_change(conn)?)
        .filter(|u| !reserved.contains(&u.outpoint) && seen.insert(u.outpoint))
        .collect())
}

impl PayoutLedger {
    /// Coins a new batch may spend: `utxos` plus the change of sent batches, without the coins
    /// of pending and sent batches.
    pub fn spendable_utxos(&self, utxos: &[PoolUtxo]) -> Result<Vec<PoolUtxo>, PayoutError> {
        spendable(&self.conn, utxos)
    }

    /// Build and record a pending batch paying every account whose mature balance is at least
    /// `payout.min_payout_sats` (the largest `payout.max_outputs_per_batch` of them), spending
    /// from `utxos` (e.g. `settings().utxos`) and the change of sent batches, with change to
    /// `payout.change_address` and a fee at `payout.fee_rate_sat_per_vb`. Accounts without an
    /// address are left out (they stay in their balance).
    pub fn create_payout_batch(&mut self, utxos: &[PoolUtxo]) -> Result<PayoutBatch, PayoutError> {
        let settings = self.settings.clone();
        let change_script = settings
            .change_script
            .clone()
            .ok_or(PayoutError::NoChangeAddress)?;
        let tx = self.begin()?;
        // Read inside the write transaction: two batches cannot reserve the same balance.
        let balances = balances_in(&tx, settings.default_scheme, None)?;
        let mut eligible = Vec::new();
        let mut without_address = Vec::new();
        let mut largest: Option<(String, Sats)> = None;
        for b in balances {
            let larger = match &largest {
                None => b.mature > Sats::ZERO,
                Some((_, s)) => b.mature > *s,
            };
            if larger {
                largest = Some((b.account.clone(), b.mature));
            }
            if b.mature < settings.min_payout {
                continue;
            }
            let Some(address) = b.address.clone() else {
                without_address.push(b.account.clone());
                continue;
            };
            let script = validate_address(&address, settings.network).map_err(|reason| {
                PayoutError::InvalidAddress {
                    account: b.account.clone(),
                    address: address.clone(),
                    network: settings.network,
                    reason,
                }
            })?;
            if b.mature < Sats(script.minimal_non_dust().to_sat()) {
                continue;
            }
            eligible.push((b.account, address, script, b.mature));
        }
        if eligible.is_empty() {
            return Err(PayoutError::NothingToPay {
                threshold: settings.min_payout,
                largest,
                without_address,
            });
        }
        // The largest balances first when capped; outputs in account order.
        eligible.sort_by(|a, b| b.3.cmp(&a.3).then(a.0.cmp(&b.0)));
        eligible.truncate(settings.max_outputs_per_batch);
        eligible.sort_by(|a, b| a.0.cmp(&b.0));
        let payments: Vec<Payment> = eligible
            .iter()
            .map(|(_, _, script, amount)| Payment {
                script_pubkey: script.clone(),
                amount: *amount,
            })
            .collect();
        let available = spendable(&tx, utxos)?;
        let selection = select_coins(&available, &payments, &change_script, settings.fee_rate)
            .map_err(|s| PayoutError::InsufficientFunds {
                needed: s.needed,
                available: s.available,
                coins: s.coins,
                payouts: payments.len(),
            })?;
        let psbt = build_psbt(&selection, &payments, &change_script)
            .map_err(|e| PayoutError::Psbt(e.to_string()))?;
        let unsigned_txid = psbt.unsigned_tx.compute_txid();
        let psbt_base64 = base64::engine::general_purpose::STANDARD.encode(psbt.serialize());
        let total: Sats = payments.iter().map(|p| p.amount).sum();
        let change = selection.change.map(|c| (payments.len() as u32, c));
        let now = now_ms();
        tx.execute(
            "INSERT INTO payout_batches (status, created_at_ms, psbt, unsigned_txid, total_sats, fee_sats, estimated_vsize, fee_rate_msat_per_vb, change_vout, change_sats, change_script)
             VALUES ('pending', ?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
            params![
                now,
                psbt_base64,
                unsigned_txid.to_string(),
                total,
                selection.fee,
                selection.estimated_vsize as i64,
                settings.fee_rate.msat_per_vb as i64,
                change.map(|c| c.0),
                change.map(|c| c.1),
                change.map(|_| change_script.to_hex_string()),
            ],
        )?;
        let id = tx.last_insert_rowid();
        for (vout, (account, address, _, amount)) in eligible.iter().enumerate() {
            tx.execute(
                "INSERT INTO payout_batch_items (batch_id, account, address, amount_sats, vout) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![id, account, address, amount, vout as i64],
            )?;
        }
        for u in &selection.inputs {
            tx.execute(
                "INSERT INTO payout_batch_inputs (batch_id, txid, vout, value_sats, script_pubkey) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![
                    id,
                    u.outpoint.txid.to_string(),
                    u.outpoint.vout,
                    u.value,
                    u.script_pubkey.to_hex_string()
                ],
            )?;
        }
        tx.commit()?;
        tracing::info!(batch = id, payouts = payments.len(), %total, fee = %selection.fee, "payout batch created");
        self.batch(id)
    }

    /// Record that the batch's transaction was broadcast: `signed_tx_hex_or_txid` is the signed
    /// transaction (checked against the batch) or its txid (checked when signing cannot change
    /// it, i.e. every input is native segwit). Debits the balances; the change becomes
    /// spendable.
    pub fn record_sent(
        &mut self,
        batch_id: i64,
        signed_tx_hex_or_txid: &str,
    ) -> Result<Txid, PayoutError> {
        let batch = self.batch(batch_id)?;
        if batch.status != BatchStatus::Pending {
            return Err(PayoutError::BatchNotPending {
                id: batch_id,
                status: batch.status.as_str().into(),
            });
        }
        let unsigned = batch.psbt()?.unsigned_tx;
        let text = signed_tx_hex_or_txid.trim();
        let txid = if text.len() == 64 {
            let txid = Txid::from_str(text).map_err(|e| PayoutError::BadSentProof {
                given: text.into(),
                reason: e.to_string(),
            })?;
            let final_txid = self.batch_inputs_final(batch_id)?;
            if final_txid && txid != unsigned.compute_txid() {
                return Err(PayoutError::TxMismatch {
                    id: batch_id,
                    problem: format!(
                        "txid {txid} is not the batch's {} (its inputs are all segwit, so signing does not change it)",
                        unsigned.compute_txid()
                    ),
                });
            }
            txid
        } else {
            let signed: Transaction =
                deserialize_hex(text).map_err(|e| PayoutError::BadSentProof {
                    given: if text.len() > 80 {
                        format!("{}…", &text[..80])
                    } else {
                        text.into()
                    },
                    reason: e.to_string(),
                })?;
            check_signed(&unsigned, &signed).map_err(|problem| PayoutError::TxMismatch {
                id: batch_id,
                problem,
            })?;
            signed.compute_txid()
        };
        let tx = self.begin()?;
        let n = tx.execute(
            "UPDATE payout_batches SET status = 'sent', txid = ?2, finished_at_ms = ?3 WHERE id = ?1 AND status = 'pending'",
            params![batch_id, txid.to_string(), now_ms()],
        )?;
        if n != 1 {
            return Err(PayoutError::BatchNotPending {
                id: batch_id,
                status: "no longer pending".into(),
            });
        }
        tx.commit()?;
        tracing::info!(batch = batch_id, %txid, "payout batch sent");
        Ok(txid)
    }

    fn batch_inputs_final(&self, batch_id: i64) -> Result<bool, PayoutError> {
        let mut stmt = self
            .conn
            .prepare("SELECT script_pubkey FROM payout_batch_inputs WHERE batch_id = ?1")?;
        let scripts = stmt.query_map([batch_id], |r| r.get::<_, String>(0))?;
        for s in scripts {
            let script = parse_script(&s?)?;
            if !InputKind::from_script(&script).is_some_and(|k| k.txid_is_final()) {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Drop a pending batch: its amounts return to the mature balances, its coins are free.
    pub fn cancel_batch(&mut self, batch_id: i64) -> Result<(), PayoutError> {
        let tx = self.begin()?;
        let status: Option<String> = tx
            .query_row(
                "SELECT status FROM payout_batches WHERE id = ?1",
                [batch_id],
                |r| r.get(0),
            )
            .optional()?;
        match status.as_deref() {
            None => return Err(PayoutError::BatchNotFound(batch_id)),
            Some("pending") => {}
            Some(other) => {
                return Err(PayoutError::BatchNotPending {
                    id: batch_id,
                    status: other.into(),
                })
            }
        }
        tx.execute(
            "UPDATE payout_batches SET status = 'cancelled', finished_at_ms = ?2 WHERE id = ?1",
            params![batch_id, now_ms()],
        )?;
        tx.commit()?;
        Ok(())
    }

    /// One batch.
    pub fn batch(&self, batch_id: i64) -> Result<PayoutBatch, PayoutError> {
        self.batches_where(Some(batch_id), None)?
            .pop()
            .ok_or(PayoutError::BatchNotFound(batch_id))
    }

    /// Pending batches (created, not yet recorded as sent or cancelled), oldest first.
    pub fn pending_batches(&self) -> Result<Vec<PayoutBatch>, PayoutError> {
        self.batches_where(None, Some(BatchStatus::Pending))
    }

    /// The latest `limit` batches of any status, newest first.
    pub fn recent_batches(&self, limit: usize) -> Result<Vec<PayoutBatch>, PayoutError> {
        let mut all = self.batches_where(None, None)?;
        all.reverse();
        all.truncate(limit);
        Ok(all)
    }

    fn batches_where(
        &self,
        id: Option<i64>,
        status: Option<BatchStatus>,
    ) -> Result<Vec<PayoutBatch>, PayoutError> {
        let mut stmt = self.conn.prepare(
            "SELECT id, status, created_at_ms, psbt, unsigned_txid, txid, total_sats, fee_sats, estimated_vsize, fee_rate_msat_per_vb, change_vout, change_sats, finished_at_ms
             FROM payout_batches WHERE (?1 IS NULL OR id = ?1) AND (?2 IS NULL OR status = ?2) ORDER BY id",
        )?;
        let mut rows = stmt.query(params![id, status.map(BatchStatus::as_str)])?;
        let mut out = Vec::new();
        while let Some(r) = rows.next()? {
            let status: String = r.get(1)?;
            let vout: Option<u32> = r.get(10)?;
            let change: Option<Sats> = r.get(11)?;
            out.push(PayoutBatch {
                id: r.get(0)?,
                status: BatchStatus::parse(&status)?,
                created_at_ms: r.get(2)?,
                psbt_base64: r.get(3)?,
                unsigned_txid: r.get(4)?,
                txid: r.get(5)?,
                items: Vec::new(),
                inputs: Vec::new(),
                total: r.get(6)?,
                fee: r.get(7)?,
                estimated_vsize: r.get::<_, i64>(8)? as u64,
                fee_rate_msat_per_vb: r.get::<_, i64>(9)? as u64,
                change: vout.zip(change),
                finished_at_ms: r.get(12)?,
            });
        }
        for b in &mut out {
            let mut stmt = self.conn.prepare_cached(
                "SELECT account, address, amount_sats, vout FROM payout_batch_items WHERE batch_id = ?1 ORDER BY vout",
            )?;
            let items = stmt.query_map([b.id], |r| {
                Ok(PayoutItem {
                    account: r.get(0)?,
                    address: r.get(1)?,
                    amount: r.get(2)?,
                    vout: r.get(3)?,
                })
            })?;
            b.items = items.collect::<Result<_, _>>()?;
            let mut stmt = self.conn.prepare_cached(
                "SELECT txid, vout, value_sats FROM payout_batch_inputs WHERE batch_id = ?1 ORDER BY rowid",
            )?;
            let inputs = stmt.query_map([b.id], |r| {
                Ok(BatchInput {
                    outpoint: format!("{}:{}", r.get::<_, String>(0)?, r.get::<_, u32>(1)?),
                    value: r.get(2)?,
                })
            })?;
            b.inputs = inputs.collect::<Result<_, _>>()?;
        }
        Ok(out)
    }
}
