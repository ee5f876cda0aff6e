//! The stand-in's chain, mempool and block acceptance.
//!
//! The chain is real: block 0 is regtest's genesis block and every later block (the initial
//! ones, the "external" ones another miner finds, and the ones the pool submits) is a full
//! rust-bitcoin [`Block`] whose proof of work meets regtest's target. Nothing here knows about
//! HTTP; `rpc.rs` calls in with the lock held.

use std::collections::{HashMap, HashSet};

use bitcoin::blockdata::script::{Builder, PushBytesBuf, ScriptBuf};
use bitcoin::consensus::encode::{deserialize_partial, serialize, serialize_hex};
use bitcoin::hashes::Hash;
use bitcoin::{
    absolute::LockTime, block, transaction, Amount, Block, BlockHash, CompactTarget, OutPoint,
    Sequence, Target, Transaction, TxIn, TxMerkleNode, TxOut, Txid, Witness,
};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};

use super::txgen::{random_p2wpkh, synthetic_tx, MempoolTx};
use super::validate::{
    bip34_height_prefix, block_subsidy, check_block, check_block_contextual,
    check_header_contextual, check_proof_of_work, default_witness_commitment_script,
    fill_witness_nonce, ParentContext, MAX_BLOCK_SIGOPS_COST, MAX_BLOCK_WEIGHT, REGTEST_BITS,
};
use super::AcceptedBlock;

/// Block version of templates and of the stand-in's own blocks (BIP9 top bits, no signals).
pub const TEMPLATE_VERSION: i32 = 0x2000_0000;
/// `getdifficulty` on regtest.
pub const REGTEST_DIFFICULTY: f64 = 4.656542373906925e-10;

/// A block the node has stored, on the active chain or as a stale side block.
#[derive(Debug, Clone)]
pub struct StoredBlock {
    pub block: Block,
    pub hash: BlockHash,
    pub height: u32,
}

/// How a `submitblock` (or proposal) ended, before the RPC layer formats it.
#[derive(Debug)]
pub enum SubmitOutcome {
    /// Core throws RPC error -22 with this message.
    DecodeError(&'static str),
    /// Core answers with a result: `None` (null) on success, else a BIP22 reason string.
    Result {
        reason: Option<String>,
        hash: String,
        accepted: Option<AcceptedBlock>,
    },
}

/// Chain state plus mempool.
pub struct Chain {
    pub segwit: bool,
    pub txs_per_template: usize,
    /// Active chain, index = height.
    pub blocks: Vec<StoredBlock>,
    pub by_hash: HashMap<BlockHash, u32>,
    /// Valid blocks that did not extend the tip (Core stores them; resubmitting says
    /// "duplicate").
    pub side: HashMap<BlockHash, StoredBlock>,
    /// Blocks Core would mark `BLOCK_FAILED_VALID` (resubmitting says "duplicate-invalid").
    pub invalid: HashSet<BlockHash>,
    pub mempool: Vec<MempoolTx>,
    /// Core's `nTransactionsUpdated`, part of the longpoll id.
    pub mempool_seq: u64,
    /// Transactions confirmed in the active chain (their imaginary inputs are spent).
    pub confirmed: HashSet<Txid>,
    rng: StdRng,
}

fn now_secs() -> u32 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as u32)
        .unwrap_or(0)
}

/// Grinds the nonce (and, if it ever wraps, the time) until the header meets its target.
pub fn grind(header: &mut block::Header) {
    loop {
        if check_proof_of_work(header) {
            return;
        }
        if header.nonce == u32::MAX {
            header.nonce = 0;
            header.time += 1;
        } else {
            header.nonce += 1;
        }
    }
}

impl Chain {
    /// Genesis plus `initial_height` blocks with only a coinbase, timestamps ending just
    /// before now, and a mempool of `txs_per_template` transactions.
    pub fn new(initial_height: u32, segwit: bool, txs_per_template: usize) -> Chain {
        let genesis = bitcoin::constants::genesis_block(bitcoin::Network::Regtest);
        let hash = genesis.block_hash();
        let mut chain = Chain {
            segwit,
            txs_per_template,
            blocks: vec![StoredBlock {
                block: genesis,
                hash,
                height: 0,
            }],
            by_hash: HashMap::from([(hash, 0)]),
            side: HashMap::new(),
            invalid: HashSet::new(),
            mempool: Vec::new(),
            mempool_seq: 1,
            confirmed: HashSet::new(),
            rng: StdRng::from_entropy(),
        };
        let now = now_secs();
        for h in 1..=initial_height {
            let time = now - 2 * (initial_height - h) - 10;
            let block = chain.build_block(Vec::new(), 0, time, b"/stand-in/");
            chain.connect(block);
        }
        chain.refill_mempool();
        chain
    }

    pub fn tip(&self) -> &StoredBlock {
        self.blocks.last().expect("genesis")
    }

    pub fn height(&self) -> u32 {
        self.tip().height
    }

    /// Median time past of the active-chain block at `height` (median of up to 11 times).
    pub fn median_time_past(&self, height: u32) -> u32 {
        let lo = height.saturating_sub(10) as usize;
        let mut times: Vec<u32> = self.blocks[lo..=height as usize]
            .iter()
            .map(|b| b.block.header.time)
            .collect();
        times.sort_unstable();
        times[times.len() / 2]
    }

    /// `tip hash hex` + `nTransactionsUpdated`, as Core forms it.
    pub fn longpoll_id(&self) -> String {
        format!("{}{}", self.tip().hash, self.mempool_seq)
    }

    /// Keeps the mempool at `txs_per_template` transactions.
    pub fn refill_mempool(&mut self) {
        let mut changed = false;
        if self.mempool.len() > self.txs_per_template {
            self.mempool.truncate(self.txs_per_template);
            changed = true;
        }
        while self.mempool.len() < self.txs_per_template {
            // With segwit on, every third transaction is a legacy one, like a real mempool.
            let witness = self.segwit && self.mempool.len() % 3 != 2;
            let tx = synthetic_tx(&mut self.rng, witness);
            self.mempool.push(tx);
            changed = true;
        }
        if changed {
            self.mempool_seq += 1;
        }
    }

    pub fn set_txs_per_template(&mut self, n: usize) {
        self.txs_per_template = n;
        self.refill_mempool();
    }

    /// A block on the tip paying everything to a random P2WPKH script, with Core's
    /// coinbase layout (BIP34 height, tag, extranonce; commitment output and witness
    /// reserved value when segwit is on). Its proof of work is valid.
    fn build_block(&mut self, txs: Vec<Transaction>, fees: u64, time: u32, tag: &[u8]) -> Block {
        let height = self.height() + 1;
        let mut script_sig = bip34_height_prefix(height);
        let tag = PushBytesBuf::try_from(tag.to_vec()).expect("short tag");
        let extranonce: [u8; 4] = self.rng.gen();
        script_sig.extend_from_slice(
            Builder::new()
                .push_slice(tag)
                .push_slice(extranonce)
                .as_bytes(),
        );
        let mut outputs = vec![TxOut {
            value: Amount::from_sat(block_subsidy(height) + fees),
            script_pubkey: random_p2wpkh(&mut self.rng),
        }];
        let mut witness = Witness::new();
        if self.segwit {
            let refs: Vec<&Transaction> = txs.iter().collect();
            outputs.push(TxOut {
                value: Amount::ZERO,
                script_pubkey: ScriptBuf::from_bytes(default_witness_commitment_script(&refs)),
            });
            witness = Witness::from_slice(&[[0u8; 32]]);
        }
        let coinbase = Transaction {
            version: transaction::Version::TWO,
            lock_time: LockTime::ZERO,
            input: vec![TxIn {
                previous_output: OutPoint::null(),
                script_sig: ScriptBuf::from_bytes(script_sig),
                sequence: Sequence::MAX,
                witness,
            }],
            output: outputs,
        };
        let mut txdata = vec![coinbase];
        txdata.extend(txs);
        let mut block = Block {
            header: block::Header {
                version: block::Version::from_consensus(TEMPLATE_VERSION),
                prev_blockhash: self.tip().hash,
                merkle_root: TxMerkleNode::all_zeros(),
                time,
                bits: CompactTarget::from_consensus(REGTEST_BITS),
                nonce: 0,
            },
            txdata,
        };
        block.header.merkle_root = block.compute_merkle_root().expect("non-empty");
        grind(&mut block.header);
        block
    }

    /// Puts a (validated) block on top of the tip and updates the mempool.
    fn connect(&mut self, block: Block) -> &StoredBlock {
        let hash = block.block_hash();
        let height = self.height() + 1;
        let included: HashSet<Txid> = block.txdata[1..].iter().map(|t| t.compute_txid()).collect();
        self.confirmed.extend(included.iter().copied());
        let before = self.mempool.len();
        self.mempool
            .retain(|m| !included.contains(&m.tx.compute_txid()));
        if self.mempool.len() != before {
            self.mempool_seq += 1;
        }
        self.by_hash.insert(hash, height);
        self.blocks.push(StoredBlock {
            block,
            hash,
            height,
        });
        self.refill_mempool();
        self.tip()
    }

    /// Another miner finds a block on the tip, taking every mempool transaction.
    pub fn mine_external(&mut self) -> BlockHash {
        let txs: Vec<Transaction> = self.mempool.iter().map(|m| m.tx.clone()).collect();
        let fees = self.mempool.iter().map(|m| m.fee).sum();
        let time = now_secs().max(self.median_time_past(self.height()) + 1);
        let block = self.build_block(txs, fees, time, b"/external-miner/");
        self.connect(block).hash
    }

    /// A reorganisation: the last `depth` active blocks become stale side blocks (their
    /// `getblockheader` says `confirmations: -1`), and another miner's `depth + 1` blocks take
    /// their place. Returns the hashes that left the main chain, tip first.
    pub fn reorg(&mut self, depth: u32) -> Vec<BlockHash> {
        let depth = depth.min(self.height());
        let mut gone = Vec::with_capacity(depth as usize);
        for _ in 0..depth {
            let sb = self.blocks.pop().expect("never below genesis");
            self.by_hash.remove(&sb.hash);
            for tx in &sb.block.txdata[1..] {
                self.confirmed.remove(&tx.compute_txid());
            }
            gone.push(sb.hash);
            self.side.insert(sb.hash, sb);
        }
        for _ in 0..=depth {
            self.mine_external();
        }
        gone
    }

    /// `getblocktemplate`'s answer for the current tip and mempool.
    pub fn template_json(&self) -> Value {
        let height = self.height() + 1;
        let mintime = self.median_time_past(self.height()) + 1;
        let curtime = now_secs().max(mintime);
        let fees: u64 = self.mempool.iter().map(|m| m.fee).sum();
        let txs: Vec<Value> = self
            .mempool
            .iter()
            .map(|m| {
                json!({
                    "data": serialize_hex(&m.tx),
                    "txid": m.tx.compute_txid().to_string(),
                    "hash": m.tx.compute_wtxid().to_string(),
                    "depends": [],
                    "fee": m.fee,
                    "sigops": m.sigops,
                    "weight": m.weight,
                })
            })
            .collect();
        let target = Target::from_compact(CompactTarget::from_consensus(REGTEST_BITS));
        let mut t = json!({
            "capabilities": ["proposal"],
            "version": TEMPLATE_VERSION,
            "rules": ["csv", "!segwit", "taproot"],
            "vbavailable": {},
            "vbrequired": 0,
            "previousblockhash": self.tip().hash.to_string(),
            "transactions": txs,
            "coinbaseaux": {},
            "coinbasevalue": block_subsidy(height) + fees,
            "longpollid": self.longpoll_id(),
            "target": hex::encode(target.to_be_bytes()),
            "mintime": mintime,
            "mutable": ["time", "transactions", "prevblock"],
            "noncerange": "00000000ffffffff",
            "sigoplimit": MAX_BLOCK_SIGOPS_COST,
            "sizelimit": MAX_BLOCK_WEIGHT,
            "weightlimit": MAX_BLOCK_WEIGHT,
            "curtime": curtime,
            "bits": format!("{REGTEST_BITS:08x}"),
            "height": height,
        });
        if self.segwit {
            // Core always adds the commitment on a segwit chain (GenerateCoinbaseCommitment
            // runs for every template), even when no transaction has a witness.
            let refs: Vec<&Transaction> = self.mempool.iter().map(|m| &m.tx).collect();
            t["default_witness_commitment"] =
                Value::String(hex::encode(default_witness_commitment_script(&refs)));
        }
        t
    }

    fn parent_context(&self, prev: &BlockHash) -> Option<ParentContext> {
        let (height, mtp) = if let Some(&h) = self.by_hash.get(prev) {
            (h, self.median_time_past(h))
        } else if let Some(s) = self.side.get(prev) {
            // A parent off the active chain: approximate its MTP from its own time.
            (s.height, s.block.header.time.saturating_sub(1))
        } else {
            return None;
        };
        Some(ParentContext {
            height: height + 1,
            median_time_past: mtp,
            now: now_secs(),
        })
    }

    fn decode(hex_data: &str) -> Result<Block, &'static str> {
        let bytes = hex::decode(hex_data.trim()).map_err(|_| "Block decode failed")?;
        // Core's DecodeHexBlk ignores trailing bytes; so does deserialize_partial.
        let (block, _) = deserialize_partial::<Block>(&bytes).map_err(|_| "Block decode failed")?;
        Ok(block)
    }

    /// `submitblock`, following Core's `submitblock` + `ProcessNewBlock` order of checks.
    pub fn submit(&mut self, hex_data: &str) -> SubmitOutcome {
        let mut block = match Self::decode(hex_data) {
            Ok(b) => b,
            Err(e) => return SubmitOutcome::DecodeError(e),
        };
        // Core up to v28 answered a block without a leading coinbase with RPC error -22
        // "Block does not start with a coinbase"; since v29 such blocks go through
        // validation and get "bad-cb-missing" / "bad-blk-length" like any other block.
        let hash = block.block_hash();
        let result = |reason: &str| SubmitOutcome::Result {
            reason: Some(reason.to_string()),
            hash: hash.to_string(),
            accepted: None,
        };
        if self.by_hash.contains_key(&hash) || self.side.contains_key(&hash) {
            return result("duplicate");
        }
        if self.invalid.contains(&hash) {
            return result("duplicate-invalid");
        }
        let ctx = self.parent_context(&block.header.prev_blockhash);
        let nonce_added = ctx.is_some() && fill_witness_nonce(&mut block);
        if let Err(r) = check_block(&block, true) {
            return result(r);
        }
        let Some(ctx) = ctx else {
            return result("prev-blk-not-found");
        };
        if let Err(r) = check_header_contextual(&block.header, &ctx) {
            return result(&r);
        }
        let had_commitment = match check_block_contextual(&block, &ctx) {
            Ok(c) => c,
            Err(r) => {
                // Core marks the block failed unless it was "mutated" (witness problems),
                // which a peer could have caused.
                if !matches!(
                    r,
                    "bad-witness-nonce-size" | "bad-witness-merkle-match" | "unexpected-witness"
                ) {
                    self.invalid.insert(hash);
                }
                return result(r);
            }
        };
        if block.header.prev_blockhash != self.tip().hash {
            // Valid but not on the tip: stored, not connected, no BlockChecked callback.
            self.side.insert(
                hash,
                StoredBlock {
                    block,
                    hash,
                    height: ctx.height,
                },
            );
            return result("inconclusive");
        }
        // ConnectBlock: inputs, then the coinbase amount.
        let mut fees = 0u64;
        let mut spent = HashSet::new();
        for tx in &block.txdata[1..] {
            let txid = tx.compute_txid();
            let known = self.mempool.iter().find(|m| m.tx.compute_txid() == txid);
            match known {
                Some(m) if spent.insert(txid) => fees += m.fee,
                _ => {
                    self.invalid.insert(hash);
                    return result("bad-txns-inputs-missingorspent");
                }
            }
        }
        let allowed = block_subsidy(ctx.height) + fees;
        let paid: u64 = block.txdata[0]
            .output
            .iter()
            .map(|o| o.value.to_sat())
            .sum();
        if paid > allowed {
            self.invalid.insert(hash);
            return result("bad-cb-amount");
        }
        let cb = &block.txdata[0];
        let accepted = AcceptedBlock {
            hash: hash.to_string(),
            height: ctx.height,
            coinbase_value_sats: paid,
            allowed_value_sats: allowed,
            fees_sats: fees,
            coinbase_outputs: cb
                .output
                .iter()
                .map(|o| (hex::encode(o.script_pubkey.as_bytes()), o.value.to_sat()))
                .collect(),
            coinbase_script_sig_hex: hex::encode(cb.input[0].script_sig.as_bytes()),
            tx_count: block.txdata.len(),
            had_witness_commitment: had_commitment,
            witness_nonce_added_by_node: nonce_added,
            time: block.header.time,
            version: block.header.version.to_consensus(),
        };
        self.connect(block);
        SubmitOutcome::Result {
            reason: None,
            hash: hash.to_string(),
            accepted: Some(accepted),
        }
    }

    /// `getblocktemplate {"mode":"proposal"}`: Core's `TestBlockValidity` (no PoW check) on
    /// the tip, nothing stored.
    pub fn propose(&self, hex_data: &str) -> Result<Option<String>, &'static str> {
        let block = Self::decode(hex_data)?;
        let hash = block.block_hash();
        if self.by_hash.contains_key(&hash) {
            return Ok(Some("duplicate".into()));
        }
        if self.invalid.contains(&hash) {
            return Ok(Some("duplicate-invalid".into()));
        }
        if self.side.contains_key(&hash) {
            return Ok(Some("duplicate-inconclusive".into()));
        }
        if block.header.prev_blockhash != self.tip().hash {
            return Ok(Some("inconclusive-not-best-prevblk".into()));
        }
        let ctx = self
            .parent_context(&block.header.prev_blockhash)
            .expect("tip is known");
        // CheckBlock with fCheckPOW = false.
        if let Err(r) = check_block(&block, false) {
            return Ok(Some(r.into()));
        }
        if let Err(r) = check_header_contextual(&block.header, &ctx) {
            return Ok(Some(r));
        }
        if let Err(r) = check_block_contextual(&block, &ctx) {
            return Ok(Some(r.into()));
        }
        let mut fees = 0u64;
        let mut spent = HashSet::new();
        for tx in &block.txdata[1..] {
            let txid = tx.compute_txid();
            match self.mempool.iter().find(|m| m.tx.compute_txid() == txid) {
                Some(m) if spent.insert(txid) => fees += m.fee,
                _ => return Ok(Some("bad-txns-inputs-missingorspent".into())),
            }
        }
        let paid: u64 = block.txdata[0]
            .output
            .iter()
            .map(|o| o.value.to_sat())
            .sum();
        if paid > block_subsidy(ctx.height) + fees {
            return Ok(Some("bad-cb-amount".into()));
        }
        Ok(None)
    }

    /// Finds a block on the active chain or among the stale ones.
    pub fn find(&self, hash: &BlockHash) -> Option<(&StoredBlock, bool)> {
        if let Some(&h) = self.by_hash.get(hash) {
            return Some((&self.blocks[h as usize], true));
        }
        self.side.get(hash).map(|s| (s, false))
    }

    fn chainwork_hex(height: u32) -> String {
        // Every regtest block has work 2 (target ≈ 2^255).
        format!("{:064x}", 2u64 * (u64::from(height) + 1))
    }

    /// `getblockheader` verbose / the header part of `getblock`.
    pub fn header_json(&self, sb: &StoredBlock, active: bool) -> Value {
        let h = &sb.block.header;
        let confirmations: i64 = if active {
            i64::from(self.height()) - i64::from(sb.height) + 1
        } else {
            -1
        };
        let mut v = json!({
            "hash": sb.hash.to_string(),
            "confirmations": confirmations,
            "height": sb.height,
            "version": h.version.to_consensus(),
            "versionHex": format!("{:08x}", h.version.to_consensus() as u32),
            "merkleroot": h.merkle_root.to_string(),
            "time": h.time,
            "mediantime": if active { self.median_time_past(sb.height) } else { h.time },
            "nonce": h.nonce,
            "bits": format!("{:08x}", h.bits.to_consensus()),
            "difficulty": REGTEST_DIFFICULTY,
            "chainwork": Self::chainwork_hex(sb.height),
            "nTx": sb.block.txdata.len(),
        });
        if sb.height > 0 {
            v["previousblockhash"] = Value::String(h.prev_blockhash.to_string());
        }
        if active && sb.height < self.height() {
            v["nextblockhash"] =
                Value::String(self.blocks[sb.height as usize + 1].hash.to_string());
        }
        v
    }

    /// `getblock` verbosity 1 (txids) or 2/3 (decoded transactions).
    pub fn block_json(&self, sb: &StoredBlock, active: bool, verbosity: u64) -> Value {
        let mut v = self.header_json(sb, active);
        let b = &sb.block;
        let stripped: usize = 80
            + bitcoin::VarInt::from(b.txdata.len()).size()
            + b.txdata.iter().map(|t| t.base_size()).sum::<usize>();
        v["strippedsize"] = json!(stripped);
        v["size"] = json!(b.total_size());
        v["weight"] = json!(b.weight().to_wu());
        v["tx"] = if verbosity >= 2 {
            Value::Array(b.txdata.iter().map(tx_json).collect())
        } else {
            Value::Array(
                b.txdata
                    .iter()
                    .map(|t| Value::String(t.compute_txid().to_string()))
                    .collect(),
            )
        };
        v
    }
}

fn btc(sats: u64) -> Value {
    // Core prints amounts with 8 decimals; a JSON number is what clients parse.
    json!(sats as f64 / 100_000_000.0)
}

/// A decoded transaction like `getrawtransaction … true` / `getblock … 2`.
pub fn tx_json(tx: &Transaction) -> Value {
    let vin: Vec<Value> = tx
        .input
        .iter()
        .map(|i| {
            let mut v = if tx.is_coinbase() {
                json!({"coinbase": hex::encode(i.script_sig.as_bytes())})
            } else {
                json!({
                    "txid": i.previous_output.txid.to_string(),
                    "vout": i.previous_output.vout,
                    "scriptSig": {"hex": hex::encode(i.script_sig.as_bytes())},
                })
            };
            if !i.witness.is_empty() {
                v["txinwitness"] = Value::Array(
                    i.witness
                        .iter()
                        .map(|w| Value::String(hex::encode(w)))
                        .collect(),
                );
            }
            v["sequence"] = json!(i.sequence.0);
            v
        })
        .collect();
    let vout: Vec<Value> = tx
        .output
        .iter()
        .enumerate()
        .map(|(n, o)| {
            json!({
                "value": btc(o.value.to_sat()),
                "n": n,
                "scriptPubKey": {"hex": hex::encode(o.script_pubkey.as_bytes())},
            })
        })
        .collect();
    json!({
        "txid": tx.compute_txid().to_string(),
        "hash": tx.compute_wtxid().to_string(),
        "version": tx.version.0,
        "size": tx.total_size(),
        "vsize": tx.vsize(),
        "weight": tx.weight().to_wu(),
        "locktime": tx.lock_time.to_consensus_u32(),
        "vin": vin,
        "vout": vout,
        "hex": hex::encode(serialize(tx)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tip_context(c: &Chain) -> ParentContext {
        c.parent_context(&c.tip().hash).unwrap()
    }

    #[test]
    fn initial_chain_is_valid_and_linked() {
        let c = Chain::new(20, true, 3);
        assert_eq!(c.height(), 20);
        assert_eq!(
            c.blocks[0].hash.to_string(),
            "0f9188f13cb7b2c71f2a335e3a4fc328bf5beb436012afca590b1a11466e2206"
        );
        for h in 1..=20u32 {
            let b = &c.blocks[h as usize];
            assert_eq!(b.block.header.prev_blockhash, c.blocks[h as usize - 1].hash);
            check_block(&b.block, true).unwrap();
            let ctx = ParentContext {
                height: h,
                median_time_past: c.median_time_past(h - 1),
                now: now_secs(),
            };
            check_header_contextual(&b.block.header, &ctx).unwrap();
            assert!(check_block_contextual(&b.block, &ctx).unwrap());
            // Heights 1..=16 use OP_1..OP_16 like Core's own miner.
            let sig = b.block.txdata[0].input[0].script_sig.as_bytes();
            assert_eq!(
                sig[..bip34_height_prefix(h).len()],
                bip34_height_prefix(h)[..]
            );
        }
        assert_eq!(c.mempool.len(), 3);
    }

    #[test]
    fn external_block_takes_the_mempool_and_refills_it() {
        let mut c = Chain::new(5, true, 4);
        let old: Vec<Txid> = c.mempool.iter().map(|m| m.tx.compute_txid()).collect();
        let seq = c.mempool_seq;
        let h = c.mine_external();
        assert_eq!(c.tip().hash, h);
        assert_eq!(c.tip().block.txdata.len(), 5);
        assert!(old.iter().all(|t| c.confirmed.contains(t)));
        assert_eq!(c.mempool.len(), 4);
        assert!(c.mempool_seq > seq);
        let ctx = ParentContext {
            height: 6,
            median_time_past: c.median_time_past(5),
            now: now_secs(),
        };
        assert!(check_block_contextual(&c.tip().block, &ctx).unwrap());
        assert_eq!(tip_context(&c).height, 7);
    }

    #[test]
    fn resubmitting_an_external_block_is_duplicate() {
        let mut c = Chain::new(3, true, 2);
        c.mine_external();
        let hex_block = serialize_hex(&c.tip().block);
        match c.submit(&hex_block) {
            SubmitOutcome::Result { reason, .. } => {
                assert_eq!(reason.as_deref(), Some("duplicate"))
            }
            other => panic!("{other:?}"),
        }
    }
}
