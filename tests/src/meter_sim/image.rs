//! The register images the simulator serves, computed from the values of the moment.
//!
//! Encoding here is written independently of `blgv_sensors::meter::decode` on purpose: the
//! tests compare what the sensors crate decodes with what this module meant to serve.

use std::collections::HashMap;

/// Which meter the simulator pretends to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SimProfile {
    /// Eastron SDM630: input registers 0x0000..=0x004B, float32 high word first.
    Sdm630,
    /// Eastron SDM120: the same float layout with one phase; total power at 0x000C.
    Sdm120,
    /// Carlo Gavazzi EM24: input registers 0x0000..=0x0051, INT32 low word first, scaled.
    Em24,
    /// SunSpec: "SunS" at `base` (holding registers), common model 1, meter model 203
    /// (int16 + scale factors), end marker.
    SunSpec203 { base: u16 },
    /// SunSpec with the float meter model 213.
    SunSpec213 { base: u16 },
}

impl SimProfile {
    pub fn phases(self) -> usize {
        match self {
            SimProfile::Sdm120 => 1,
            _ => 3,
        }
    }

    /// The Modbus table the profile serves its image in.
    pub fn table(self) -> Table {
        match self {
            SimProfile::SunSpec203 { .. } | SimProfile::SunSpec213 { .. } => Table::Holding,
            _ => Table::Input,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Table {
    Input,
    Holding,
}

/// One phase as served.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ServedPhase {
    pub voltage_v: f64,
    pub current_a: f64,
    pub power_w: f64,
}

/// The values a profile serves, already rounded to what its encoding can carry, so a correct
/// decoder reproduces them to within float noise.
#[derive(Debug, Clone, PartialEq)]
pub struct ServedValues {
    pub total_power_w: f64,
    pub import_energy_kwh: f64,
    pub phases: Vec<ServedPhase>,
}

const VOLTS: [f64; 3] = [230.1, 231.2, 229.8];

/// The ideal values for a total power and energy counter: power split evenly over the phases.
pub fn ideal(profile: SimProfile, total_power_w: f64, import_energy_kwh: f64) -> ServedValues {
    let n = profile.phases();
    let per_phase = total_power_w / n as f64;
    ServedValues {
        total_power_w,
        import_energy_kwh,
        phases: (0..n)
            .map(|i| ServedPhase {
                voltage_v: VOLTS[i],
                current_a: per_phase / VOLTS[i],
                power_w: per_phase,
            })
            .collect(),
    }
}

fn f32r(v: f64) -> f64 {
    f64::from(v as f32)
}

fn fixed(v: f64, per_unit: f64) -> f64 {
    (v * per_unit).round() / per_unit
}

/// Smallest SunSpec scale factor (from -3) that lets every value fit an int16.
fn sunssf(values: &[f64]) -> i16 {
    let max = values.iter().fold(0f64, |m, v| m.max(v.abs()));
    let mut sf = -3i16;
    while sf < 10 && (max / 10f64.powi(i32::from(sf))).round() > 32767.0 {
        sf += 1;
    }
    sf
}

fn sf_round(v: f64, sf: i16) -> f64 {
    let unit = 10f64.powi(i32::from(sf));
    (v / unit).round() * unit
}

/// What the profile's encoding makes of `v`.
pub fn quantize(profile: SimProfile, v: ServedValues) -> ServedValues {
    match profile {
        SimProfile::Sdm630 | SimProfile::Sdm120 | SimProfile::SunSpec213 { .. } => {
            let e = if matches!(profile, SimProfile::SunSpec213 { .. }) {
                // Served in Wh as float32.
                f32r(v.import_energy_kwh * 1000.0) / 1000.0
            } else {
                f32r(v.import_energy_kwh)
            };
            ServedValues {
                total_power_w: f32r(v.total_power_w),
                import_energy_kwh: e,
                phases: v
                    .phases
                    .iter()
                    .map(|p| ServedPhase {
                        voltage_v: f32r(p.voltage_v),
                        current_a: f32r(p.current_a),
                        power_w: f32r(p.power_w),
                    })
                    .collect(),
            }
        }
        SimProfile::Em24 => ServedValues {
            total_power_w: fixed(v.total_power_w, 10.0),
            import_energy_kwh: fixed(v.import_energy_kwh, 10.0),
            phases: v
                .phases
                .iter()
                .map(|p| ServedPhase {
                    voltage_v: fixed(p.voltage_v, 10.0),
                    current_a: fixed(p.current_a, 1000.0),
                    power_w: fixed(p.power_w, 10.0),
                })
                .collect(),
        },
        SimProfile::SunSpec203 { .. } => {
            let sfs = SunSpecFactors::for_values(&v);
            ServedValues {
                total_power_w: sf_round(v.total_power_w, sfs.w),
                import_energy_kwh: (v.import_energy_kwh * 1000.0).round() / 1000.0,
                phases: v
                    .phases
                    .iter()
                    .map(|p| ServedPhase {
                        voltage_v: sf_round(p.voltage_v, sfs.v),
                        current_a: sf_round(p.current_a, sfs.a),
                        power_w: sf_round(p.power_w, sfs.w),
                    })
                    .collect(),
            }
        }
    }
}

struct SunSpecFactors {
    a: i16,
    v: i16,
    w: i16,
}

impl SunSpecFactors {
    fn for_values(v: &ServedValues) -> Self {
        let amps: Vec<f64> = v.phases.iter().map(|p| p.current_a).collect();
        let volts: Vec<f64> = v.phases.iter().map(|p| p.voltage_v).collect();
        let mut watts: Vec<f64> = v.phases.iter().map(|p| p.power_w).collect();
        watts.push(v.total_power_w);
        SunSpecFactors {
            a: sunssf(&amps),
            v: sunssf(&volts),
            w: sunssf(&watts),
        }
    }
}

fn put(img: &mut HashMap<u16, u16>, at: u16, words: &[u16]) {
    for (i, w) in words.iter().enumerate() {
        img.insert(at.wrapping_add(i as u16), *w);
    }
}

fn f32_hi_first(v: f64) -> [u16; 2] {
    let b = (v as f32).to_bits();
    [(b >> 16) as u16, b as u16]
}

fn i32_lo_first(v: i32) -> [u16; 2] {
    let b = v as u32;
    [b as u16, (b >> 16) as u16]
}

/// The register image of `profile` serving `v` (the ideal values; the encoding rounds them as
/// [`quantize`] describes).
pub fn image(profile: SimProfile, v: &ServedValues) -> HashMap<u16, u16> {
    let mut img = HashMap::new();
    match profile {
        SimProfile::Sdm630 | SimProfile::Sdm120 => {
            // The whole float area exists, zero where we have nothing to say.
            for a in (0u16..=0x4A).step_by(2) {
                put(&mut img, a, &f32_hi_first(0.0));
            }
            for (i, p) in v.phases.iter().enumerate() {
                let o = 2 * i as u16;
                put(&mut img, o, &f32_hi_first(p.voltage_v));
                put(&mut img, 0x06 + o, &f32_hi_first(p.current_a));
                put(&mut img, 0x0C + o, &f32_hi_first(p.power_w));
            }
            if profile == SimProfile::Sdm630 {
                put(&mut img, 0x34, &f32_hi_first(v.total_power_w));
            }
            put(&mut img, 0x48, &f32_hi_first(v.import_energy_kwh));
        }
        SimProfile::Em24 => {
            for a in 0u16..=0x51 {
                img.insert(a, 0);
            }
            let i = |x: f64, per_unit: f64| i32_lo_first((x * per_unit).round() as i32);
            for (n, p) in v.phases.iter().enumerate() {
                let o = 2 * n as u16;
                put(&mut img, o, &i(p.voltage_v, 10.0));
                put(&mut img, 0x0C + o, &i(p.current_a, 1000.0));
                put(&mut img, 0x12 + o, &i(p.power_w, 10.0));
            }
            put(&mut img, 0x0028, &i(v.total_power_w, 10.0));
            put(&mut img, 0x0033, &[500]); // Hz x10
            put(&mut img, 0x0034, &i(v.import_energy_kwh, 10.0));
        }
        SimProfile::SunSpec203 { base } | SimProfile::SunSpec213 { base } => {
            put(&mut img, base, &[0x5375, 0x6e53]);
            // Common model 1, length 66: manufacturer "BLGV", model "SIM".
            let mut common = vec![0u16; 68];
            common[0] = 1;
            common[1] = 66;
            common[2] = u16::from_be_bytes(*b"BL");
            common[3] = u16::from_be_bytes(*b"GV");
            common[18] = u16::from_be_bytes(*b"SI");
            common[19] = u16::from_be_bytes(*b"M\0");
            put(&mut img, base.wrapping_add(2), &common);
            let m = base.wrapping_add(70);
            let model = if let SimProfile::SunSpec203 { .. } = profile {
                model_203(v)
            } else {
                model_213(v)
            };
            put(&mut img, m, &model);
            put(&mut img, m.wrapping_add(model.len() as u16), &[0xFFFF, 0]);
        }
    }
    img
}

fn model_203(v: &ServedValues) -> Vec<u16> {
    let sfs = SunSpecFactors::for_values(v);
    let enc = |x: f64, sf: i16| ((x / 10f64.powi(i32::from(sf))).round() as i16) as u16;
    let mut m = vec![0u16; 107];
    m[0] = 203;
    m[1] = 105;
    // Points we do not serve are "not implemented".
    for w in m.iter_mut().skip(2) {
        *w = 0x8000;
    }
    for (i, p) in v.phases.iter().enumerate() {
        m[3 + i] = enc(p.current_a, sfs.a);
        m[8 + i] = enc(p.voltage_v, sfs.v);
        m[19 + i] = enc(p.power_w, sfs.w);
    }
    m[6] = sfs.a as u16;
    m[15] = sfs.v as u16;
    m[16] = 500; // Hz
    m[17] = (-1i16) as u16;
    m[18] = enc(v.total_power_w, sfs.w);
    m[22] = sfs.w as u16;
    // Accumulators: 0 = not accumulated.
    for w in &mut m[38..54] {
        *w = 0;
    }
    let wh = (v.import_energy_kwh * 1000.0).round() as u32;
    m[46] = (wh >> 16) as u16;
    m[47] = wh as u16;
    m[54] = 0; // TotWh_SF
    m[105] = 0; // Evt (bitfield32)
    m[106] = 0;
    m
}

fn model_213(v: &ServedValues) -> Vec<u16> {
    let mut m = vec![0u16; 126];
    m[0] = 213;
    m[1] = 124;
    for off in (2..124).step_by(2) {
        let nan = f32_hi_first(f64::NAN);
        m[off] = nan[0];
        m[off + 1] = nan[1];
    }
    let mut f = |off: usize, x: f64| {
        let w = f32_hi_first(x);
        m[off] = w[0];
        m[off + 1] = w[1];
    };
    for (i, p) in v.phases.iter().enumerate() {
        f(4 + 2 * i, p.current_a);
        f(12 + 2 * i, p.voltage_v);
        f(30 + 2 * i, p.power_w);
    }
    f(26, 50.0);
    f(28, v.total_power_w);
    f(68, v.import_energy_kwh * 1000.0);
    m[124] = 0;
    m[125] = 0;
    m
}

/// The SDM630 input-register image as float values by address, for the pymodbus launcher.
pub fn sdm630_floats(v: &ServedValues) -> Vec<(u16, f64)> {
    let mut out: Vec<(u16, f64)> = (0u16..=0x4A).step_by(2).map(|a| (a, 0.0)).collect();
    let mut set = |a: u16, x: f64| {
        if let Some(e) = out.iter_mut().find(|(addr, _)| *addr == a) {
            e.1 = x;
        }
    };
    for (i, p) in v.phases.iter().enumerate() {
        let o = 2 * i as u16;
        set(o, p.voltage_v);
        set(0x06 + o, p.current_a);
        set(0x0C + o, p.power_w);
    }
    set(0x34, v.total_power_w);
    set(0x48, v.import_energy_kwh);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sunspec_factors_fit_int16() {
        let v = ideal(SimProfile::SunSpec203 { base: 40000 }, 1_234_567.0, 10.0);
        let q = quantize(SimProfile::SunSpec203 { base: 40000 }, v.clone());
        assert!((q.total_power_w - 1_234_567.0).abs() <= 50.0, "{q:?}");
        let img = image(SimProfile::SunSpec203 { base: 40000 }, &v);
        assert_eq!(img[&40000], 0x5375);
        assert_eq!(img[&40070], 203);
        assert_eq!(img[&(40070 + 107)], 0xFFFF);
    }

    #[test]
    fn em24_words_are_low_first() {
        let v = ideal(SimProfile::Em24, 100_000.0, 5.0);
        let img = image(SimProfile::Em24, &v);
        // 100000 W x10 = 1_000_000 = 0x000F_4240
        assert_eq!((img[&0x28], img[&0x29]), (0x4240, 0x000F));
    }
}
