//! Meter register decoding on arbitrary register images: every value type and word order, the
//! presets, a custom map, and the SunSpec model walk with scale factors. Nothing may panic and
//! every value that comes out is a finite number; NaN and infinities are bad readings.
//!
//! Shared by the `modbus_decode` fuzz target and the stable corpus replay
//! (`tests/tests/fuzz_corpus.rs`). Input: byte 0 picks the map, the rest are big-endian
//! register words.

use blgv_sensors::meter::decode::{decode_raw, decode_scaled, encode, sunspec_scale};
use blgv_sensors::meter::register_map::{RegisterMap, Words};
use blgv_sensors::meter::sunspec::{self, HoldingReader};
use blgv_sensors::meter::{
    presets, PollError, Quantity, RegisterFunction, RegisterSpec, ValueKind, WordOrder,
};

const KINDS: [ValueKind; 6] = [
    ValueKind::F32,
    ValueKind::F64,
    ValueKind::I16,
    ValueKind::U16,
    ValueKind::I32,
    ValueKind::U32,
];
const ORDERS: [WordOrder; 2] = [WordOrder::HighFirst, WordOrder::LowFirst];
const QUANTITIES: [Quantity; 11] = [
    Quantity::TotalPowerW,
    Quantity::ImportEnergyKwh,
    Quantity::L1VoltageV,
    Quantity::L2VoltageV,
    Quantity::L3VoltageV,
    Quantity::L1CurrentA,
    Quantity::L2CurrentA,
    Quantity::L3CurrentA,
    Quantity::L1PowerW,
    Quantity::L2PowerW,
    Quantity::L3PowerW,
];

pub fn check(data: &[u8]) {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    let words: Vec<u16> = rest
        .chunks(2)
        .map(|c| u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]))
        .collect();
    check_values(&words);
    let map = match selector % 6 {
        0 => presets::sdm630(),
        1 => presets::sdm120(),
        2 => presets::em24(),
        3 => presets::em340(),
        4 => custom_map(&words),
        _ => {
            check_sunspec(selector, &words);
            return;
        }
    };
    check_map(&map, |i| words.get(i).copied().unwrap_or(0));
}

/// Every value type and word order on the first words, against a reference decoding.
fn check_values(words: &[u16]) {
    for kind in KINDS {
        let n = usize::from(kind.words());
        for order in ORDERS {
            let w = &words[..n.min(words.len())];
            let got = decode_raw(w, kind, order);
            if w.len() != n {
                assert!(got.is_err());
                continue;
            }
            let mut msf: Vec<u16> = w.to_vec();
            if order == WordOrder::LowFirst {
                msf.reverse();
            }
            let bits = msf.iter().fold(0u64, |a, x| (a << 16) | u64::from(*x));
            let want = match kind {
                ValueKind::U16 => bits as u16 as f64,
                ValueKind::I16 => bits as u16 as i16 as f64,
                ValueKind::U32 => bits as u32 as f64,
                ValueKind::I32 => bits as u32 as i32 as f64,
                ValueKind::F32 => f32::from_bits(bits as u32) as f64,
                ValueKind::F64 => f64::from_bits(bits),
            };
            if want.is_finite() {
                assert_eq!(got, Ok(want), "{kind:?} {order:?} {w:04x?}");
            } else {
                assert!(got.is_err(), "{kind:?} {order:?} {w:04x?} gave {got:?}");
            }
            // Any scale: the result is finite or an error.
            let scale = f64::from_bits(bits.rotate_left(17));
            if let Ok(v) = decode_scaled(w, kind, order, scale) {
                assert!(v.is_finite());
            }
            // The encoders invert the decoder.
            match kind {
                ValueKind::F32 if want.is_finite() => {
                    let e = encode::f32_words(want as f32, order);
                    assert_eq!(decode_raw(&e, kind, order), Ok(want));
                }
                ValueKind::F64 if want.is_finite() => {
                    let e = encode::f64_words(want, order);
                    assert_eq!(decode_raw(&e, kind, order), Ok(want));
                }
                ValueKind::U32 => {
                    let e = encode::u32_words(want as u32, order);
                    assert_eq!(decode_raw(&e, kind, order), Ok(want));
                }
                ValueKind::I32 => {
                    let e = encode::i32_words(want as i32, order);
                    assert_eq!(decode_raw(&e, kind, order), Ok(want));
                }
                _ => {}
            }
        }
    }
    if let Some(&w) = words.first() {
        if let Some(s) = sunspec_scale(w) {
            assert!(s.is_finite() && (1e-10..=1e10).contains(&s));
        }
    }
}

/// A custom map built from the words: each point takes 3 words (quantity/function/kind/order,
/// address, scale).
fn custom_map(words: &[u16]) -> RegisterMap {
    let specs: Vec<RegisterSpec> = words
        .chunks_exact(3)
        .take(16)
        .map(|c| RegisterSpec {
            quantity: QUANTITIES[usize::from(c[0] & 0xff) % QUANTITIES.len()],
            address: c[1],
            function: if c[0] & 0x100 == 0 {
                RegisterFunction::Input
            } else {
                RegisterFunction::Holding
            },
            kind: KINDS[usize::from(c[0] >> 9) % KINDS.len()],
            word_order: ORDERS[usize::from(c[0] >> 15)],
            scale: f64::from(c[2] as i16) / 16.0,
        })
        .collect();
    RegisterMap::custom(&specs)
}

/// Plan the reads for `map`, answer them from `word(address)`, decode: blocks are legal Modbus
/// requests that cover every point, and every value is finite or reported as a problem.
fn check_map(map: &RegisterMap, word: impl Fn(usize) -> u16) {
    let blocks = map.blocks();
    for b in &blocks {
        assert!((1..=125).contains(&b.count), "{b:?}");
        assert!(u32::from(b.start) + u32::from(b.count) <= 0x1_0000, "{b:?}");
    }
    let mut words = Words::default();
    for b in &blocks {
        let w: Vec<u16> = (0..usize::from(b.count))
            .map(|i| word(usize::from(b.start) + i))
            .collect();
        words.push(*b, w);
    }
    for p in &map.points {
        if u32::from(p.address) + u32::from(p.kind.words()) <= 0x1_0000 {
            assert!(
                words.get(p.function, p.address, p.kind.words()).is_some(),
                "point {p:?} not covered by {blocks:?}"
            );
        }
    }
    let sample = map.decode(&words);
    let finite = |v: Option<f64>| v.is_none_or(f64::is_finite);
    assert!(finite(sample.total_power_w));
    assert!(finite(sample.import_energy_kwh));
    assert_eq!(sample.phases.len(), map.phases);
    for ph in &sample.phases {
        assert!(finite(ph.voltage_v) && finite(ph.current_a) && finite(ph.power_w));
    }
    if sample.total_power_w.is_none()
        && map
            .points
            .iter()
            .any(|p| p.quantity == Quantity::TotalPowerW)
    {
        assert!(sample.total_power_problem().is_some());
    }
}

/// A holding-register image: the words placed at a base, "SunS" optionally in front.
struct Image(Vec<u16>);

impl HoldingReader for Image {
    async fn read_holding(&mut self, address: u16, count: u16) -> Result<Vec<u16>, PollError> {
        let a = usize::from(address);
        Ok((a..a + usize::from(count))
            .map(|i| self.0.get(i).copied().unwrap_or(0xFFFF))
            .collect())
    }
}

fn check_sunspec(selector: u8, words: &[u16]) {
    let base = usize::from(sunspec::BASES[usize::from(selector >> 3) % 3]);
    let mut image = vec![0xFFFFu16; 0x1_0000];
    let mut at = base;
    if selector & 0x40 == 0 {
        image[at] = sunspec::MARKER[0];
        image[at + 1] = sunspec::MARKER[1];
        at += 2;
    }
    for (i, w) in words.iter().enumerate() {
        if let Some(slot) = image.get_mut(at + i) {
            *slot = *w;
        }
    }
    let mut reader = Image(image);
    let found = futures::executor::block_on(sunspec::discover(&mut reader));
    if let Ok(map) = found {
        assert!((1..=3).contains(&map.phases));
        let image = reader.0;
        check_map(&map, |i| image.get(i).copied().unwrap_or(0xFFFF));
    }
}
