//! Newline-delimited framing with a hard cap on line length.
//!
//! A miner (or an attacker) that never sends a newline must not make us buffer without bound, so
//! the decoder fails as soon as a line passes `max_line_length` bytes. After that error the
//! connection cannot be resynchronised safely and the caller closes it.

use bytes::BytesMut;
use tokio_util::codec::{Decoder, Encoder};

/// Default cap: a `mining.notify` with a long merkle branch is a few KiB; 64 KiB is generous.
pub const DEFAULT_MAX_LINE_LENGTH: usize = 64 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    #[error("line longer than {max} bytes without a newline")]
    LineTooLong { max: usize },
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// Splits a byte stream into lines (without the `\n`, and without a trailing `\r`). Empty lines
/// are skipped: some firmware sends `\r\n\r\n`.
#[derive(Debug, Clone)]
pub struct LineCodec {
    max_line_length: usize,
    /// Bytes already scanned for a newline, so a slowly arriving long line is scanned once.
    scanned: usize,
}

impl LineCodec {
    pub fn new(max_line_length: usize) -> LineCodec {
        LineCodec {
            max_line_length,
            scanned: 0,
        }
    }

    pub fn max_line_length(&self) -> usize {
        self.max_line_length
    }
}

impl Default for LineCodec {
    fn default() -> Self {
        LineCodec::new(DEFAULT_MAX_LINE_LENGTH)
    }
}

impl LineCodec {
    /// The first complete line of `buf`: its length without the newline (and a `\r` before
    /// it), and the bytes it takes with its newline. `None` while the line has not ended yet;
    /// the bytes searched are remembered, so call again with the same bytes plus what arrived
    /// since. Blank lines are returned like any other (the caller skips them).
    pub fn find_line(&mut self, buf: &[u8]) -> Result<Option<(usize, usize)>, CodecError> {
        let from = self.scanned.min(buf.len());
        match buf[from..].iter().position(|b| *b == b'\n') {
            Some(offset) => {
                let end = from + offset;
                self.scanned = 0;
                if end > self.max_line_length {
                    return Err(CodecError::LineTooLong {
                        max: self.max_line_length,
                    });
                }
                let len = if end > 0 && buf[end - 1] == b'\r' {
                    end - 1
                } else {
                    end
                };
                Ok(Some((len, end + 1)))
            }
            None => {
                self.scanned = buf.len();
                if buf.len() > self.max_line_length {
                    return Err(CodecError::LineTooLong {
                        max: self.max_line_length,
                    });
                }
                Ok(None)
            }
        }
    }
}

impl Decoder for LineCodec {
    type Item = BytesMut;
    type Error = CodecError;

    fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<BytesMut>, CodecError> {
        while let Some((len, consumed)) = self.find_line(buf)? {
            let mut line = buf.split_to(consumed);
            line.truncate(len);
            if line.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            return Ok(Some(line));
        }
        Ok(None)
    }
}

impl<T: AsRef<[u8]>> Encoder<T> for LineCodec {
    type Error = CodecError;

    /// Items are expected to carry their own trailing newline (see [`crate::line`]).
    fn encode(&mut self, item: T, dst: &mut BytesMut) -> Result<(), CodecError> {
        dst.extend_from_slice(item.as_ref());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_lines_and_skips_blank_ones() {
        let mut c = LineCodec::new(100);
        let mut b = BytesMut::from(&b"{\"a\":1}\r\n\r\n{\"b\":2}\n{\"c\""[..]);
        assert_eq!(&c.decode(&mut b).unwrap().unwrap()[..], b"{\"a\":1}");
        assert_eq!(&c.decode(&mut b).unwrap().unwrap()[..], b"{\"b\":2}");
        assert!(c.decode(&mut b).unwrap().is_none());
        b.extend_from_slice(b":3}\n");
        assert_eq!(&c.decode(&mut b).unwrap().unwrap()[..], b"{\"c\":3}");
    }

    #[test]
    fn refuses_a_line_past_the_cap_before_seeing_its_end() {
        let mut c = LineCodec::new(16);
        let mut b = BytesMut::from(&[b'x'; 17][..]);
        assert!(matches!(
            c.decode(&mut b),
            Err(CodecError::LineTooLong { max: 16 })
        ));
        let mut c = LineCodec::new(16);
        let mut b = BytesMut::from(&b"0123456789abcdefXYZ\n"[..]);
        assert!(matches!(
            c.decode(&mut b),
            Err(CodecError::LineTooLong { .. })
        ));
    }
}
