//! A template source with a fixed, high network difficulty (bits 1d00ffff), for tests where the
//! node is not the subject and no share should become a block. The node stand-in
//! (`blgv_tests::node`) is used wherever blocks matter.

use blgv_cloud::template::{BlockTemplate, ChainInfo, NodeError, TemplateSource};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;
use tokio::sync::Notify;

#[derive(Default)]
pub struct FixedTemplate {
    height: AtomicU64,
    changed: Notify,
    pub submitted: Mutex<Vec<String>>,
}

impl FixedTemplate {
    /// Another miner found a block: the next template builds on a new previous block.
    pub fn new_block(&self) {
        self.height.fetch_add(1, Ordering::SeqCst);
        self.changed.notify_waiters();
    }

    fn template(&self) -> BlockTemplate {
        let h = self.height.load(Ordering::SeqCst) + 1000;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        serde_json::from_value(serde_json::json!({
            "version": 536870912, "previousblockhash": format!("{:064x}", h), "transactions": [],
            "coinbasevalue": 5_000_000_000u64, "longpollid": h.to_string(), "curtime": now, "mintime": now - 600,
            "bits": "1d00ffff", "height": h, "rules": ["csv", "!segwit", "taproot"],
        }))
        .unwrap()
    }
}

impl TemplateSource for FixedTemplate {
    async fn get_template(&self, longpoll_id: Option<String>) -> Result<BlockTemplate, NodeError> {
        if longpoll_id.as_deref() == Some(&self.template().longpollid.unwrap()) {
            let _ = tokio::time::timeout(Duration::from_secs(30), self.changed.notified()).await;
        }
        Ok(self.template())
    }

    async fn submit_block(&self, block_hex: String) -> Result<Option<String>, NodeError> {
        self.submitted.lock().unwrap().push(block_hex);
        Ok(Some("high-hash".into()))
    }

    async fn chain_info(&self) -> Result<ChainInfo, NodeError> {
        Ok(ChainInfo {
            chain: "regtest".into(),
            blocks: self.height.load(Ordering::SeqCst) + 999,
            initialblockdownload: false,
        })
    }
}
