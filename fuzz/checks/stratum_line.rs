//! Stratum V1 line codec and message parsing on hostile bytes.
//!
//! Shared by the `stratum_line` fuzz target and the stable corpus replay
//! (`tests/tests/fuzz_corpus.rs`). Input layout: byte 0 picks the codec's line cap, byte 1 the
//! chunk sizes the stream arrives in, the rest is the stream.

use blgv_stratum::{
    parse_submit_line, ClientRequest, Frame, Job, LineCodec, ServerNotification, Submit,
};
use bytes::BytesMut;
use serde_json::Value;
use tokio_util::codec::Decoder;

pub fn check(data: &[u8]) {
    if data.len() < 2 {
        return;
    }
    let max = 8 + usize::from(data[0]) * 8;
    let seed = data[1];
    let stream = &data[2..];

    check_codec(stream, max, seed);
    // Every line of the stream (as a reader with a generous cap sees it), and the whole stream
    // as one line, through the message parsers.
    for line in stream.split(|b| *b == b'\n') {
        check_line(line);
    }
    check_line(stream);
}

/// What the codec must produce: the non-blank lines (without `\n` and one trailing `\r`)
/// before the first line longer than `max` bytes, and whether such a line exists.
fn model(stream: &[u8], max: usize) -> (Vec<Vec<u8>>, bool) {
    let mut lines = Vec::new();
    let mut rest = stream;
    loop {
        match rest.iter().position(|b| *b == b'\n') {
            Some(end) => {
                if end > max {
                    return (lines, true);
                }
                let mut line = &rest[..end];
                if line.last() == Some(&b'\r') {
                    line = &line[..line.len() - 1];
                }
                if !line.iter().all(u8::is_ascii_whitespace) {
                    lines.push(line.to_vec());
                }
                rest = &rest[end + 1..];
            }
            None => return (lines, rest.len() > max),
        }
    }
}

fn check_codec(stream: &[u8], max: usize, seed: u8) {
    let (want_lines, want_error) = model(stream, max);
    let mut codec = LineCodec::new(max);
    let mut buf = BytesMut::new();
    let mut got = Vec::new();
    let mut error = false;
    let mut at = 0;
    let mut step = 0usize;
    'feed: while at < stream.len() {
        // Chunk sizes 1..=64 from the seed, or everything at once for seed 0.
        let n = if seed == 0 {
            stream.len()
        } else {
            1 + (usize::from(seed).wrapping_mul(step + 7) ^ step) % 64
        };
        step += 1;
        let end = (at + n).min(stream.len());
        buf.extend_from_slice(&stream[at..end]);
        at = end;
        loop {
            match codec.decode(&mut buf) {
                Ok(Some(line)) => {
                    assert!(
                        line.len() <= max,
                        "line of {} bytes past the cap {max}",
                        line.len()
                    );
                    assert!(!line.contains(&b'\n'));
                    assert!(!line.iter().all(u8::is_ascii_whitespace));
                    got.push(line.to_vec());
                }
                Ok(None) => {
                    // Nothing is buffered beyond the cap without an error.
                    assert!(
                        buf.len() <= max,
                        "{} bytes buffered past the cap {max}",
                        buf.len()
                    );
                    break;
                }
                Err(_) => {
                    error = true;
                    break 'feed;
                }
            }
        }
    }
    assert_eq!(error, want_error, "codec error for a stream with cap {max}");
    assert_eq!(got, want_lines, "codec lines for a stream with cap {max}");
}

/// The general path's reading of a submit line.
fn general_submit(line: &[u8]) -> Option<(Value, Submit)> {
    match Frame::parse(line).ok()? {
        Frame::Request { id, method, params } => match ClientRequest::parse(&method, &params) {
            Ok(ClientRequest::Submit(s)) => Some((id, s)),
            _ => None,
        },
        Frame::Response { .. } => None,
    }
}

fn check_line(line: &[u8]) {
    // The fast submit parser may give up, but never disagree with the general path.
    if let Some(fast) = parse_submit_line(line) {
        assert_eq!(
            Some(&fast),
            general_submit(line).as_ref(),
            "fast and general submit parsers disagree on {:?}",
            String::from_utf8_lossy(line)
        );
    }
    let Ok(frame) = Frame::parse(line) else {
        return;
    };
    let Frame::Request { method, params, .. } = frame else {
        return;
    };
    if let Ok(ClientRequest::Submit(s)) = ClientRequest::parse(&method, &params) {
        // to_params is the inverse of from_params.
        let again = Submit::from_params(&s.to_params()).expect("a re-serialized submit parses");
        assert_eq!(again, s);
        // And a submit line we write is read the same by both parsers.
        let text = blgv_stratum::line::request(1, "mining.submit", s.to_params());
        let text = text.trim_end().as_bytes();
        let general = general_submit(text).expect("our own submit line parses");
        assert_eq!(general.1, s);
        if let Some(fast) = parse_submit_line(text) {
            assert_eq!(fast, general);
        }
    }
    if let Ok(ClientRequest::SuggestDifficulty(d)) = ClientRequest::parse(&method, &params) {
        assert!(d.as_f64().is_finite() && d.as_f64() > 0.0);
    }
    match ServerNotification::parse(&method, &params) {
        Ok(ServerNotification::Notify(job)) => {
            let p = job.to_notify_params();
            let again = Job::from_notify_params(&p).expect("a re-serialized notify parses");
            assert_eq!(again.to_notify_params(), p);
            assert_eq!(again.prevhash, job.prevhash);
            assert_eq!(again.coinb1, job.coinb1);
            assert_eq!(again.coinb2, job.coinb2);
            assert_eq!(again.merkle_branch, job.merkle_branch);
            assert_eq!(
                (again.version, again.nbits, again.ntime, again.clean_jobs),
                (job.version, job.nbits, job.ntime, job.clean_jobs)
            );
        }
        Ok(ServerNotification::SetDifficulty(d)) => {
            assert!(d.as_f64().is_finite() && d.as_f64() > 0.0);
            let _ = d.to_target();
            let _ = d.to_json();
        }
        _ => {}
    }
}
