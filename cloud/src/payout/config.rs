//! The `[payout]` section of the cloud config.
//!
//! ```toml
//! [payout]
//! fee_percent = "1.5"            # 0 to 100, at most two decimals (basis points)
//! pplns_window_x = 2.0           # PPLNS window = X × network difficulty
//! confirmations = 100            # block credits are spendable after this many
//! pps_delay_blocks = 0           # PPS credits are spendable at once (0) or after N blocks
//! min_payout_sats = 100000
//! default_scheme = "pplns"       # pps, pplns or solo, for accounts not listed below
//! fee_account = "pool-fee"
//! change_address = "bc1q…"
//! fee_rate_sat_per_vb = 2.0
//! process_interval_secs = 30     # bookkeeping at least this often in the running pool
//!
//! [[payout.accounts]]
//! name = "alice"                 # workers "alice" and "alice.<rig>" mine for this account
//! address = "bc1q…"
//! scheme = "pps"
//!
//! [[payout.utxos]]
//! txid = "…"
//! vout = 0
//! value_sats = 50000000
//! address = "bc1q…"              # or script_pubkey = "0014…" (hex)
//! ```

use super::psbt::{InputKind, PoolUtxo};
use super::sats::Sats;
use crate::config::validate_address;
use bitcoin::{Network, OutPoint, ScriptBuf, Txid};
use blgv_config::ConfigError;
use serde::{Deserialize, Serialize};
use std::collections::HashSet;
use std::fmt;
use std::str::FromStr;

/// How an account is paid.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scheme {
    /// Pay per share: every share earns its expected value at once; the pool keeps the blocks.
    Pps,
    /// Pay per last N shares: a block's reward is shared over the last X × D of difficulty.
    Pplns,
    /// The finder takes the whole block (minus the fee) in the coinbase.
    Solo,
}

impl Scheme {
    pub fn as_str(self) -> &'static str {
        match self {
            Scheme::Pps => "pps",
            Scheme::Pplns => "pplns",
            Scheme::Solo => "solo",
        }
    }
}

impl fmt::Display for Scheme {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Scheme {
    type Err = String;
    fn from_str(s: &str) -> Result<Scheme, String> {
        match s {
            "pps" => Ok(Scheme::Pps),
            "pplns" => Ok(Scheme::Pplns),
            "solo" => Ok(Scheme::Solo),
            other => Err(format!("{other:?} is not a payout scheme")),
        }
    }
}

/// A percentage written as a string (`"1.5"`), an integer (`2`) or a TOML float (`1.5`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(untagged)]
pub enum Percent {
    Text(String),
    Integer(i64),
    Float(f64),
}

impl Percent {
    /// Basis points (1/100 of a percent), exactly; floats go through their shortest decimal
    /// form, so `1.15` is 115 bp, not 114.99….
    pub fn basis_points(&self) -> Result<u32, String> {
        let text = match self {
            Percent::Text(t) => t.trim().trim_end_matches('%').trim().to_string(),
            Percent::Integer(i) => i.to_string(),
            Percent::Float(f) if f.is_finite() => f.to_string(),
            Percent::Float(f) => return Err(format!("{f} is not a percentage")),
        };
        let (whole, frac) = text.split_once('.').unwrap_or((&text, ""));
        let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
        if !digits(whole) || !(frac.is_empty() || digits(frac)) {
            return Err(format!("{text:?} is not a percentage"));
        }
        let frac = frac.trim_end_matches('0');
        if frac.len() > 2 {
            return Err(format!(
                "{text}% has more than two decimals (the fee is kept in basis points)"
            ));
        }
        let whole: u64 = whole
            .parse()
            .map_err(|_| format!("{text:?} is out of range"))?;
        let frac_bp: u64 = format!("{frac:0<2}").parse().expect("two digits");
        let bp = whole
            .checked_mul(100)
            .and_then(|w| w.checked_add(frac_bp))
            .filter(|bp| *bp <= 10_000)
            .ok_or_else(|| format!("{text}% is over 100%"))?;
        Ok(bp as u32)
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PayoutConfig {
    /// The pool's fee, in percent (0–100, two decimals at most).
    pub fee_percent: Percent,
    /// PPLNS window size as a multiple of the network difficulty at the block (6 decimals).
    pub pplns_window_x: f64,
    /// Confirmations before a block's credits become spendable (default 100: coinbase outputs
    /// cannot be spent earlier on any network).
    pub confirmations: Option<u32>,
    /// PPS credits become spendable this many blocks above the highest share they pay for
    /// (0: at once — PPS is the pool's risk, not the miner's).
    pub pps_delay_blocks: u32,
    /// Balances below this are not paid out (at least 546 sat, the largest dust limit).
    pub min_payout_sats: u64,
    /// The scheme of accounts not listed in `accounts` (and of listed ones without `scheme`).
    pub default_scheme: Scheme,
    /// The account that collects the pool fee, rounding remainders and the PPS share of blocks.
    pub fee_account: String,
    /// Where payout transactions send their change; required to create payout batches.
    pub change_address: Option<String>,
    /// Fee rate of payout transactions in sat/vB (0.1 to 10000, three decimals).
    pub fee_rate_sat_per_vb: f64,
    /// At most this many payouts per transaction.
    pub max_outputs_per_batch: usize,
    pub accounts: Vec<AccountConfig>,
    /// The pool wallet's coins that payout batches may spend.
    pub utxos: Vec<UtxoConfig>,
    /// The running pool does its bookkeeping (PPS, block credits, maturity, orphan checks)
    /// at least this often, besides at every new block and tip change.
    pub process_interval_secs: u64,
}

impl Default for PayoutConfig {
    fn default() -> Self {
        PayoutConfig {
            fee_percent: Percent::Text("1".into()),
            pplns_window_x: 2.0,
            confirmations: None,
            pps_delay_blocks: 0,
            min_payout_sats: 100_000,
            default_scheme: Scheme::Pplns,
            fee_account: "pool-fee".into(),
            change_address: None,
            fee_rate_sat_per_vb: 2.0,
            max_outputs_per_batch: 250,
            accounts: Vec::new(),
            utxos: Vec::new(),
            process_interval_secs: 30,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccountConfig {
    /// The account name: workers `name` and `name.<anything>` mine for it.
    pub name: String,
    /// Where its balance is paid; without one the balance accrues but is not paid.
    #[serde(default)]
    pub address: Option<String>,
    /// Its scheme (`default_scheme` when absent).
    #[serde(default)]
    pub scheme: Option<Scheme>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UtxoConfig {
    pub txid: String,
    pub vout: u32,
    pub value_sats: u64,
    /// The output's script as hex, or give `address`.
    #[serde(default)]
    pub script_pubkey: Option<String>,
    #[serde(default)]
    pub address: Option<String>,
    /// Spending size in vbytes including its witness, for scripts the estimator does not know
    /// (P2WSH, bare multisig); P2WPKH, P2TR, P2PKH and P2SH (as P2SH-P2WPKH) are estimated.
    #[serde(default)]
    pub input_vbytes: Option<f64>,
}

/// The fee rate in millisatoshis per vbyte (`2.5 sat/vB` is 2500).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FeeRate {
    pub msat_per_vb: u64,
}

impl FeeRate {
    /// `ceil(vsize · rate)`.
    pub fn fee_for_vsize(self, vsize: u64) -> Sats {
        Sats((vsize * self.msat_per_vb).div_ceil(1000))
    }
}

/// A configured account, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct AccountSpec {
    pub name: String,
    pub address: Option<String>,
    pub scheme: Option<Scheme>,
}

/// The validated `[payout]` section, in the units the engine computes with.
#[derive(Debug, Clone)]
pub struct PayoutSettings {
    pub network: Network,
    /// Pool fee in basis points, 0..=10000.
    pub fee_bp: u32,
    /// X in millionths: the PPLNS window is `floor(work(D) · window_ppm / 10^6)`.
    pub window_ppm: u64,
    pub confirmations: u32,
    pub pps_delay_blocks: u32,
    pub min_payout: Sats,
    pub default_scheme: Scheme,
    pub fee_account: String,
    pub change_address: Option<String>,
    pub change_script: Option<ScriptBuf>,
    pub fee_rate: FeeRate,
    pub max_outputs_per_batch: usize,
    pub accounts: Vec<AccountSpec>,
    pub utxos: Vec<PoolUtxo>,
}

/// Confirmations when `payout.confirmations` is not set.
pub const DEFAULT_CONFIRMATIONS: u32 = 100;
/// The largest standard dust limit (P2PKH at 3 sat/vB).
pub const MIN_PAYOUT_FLOOR: u64 = 546;

fn err(key: impl Into<String>, problem: impl Into<String>, fix: impl Into<String>) -> ConfigError {
    ConfigError::new(key, problem, fix)
}

/// Account names: what a worker name has before its first `.`.
pub fn valid_account_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 128
        && name != "*"
        && !name.contains('.')
        && !name.chars().any(|c| c.is_whitespace() || c.is_control())
}

impl PayoutConfig {
    /// Check the section for `network`; errors name the key and the fix.
    pub fn validate(&self, network: Network) -> Result<(), ConfigError> {
        self.resolve(network).map(|_| ())
    }

    /// Validate and convert to [`PayoutSettings`].
    pub fn resolve(&self, network: Network) -> Result<PayoutSettings, ConfigError> {
        let fee_bp = self.fee_percent.basis_points().map_err(|p| {
            err(
                "payout.fee_percent",
                p,
                "write a percentage from 0 to 100 with at most two decimals, e.g. \"1.5\"",
            )
        })?;
        let x = self.pplns_window_x;
        if !(x.is_finite() && x > 0.0 && x <= 1000.0) || (x * 1e6).round() < 1.0 {
            return Err(err(
                "payout.pplns_window_x",
                format!("{x}"),
                "use a number above 0 and at most 1000 (2.0 is usual)",
            ));
        }
        let window_ppm = (x * 1e6).round() as u64;
        if !(1..=86_400).contains(&self.process_interval_secs) {
            return Err(err(
                "payout.process_interval_secs",
                format!("{}", self.process_interval_secs),
                "use 1 to 86400 seconds (30 is usual)",
            ));
        }
        let confirmations = self.confirmations.unwrap_or(DEFAULT_CONFIRMATIONS);
        if confirmations == 0 {
            return Err(err(
                "payout.confirmations",
                "0",
                "use at least 1 (100 matches coinbase maturity)",
            ));
        }
        if self.min_payout_sats < MIN_PAYOUT_FLOOR || self.min_payout_sats > Sats::MAX_MONEY.0 {
            return Err(err(
                "payout.min_payout_sats",
                format!("{}", self.min_payout_sats),
                format!("use at least {MIN_PAYOUT_FLOOR} (outputs below are dust), e.g. 100000"),
            ));
        }
        if !valid_account_name(&self.fee_account) {
            return Err(err(
                "payout.fee_account",
                format!("{:?} is not an account name", self.fee_account),
                "use a non-empty name without dots or spaces, e.g. \"pool-fee\"",
            ));
        }
        let change_script = match &self.change_address {
            None => None,
            Some(a) => Some(validate_address(a, network).map_err(|p| {
                err(
                    "payout.change_address",
                    p,
                    format!("use a {network} address of the pool's wallet"),
                )
            })?),
        };
        let r = self.fee_rate_sat_per_vb;
        if !(r.is_finite() && (0.1..=10_000.0).contains(&r)) {
            return Err(err(
                "payout.fee_rate_sat_per_vb",
                format!("{r}"),
                "use a rate from 0.1 to 10000 sat/vB",
            ));
        }
        let fee_rate = FeeRate {
            msat_per_vb: (r * 1000.0).round() as u64,
        };
        if !(1..=2000).contains(&self.max_outputs_per_batch) {
            return Err(err(
                "payout.max_outputs_per_batch",
                format!("{}", self.max_outputs_per_batch),
                "use 1 to 2000 (larger transactions are not standard)",
            ));
        }
        let mut names = HashSet::new();
        let mut accounts = Vec::with_capacity(self.accounts.len());
        for (i, a) in self.accounts.iter().enumerate() {
            let key = |k: &str| format!("payout.accounts[{i}].{k}");
            if !valid_account_name(&a.name) {
                return Err(err(
                    key("name"),
                    format!("{:?} is not an account name", a.name),
                    "use a non-empty name without dots or spaces (workers are <name>.<rig>)",
                ));
            }
            if !names.insert(a.name.as_str()) {
                return Err(err(
                    key("name"),
                    format!("account {:?} is listed twice", a.name),
                    "list each account once",
                ));
            }
            if a.name == self.fee_account && a.scheme.is_some() {
                return Err(err(
                    key("scheme"),
                    format!("{:?} is the fee account, which does not mine", a.name),
                    "remove the scheme from the fee account's entry",
                ));
            }
            let address = match &a.address {
                None => None,
                Some(text) => {
                    validate_address(text, network).map_err(|p| {
                        err(
                            key("address"),
                            p,
                            format!("use a {network} address for account {:?}", a.name),
                        )
                    })?;
                    Some(text.trim().to_string())
                }
            };
            accounts.push(AccountSpec {
                name: a.name.clone(),
                address,
                scheme: a.scheme,
            });
        }
        let mut outpoints = HashSet::new();
        let mut utxos = Vec::with_capacity(self.utxos.len());
        for (i, u) in self.utxos.iter().enumerate() {
            let key = |k: &str| format!("payout.utxos[{i}].{k}");
            let txid = Txid::from_str(u.txid.trim()).map_err(|e| {
                err(
                    key("txid"),
                    format!("{:?} is not a txid ({e})", u.txid),
                    "write the 64 hex digits shown by the wallet",
                )
            })?;
            let outpoint = OutPoint::new(txid, u.vout);
            if !outpoints.insert(outpoint) {
                return Err(err(
                    key("vout"),
                    format!("{outpoint} is listed twice"),
                    "list each UTXO once",
                ));
            }
            if u.value_sats == 0 || u.value_sats > Sats::MAX_MONEY.0 {
                return Err(err(
                    key("value_sats"),
                    format!("{}", u.value_sats),
                    "write the output's value in satoshis",
                ));
            }
            let script_pubkey = match (&u.script_pubkey, &u.address) {
                (Some(hex), None) => ScriptBuf::from_hex(hex.trim()).map_err(|e| {
                    err(
                        key("script_pubkey"),
                        format!("not hex ({e})"),
                        "write the scriptPubKey as hex, or give `address` instead",
                    )
                })?,
                (None, Some(a)) => validate_address(a, network).map_err(|p| {
                    err(
                        key("address"),
                        p,
                        format!("use the {network} address that holds this UTXO"),
                    )
                })?,
                _ => {
                    return Err(err(
                        key("address"),
                        "give exactly one of `address` and `script_pubkey`",
                        "write the address holding the UTXO (or its script as hex)",
                    ))
                }
            };
            let kind = match u.input_vbytes {
                Some(v) if v.is_finite() && (41.0..=100_000.0).contains(&v) => {
                    InputKind::Custom {
                        weight: (v * 4.0).ceil() as u64,
                    }
                }
                Some(v) => {
                    return Err(err(
                        key("input_vbytes"),
                        format!("{v}"),
                        "give the input's size in vbytes with its witness (41 or more)",
                    ))
                }
                None => InputKind::from_script(&script_pubkey).ok_or_else(|| {
                    err(
                        key("input_vbytes"),
                        format!(
                            "the size of spending script {} cannot be estimated",
                            script_pubkey.to_hex_string()
                        ),
                        "set input_vbytes for this UTXO, or use a P2WPKH, P2TR, P2PKH or P2SH-P2WPKH coin",
                    )
                })?,
            };
            utxos.push(PoolUtxo {
                outpoint,
                value: Sats(u.value_sats),
                script_pubkey,
                kind,
            });
        }
        Ok(PayoutSettings {
            network,
            fee_bp,
            window_ppm,
            confirmations,
            pps_delay_blocks: self.pps_delay_blocks,
            min_payout: Sats(self.min_payout_sats),
            default_scheme: self.default_scheme,
            fee_account: self.fee_account.clone(),
            change_address: self.change_address.as_ref().map(|a| a.trim().to_string()),
            change_script,
            fee_rate,
            max_outputs_per_batch: self.max_outputs_per_batch,
            accounts,
            utxos,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_to_basis_points() {
        let bp = |p: Percent| p.basis_points();
        assert_eq!(bp(Percent::Text("1.5".into())), Ok(150));
        assert_eq!(bp(Percent::Text("2%".into())), Ok(200));
        assert_eq!(bp(Percent::Text("0.01".into())), Ok(1));
        assert_eq!(bp(Percent::Text("100".into())), Ok(10_000));
        assert_eq!(bp(Percent::Float(1.15)), Ok(115));
        assert_eq!(bp(Percent::Integer(3)), Ok(300));
        assert!(bp(Percent::Text("100.01".into())).is_err());
        assert!(bp(Percent::Text("0.001".into())).is_err());
        assert!(bp(Percent::Integer(-1)).is_err());
        assert!(bp(Percent::Text("abc".into())).is_err());
    }
}
