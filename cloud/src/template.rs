//! Block templates: what `getblocktemplate` returns, checked and decoded once so that every job
//! and block built from it can trust its fields.

use bitcoin::ScriptBuf;
use serde::Deserialize;
use std::future::Future;

/// `getblocktemplate` as Bitcoin Core returns it (the fields a pool uses).
#[derive(Debug, Clone, Deserialize)]
pub struct BlockTemplate {
    pub version: i64,
    pub previousblockhash: String,
    #[serde(default)]
    pub transactions: Vec<TemplateTransaction>,
    pub coinbasevalue: u64,
    #[serde(default)]
    pub longpollid: Option<String>,
    pub curtime: u64,
    #[serde(default)]
    pub mintime: Option<u64>,
    pub bits: String,
    pub height: u64,
    #[serde(default)]
    pub default_witness_commitment: Option<String>,
    #[serde(default)]
    pub rules: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct TemplateTransaction {
    /// Serialized transaction (with witness when it has one).
    pub data: String,
    /// Display-order hex txid.
    pub txid: String,
    #[serde(default)]
    pub fee: Option<i64>,
}

/// What `getblockchaininfo` says (the fields the pool checks).
#[derive(Debug, Clone, Deserialize)]
pub struct ChainInfo {
    pub chain: String,
    pub blocks: u64,
    #[serde(default)]
    pub initialblockdownload: bool,
}

/// Why the node could not give a template or take a block.
#[derive(Debug, Clone, thiserror::Error)]
pub enum NodeError {
    #[error("cannot reach the Bitcoin node at {url}: {detail}; fix: is bitcoind running and is node.url right?")]
    Unreachable { url: String, detail: String },
    #[error("the Bitcoin node rejected our RPC credentials (HTTP 401); fix: check node.user/node.password or node.cookie_file")]
    Unauthorized,
    #[error(
        "the Bitcoin node is still syncing (initial block download); jobs start when it is done"
    )]
    Syncing,
    #[error("the Bitcoin node is on {got:?} but pool.network expects {expected:?}; fix: point node.url at a {expected} node or change pool.network")]
    WrongNetwork { expected: String, got: String },
    #[error("the Bitcoin node answered {method} with error {code}: {message}")]
    Rpc {
        method: String,
        code: i64,
        message: String,
    },
    #[error("the Bitcoin node sent an unusable answer to {method}: {detail}")]
    Malformed { method: String, detail: String },
}

/// Where templates come from and blocks go: a Bitcoin Core node in production, a local chain in
/// the demo. Generic (not `dyn`) so each source keeps its own future types.
pub trait TemplateSource: Send + Sync + 'static {
    /// A template; with `longpoll_id`, wait until it would change (or a timeout) first.
    fn get_template(
        &self,
        longpoll_id: Option<String>,
    ) -> impl Future<Output = Result<BlockTemplate, NodeError>> + Send;
    /// Submit a block (hex). `Ok(None)` = accepted; `Ok(Some(reason))` = rejected by the node.
    fn submit_block(
        &self,
        block_hex: String,
    ) -> impl Future<Output = Result<Option<String>, NodeError>> + Send;
    fn chain_info(&self) -> impl Future<Output = Result<ChainInfo, NodeError>> + Send;
    /// Where a block the pool found stands in the node's chain (`getblockheader`). The
    /// default says the source cannot tell, which never orphans anything.
    fn block_position(
        &self,
        _block_hash: String,
    ) -> impl Future<Output = Result<BlockPosition, NodeError>> + Send {
        async { Ok(BlockPosition::Unknown) }
    }
}

/// A found block as the node sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlockPosition {
    /// In the node's main chain with this many confirmations (1 = the tip).
    MainChain { confirmations: u32 },
    /// Known but not in the main chain (`confirmations: -1`): a stale block, orphaned.
    NotInMainChain,
    /// The node does not know the block at all (RPC error -5).
    NotFound,
    /// The source cannot tell (no such call).
    Unknown,
}

/// A template decoded for job building.
#[derive(Debug, Clone)]
pub struct PreparedTemplate {
    pub height: u32,
    pub version: u32,
    /// Previous block hash in header byte order.
    pub prevhash: [u8; 32],
    pub prevhash_display: String,
    pub nbits: u32,
    pub curtime: u32,
    pub mintime: u32,
    pub coinbase_value: u64,
    /// Txids (internal byte order) of the non-coinbase transactions, in block order.
    pub txids: Vec<[u8; 32]>,
    /// Their serializations, concatenated in block order.
    pub tx_data: Vec<u8>,
    pub witness_commitment: Option<ScriptBuf>,
    pub longpoll_id: Option<String>,
}

fn malformed(field: &str, detail: impl std::fmt::Display) -> NodeError {
    NodeError::Malformed {
        method: "getblocktemplate".into(),
        detail: format!("{field}: {detail}"),
    }
}

fn display_hash_to_internal(text: &str, field: &str) -> Result<[u8; 32], NodeError> {
    let mut bytes: [u8; 32] = hex::decode(text)
        .map_err(|e| malformed(field, e))?
        .try_into()
        .map_err(|_| malformed(field, "not 32 bytes"))?;
    bytes.reverse();
    Ok(bytes)
}

impl PreparedTemplate {
    pub fn from_template(t: BlockTemplate) -> Result<PreparedTemplate, NodeError> {
        let height = u32::try_from(t.height).map_err(|_| malformed("height", t.height))?;
        let version = u32::try_from(t.version).map_err(|_| malformed("version", t.version))?;
        let prevhash = display_hash_to_internal(&t.previousblockhash, "previousblockhash")?;
        let nbits = u32::from_str_radix(&t.bits, 16).map_err(|e| malformed("bits", e))?;
        if t.bits.len() != 8 || blgv_stratum::Target::from_compact(nbits).is_none() {
            return Err(malformed(
                "bits",
                format!("{:?} is not a compact target", t.bits),
            ));
        }
        let mut txids = Vec::with_capacity(t.transactions.len());
        let mut tx_data = Vec::new();
        for (i, tx) in t.transactions.iter().enumerate() {
            txids.push(display_hash_to_internal(
                &tx.txid,
                &format!("transactions[{i}].txid"),
            )?);
            let data = hex::decode(&tx.data)
                .map_err(|e| malformed(&format!("transactions[{i}].data"), e))?;
            // Decoding proves the node sent a real transaction and catches truncation.
            let decoded: bitcoin::Transaction = bitcoin::consensus::deserialize(&data)
                .map_err(|e| malformed(&format!("transactions[{i}].data"), e))?;
            if decoded.compute_txid().to_byte_array() != txids[i] {
                return Err(malformed(
                    &format!("transactions[{i}].txid"),
                    "does not match its data",
                ));
            }
            tx_data.extend_from_slice(&data);
        }
        let witness_commitment = match &t.default_witness_commitment {
            Some(h) => Some(ScriptBuf::from_bytes(
                hex::decode(h).map_err(|e| malformed("default_witness_commitment", e))?,
            )),
            None => None,
        };
        let curtime = u32::try_from(t.curtime).map_err(|_| malformed("curtime", t.curtime))?;
        Ok(PreparedTemplate {
            height,
            version,
            prevhash,
            prevhash_display: t.previousblockhash,
            nbits,
            curtime,
            mintime: t
                .mintime
                .and_then(|m| u32::try_from(m).ok())
                .unwrap_or(curtime),
            coinbase_value: t.coinbasevalue,
            txids,
            tx_data,
            witness_commitment,
            longpoll_id: t.longpollid,
        })
    }
}

use bitcoin::hashes::Hash as _;

/// A shared source is a source: callers (tests, the demo) keep a handle on what the pool uses.
impl<T: TemplateSource> TemplateSource for std::sync::Arc<T> {
    fn get_template(
        &self,
        longpoll_id: Option<String>,
    ) -> impl Future<Output = Result<BlockTemplate, NodeError>> + Send {
        (**self).get_template(longpoll_id)
    }
    fn submit_block(
        &self,
        block_hex: String,
    ) -> impl Future<Output = Result<Option<String>, NodeError>> + Send {
        (**self).submit_block(block_hex)
    }
    fn chain_info(&self) -> impl Future<Output = Result<ChainInfo, NodeError>> + Send {
        (**self).chain_info()
    }
    fn block_position(
        &self,
        block_hash: String,
    ) -> impl Future<Output = Result<BlockPosition, NodeError>> + Send {
        (**self).block_position(block_hash)
    }
}
