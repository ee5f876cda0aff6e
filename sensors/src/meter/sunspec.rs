//! SunSpec meters: find the "SunS" marker, walk the model list, build a [`RegisterMap`] for the
//! first meter model.
//!
//! Layout (sunspec/models, `json/model_201.json` … `model_204.json`, `model_211.json` …
//! `model_214.json`; offsets count from the model's ID register, so the model length L excludes
//! the two header registers):
//!
//! | point     | 201–204 (int16 + sunssf) | 211–214 (float32) |
//! |-----------|--------------------------|-------------------|
//! | AphA..C   | 3, 4, 5 (A_SF 6)         | 4, 6, 8           |
//! | PhVphA..C | 8, 9, 10 (V_SF 15)       | 12, 14, 16        |
//! | W         | 18 (W_SF 22)             | 28                |
//! | WphA..C   | 19, 20, 21 (W_SF 22)     | 30, 32, 34        |
//! | TotWhImp  | 46, acc32 (TotWh_SF 54)  | 68                |
//!
//! L is 105 for 201–204 and 124 for 211–214. 201/211 are single phase, 202/212 split phase,
//! 203/213 wye and 204/214 delta three phase. W is passed through as the meter reports it
//! (SunSpec meters report power flowing into the site as positive).

use super::config::{Quantity, RegisterFunction, ValueKind, WordOrder};
use super::error::PollError;
use super::register_map::{Point, RegisterMap, MAX_READ_REGISTERS};

/// Where SunSpec devices put their register map (holding registers, zero-based).
pub const BASES: [u16; 3] = [40000, 0, 50000];
/// "SunS".
pub const MARKER: [u16; 2] = [0x5375, 0x6e53];
/// The model ID that ends the model list.
pub const END_MODEL: u16 = 0xFFFF;
/// Safety bound on the model walk.
const MAX_MODELS: usize = 64;

/// Reads holding registers; implemented over a live Modbus connection by the poller and by
/// in-memory images in tests.
#[allow(async_fn_in_trait)]
pub trait HoldingReader {
    async fn read_holding(&mut self, address: u16, count: u16) -> Result<Vec<u16>, PollError>;
}

/// Find the SunSpec map and build the register map of its first meter model.
///
/// Transport failures end the discovery at once (the caller retries on the next attempt);
/// exceptions at one base address just move on to the next base.
pub async fn discover<R: HoldingReader>(reader: &mut R) -> Result<RegisterMap, PollError> {
    let mut notes = Vec::new();
    for base in BASES {
        match reader.read_holding(base, 2).await {
            Ok(w) if w == MARKER => return walk(reader, base).await,
            Ok(w) => notes.push(format!("{base}: {w:04x?}")),
            Err(e @ PollError::Exception { .. }) => notes.push(format!("{base}: {e}")),
            Err(e) => return Err(e),
        }
    }
    Err(PollError::SunSpec(format!(
        "no \"SunS\" marker (0x5375 0x6e53) at holding registers 40000, 0 or 50000 ({})",
        notes.join("; ")
    )))
}

async fn walk<R: HoldingReader>(reader: &mut R, base: u16) -> Result<RegisterMap, PollError> {
    let mut at = u32::from(base) + 2;
    let mut seen = Vec::new();
    for _ in 0..MAX_MODELS {
        if at + 2 > 0x1_0000 {
            break;
        }
        let header = reader.read_holding(at as u16, 2).await?;
        let (id, len) = (header[0], header[1]);
        if id == END_MODEL {
            break;
        }
        seen.push(id);
        if let Some(map) = meter_model(id, at, len)? {
            return Ok(map);
        }
        at += 2 + u32::from(len);
    }
    Err(PollError::SunSpec(format!(
        "the SunSpec map at {base} has no meter model (201-204 or 211-214); models found: {seen:?}"
    )))
}

/// The register map of meter model `id` whose ID register is at `start`, or `None` when `id` is
/// not a meter model.
pub fn meter_model(id: u16, start: u32, len: u16) -> Result<Option<RegisterMap>, PollError> {
    let (float, phases) = match id {
        201..=204 => (false, [1, 2, 3, 3][usize::from(id - 201)]),
        211..=214 => (true, [1, 2, 3, 3][usize::from(id - 211)]),
        _ => return Ok(None),
    };
    // Highest offset we read, plus one.
    let needed: u32 = if float { 70 } else { 55 };
    if u32::from(len) + 2 < needed {
        return Err(PollError::SunSpec(format!(
            "model {id} at {start} is {len} registers long; a meter model needs at least {}",
            needed - 2
        )));
    }
    if start + needed > 0x1_0000 {
        return Err(PollError::SunSpec(format!(
            "model {id} at {start} runs past register 0xFFFF"
        )));
    }
    let at = |offset: u32| (start + offset) as u16;
    let mut points = Vec::new();
    let mut add = |q: Quantity, off: u32, sf: Option<u32>, kind: ValueKind, scale: f64| {
        let mut p = Point::plain(
            q,
            RegisterFunction::Holding,
            at(off),
            kind,
            WordOrder::HighFirst,
            scale,
        );
        p.scale_factor_at = sf.map(at);
        p.sunspec_markers = true;
        points.push(p);
    };
    use Quantity::*;
    let volts = [L1VoltageV, L2VoltageV, L3VoltageV];
    let amps = [L1CurrentA, L2CurrentA, L3CurrentA];
    let watts = [L1PowerW, L2PowerW, L3PowerW];
    if float {
        let f = ValueKind::F32;
        add(TotalPowerW, 28, None, f, 1.0);
        add(ImportEnergyKwh, 68, None, f, 0.001);
        for i in 0..phases {
            let o = 2 * i as u32;
            add(amps[i], 4 + o, None, f, 1.0);
            add(volts[i], 12 + o, None, f, 1.0);
            add(watts[i], 30 + o, None, f, 1.0);
        }
    } else {
        let i16k = ValueKind::I16;
        add(TotalPowerW, 18, Some(22), i16k, 1.0);
        add(ImportEnergyKwh, 46, Some(54), ValueKind::U32, 0.001);
        for i in 0..phases {
            let o = i as u32;
            add(amps[i], 3 + o, Some(6), i16k, 1.0);
            add(volts[i], 8 + o, Some(15), i16k, 1.0);
            add(watts[i], 19 + o, Some(22), i16k, 1.0);
        }
    }
    Ok(Some(RegisterMap {
        name: format!("SunSpec model {id} at {start}"),
        points,
        phases,
        max_gap: MAX_READ_REGISTERS,
        max_block: MAX_READ_REGISTERS,
    }))
}

#[cfg(test)]
mod tests {
    use super::super::decode::encode::f32_words;
    use super::super::error::exception_name;
    use super::super::register_map::Words;
    use super::*;
    use std::collections::HashMap;

    /// A sparse holding-register image; unmapped registers raise "illegal data address".
    struct Image(HashMap<u16, u16>);

    impl HoldingReader for Image {
        async fn read_holding(&mut self, address: u16, count: u16) -> Result<Vec<u16>, PollError> {
            (0..count)
                .map(|i| {
                    address
                        .checked_add(i)
                        .and_then(|a| self.0.get(&a).copied())
                        .ok_or(PollError::Exception {
                            code: 2,
                            name: exception_name(2),
                            request: "test".into(),
                        })
                })
                .collect()
        }
    }

    fn put(img: &mut HashMap<u16, u16>, at: u16, words: &[u16]) {
        for (i, w) in words.iter().enumerate() {
            img.insert(at + i as u16, *w);
        }
    }

    fn image_203(base: u16) -> HashMap<u16, u16> {
        let mut img = HashMap::new();
        put(&mut img, base, &MARKER);
        // Common model 1, length 66 (contents irrelevant).
        put(&mut img, base + 2, &[1, 66]);
        put(&mut img, base + 4, &[0; 66]);
        let m = base + 70;
        let mut model = vec![0u16; 107];
        model[0] = 203;
        model[1] = 105;
        model[3] = 1053; // A phase A, A_SF -1 -> 105.3 A
        model[6] = (-1i16) as u16;
        model[8] = 2301; // V phase A, V_SF -1
        model[9] = 0x8000; // phase B voltage not implemented
        model[15] = (-1i16) as u16;
        model[18] = 12_345; // W, W_SF 1 -> 123450 W
        model[19] = 4_115;
        model[22] = 1;
        model[46] = 0x0001; // TotWhImp = 0x0001_E240 = 123456 Wh, TotWh_SF 0
        model[47] = 0xE240;
        model[54] = 0;
        put(&mut img, m, &model);
        put(&mut img, m + 107, &[END_MODEL, 0]);
        img
    }

    fn run<F: std::future::Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(f)
    }

    async fn read_all(map: &RegisterMap, img: &mut Image) -> Words {
        let mut words = Words::default();
        for b in map.blocks() {
            let w = img.read_holding(b.start, b.count).await.unwrap();
            words.push(b, w);
        }
        words
    }

    #[test]
    fn finds_model_203_at_each_base() {
        for base in BASES {
            let mut img = Image(image_203(base));
            let map = run(discover(&mut img)).unwrap();
            assert_eq!(map.phases, 3);
            assert_eq!(map.blocks().len(), 1, "one request for the whole model");
            let s = run(read_all(&map, &mut img));
            let sample = map.decode(&s);
            assert_eq!(sample.total_power_w, Some(123_450.0));
            assert!((sample.import_energy_kwh.unwrap() - 123.456).abs() < 1e-9);
            assert!((sample.phases[0].current_a.unwrap() - 105.3).abs() < 1e-9);
            assert!((sample.phases[0].voltage_v.unwrap() - 230.1).abs() < 1e-9);
            assert_eq!(sample.phases[1].voltage_v, None);
            assert_eq!(sample.phases[0].power_w, Some(41_150.0));
        }
    }

    #[test]
    fn float_model_213() {
        let mut img = HashMap::new();
        put(&mut img, 40000, &MARKER);
        let m = 40002u16;
        let mut model = vec![0u16; 126];
        model[0] = 213;
        model[1] = 124;
        let w = f32_words(-2500.5, WordOrder::HighFirst);
        model[28] = w[0];
        model[29] = w[1];
        let e = f32_words(9_876_500.0, WordOrder::HighFirst);
        model[68] = e[0];
        model[69] = e[1];
        put(&mut img, m, &model);
        put(&mut img, m + 126, &[END_MODEL, 0]);
        let mut img = Image(img);
        let map = run(discover(&mut img)).unwrap();
        let words = run(read_all(&map, &mut img));
        let s = map.decode(&words);
        assert_eq!(s.total_power_w, Some(-2500.5));
        assert!((s.import_energy_kwh.unwrap() - 9876.5).abs() < 1e-9);
    }

    #[test]
    fn no_marker_no_meter_short_model() {
        let mut img = Image(HashMap::new());
        let e = run(discover(&mut img)).unwrap_err().to_string();
        assert!(e.contains("no \"SunS\" marker"), "{e}");

        let mut h = HashMap::new();
        put(&mut h, 0, &MARKER);
        put(&mut h, 2, &[1, 2, 0, 0, 101, 2, 0, 0, END_MODEL, 0]);
        let e = run(discover(&mut Image(h))).unwrap_err().to_string();
        assert!(
            e.contains("no meter model") && e.contains("[1, 101]"),
            "{e}"
        );

        let mut h = HashMap::new();
        put(&mut h, 0, &MARKER);
        put(&mut h, 2, &[203, 10]);
        let e = run(discover(&mut Image(h))).unwrap_err().to_string();
        assert!(e.contains("10 registers long"), "{e}");

        // A model list that never ends and runs off the address space stops cleanly.
        let mut h = HashMap::new();
        put(&mut h, 50000, &MARKER);
        put(&mut h, 50002, &[1, 60000]);
        let e = run(discover(&mut Image(h))).unwrap_err().to_string();
        assert!(e.contains("no meter model"), "{e}");
    }
}
