//! A cancel-safe, length-capped line reader for Stratum's newline-delimited framing.
//!
//! Both the pool and the miner wait for "a line or something else" in `tokio::select!`, so the
//! read must survive being cancelled half-way: all partial state lives in the struct and
//! nothing is lost if `next_line` is dropped and called again. Lines longer than
//! [`MAX_LINE`] are discarded and reported as [`Line::TooLong`] so a peer cannot make us
//! buffer without limit; invalid UTF-8 is replaced rather than treated as a fatal error.

use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};

/// Longest accepted line in bytes (Stratum messages are a few KiB at most).
pub const MAX_LINE: usize = 64 * 1024;

/// One item read from the stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Line {
    /// A complete line without its `\r\n`/`\n`; never empty.
    Text(String),
    /// A line longer than [`MAX_LINE`] was skipped.
    TooLong,
}

/// Reads [`Line`]s from an async byte stream.
pub struct LineReader<R> {
    reader: BufReader<R>,
    buf: Vec<u8>,
    discarding: bool,
}

impl<R: AsyncRead + Unpin> LineReader<R> {
    pub fn new(inner: R) -> Self {
        Self {
            reader: BufReader::new(inner),
            buf: Vec::new(),
            discarding: false,
        }
    }

    /// The next non-empty line, or `Ok(None)` at end of stream. Cancel-safe.
    pub async fn next_line(&mut self) -> std::io::Result<Option<Line>> {
        loop {
            // fill_buf is cancel-safe and nothing is consumed before the bytes are copied.
            let available = self.reader.fill_buf().await?;
            if available.is_empty() {
                // EOF: hand out an unterminated last line if there is one.
                let rest = std::mem::take(&mut self.buf);
                if self.discarding {
                    self.discarding = false;
                    return Ok(Some(Line::TooLong));
                }
                return Ok(Self::finish(rest));
            }
            let (chunk, used, complete) = match available.iter().position(|&b| b == b'\n') {
                Some(pos) => (&available[..pos], pos + 1, true),
                None => (available, available.len(), false),
            };
            if !self.discarding {
                self.buf.extend_from_slice(chunk);
                if self.buf.len() > MAX_LINE {
                    self.buf = Vec::new();
                    self.discarding = true;
                }
            }
            self.reader.consume(used);
            if complete {
                if std::mem::take(&mut self.discarding) {
                    return Ok(Some(Line::TooLong));
                }
                let line = std::mem::take(&mut self.buf);
                if let Some(l) = Self::finish(line) {
                    return Ok(Some(l));
                }
            }
        }
    }

    fn finish(bytes: Vec<u8>) -> Option<Line> {
        let text = String::from_utf8_lossy(&bytes);
        let text = text.trim_end_matches(['\r', '\n']).trim();
        (!text.is_empty()).then(|| Line::Text(text.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn splits_skips_blank_and_caps_length() {
        let long = "x".repeat(MAX_LINE + 10);
        let input = format!("a\r\n\n  \nb\n{long}\nc");
        let mut r = LineReader::new(input.as_bytes());
        assert_eq!(r.next_line().await.unwrap(), Some(Line::Text("a".into())));
        assert_eq!(r.next_line().await.unwrap(), Some(Line::Text("b".into())));
        assert_eq!(r.next_line().await.unwrap(), Some(Line::TooLong));
        assert_eq!(r.next_line().await.unwrap(), Some(Line::Text("c".into())));
        assert_eq!(r.next_line().await.unwrap(), None);
    }

    #[tokio::test]
    async fn invalid_utf8_is_replaced_not_fatal() {
        let input: &[u8] = b"\xff\xfe{}\nok\n";
        let mut r = LineReader::new(input);
        assert!(matches!(r.next_line().await.unwrap(), Some(Line::Text(_))));
        assert_eq!(r.next_line().await.unwrap(), Some(Line::Text("ok".into())));
    }
}
