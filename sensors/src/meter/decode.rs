//! Pure decoding of Modbus register words into numbers: word order, integer and float types,
//! scale, and the rejection of values that are not numbers (NaN, infinities).
//!
//! Modbus registers are 16-bit words sent big endian. A 32- or 64-bit value spans several words;
//! vendors disagree on which word comes first ([`WordOrder`]), never on the byte order inside a
//! word.

use super::config::{ValueKind, WordOrder};

/// Why words did not give a usable number.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum DecodeError {
    #[error("{kind} needs {need} registers, got {got}")]
    WrongLength {
        kind: &'static str,
        need: usize,
        got: usize,
    },
    #[error("value is not a number ({0})")]
    NotFinite(f64),
    #[error("value is marked \"not implemented\" by the meter")]
    NotImplemented,
}

/// Arrange `words` most significant first.
fn ordered<const N: usize>(words: &[u16], order: WordOrder) -> [u16; N] {
    let mut out = [0u16; N];
    out.copy_from_slice(&words[..N]);
    if order == WordOrder::LowFirst {
        out.reverse();
    }
    out
}

fn be_u32(w: [u16; 2]) -> u32 {
    (u32::from(w[0]) << 16) | u32::from(w[1])
}

fn be_u64(w: [u16; 4]) -> u64 {
    w.iter().fold(0u64, |acc, &x| (acc << 16) | u64::from(x))
}

/// The raw number encoded by `words` (exactly `kind.words()` of them), before any scale.
/// Floats that are NaN or infinite give [`DecodeError::NotFinite`].
pub fn decode_raw(words: &[u16], kind: ValueKind, order: WordOrder) -> Result<f64, DecodeError> {
    let need = usize::from(kind.words());
    if words.len() != need {
        return Err(DecodeError::WrongLength {
            kind: kind.name(),
            need,
            got: words.len(),
        });
    }
    let v = match kind {
        ValueKind::U16 => f64::from(words[0]),
        ValueKind::I16 => f64::from(words[0] as i16),
        ValueKind::U32 => f64::from(be_u32(ordered::<2>(words, order))),
        ValueKind::I32 => f64::from(be_u32(ordered::<2>(words, order)) as i32),
        ValueKind::F32 => f64::from(f32::from_bits(be_u32(ordered::<2>(words, order)))),
        ValueKind::F64 => f64::from_bits(be_u64(ordered::<4>(words, order))),
    };
    if !v.is_finite() {
        return Err(DecodeError::NotFinite(v));
    }
    Ok(v)
}

/// Decode and multiply by `scale`. The result is always finite.
pub fn decode_scaled(
    words: &[u16],
    kind: ValueKind,
    order: WordOrder,
    scale: f64,
) -> Result<f64, DecodeError> {
    let v = decode_raw(words, kind, order)? * scale;
    if !v.is_finite() {
        return Err(DecodeError::NotFinite(v));
    }
    Ok(v)
}

/// SunSpec "not implemented" markers: int16 0x8000, uint16 0xFFFF, acc32/uint32 0 (acc32 means
/// "not accumulated"), int32 0x80000000, float32 NaN (caught by [`decode_raw`]).
pub fn sunspec_not_implemented(words: &[u16], kind: ValueKind) -> bool {
    match (kind, words) {
        (ValueKind::I16, [w]) => *w == 0x8000,
        (ValueKind::U16, [w]) => *w == 0xFFFF,
        (ValueKind::U32, [a, b]) => *a == 0 && *b == 0,
        (ValueKind::I32, [a, b]) => *a == 0x8000 && *b == 0,
        _ => false,
    }
}

/// A SunSpec scale factor register (`sunssf`, int16) as a multiplier 10^sf. `None` for the
/// "not implemented" marker 0x8000 and for exponents outside -10..=10, which the specification
/// does not allow.
pub fn sunspec_scale(sf_word: u16) -> Option<f64> {
    let sf = sf_word as i16;
    if !(-10..=10).contains(&sf) {
        return None;
    }
    Some(10f64.powi(i32::from(sf)))
}

/// Encode helpers, the inverse of [`decode_raw`]; used by tests and simulators.
pub mod encode {
    use super::*;

    fn order_words<const N: usize>(mut w: [u16; N], order: WordOrder) -> [u16; N] {
        if order == WordOrder::LowFirst {
            w.reverse();
        }
        w
    }

    pub fn f32_words(v: f32, order: WordOrder) -> [u16; 2] {
        let b = v.to_bits();
        order_words([(b >> 16) as u16, b as u16], order)
    }

    pub fn u32_words(v: u32, order: WordOrder) -> [u16; 2] {
        order_words([(v >> 16) as u16, v as u16], order)
    }

    pub fn i32_words(v: i32, order: WordOrder) -> [u16; 2] {
        u32_words(v as u32, order)
    }

    pub fn f64_words(v: f64, order: WordOrder) -> [u16; 4] {
        let b = v.to_bits();
        order_words(
            [
                (b >> 48) as u16,
                (b >> 32) as u16,
                (b >> 16) as u16,
                b as u16,
            ],
            order,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::encode::*;
    use super::*;
    use ValueKind::*;
    use WordOrder::*;

    #[test]
    fn float32_high_word_first() {
        // 230.0 = 0x43660000
        assert_eq!(decode_raw(&[0x4366, 0x0000], F32, HighFirst), Ok(230.0));
        assert_eq!(decode_raw(&[0x0000, 0x4366], F32, LowFirst), Ok(230.0));
        // -1234.5 = 0xC49A5000
        assert_eq!(decode_raw(&[0xC49A, 0x5000], F32, HighFirst), Ok(-1234.5));
    }

    #[test]
    fn float64_both_orders() {
        let w = f64_words(-98765.4321, HighFirst);
        assert_eq!(decode_raw(&w, F64, HighFirst), Ok(-98765.4321));
        let w = f64_words(-98765.4321, LowFirst);
        assert_eq!(decode_raw(&w, F64, LowFirst), Ok(-98765.4321));
        assert_ne!(decode_raw(&w, F64, HighFirst), Ok(-98765.4321));
    }

    #[test]
    fn integers_and_sign() {
        assert_eq!(decode_raw(&[0xFFFF], I16, HighFirst), Ok(-1.0));
        assert_eq!(decode_raw(&[0xFFFF], U16, HighFirst), Ok(65535.0));
        assert_eq!(decode_raw(&[0x8000], I16, HighFirst), Ok(-32768.0));
        // i32 -2 low word first: words [0xFFFE, 0xFFFF]
        assert_eq!(decode_raw(&[0xFFFE, 0xFFFF], I32, LowFirst), Ok(-2.0));
        assert_eq!(decode_raw(&[0xFFFF, 0xFFFE], I32, HighFirst), Ok(-2.0));
        assert_eq!(
            decode_raw(&[0xFFFE, 0xFFFF], U32, LowFirst),
            Ok(4_294_967_294.0)
        );
        // 70000 = 0x0001_1170
        assert_eq!(decode_raw(&[0x0001, 0x1170], U32, HighFirst), Ok(70000.0));
        assert_eq!(decode_raw(&[0x1170, 0x0001], U32, LowFirst), Ok(70000.0));
        assert_eq!(decode_raw(&[0x1170, 0x0001], I32, LowFirst), Ok(70000.0));
    }

    #[test]
    fn scale() {
        // EM24: W x10, INT32 LSW first: 123456.7 W sent as 1234567
        let w = i32_words(1_234_567, LowFirst);
        let v = decode_scaled(&w, I32, LowFirst, 0.1).unwrap();
        assert!((v - 123_456.7).abs() < 1e-6);
        let w = i32_words(-50, LowFirst);
        assert_eq!(decode_scaled(&w, I32, LowFirst, 0.1).unwrap(), -5.0);
        assert_eq!(decode_scaled(&[7], U16, HighFirst, 1000.0).unwrap(), 7000.0);
    }

    #[test]
    fn non_finite_is_an_error() {
        assert!(matches!(
            decode_raw(&f32_words(f32::NAN, HighFirst), F32, HighFirst),
            Err(DecodeError::NotFinite(_))
        ));
        assert!(matches!(
            decode_raw(&[0x7F80, 0x0000], F32, HighFirst),
            Err(DecodeError::NotFinite(_))
        ));
        assert!(matches!(
            decode_raw(&[0xFF80, 0x0000], F32, HighFirst),
            Err(DecodeError::NotFinite(_))
        ));
        assert!(matches!(
            decode_raw(&f64_words(f64::INFINITY, LowFirst), F64, LowFirst),
            Err(DecodeError::NotFinite(_))
        ));
        // Finite raw value times a huge scale overflows to infinity.
        assert!(matches!(
            decode_scaled(&f32_words(f32::MAX, HighFirst), F32, HighFirst, 1e300),
            Err(DecodeError::NotFinite(_))
        ));
    }

    #[test]
    fn wrong_length() {
        assert_eq!(
            decode_raw(&[1], F32, HighFirst),
            Err(DecodeError::WrongLength {
                kind: "f32",
                need: 2,
                got: 1
            })
        );
        assert!(decode_raw(&[], U16, HighFirst).is_err());
        assert!(decode_raw(&[1, 2, 3], F64, HighFirst).is_err());
    }

    #[test]
    fn sunspec_markers_and_scale_factors() {
        assert!(sunspec_not_implemented(&[0x8000], I16));
        assert!(!sunspec_not_implemented(&[0x7FFF], I16));
        assert!(sunspec_not_implemented(&[0xFFFF], U16));
        assert!(sunspec_not_implemented(&[0, 0], U32));
        assert!(!sunspec_not_implemented(&[0, 1], U32));
        assert_eq!(sunspec_scale(0), Some(1.0));
        assert_eq!(sunspec_scale((-2i16) as u16), Some(0.01));
        assert_eq!(sunspec_scale(3), Some(1000.0));
        assert_eq!(sunspec_scale(0x8000), None);
        assert_eq!(sunspec_scale(11), None);
    }

    #[test]
    fn round_trips() {
        for v in [0.0f32, 1.5, -3.25, 123_456.78, f32::MIN_POSITIVE] {
            for o in [HighFirst, LowFirst] {
                assert_eq!(decode_raw(&f32_words(v, o), F32, o), Ok(f64::from(v)));
            }
        }
        for v in [0u32, 1, 65535, 65536, u32::MAX] {
            for o in [HighFirst, LowFirst] {
                assert_eq!(decode_raw(&u32_words(v, o), U32, o), Ok(f64::from(v)));
            }
        }
        for v in [i32::MIN, -1, 0, 1, i32::MAX] {
            for o in [HighFirst, LowFirst] {
                assert_eq!(decode_raw(&i32_words(v, o), I32, o), Ok(f64::from(v)));
            }
        }
    }
}
