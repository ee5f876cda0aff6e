//! A miner's lines, read through a buffer each worker thread shares between its sessions.
//!
//! Nearly every miner is idle nearly all the time: it sends a submit, then nothing for seconds.
//! A read buffer per connection (`FramedRead`'s) is that many bytes of every idle miner's memory
//! (memory per miner is a goal of its own). Here a session owns only the bytes of a line that has
//! not ended yet, which is nothing at all for a miner between submits: its socket is read into
//! a per-thread scratch buffer, the complete lines are handed out from there, and only an
//! unfinished tail is copied back into the session.
//!
//! Framing is [`LineCodec`]'s, so the proxy and the pool split lines and enforce
//! `max_line_length` the same way.

use blgv_stratum::{CodecError, LineCodec};
use std::cell::Cell;
use tokio::net::TcpStream;

/// Room for new bytes made before each read: several submits, so a miner that pipelines is read
/// in one system call.
const READ_CHUNK: usize = 4096;

thread_local! {
    /// The scratch buffer of this worker thread, lent to one session's read at a time.
    static SCRATCH: Cell<Vec<u8>> = const { Cell::new(Vec::new()) };
}

/// A miner's unfinished line, kept between reads.
#[derive(Debug)]
pub struct LineReader {
    codec: LineCodec,
    /// Bytes after the last newline seen; empty (and unallocated) for nearly every miner.
    partial: Vec<u8>,
    /// Complete lines handed out so far (the slowloris watchdog looks for progress).
    lines_seen: u64,
}

/// What one read gave.
pub enum Read<'r> {
    /// New bytes (or none, after a spurious wake): their complete lines come out of the batch.
    Bytes(Batch<'r>),
    /// The miner closed its side (or the connection failed).
    Closed,
}

impl LineReader {
    pub fn new(max_line_length: usize) -> LineReader {
        LineReader {
            codec: LineCodec::new(max_line_length),
            partial: Vec::new(),
            lines_seen: 0,
        }
    }

    /// Complete (non-blank) lines handed out since the connection opened.
    pub fn lines_seen(&self) -> u64 {
        self.lines_seen
    }

    /// A line has begun and not ended (the slowloris watchdog looks at this).
    pub fn has_partial_line(&self) -> bool {
        !self.partial.is_empty()
    }

    /// Reads what the socket holds (one system call) behind the unfinished line kept from the
    /// previous read. Call once the socket is readable.
    ///
    /// With no unfinished line (nearly always) the bytes go into the thread's scratch buffer.
    /// Behind an unfinished line they go straight into the session's own buffer, after it: a
    /// line that arrives in many small pieces is then copied once, not once per piece (a
    /// 64 KiB line sent a byte at a time would otherwise cost gigabytes of copying).
    pub fn read(&mut self, stream: &TcpStream) -> Read<'_> {
        let (mut buf, source) = if self.partial.is_empty() {
            let mut scratch = SCRATCH.with(Cell::take);
            scratch.clear();
            (scratch, Source::Scratch)
        } else {
            (std::mem::take(&mut self.partial), Source::Partial)
        };
        buf.reserve(READ_CHUNK);
        // 0 bytes: the miner closed its side. WouldBlock: the readiness was stale (tokio has
        // cleared it), and the batch simply holds no new line.
        let open = match stream.try_read_buf(&mut buf) {
            Ok(n) => n > 0,
            Err(e) => e.kind() == std::io::ErrorKind::WouldBlock,
        };
        if !open {
            if source == Source::Scratch {
                give_back(buf);
            }
            return Read::Closed;
        }
        Read::Bytes(Batch {
            reader: self,
            buf,
            pos: 0,
            source,
        })
    }
}

/// The bytes of one read. Lines come out with [`Batch::next_line`]; dropping the batch keeps
/// the unfinished tail in the session and lends the scratch buffer back to the thread.
pub struct Batch<'r> {
    reader: &'r mut LineReader,
    buf: Vec<u8>,
    /// Where the lines not handed out yet begin.
    pos: usize,
    source: Source,
}

/// Whose buffer a batch reads into.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Source {
    /// The thread's scratch buffer: nothing was pending.
    Scratch,
    /// The session's unfinished line, read on behind.
    Partial,
}

impl Batch<'_> {
    /// The next complete line, without its `\n` or `\r` (blank lines skipped), or `None` when
    /// the rest is an unfinished line. An error means the line is over `max_line_length`: the
    /// connection cannot be resynchronised and is to be closed.
    pub fn next_line(&mut self) -> Result<Option<&[u8]>, CodecError> {
        loop {
            let rest = &self.buf[self.pos..];
            match self.reader.codec.find_line(rest)? {
                Some((len, consumed)) => {
                    let start = self.pos;
                    self.pos += consumed;
                    let line = &self.buf[start..start + len];
                    if line.iter().all(u8::is_ascii_whitespace) {
                        continue;
                    }
                    self.reader.lines_seen += 1;
                    return Ok(Some(line));
                }
                None => return Ok(None),
            }
        }
    }
}

impl Drop for Batch<'_> {
    fn drop(&mut self) {
        let mut buf = std::mem::take(&mut self.buf);
        match self.source {
            Source::Scratch => {
                if self.pos < buf.len() {
                    self.reader.partial = buf[self.pos..].to_vec();
                }
                give_back(buf);
            }
            // Every line ended: the session's buffer goes, so an idle miner holds none.
            Source::Partial if self.pos >= buf.len() => {}
            // Still unfinished: the same buffer stays, with no copy when no line ended.
            Source::Partial => {
                buf.drain(..self.pos);
                self.reader.partial = buf;
            }
        }
    }
}

/// Lends a buffer back to the thread, unless a miner's long line grew it past what is worth
/// keeping.
fn give_back(buf: Vec<u8>) {
    if buf.capacity() <= 4 * READ_CHUNK {
        SCRATCH.with(|s| s.set(buf));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;
    use tokio::net::TcpListener;

    async fn pair() -> (tokio::net::TcpStream, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = tokio::net::TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (server, _) = listener.accept().await.unwrap();
        (client, server)
    }

    /// Every line that has arrived, after the socket turns readable.
    async fn lines(reader: &mut LineReader, stream: &TcpStream) -> Option<Vec<Vec<u8>>> {
        stream.readable().await.unwrap();
        match reader.read(stream) {
            Read::Closed => None,
            Read::Bytes(mut batch) => {
                let mut out = Vec::new();
                while let Some(line) = batch.next_line().unwrap() {
                    out.push(line.to_vec());
                }
                Some(out)
            }
        }
    }

    #[tokio::test]
    async fn keeps_only_an_unfinished_line_between_reads() {
        let (mut client, server) = pair().await;
        let mut reader = LineReader::new(100);
        client
            .write_all(b"{\"a\":1}\r\n\r\n{\"b\":2}\n{\"c\"")
            .await
            .unwrap();
        let got = lines(&mut reader, &server).await.unwrap();
        assert_eq!(got, vec![b"{\"a\":1}".to_vec(), b"{\"b\":2}".to_vec()]);
        assert_eq!(reader.partial, b"{\"c\"");
        assert!(reader.has_partial_line());
        client.write_all(b":3}\n").await.unwrap();
        let got = lines(&mut reader, &server).await.unwrap();
        assert_eq!(got, vec![b"{\"c\":3}".to_vec()]);
        // Between lines the session holds no buffer at all.
        assert!(!reader.has_partial_line());
        assert_eq!(reader.partial.capacity(), 0);
        drop(client);
        assert!(lines(&mut reader, &server).await.is_none());
    }

    #[tokio::test]
    async fn a_line_arriving_in_pieces_is_read_on_in_place_not_copied_per_piece() {
        let (mut client, server) = pair().await;
        let mut reader = LineReader::new(1 << 16);
        client.write_all(b"{\"id\":1,").await.unwrap();
        assert!(lines(&mut reader, &server).await.unwrap().is_empty());
        client.write_all(b"\"method\":").await.unwrap();
        assert!(lines(&mut reader, &server).await.unwrap().is_empty());
        // From now on the pieces land behind the kept bytes, in the same allocation (once it
        // has grown: `reserve` doubles it, which is amortised O(1) per byte).
        client.write_all(b" ").await.unwrap();
        assert!(lines(&mut reader, &server).await.unwrap().is_empty());
        let kept = reader.partial.as_ptr();
        for _ in 0..99 {
            client.write_all(b" ").await.unwrap();
            assert!(lines(&mut reader, &server).await.unwrap().is_empty());
            assert_eq!(reader.partial.as_ptr(), kept);
        }
        client.write_all(b"\"x\"}\n{\"id\":2").await.unwrap();
        let got = lines(&mut reader, &server).await.unwrap();
        assert_eq!(got.len(), 1);
        assert!(got[0].starts_with(b"{\"id\":1,\"method\":  "));
        assert!(got[0].ends_with(b"\"x\"}"));
        assert_eq!(reader.partial, b"{\"id\":2");
        client.write_all(b"}\n").await.unwrap();
        assert_eq!(
            lines(&mut reader, &server).await.unwrap(),
            vec![b"{\"id\":2}".to_vec()]
        );
        assert_eq!(reader.partial.capacity(), 0);
    }

    #[tokio::test]
    async fn refuses_a_line_past_the_cap_across_reads() {
        let (mut client, server) = pair().await;
        let mut reader = LineReader::new(16);
        client.write_all(b"0123456789").await.unwrap();
        assert!(lines(&mut reader, &server).await.unwrap().is_empty());
        client.write_all(b"abcdefXYZ").await.unwrap();
        server.readable().await.unwrap();
        let Read::Bytes(mut batch) = reader.read(&server) else {
            panic!("closed")
        };
        assert!(matches!(
            batch.next_line(),
            Err(CodecError::LineTooLong { max: 16 })
        ));
    }
}
