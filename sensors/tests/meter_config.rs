//! Meter configuration errors name the key and the fix.

use blgv_sensors::meter::{validate_all, MeterConfig};

fn parse(json: &str) -> MeterConfig {
    serde_json::from_str(json).unwrap_or_else(|e| panic!("{e}: {json}"))
}

#[test]
fn every_error_names_the_key() {
    let cases: &[(&str, &str)] = &[
        (
            r#"{"id":"m","role":"site_total","transport":{"tcp":"10.0.0.1:502"},"preset":"sdm630","timeout_ms":0}"#,
            "meters[0].timeout_ms = 0",
        ),
        (
            r#"{"id":"m","role":"site_total","transport":{"tcp":"10.0.0.1:502"},"preset":"sdm630","poll_interval_ms":1}"#,
            "meters[0].poll_interval_ms = 1",
        ),
        (
            r#"{"id":"m","role":"site_total","transport":{"tcp":"10.0.0.1:502"},"preset":"sdm630","retries":99}"#,
            "meters[0].retries = 99",
        ),
        (
            r#"{"id":"m","role":"site_total","transport":{"tcp":"10.0.0.1:502"},"preset":"sdm630","poll_interval_ms":2000,"stale_after_ms":1000}"#,
            "meters[0].stale_after_ms = 1000",
        ),
        (
            r#"{"id":"m","role":"site_total","transport":{"tcp":"10.0.0.1:70000"},"preset":"sdm630"}"#,
            "meters[0].transport.tcp",
        ),
        (
            r#"{"id":"m","role":"site_total","transport":{"rtu":{"path":""}},"preset":"sdm630"}"#,
            "meters[0].transport.rtu.path",
        ),
        (
            r#"{"id":"m","role":"site_total","transport":{"rtu":{"path":"/dev/ttyUSB0","data_bits":9}},"preset":"sdm630"}"#,
            "meters[0].transport.rtu.data_bits",
        ),
        (
            r#"{"id":"m","role":"site_total","transport":{"rtu":{"path":"/dev/ttyUSB0"}},"unit_id":0,"preset":"sdm630"}"#,
            "meters[0].unit_id = 0",
        ),
        (
            r#"{"id":"m","role":"site_total","transport":{"tcp":"10.0.0.1"},"preset":"sdm630","registers":[{"quantity":"total_power_w","address":52}]}"#,
            "meters[0].registers is only used with preset = \"custom\"",
        ),
        (
            r#"{"id":"m","role":"site_total","transport":{"tcp":"10.0.0.1"},"preset":"custom","registers":[{"quantity":"total_power_w","address":52},{"quantity":"total_power_w","address":54}]}"#,
            "meters[0].registers[1].quantity = \"total_power_w\" appears twice",
        ),
        (
            r#"{"id":"m","role":"site_total","transport":{"tcp":"10.0.0.1"},"preset":"custom","registers":[{"quantity":"total_power_w","address":52,"scale":0}]}"#,
            "meters[0].registers[0].scale = 0",
        ),
        (
            r#"{"id":"  ","role":"site_total","transport":{"tcp":"10.0.0.1"},"preset":"em24"}"#,
            "meters[0].id is empty",
        ),
    ];
    for (json, want) in cases {
        let err = parse(json).validate_at(0).unwrap_err();
        assert!(err.starts_with(want), "want {want:?}, got {err:?}");
        // Every message says what to do, not only what is wrong.
        assert!(
            ["set", "must", "use", "give", "remove", "keep", "write", "add", "list", "default"]
                .iter()
                .any(|w| err.contains(w)),
            "no fix in {err:?}"
        );
    }
}

#[test]
fn serde_errors_name_unknown_keys_and_values() {
    let e = serde_json::from_str::<MeterConfig>(
        r#"{"id":"m","role":"site_total","transport":{"tcp":"x"},"preset":"sdm999"}"#,
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("sdm999") && e.contains("sdm630"), "{e}");
    let e = serde_json::from_str::<MeterConfig>(
        r#"{"id":"m","role":"grid","transport":{"tcp":"x"},"preset":"sdm630"}"#,
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("site_total"), "{e}");
    let e = serde_json::from_str::<MeterConfig>(
        r#"{"id":"m","role":"feeder","transport":{"modbus":"x"},"preset":"sdm630"}"#,
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("tcp") && e.contains("rtu"), "{e}");
    let e = serde_json::from_str::<MeterConfig>(
        r#"{"id":"m","role":"feeder","transport":{"tcp":"x"},"preset":"custom","registers":[{"quantity":"total_power_w","address":1,"kind":"f16"}]}"#,
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("f16"), "{e}");
}

#[test]
fn unique_ids() {
    let a =
        parse(r#"{"id":"m","role":"site_total","transport":{"tcp":"10.0.0.1"},"preset":"em24"}"#);
    let b = parse(r#"{"id":"f","role":"feeder","transport":{"tcp":"10.0.0.2"},"preset":"em24"}"#);
    validate_all(&[a.clone(), b.clone()]).unwrap();
    let e = validate_all(&[a.clone(), b, a]).unwrap_err();
    assert_eq!(
        e,
        "meters[2].id = \"m\" is already used by meters[0]: give every meter its own id"
    );
}
