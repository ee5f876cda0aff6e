//! Register maps of the meters the site knows by name.
//!
//! Sources (addresses are zero-based, as sent on the wire; vendors document them 1-based as
//! 30001 + address):
//! * Eastron SDM630 / SDM120: input registers, IEEE 754 float32, high word first. Total system
//!   power 0x0034 (W), import active energy 0x0048 (kWh), phase 1..3 line-to-neutral voltage
//!   0x0000/0x0002/0x0004, current 0x0006/0x0008/0x000A, active power 0x000C/0x000E/0x0010
//!   (Eastron "SDM630 Modbus protocol"; the SDM120 has the phase-1 registers only and its total
//!   active power is 0x000C).
//! * Carlo Gavazzi EM24 and EM340: INT32 with the least significant word first, scaled. V L1-N
//!   0x0000/0x0002/0x0004 (V×10), A L1..L3 0x000C/0x000E/0x0010 (A×1000), W L1..L3
//!   0x0012/0x0014/0x0016 (W×10), W sys 0x0028 (W×10), kWh (+) TOT 0x0034 (kWh×10).
//!   Cross-checked against Victron's dbus-modbus-client `carlo_gavazzi.py` (EM24:
//!   `Reg_s32l(0x0028, '/Ac/Power', 10)`, `Reg_s32l(0x0034, '/Ac/Energy/Forward', 10)`, phase
//!   registers 0x0000/0x000c/0x0012 + 2·n) and the EM330/EM340 map used by jenicek001/em340d
//!   (`config/sensors.yaml`: "Total Energy Import" 0x0034 INT32 ×0.1). Note: kWh (+) TOT is at
//!   0x0034, not 0x003E (0x003C/0x003E are the PARTIAL counters). Carlo Gavazzi meters answer
//!   both function 0x03 and 0x04; we use 0x04. The EM340 is documented to serve at most 20
//!   registers per request (em340d `docs/MODBUS_OPTIMIZATION.md`), so Carlo Gavazzi requests are
//!   kept to 20 registers.

use super::config::{Quantity, RegisterFunction, ValueKind, WordOrder};
use super::register_map::{Point, RegisterMap};

/// Eastron SDM630 (three phases).
pub fn sdm630() -> RegisterMap {
    use Quantity::*;
    let f = |q, a| {
        Point::plain(
            q,
            RegisterFunction::Input,
            a,
            ValueKind::F32,
            WordOrder::HighFirst,
            1.0,
        )
    };
    RegisterMap {
        name: "Eastron SDM630".into(),
        points: vec![
            f(TotalPowerW, 0x0034),
            f(ImportEnergyKwh, 0x0048),
            f(L1VoltageV, 0x0000),
            f(L2VoltageV, 0x0002),
            f(L3VoltageV, 0x0004),
            f(L1CurrentA, 0x0006),
            f(L2CurrentA, 0x0008),
            f(L3CurrentA, 0x000A),
            f(L1PowerW, 0x000C),
            f(L2PowerW, 0x000E),
            f(L3PowerW, 0x0010),
        ],
        phases: 3,
        // Eastron maps have undocumented holes (e.g. 0x0036); read only adjacent registers
        // together.
        max_gap: 0,
        max_block: 80,
    }
}

/// Eastron SDM120 (single phase).
pub fn sdm120() -> RegisterMap {
    use Quantity::*;
    let f = |q, a| {
        Point::plain(
            q,
            RegisterFunction::Input,
            a,
            ValueKind::F32,
            WordOrder::HighFirst,
            1.0,
        )
    };
    RegisterMap {
        name: "Eastron SDM120".into(),
        points: vec![
            f(TotalPowerW, 0x000C),
            f(ImportEnergyKwh, 0x0048),
            f(L1VoltageV, 0x0000),
            f(L1CurrentA, 0x0006),
            f(L1PowerW, 0x000C),
        ],
        phases: 1,
        max_gap: 0,
        max_block: 80,
    }
}

fn carlo_gavazzi(name: &str) -> RegisterMap {
    use Quantity::*;
    let f = |q, a, scale| {
        Point::plain(
            q,
            RegisterFunction::Input,
            a,
            ValueKind::I32,
            WordOrder::LowFirst,
            scale,
        )
    };
    RegisterMap {
        name: name.into(),
        points: vec![
            f(TotalPowerW, 0x0028, 0.1),
            f(ImportEnergyKwh, 0x0034, 0.1),
            f(L1VoltageV, 0x0000, 0.1),
            f(L2VoltageV, 0x0002, 0.1),
            f(L3VoltageV, 0x0004, 0.1),
            f(L1CurrentA, 0x000C, 0.001),
            f(L2CurrentA, 0x000E, 0.001),
            f(L3CurrentA, 0x0010, 0.001),
            f(L1PowerW, 0x0012, 0.1),
            f(L2PowerW, 0x0014, 0.1),
            f(L3PowerW, 0x0016, 0.1),
        ],
        phases: 3,
        // 0x0000..0x0035 is a dense block of measurements on both meters.
        max_gap: 20,
        max_block: 20,
    }
}

/// Carlo Gavazzi EM24.
pub fn em24() -> RegisterMap {
    carlo_gavazzi("Carlo Gavazzi EM24")
}

/// Carlo Gavazzi EM340 (same measurement layout as the EM24).
pub fn em340() -> RegisterMap {
    carlo_gavazzi("Carlo Gavazzi EM340")
}

#[cfg(test)]
mod tests {
    use super::super::register_map::Block;
    use super::*;

    #[test]
    fn sdm630_reads_three_blocks() {
        assert_eq!(
            sdm630().blocks(),
            vec![
                Block {
                    function: RegisterFunction::Input,
                    start: 0,
                    count: 0x12
                },
                Block {
                    function: RegisterFunction::Input,
                    start: 0x34,
                    count: 2
                },
                Block {
                    function: RegisterFunction::Input,
                    start: 0x48,
                    count: 2
                },
            ]
        );
    }

    #[test]
    fn carlo_gavazzi_requests_stay_within_20_registers() {
        let blocks = em340().blocks();
        assert!(blocks.iter().all(|b| b.count <= 20), "{blocks:?}");
        // Everything is covered.
        let map = em24();
        for p in &map.points {
            assert!(
                blocks.iter().any(|b| b.start <= p.address
                    && u32::from(p.address) + 2 <= u32::from(b.start) + u32::from(b.count)),
                "{p:?} not covered by {blocks:?}"
            );
        }
    }

    #[test]
    fn sdm120_single_phase() {
        let m = sdm120();
        assert_eq!(m.phases, 1);
        // 0x0002 and 0x0004 do not exist on a single-phase meter: four small requests.
        assert_eq!(m.blocks().len(), 4);
    }
}
