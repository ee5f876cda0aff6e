//! The production template source: Bitcoin Core's JSON-RPC over HTTP.

use crate::config::{core_chain_name, NodeSection};
use crate::template::{BlockPosition, BlockTemplate, ChainInfo, NodeError, TemplateSource};
use base64::Engine as _;
use bitcoin::Network;
use serde_json::{json, Value};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// A long poll is held by the node until the tip changes; the pool refreshes jobs well before.
const LONGPOLL_TIMEOUT: Duration = Duration::from_secs(600);

#[derive(Debug, Clone)]
enum Credentials {
    UserPassword(String, String),
    /// Re-read at every call: Core writes a new cookie on each restart.
    Cookie(PathBuf),
}

pub struct BitcoindRpc {
    client: reqwest::Client,
    url: String,
    credentials: Credentials,
    timeout: Duration,
    longpoll: bool,
    network: Network,
    next_id: AtomicU64,
}

impl BitcoindRpc {
    pub fn new(node: &NodeSection, network: Network) -> BitcoindRpc {
        let credentials = match (&node.user, &node.password, &node.cookie_file) {
            (Some(u), Some(p), _) => Credentials::UserPassword(u.clone(), p.clone()),
            (_, _, Some(path)) => Credentials::Cookie(path.clone()),
            _ => Credentials::UserPassword(String::new(), String::new()), // refused by validation
        };
        BitcoindRpc {
            client: reqwest::Client::builder()
                .build()
                .expect("a default reqwest client builds"),
            url: node.url.clone(),
            credentials,
            timeout: Duration::from_millis(node.timeout_ms),
            longpoll: node.longpoll,
            network,
            next_id: AtomicU64::new(1),
        }
    }

    fn authorization(&self) -> Result<String, NodeError> {
        let pair = match &self.credentials {
            Credentials::UserPassword(u, p) => format!("{u}:{p}"),
            Credentials::Cookie(path) => std::fs::read_to_string(path)
                .map_err(|e| NodeError::Unreachable {
                    url: self.url.clone(),
                    detail: format!("cannot read cookie file {}: {e} (is node.cookie_file right, and readable by this user?)", path.display()),
                })?
                .trim()
                .to_string(),
        };
        Ok(format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(pair)
        ))
    }

    /// One JSON-RPC call. Core answers errors with HTTP 500/404 and a JSON body, and 401 with
    /// an empty body, so the body is read whatever the status.
    pub async fn call(
        &self,
        method: &str,
        params: Value,
        timeout: Duration,
    ) -> Result<Value, NodeError> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let body = json!({"jsonrpc": "1.0", "id": id, "method": method, "params": params});
        let started = std::time::Instant::now();
        let response = self
            .client
            .post(&self.url)
            .header(reqwest::header::AUTHORIZATION, self.authorization()?)
            .timeout(timeout)
            .json(&body)
            .send()
            .await
            .map_err(|e| NodeError::Unreachable {
                url: self.url.clone(),
                detail: describe(&e),
            })?;
        let status = response.status();
        if status == reqwest::StatusCode::UNAUTHORIZED {
            return Err(NodeError::Unauthorized);
        }
        let bytes = response.bytes().await.map_err(|e| NodeError::Unreachable {
            url: self.url.clone(),
            detail: describe(&e),
        })?;
        tracing::trace!(
            method,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "rpc"
        );
        let malformed = |detail: String| NodeError::Malformed {
            method: method.to_string(),
            detail,
        };
        let reply: Value = serde_json::from_slice(&bytes)
            .map_err(|e| malformed(format!("HTTP {status}, body is not JSON ({e})")))?;
        if let Some(err) = reply.get("error").filter(|e| !e.is_null()) {
            let code = err.get("code").and_then(Value::as_i64).unwrap_or(0);
            let message = err
                .get("message")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string();
            if code == -10 {
                return Err(NodeError::Syncing);
            }
            return Err(NodeError::Rpc {
                method: method.to_string(),
                code,
                message,
            });
        }
        reply
            .get("result")
            .cloned()
            .ok_or_else(|| malformed(format!("HTTP {status}, no result field")))
    }
}

fn describe(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        "timed out".into()
    } else if e.is_connect() {
        "connection refused or unreachable".into()
    } else {
        e.to_string()
    }
}

impl TemplateSource for BitcoindRpc {
    async fn get_template(&self, longpoll_id: Option<String>) -> Result<BlockTemplate, NodeError> {
        let mut request = json!({"rules": ["segwit"]});
        let timeout = match longpoll_id.filter(|_| self.longpoll) {
            Some(id) => {
                request["longpollid"] = Value::from(id);
                LONGPOLL_TIMEOUT
            }
            None => self.timeout,
        };
        let result = self
            .call("getblocktemplate", json!([request]), timeout)
            .await?;
        serde_json::from_value(result).map_err(|e| NodeError::Malformed {
            method: "getblocktemplate".into(),
            detail: e.to_string(),
        })
    }

    async fn submit_block(&self, block_hex: String) -> Result<Option<String>, NodeError> {
        let result = self
            .call("submitblock", json!([block_hex]), self.timeout)
            .await?;
        Ok(match result {
            Value::Null => None,
            Value::String(reason) => Some(reason),
            other => Some(other.to_string()),
        })
    }

    async fn chain_info(&self) -> Result<ChainInfo, NodeError> {
        let result = self
            .call("getblockchaininfo", json!([]), self.timeout)
            .await?;
        let info: ChainInfo = serde_json::from_value(result).map_err(|e| NodeError::Malformed {
            method: "getblockchaininfo".into(),
            detail: e.to_string(),
        })?;
        let expected = core_chain_name(self.network);
        if info.chain != expected {
            return Err(NodeError::WrongNetwork {
                expected: expected.into(),
                got: info.chain,
            });
        }
        if info.initialblockdownload {
            return Err(NodeError::Syncing);
        }
        Ok(info)
    }

    async fn block_position(&self, block_hash: String) -> Result<BlockPosition, NodeError> {
        let result = match self
            .call("getblockheader", json!([block_hash, true]), self.timeout)
            .await
        {
            Ok(r) => r,
            // RPC_INVALID_ADDRESS_OR_KEY: "Block not found".
            Err(NodeError::Rpc { code: -5, .. }) => return Ok(BlockPosition::NotFound),
            Err(e) => return Err(e),
        };
        let confirmations = result
            .get("confirmations")
            .and_then(Value::as_i64)
            .ok_or_else(|| NodeError::Malformed {
                method: "getblockheader".into(),
                detail: "no integer confirmations field".into(),
            })?;
        Ok(if confirmations >= 1 {
            BlockPosition::MainChain {
                confirmations: u32::try_from(confirmations).unwrap_or(u32::MAX),
            }
        } else {
            BlockPosition::NotInMainChain
        })
    }
}
