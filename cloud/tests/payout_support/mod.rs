//! Helpers shared by the payout tests: a share ledger on disk, keys and addresses.
#![allow(dead_code)]

use bitcoin::key::{CompressedPublicKey, Secp256k1};
use bitcoin::secp256k1::{All, SecretKey};
use bitcoin::{Address, Network};
use blgv_cloud::ledger::{self, BlockStatus, LedgerEvent, ShareRecord};
use blgv_cloud::payout::{PayoutConfig, PayoutLedger, PayoutSettings, Percent, Scheme};
use rusqlite::Connection;
use std::path::PathBuf;
use std::sync::Arc;

/// A share ledger in a temporary directory, written through `blgv_cloud::ledger` exactly as
/// the coordinator writes it.
pub struct Chain {
    pub dir: tempfile::TempDir,
    pub path: PathBuf,
    pub writer: Connection,
    pub height: u32,
    pub network_difficulty: f64,
    blocks: u32,
}

impl Chain {
    pub fn new() -> Chain {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cloud.db");
        let writer = ledger::open_database(&path).unwrap();
        Chain {
            dir,
            path,
            writer,
            height: 100,
            network_difficulty: 1.0,
            blocks: 0,
        }
    }

    fn record(&self, worker: &str, d: f64) -> ShareRecord {
        ShareRecord {
            time_ms: 1,
            worker: Arc::from(worker),
            difficulty: d,
            network_difficulty: self.network_difficulty,
            height: self.height,
            job_id: "j".into(),
        }
    }

    pub fn share(&mut self, worker: &str, d: f64) {
        let e = LedgerEvent::Share(self.record(worker, d));
        ledger::write_batch(&mut self.writer, &[e]).unwrap();
    }

    /// A share that is a block with `reward`, accepted by the node. Returns its hash.
    pub fn block(&mut self, worker: &str, d: f64, reward: u64) -> String {
        self.blocks += 1;
        let hash = format!("{:064x}", self.blocks);
        let events = [
            LedgerEvent::Block {
                share: self.record(worker, d),
                hash: hash.clone(),
                reward_sats: reward,
            },
            LedgerEvent::BlockStatus {
                hash: hash.clone(),
                status: BlockStatus::Accepted,
                reason: None,
            },
        ];
        ledger::write_batch(&mut self.writer, &events).unwrap();
        hash
    }

    pub fn set_status(&mut self, hash: &str, status: BlockStatus) {
        let e = LedgerEvent::BlockStatus {
            hash: hash.into(),
            status,
            reason: None,
        };
        ledger::write_batch(&mut self.writer, &[e]).unwrap();
    }

    pub fn open(&self, settings: PayoutSettings) -> PayoutLedger {
        PayoutLedger::open(&self.path, settings).unwrap()
    }
}

/// Settings from a TOML `[payout]` body, validated for `network`.
pub fn settings_from_toml(toml_text: &str, network: Network) -> PayoutSettings {
    let config: PayoutConfig = toml::from_str(toml_text).unwrap();
    config.resolve(network).unwrap()
}

/// Settings with the given fee (percent text), window X, accounts `(name, scheme)`.
pub fn settings(fee: &str, x: f64, accounts: &[(&str, Scheme)]) -> PayoutSettings {
    let mut c = PayoutConfig {
        fee_percent: Percent::Text(fee.into()),
        pplns_window_x: x,
        ..PayoutConfig::default()
    };
    for (name, scheme) in accounts {
        c.accounts.push(blgv_cloud::payout::AccountConfig {
            name: name.to_string(),
            address: None,
            scheme: Some(*scheme),
        });
    }
    c.resolve(Network::Regtest).unwrap()
}

pub fn secp() -> Secp256k1<All> {
    Secp256k1::new()
}

pub fn secret(n: u8) -> SecretKey {
    let mut b = [0u8; 32];
    b[31] = n;
    b[0] = 0x11;
    SecretKey::from_slice(&b).unwrap()
}

pub fn p2wpkh_address(n: u8, network: Network) -> Address {
    let pk = CompressedPublicKey(secret(n).public_key(&secp()));
    Address::p2wpkh(&pk, network)
}

pub fn p2tr_address(n: u8, network: Network) -> Address {
    let (xonly, _) = secret(n).x_only_public_key(&secp());
    Address::p2tr(&secp(), xonly, None, network)
}

pub fn p2pkh_address(n: u8, network: Network) -> Address {
    let pk = bitcoin::PublicKey::new(secret(n).public_key(&secp()));
    Address::p2pkh(pk, network)
}
