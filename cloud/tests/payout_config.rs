//! The `[payout]` config section: defaults, parsing, and errors that name the key and the fix.

mod payout_support;

use bitcoin::Network;
use blgv_cloud::payout::{InputKind, PayoutConfig, Sats, Scheme};
use payout_support::{p2tr_address, p2wpkh_address};
use serde::Deserialize;

/// As the cloud config will embed it.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Wrapper {
    #[serde(default)]
    payout: PayoutConfig,
}

fn parse(text: &str) -> Result<PayoutConfig, String> {
    toml::from_str::<Wrapper>(text)
        .map(|w| w.payout)
        .map_err(|e| e.to_string())
}

#[test]
fn defaults() {
    let c = parse("").unwrap();
    let s = c.resolve(Network::Bitcoin).unwrap();
    assert_eq!(s.fee_bp, 100);
    assert_eq!(s.window_ppm, 2_000_000);
    assert_eq!(s.confirmations, 100);
    assert_eq!(s.pps_delay_blocks, 0);
    assert_eq!(s.min_payout, Sats(100_000));
    assert_eq!(s.default_scheme, Scheme::Pplns);
    assert_eq!(s.fee_account, "pool-fee");
    assert_eq!(s.fee_rate.msat_per_vb, 2_000);
    assert!(s.change_script.is_none() && s.utxos.is_empty() && s.accounts.is_empty());
}

#[test]
fn full_section() {
    let text = format!(
        r#"
[payout]
fee_percent = 1.25
pplns_window_x = 2.5
confirmations = 6
pps_delay_blocks = 3
min_payout_sats = 50000
default_scheme = "pps"
fee_account = "ops"
change_address = "{change}"
fee_rate_sat_per_vb = 1.5

[[payout.accounts]]
name = "alice"
address = "{alice}"
scheme = "solo"

[[payout.accounts]]
name = "ops"
address = "{ops}"

[[payout.utxos]]
txid = "{txid}"
vout = 3
value_sats = 1000000
address = "{ops}"

[[payout.utxos]]
txid = "{txid}"
vout = 4
value_sats = 2000
script_pubkey = "0020{wsh}"
input_vbytes = 104.5
"#,
        change = p2wpkh_address(9, Network::Testnet),
        alice = p2tr_address(1, Network::Testnet),
        ops = p2wpkh_address(2, Network::Testnet),
        txid = "ab".repeat(32),
        wsh = "cd".repeat(32),
    );
    let s = parse(&text).unwrap().resolve(Network::Testnet).unwrap();
    assert_eq!(
        (s.fee_bp, s.window_ppm, s.confirmations),
        (125, 2_500_000, 6)
    );
    assert_eq!((s.pps_delay_blocks, s.min_payout), (3, Sats(50_000)));
    assert_eq!(
        (s.default_scheme, s.fee_account.as_str()),
        (Scheme::Pps, "ops")
    );
    assert_eq!(s.fee_rate.msat_per_vb, 1_500);
    assert_eq!(s.accounts[0].scheme, Some(Scheme::Solo));
    assert_eq!(s.accounts[1].scheme, None);
    assert_eq!(s.utxos[0].kind, InputKind::P2wpkh);
    assert_eq!(s.utxos[0].outpoint.vout, 3);
    // 104.5 vB = 418 WU.
    assert_eq!(s.utxos[1].kind, InputKind::Custom { weight: 418 });
    // The same file is wrong for mainnet: the change address is a testnet one.
    let e = parse(&text)
        .unwrap()
        .validate(Network::Bitcoin)
        .unwrap_err();
    assert_eq!(e.key, "payout.change_address");
}

#[test]
fn unknown_keys_are_refused() {
    let e = parse("[payout]\nfee_pct = 1").unwrap_err();
    assert!(e.contains("fee_pct"), "{e}");
    let e = parse("[payout]\nscheme = \"pplns\"").unwrap_err();
    assert!(e.contains("scheme"), "{e}");
    let e = parse("[payout]\ndefault_scheme = \"fpps\"").unwrap_err();
    assert!(e.contains("fpps"), "{e}");
    let e = parse("[[payout.accounts]]\nname = \"a\"\nwallet = \"x\"").unwrap_err();
    assert!(e.contains("wallet"), "{e}");
}

#[test]
fn errors_name_the_key_and_the_fix() {
    let main_addr = p2wpkh_address(1, Network::Bitcoin).to_string();
    let txid = "ab".repeat(32);
    let cases = [
        ("fee_percent = \"101\"".to_string(), "payout.fee_percent"),
        ("fee_percent = \"1.234\"".into(), "payout.fee_percent"),
        ("fee_percent = -1".into(), "payout.fee_percent"),
        ("pplns_window_x = 0.0".into(), "payout.pplns_window_x"),
        ("pplns_window_x = nan".into(), "payout.pplns_window_x"),
        ("confirmations = 0".into(), "payout.confirmations"),
        ("min_payout_sats = 100".into(), "payout.min_payout_sats"),
        ("fee_account = \"a.b\"".into(), "payout.fee_account"),
        ("change_address = \"nope\"".into(), "payout.change_address"),
        ("fee_rate_sat_per_vb = 0.0".into(), "payout.fee_rate_sat_per_vb"),
        ("max_outputs_per_batch = 0".into(), "payout.max_outputs_per_batch"),
        (
            "[[payout.accounts]]\nname = \"x\"\naddress = \"nope\"".into(),
            "payout.accounts[0].address",
        ),
        (
            "[[payout.accounts]]\nname = \"x.y\"".into(),
            "payout.accounts[0].name",
        ),
        (
            "[[payout.accounts]]\nname = \"x\"\n[[payout.accounts]]\nname = \"x\"".into(),
            "payout.accounts[1].name",
        ),
        (
            "[[payout.accounts]]\nname = \"pool-fee\"\nscheme = \"pps\"".into(),
            "payout.accounts[0].scheme",
        ),
        (
            format!("[[payout.utxos]]\ntxid = \"xyz\"\nvout = 0\nvalue_sats = 1\naddress = \"{main_addr}\""),
            "payout.utxos[0].txid",
        ),
        (
            format!("[[payout.utxos]]\ntxid = \"{txid}\"\nvout = 0\nvalue_sats = 0\naddress = \"{main_addr}\""),
            "payout.utxos[0].value_sats",
        ),
        (
            format!("[[payout.utxos]]\ntxid = \"{txid}\"\nvout = 0\nvalue_sats = 5"),
            "payout.utxos[0].address",
        ),
        (
            // P2WSH: the spending size is unknown without input_vbytes.
            format!(
                "[[payout.utxos]]\ntxid = \"{txid}\"\nvout = 0\nvalue_sats = 5\nscript_pubkey = \"0020{}\"",
                "cd".repeat(32)
            ),
            "payout.utxos[0].input_vbytes",
        ),
        (
            format!(
                "[[payout.utxos]]\ntxid = \"{txid}\"\nvout = 0\nvalue_sats = 5\naddress = \"{main_addr}\"\n[[payout.utxos]]\ntxid = \"{txid}\"\nvout = 0\nvalue_sats = 5\naddress = \"{main_addr}\""
            ),
            "payout.utxos[1].vout",
        ),
    ];
    for (body, key) in cases {
        let text = if body.starts_with("[[") {
            body.clone()
        } else {
            format!("[payout]\n{body}")
        };
        let config = parse(&text).unwrap_or_else(|e| panic!("{body}: {e}"));
        let e = config.validate(Network::Bitcoin).unwrap_err();
        assert_eq!(e.key, key, "{body}");
        let shown = e.to_string();
        assert!(
            shown.contains(key) && shown.contains("fix:") && !e.fix.is_empty(),
            "{shown}"
        );
    }
}
