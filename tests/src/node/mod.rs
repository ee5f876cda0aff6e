//! [`NodeStandIn`]: a Bitcoin Core (`bitcoind`, regtest) JSON-RPC stand-in that referees
//! every block a pool submits.
//!
//! It serves HTTP JSON-RPC on `127.0.0.1` with Basic auth (user/password and, optionally, a
//! Core-style `.cookie`), and answers the calls a pool makes — `getblockchaininfo`,
//! `getblocktemplate` (with longpoll and proposals), `submitblock`, `getblock`,
//! `getblockhash`, `getbestblockhash`, `getblockcount`, `getblockheader`, `getdifficulty`,
//! `getmininginfo`, `getnetworkinfo`, `validateaddress`, `ping`, `uptime` — in Core's
//! formats, with Core's error codes and HTTP statuses.
//!
//! The chain is a real regtest chain built with rust-bitcoin (block 0 is regtest's genesis
//! block); templates carry synthetic but well-formed transactions, and `submitblock` runs
//! Core's checks in Core's order with Core's reason strings (see [`validate`]). None of this
//! uses the project's own `blgv-stratum` crate.
//!
//! Fault switches: [`NodeStandIn::set_down`] (HTTP 503 for everything),
//! [`NodeStandIn::go_offline`] / [`NodeStandIn::go_online`] (connections really refused, then
//! the same node back on the same port), [`NodeStandIn::set_malformed`],
//! [`NodeStandIn::set_syncing`], [`NodeStandIn::mine_external_block`], [`NodeStandIn::reorg`],
//! [`NodeStandIn::set_transactions`].

pub mod chain;
pub mod net;
pub mod real_node;
mod rpc;
pub mod txgen;
pub mod validate;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use tokio::net::TcpSocket;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use chain::Chain;

/// Stand-in settings. `Default`: regtest, user `pool`/password `pool`, no cookie, 3
/// transactions per template, segwit on, 30 s longpoll timeout, chain height 100.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// What `getblockchaininfo` reports as `chain` ("regtest"; "main" to test a pool's
    /// wrong-network check). Templates stay regtest ones whatever this says.
    pub network: String,
    pub rpc_user: String,
    pub rpc_password: String,
    /// When set, `__cookie__:<64 hex>` is written there at start (and removed at stop), and
    /// those credentials are accepted too, like Core's `.cookie`.
    pub cookie_file: Option<PathBuf>,
    /// How many mempool transactions templates carry.
    pub transactions_per_template: usize,
    /// true: most template transactions have witnesses and templates carry
    /// `default_witness_commitment` (always, as Core does on a segwit chain). false: legacy
    /// transactions only and no commitment (a pre-segwit-style template).
    pub segwit: bool,
    /// How long a longpoll is held when the tip does not change.
    pub longpoll_timeout: Duration,
    /// Height of the tip at start (the first template is for `initial_height + 1`).
    pub initial_height: u32,
}

impl Default for NodeConfig {
    fn default() -> Self {
        Self {
            network: "regtest".into(),
            rpc_user: "pool".into(),
            rpc_password: "pool".into(),
            cookie_file: None,
            transactions_per_template: 3,
            segwit: true,
            longpoll_timeout: Duration::from_secs(30),
            initial_height: 100,
        }
    }
}

/// One block the pool got accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AcceptedBlock {
    pub hash: String,
    pub height: u32,
    /// Sum of the coinbase outputs.
    pub coinbase_value_sats: u64,
    /// What the coinbase could have claimed: subsidy + fees of the included transactions.
    pub allowed_value_sats: u64,
    /// Fees of the included transactions.
    pub fees_sats: u64,
    /// Coinbase outputs as (scriptPubKey hex, value in sats).
    pub coinbase_outputs: Vec<(String, u64)>,
    pub coinbase_script_sig_hex: String,
    /// Transactions in the block, coinbase included.
    pub tx_count: usize,
    pub had_witness_commitment: bool,
    /// The coinbase had a commitment output but no witness, and the node added the all-zero
    /// reserved value itself (Core's `submitblock` does this; a block relayed otherwise would
    /// be invalid, so a pool should not rely on it).
    pub witness_nonce_added_by_node: bool,
    pub time: u32,
    pub version: i32,
}

/// Snapshot of what the stand-in saw.
#[derive(Debug, Clone, Default)]
pub struct NodeStats {
    /// `submitblock` calls (with a parameter), whatever the outcome.
    pub blocks_submitted: u64,
    pub blocks_accepted: u64,
    /// Every non-null `submitblock` outcome as (reason, block hash): BIP22 reasons such as
    /// "high-hash", "inconclusive" or "duplicate", and decode errors ("Block decode failed",
    /// hash "").
    pub rejections: Vec<(String, String)>,
    pub height: u32,
    pub tip: String,
    /// `getblocktemplate` calls, proposals and refused ones included.
    pub gbt_calls: u64,
    /// Longpolls (templates requested with a `longpollid`) answered, by tip change or timeout.
    pub longpolls_answered: u64,
    /// Of those, the ones answered because the longpoll timeout passed.
    pub longpolls_timed_out: u64,
    pub accepted_blocks: Vec<AcceptedBlock>,
    /// Blocks found by "another miner" ([`NodeStandIn::mine_external_block`]).
    pub external_blocks: u64,
    /// Requests refused with HTTP 401.
    pub auth_failures: u64,
    /// `getblocktemplate` proposals checked.
    pub proposals: u64,
    /// Authenticated JSON-RPC calls by method name (unknown ones included).
    pub calls: BTreeMap<String, u64>,
}

/// Kinds of broken `getblocktemplate` answers served while malformed mode is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Malformed {
    /// HTTP 200, body that is not JSON at all.
    NotJson,
    /// HTTP 200, an HTML error page (as from a misconfigured reverse proxy).
    HtmlPage,
    /// HTTP 200, a JSON reply cut off mid-way.
    Truncated,
    /// A well-formed reply whose `result` is a string, not a template.
    ResultNotObject,
    /// A template whose fields have the wrong types (`height` a string, `bits` not hex,
    /// `coinbasevalue` negative, `transactions` an object).
    WrongTypes,
    /// A template missing `previousblockhash`, `coinbasevalue` and `bits`.
    MissingFields,
}

impl Malformed {
    pub const ALL: [Malformed; 6] = [
        Malformed::NotJson,
        Malformed::HtmlPage,
        Malformed::Truncated,
        Malformed::ResultNotObject,
        Malformed::WrongTypes,
        Malformed::MissingFields,
    ];
}

/// State behind the lock.
pub(crate) struct Inner {
    pub chain: Chain,
    pub stats: NodeStats,
    pub down: bool,
    pub syncing: bool,
    /// None: normal. Some(None): cycle through [`Malformed::ALL`]. Some(Some(k)): always k.
    pub malformed: Option<Option<Malformed>>,
    pub malformed_counter: usize,
}

/// Shared by the handle and the HTTP server.
pub(crate) struct Shared {
    pub cfg: NodeConfig,
    /// The cookie password, when a cookie file was written.
    pub cookie_password: Option<String>,
    pub inner: Mutex<Inner>,
    /// Bumped on every tip change and fault-switch change; longpolls watch it.
    pub events: watch::Sender<u64>,
    pub started: Instant,
    /// Set while the listener is closed ([`NodeStandIn::go_offline`]); held longpolls give up.
    pub offline: AtomicBool,
}

impl Shared {
    pub fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn bump(&self) {
        self.events.send_modify(|v| *v += 1);
    }
}

struct Server {
    kill: CancellationToken,
    task: JoinHandle<()>,
}

/// The running stand-in. Dropping it kills the server; [`NodeStandIn::stop`] also waits for
/// it and removes the cookie file.
pub struct NodeStandIn {
    shared: Arc<Shared>,
    addr: SocketAddr,
    server: Mutex<Option<Server>>,
}

fn bind(addr: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    let socket = TcpSocket::new_v4()?;
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(128)
}

fn spawn_server(shared: Arc<Shared>, listener: tokio::net::TcpListener) -> Server {
    let kill = CancellationToken::new();
    let listener = net::KillableListener {
        inner: listener,
        kill: kill.clone(),
    };
    let app = rpc::router(shared);
    let signal = kill.clone().cancelled_owned();
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, app)
            .with_graceful_shutdown(signal)
            .await;
    });
    Server { kill, task }
}

impl NodeStandIn {
    /// Starts on `127.0.0.1:0`.
    pub async fn start(cfg: NodeConfig) -> anyhow::Result<NodeStandIn> {
        Self::start_on("127.0.0.1:0".parse().expect("literal"), cfg).await
    }

    /// Starts on a given address (e.g. the port of a node stopped earlier, to model a
    /// restarted `bitcoind` with a fresh chain). Use 127.0.0.1 only.
    pub async fn start_on(addr: SocketAddr, cfg: NodeConfig) -> anyhow::Result<NodeStandIn> {
        let cookie_password = match &cfg.cookie_file {
            Some(path) => {
                let pass = hex::encode(rand::random::<[u8; 32]>());
                std::fs::write(path, format!("__cookie__:{pass}"))
                    .with_context(|| format!("writing cookie file {}", path.display()))?;
                Some(pass)
            }
            None => None,
        };
        let init_height = cfg.initial_height;
        let (segwit, txs) = (cfg.segwit, cfg.transactions_per_template);
        let chain = tokio::task::spawn_blocking(move || Chain::new(init_height, segwit, txs))
            .await
            .context("building the initial chain")?;
        let (events, _) = watch::channel(0u64);
        let shared = Arc::new(Shared {
            cfg,
            cookie_password,
            inner: Mutex::new(Inner {
                chain,
                stats: NodeStats::default(),
                down: false,
                syncing: false,
                malformed: None,
                malformed_counter: 0,
            }),
            events,
            started: Instant::now(),
            offline: AtomicBool::new(false),
        });
        let listener = bind(addr).with_context(|| format!("binding {addr}"))?;
        let addr = listener.local_addr()?;
        let server = spawn_server(shared.clone(), listener);
        Ok(NodeStandIn {
            shared,
            addr,
            server: Mutex::new(Some(server)),
        })
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The configured (user, password).
    pub fn credentials(&self) -> (String, String) {
        (
            self.shared.cfg.rpc_user.clone(),
            self.shared.cfg.rpc_password.clone(),
        )
    }

    /// ("__cookie__", password) when a cookie file was written.
    pub fn cookie_credentials(&self) -> Option<(String, String)> {
        self.shared
            .cookie_password
            .clone()
            .map(|p| ("__cookie__".to_string(), p))
    }

    /// Snapshot of the counters, the tip and the accepted blocks.
    pub fn stats(&self) -> NodeStats {
        let inner = self.shared.lock();
        let mut s = inner.stats.clone();
        s.height = inner.chain.height();
        s.tip = inner.chain.tip().hash.to_string();
        s
    }

    /// Current tip height.
    pub fn height(&self) -> u32 {
        self.shared.lock().chain.height()
    }

    /// Current tip hash (hex, RPC byte order).
    pub fn tip(&self) -> String {
        self.shared.lock().chain.tip().hash.to_string()
    }

    /// A stored block (active chain or stale) by hash, as rust-bitcoin decoded it.
    pub fn block(&self, hash: &str) -> Option<bitcoin::Block> {
        let hash: bitcoin::BlockHash = hash.parse().ok()?;
        self.shared
            .lock()
            .chain
            .find(&hash)
            .map(|(b, _)| b.block.clone())
    }

    /// true: every request gets HTTP 503 with a JSON-RPC error (code -28), held longpolls
    /// included. The port stays open.
    pub fn set_down(&self, down: bool) {
        self.shared.lock().down = down;
        self.shared.bump();
    }

    /// true: `getblocktemplate` answers are broken, cycling through [`Malformed::ALL`].
    pub fn set_malformed(&self, on: bool) {
        let mut inner = self.shared.lock();
        inner.malformed = on.then_some(None);
        inner.malformed_counter = 0;
    }

    /// Serves one kind of broken `getblocktemplate` answer (None: back to normal).
    pub fn set_malformed_kind(&self, kind: Option<Malformed>) {
        self.shared.lock().malformed = kind.map(Some);
    }

    /// true: `getblockchaininfo` says `initialblockdownload: true` (headers ahead of blocks,
    /// low verification progress) and `getblocktemplate` fails with -10 "Bitcoin Core is in
    /// initial sync and waiting for blocks...". (Real Core skips that check on test chains;
    /// the switch models a mainnet-like node.)
    pub fn set_syncing(&self, syncing: bool) {
        self.shared.lock().syncing = syncing;
        self.shared.bump();
    }

    /// Another miner found a block: it takes the whole mempool, the tip moves, longpolls
    /// return. Returns the new tip's hash.
    pub fn mine_external_block(&self) -> String {
        let hash = {
            let mut inner = self.shared.lock();
            let h = inner.chain.mine_external();
            inner.stats.external_blocks += 1;
            h
        };
        self.shared.bump();
        hash.to_string()
    }

    /// A reorganisation of the last `depth` blocks (see [`Chain::reorg`]): they leave the main
    /// chain (`getblockheader` gives `confirmations: -1`), `depth + 1` external blocks replace
    /// them, longpolls return. Returns the hashes that left the main chain.
    pub fn reorg(&self, depth: u32) -> Vec<String> {
        let gone = {
            let mut inner = self.shared.lock();
            let gone = inner.chain.reorg(depth);
            inner.stats.external_blocks += u64::from(depth) + 1;
            gone
        };
        self.shared.bump();
        gone.iter().map(|h| h.to_string()).collect()
    }

    /// How many transactions future templates carry (the mempool is trimmed or topped up
    /// now, which changes the longpoll id's counter but does not wake longpolls).
    pub fn set_transactions(&self, n: usize) {
        self.shared.lock().chain.set_txs_per_template(n);
    }

    /// Whether the HTTP server is listening.
    pub fn is_online(&self) -> bool {
        self.server
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_some()
    }

    async fn kill_server(&self) {
        let server = self.server.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(Server { kill, task }) = server {
            self.shared.offline.store(true, Ordering::SeqCst);
            kill.cancel();
            self.shared.bump();
            let abort = task.abort_handle();
            if tokio::time::timeout(Duration::from_secs(5), task)
                .await
                .is_err()
            {
                abort.abort();
            }
        }
    }

    /// The process "dies": the listener closes (connections are refused) and every open
    /// connection is cut, held longpolls included. Chain state is kept for [`Self::go_online`].
    pub async fn go_offline(&self) {
        self.kill_server().await;
    }

    /// Listens again on the same port with the same chain (a restarted node).
    pub async fn go_online(&self) -> anyhow::Result<()> {
        if self.is_online() {
            return Ok(());
        }
        let mut last = None;
        // The old socket is closed; retry briefly in case the OS is slow to release it.
        for _ in 0..50 {
            match bind(self.addr) {
                Ok(listener) => {
                    self.shared.offline.store(false, Ordering::SeqCst);
                    let server = spawn_server(self.shared.clone(), listener);
                    *self.server.lock().unwrap_or_else(|e| e.into_inner()) = Some(server);
                    return Ok(());
                }
                Err(e) => last = Some(e),
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Err(anyhow::anyhow!("rebinding {}: {:?}", self.addr, last))
    }

    /// Stops the server (connections refused from now on) and removes the cookie file.
    pub async fn stop(self) {
        self.kill_server().await;
        if let Some(path) = &self.shared.cfg.cookie_file {
            let _ = std::fs::remove_file(path);
        }
    }
}

impl Drop for NodeStandIn {
    fn drop(&mut self) {
        if let Some(server) = self.server.lock().unwrap_or_else(|e| e.into_inner()).take() {
            server.kill.cancel();
            server.task.abort();
        }
    }
}
