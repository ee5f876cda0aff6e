//! A resolved register map: which registers hold which [`Quantity`], how to read them in as few
//! requests as the meter allows, and how to turn the words read into a [`Sample`].

use super::config::{PhaseValue, Quantity, RegisterFunction, RegisterSpec, ValueKind, WordOrder};
use super::decode::{decode_scaled, sunspec_not_implemented, sunspec_scale, DecodeError};
use super::reading::PhaseReading;

/// The most registers one read request may ask for (Modbus application protocol, 0x03/0x04).
pub const MAX_READ_REGISTERS: u16 = 125;

/// Where one quantity lives and how it is encoded.
#[derive(Debug, Clone, PartialEq)]
pub struct Point {
    pub quantity: Quantity,
    pub function: RegisterFunction,
    pub address: u16,
    pub kind: ValueKind,
    pub word_order: WordOrder,
    /// Multiplier from the raw number to the quantity's unit.
    pub scale: f64,
    /// SunSpec: address of the `sunssf` register whose power of ten also multiplies the value.
    pub scale_factor_at: Option<u16>,
    /// SunSpec: the "not implemented" markers (0x8000, 0xFFFF, acc32 0) mean "no value".
    pub sunspec_markers: bool,
}

impl Point {
    pub fn plain(
        quantity: Quantity,
        function: RegisterFunction,
        address: u16,
        kind: ValueKind,
        word_order: WordOrder,
        scale: f64,
    ) -> Self {
        Point {
            quantity,
            function,
            address,
            kind,
            word_order,
            scale,
            scale_factor_at: None,
            sunspec_markers: false,
        }
    }

    fn describe(&self) -> String {
        format!(
            "{} ({} register {:#06x}, {})",
            self.quantity.name(),
            self.function.name(),
            self.address,
            self.kind.name()
        )
    }
}

impl From<&RegisterSpec> for Point {
    fn from(r: &RegisterSpec) -> Self {
        Point::plain(
            r.quantity,
            r.function,
            r.address,
            r.kind,
            r.word_order,
            r.scale,
        )
    }
}

/// One read request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Block {
    pub function: RegisterFunction,
    pub start: u16,
    pub count: u16,
}

impl Block {
    fn end(&self) -> u32 {
        u32::from(self.start) + u32::from(self.count)
    }
}

/// The registers of one meter.
#[derive(Debug, Clone, PartialEq)]
pub struct RegisterMap {
    /// Human name for logs and reasons, e.g. "Eastron SDM630".
    pub name: String,
    pub points: Vec<Point>,
    /// Number of phases in a reading (1 to 3).
    pub phases: usize,
    /// Largest run of unused registers a single request may span. Presets whose maps are known
    /// to be dense use a large gap (one request); custom maps use 0, because reading an
    /// undefined register makes many meters answer "illegal data address".
    pub max_gap: u16,
    /// Largest request the meter accepts (at most [`MAX_READ_REGISTERS`]).
    pub max_block: u16,
}

/// Decoded values of one poll.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Sample {
    pub total_power_w: Option<f64>,
    pub import_energy_kwh: Option<f64>,
    pub phases: Vec<PhaseReading>,
    /// Quantities that did not decode, with the reason (e.g. "total_power_w (input register
    /// 0x0034, f32): value is not a number (NaN)").
    pub problems: Vec<(Quantity, String)>,
}

impl Sample {
    /// Why the total power is missing, if it is.
    pub fn total_power_problem(&self) -> Option<&str> {
        self.problems
            .iter()
            .find(|(q, _)| *q == Quantity::TotalPowerW)
            .map(|(_, p)| p.as_str())
    }
}

/// Words returned by the read requests of a plan.
#[derive(Debug, Clone, Default)]
pub struct Words {
    blocks: Vec<(Block, Vec<u16>)>,
}

impl Words {
    pub fn push(&mut self, block: Block, words: Vec<u16>) {
        self.blocks.push((block, words));
    }

    /// `count` consecutive words starting at `address`, if one block covers them.
    pub fn get(&self, function: RegisterFunction, address: u16, count: u16) -> Option<&[u16]> {
        let end = u32::from(address) + u32::from(count);
        self.blocks.iter().find_map(|(b, w)| {
            if b.function == function && b.start <= address && end <= b.end() {
                let from = usize::from(address - b.start);
                w.get(from..from + usize::from(count))
            } else {
                None
            }
        })
    }
}

impl RegisterMap {
    /// A map from the `registers` list of a custom configuration.
    pub fn custom(specs: &[RegisterSpec]) -> Self {
        let points: Vec<Point> = specs.iter().map(Point::from).collect();
        let phases = points
            .iter()
            .filter_map(|p| p.quantity.phase().map(|(i, _)| i + 1))
            .max()
            .unwrap_or(0);
        RegisterMap {
            name: "custom map".into(),
            points,
            phases,
            max_gap: 0,
            max_block: MAX_READ_REGISTERS,
        }
    }

    /// The read requests that cover every point (and SunSpec scale factor) of the map, grouped
    /// by function, each at most [`MAX_READ_REGISTERS`] long.
    pub fn blocks(&self) -> Vec<Block> {
        // (function, start, end) extents of everything to read.
        let mut extents: Vec<(RegisterFunction, u32, u32)> = Vec::new();
        for p in &self.points {
            let start = u32::from(p.address);
            extents.push((p.function, start, start + u32::from(p.kind.words())));
            if let Some(sf) = p.scale_factor_at {
                extents.push((p.function, u32::from(sf), u32::from(sf) + 1));
            }
        }
        extents.sort();
        let max_block = u32::from(self.max_block.clamp(1, MAX_READ_REGISTERS));
        let mut blocks: Vec<(RegisterFunction, u32, u32)> = Vec::new();
        for (f, s, e) in extents {
            let e = e.min(0x1_0000);
            match blocks.last_mut() {
                Some((bf, bs, be))
                    if *bf == f
                        && s <= *be + u32::from(self.max_gap)
                        && e.max(*be) - *bs <= max_block =>
                {
                    *be = (*be).max(e);
                }
                _ => blocks.push((f, s, e)),
            }
        }
        blocks
            .into_iter()
            .filter(|(_, s, e)| e > s)
            .map(|(function, s, e)| Block {
                function,
                start: s as u16,
                count: (e - s) as u16,
            })
            .collect()
    }

    /// Turn the words read into values. Never fails: what does not decode is `None` and listed
    /// in [`Sample::problems`].
    pub fn decode(&self, words: &Words) -> Sample {
        let mut sample = Sample {
            phases: vec![PhaseReading::default(); self.phases],
            ..Sample::default()
        };
        for p in &self.points {
            let value = match decode_point(p, words) {
                Ok(v) => Some(v),
                Err(why) => {
                    sample
                        .problems
                        .push((p.quantity, format!("{}: {why}", p.describe())));
                    None
                }
            };
            match p.quantity {
                Quantity::TotalPowerW => sample.total_power_w = value,
                Quantity::ImportEnergyKwh => sample.import_energy_kwh = value,
                q => {
                    if let Some((i, which)) = q.phase() {
                        if let Some(phase) = sample.phases.get_mut(i) {
                            match which {
                                PhaseValue::Voltage => phase.voltage_v = value,
                                PhaseValue::Current => phase.current_a = value,
                                PhaseValue::Power => phase.power_w = value,
                            }
                        }
                    }
                }
            }
        }
        sample
    }
}

fn decode_point(p: &Point, words: &Words) -> Result<f64, String> {
    let w = words
        .get(p.function, p.address, p.kind.words())
        .ok_or_else(|| "register was not read".to_string())?;
    if p.sunspec_markers && sunspec_not_implemented(w, p.kind) {
        return Err(DecodeError::NotImplemented.to_string());
    }
    let mut scale = p.scale;
    if let Some(sf_at) = p.scale_factor_at {
        let sf = words
            .get(p.function, sf_at, 1)
            .ok_or_else(|| format!("scale factor register {sf_at:#06x} was not read"))?[0];
        scale *= sunspec_scale(sf).ok_or_else(|| {
            format!(
                "scale factor register {sf_at:#06x} holds {} (not implemented or outside -10..=10)",
                sf as i16
            )
        })?;
    }
    decode_scaled(w, p.kind, p.word_order, scale).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::super::decode::encode::*;
    use super::*;
    use RegisterFunction::*;
    use ValueKind::*;
    use WordOrder::*;

    fn spec(q: Quantity, addr: u16, kind: ValueKind) -> RegisterSpec {
        RegisterSpec {
            quantity: q,
            address: addr,
            function: Input,
            kind,
            word_order: HighFirst,
            scale: 1.0,
        }
    }

    #[test]
    fn custom_maps_read_only_adjacent_registers_together() {
        let map = RegisterMap::custom(&[
            spec(Quantity::TotalPowerW, 0x34, F32),
            spec(Quantity::ImportEnergyKwh, 0x48, F32),
            spec(Quantity::L1VoltageV, 0x00, F32),
            spec(Quantity::L2VoltageV, 0x02, F32),
        ]);
        assert_eq!(map.phases, 2);
        assert_eq!(
            map.blocks(),
            vec![
                Block {
                    function: Input,
                    start: 0,
                    count: 4
                },
                Block {
                    function: Input,
                    start: 0x34,
                    count: 2
                },
                Block {
                    function: Input,
                    start: 0x48,
                    count: 2
                },
            ]
        );
    }

    #[test]
    fn dense_maps_merge_but_split_at_125() {
        let mut map = RegisterMap::custom(&[
            spec(Quantity::TotalPowerW, 0, F32),
            spec(Quantity::ImportEnergyKwh, 200, F32),
            spec(Quantity::L1PowerW, 100, U16),
        ]);
        map.points[2].function = Holding;
        map.max_gap = 1000;
        let b = map.blocks();
        assert_eq!(b.len(), 3, "{b:?}");
        assert!(b.iter().all(|b| b.count <= MAX_READ_REGISTERS));
        assert_eq!(
            b[0],
            Block {
                function: Input,
                start: 0,
                count: 2
            }
        );
        assert_eq!(
            b[1],
            Block {
                function: Input,
                start: 200,
                count: 2
            }
        );
        assert_eq!(b[2].function, Holding);
    }

    #[test]
    fn decode_with_problems() {
        let map = RegisterMap::custom(&[
            spec(Quantity::TotalPowerW, 0, F32),
            spec(Quantity::ImportEnergyKwh, 2, F32),
            spec(Quantity::L3CurrentA, 4, U16),
        ]);
        let mut words = Words::default();
        let p = f32_words(1500.5, HighFirst);
        let nan = f32_words(f32::NAN, HighFirst);
        words.push(map.blocks()[0], vec![p[0], p[1], nan[0], nan[1], 7]);
        let s = map.decode(&words);
        assert_eq!(s.total_power_w, Some(1500.5));
        assert_eq!(s.import_energy_kwh, None);
        assert_eq!(s.phases.len(), 3);
        assert_eq!(s.phases[2].current_a, Some(7.0));
        assert_eq!(s.problems.len(), 1);
        assert!(s.problems[0].1.contains("import_energy_kwh"));
        assert!(s.problems[0].1.contains("not a number"));
        assert_eq!(s.total_power_problem(), None);

        // Nothing read at all: every quantity is a problem, no panic.
        let s = map.decode(&Words::default());
        assert_eq!(s.total_power_w, None);
        assert!(s.total_power_problem().unwrap().contains("not read"));
    }

    #[test]
    fn sunspec_scale_factor_and_markers() {
        let mut p = Point::plain(Quantity::TotalPowerW, Holding, 10, I16, HighFirst, 1.0);
        p.scale_factor_at = Some(14);
        p.sunspec_markers = true;
        let map = RegisterMap {
            name: "t".into(),
            points: vec![p],
            phases: 0,
            max_gap: 125,
            max_block: 125,
        };
        let blocks = map.blocks();
        assert_eq!(
            blocks,
            vec![Block {
                function: Holding,
                start: 10,
                count: 5
            }]
        );
        let mut w = Words::default();
        w.push(blocks[0], vec![(-1234i16) as u16, 0, 0, 0, 1]);
        assert_eq!(map.decode(&w).total_power_w, Some(-12340.0));
        let mut w = Words::default();
        w.push(blocks[0], vec![0x8000, 0, 0, 0, 1]);
        let s = map.decode(&w);
        assert_eq!(s.total_power_w, None);
        assert!(s.total_power_problem().unwrap().contains("not implemented"));
        let mut w = Words::default();
        w.push(blocks[0], vec![100, 0, 0, 0, 0x8000]);
        assert!(map
            .decode(&w)
            .total_power_problem()
            .unwrap()
            .contains("scale factor"));
    }
}
