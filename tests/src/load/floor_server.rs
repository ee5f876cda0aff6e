//! The floor benchmark's server: `load-harness floor-server`, started as a child process by
//! [`super::floor`].
//!
//! It does the least socket work any Stratum proxy must do for the load the harness puts on
//! `blgv-proxy`, and nothing else: accept, read the bytes of each line, answer every complete
//! line with one fixed reply, and write one fixed 600-byte line into every socket on command.
//! No JSON, no shares, no upstream, no allocation per line. Whatever CPU it spends per share,
//! and however long its send loop takes, is what this machine's loopback TCP costs; a proxy
//! cannot go below it.
//!
//! One thread runs a mio event loop (mio is tokio's own poller, so the syscalls are the ones
//! the proxy's runtime makes: epoll_wait, read, write). A second thread only blocks on stdin,
//! the control channel, and hands each line over through a [`mio::Waker`]; it costs nothing
//! while a measurement runs. It is a separate process so that it has its own file-descriptor
//! budget (15,000 connections need 15,000 descriptors on each side) and its own
//! /proc/PID/{stat,status,task} figures.
//!
//! Protocol on stdout, one line each: `port P` at start; `accepted N` (connections open) for
//! the control line `count`; `fanout NS WRITTEN BLOCKED START_NS ERRORS CPU_NS` for `fanout`, where
//! NS is the wall time from the first write's start to the last write's return, WRITTEN the
//! sockets that took the whole line at once, BLOCKED those that would block (the rest of the
//! line is queued and sent when they drain), START_NS the CLOCK_MONOTONIC time of the first
//! write (shared with the harness process). EOF on stdin ends the process.

use std::io::{BufRead, ErrorKind, Read, Write};
use std::os::fd::AsRawFd;
use std::sync::mpsc;
use std::sync::Arc;

use anyhow::Context;
use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token, Waker};

use super::process::raise_nofile_limit;

/// The fixed answer to every line (a `mining.submit` accepted).
pub const REPLY: &[u8] = b"{\"id\":1,\"result\":true,\"error\":null}\n";
/// The size of the fan-out line (a `mining.notify` is about this long).
pub const FANOUT_LINE_LEN: usize = 600;

const LISTENER: Token = Token(0);
const CONTROL: Token = Token(1);
/// Connection `i` (in accept order) has token `FIRST_CONN + i`.
const FIRST_CONN: usize = 2;
/// Write problems printed on stderr before going quiet.
const NOTES_KEPT: u32 = 10;

/// CLOCK_MONOTONIC in ns: the same clock in every process of the machine, so the harness can
/// compare its receive times with the server's send times.
pub fn mono_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes the struct passed.
    unsafe {
        libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts);
    }
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// A `mining.notify`-shaped line of exactly [`FANOUT_LINE_LEN`] bytes, '\n' included.
pub fn fanout_line() -> Vec<u8> {
    let head = b"{\"id\":null,\"method\":\"mining.notify\",\"params\":[\"";
    let tail = b"\"]}\n";
    let mut line = head.to_vec();
    line.resize(FANOUT_LINE_LEN - tail.len(), b'0');
    line.extend_from_slice(tail);
    line
}

/// How the server reads.
#[derive(Debug, Clone, Copy, Default)]
pub struct ServerOptions {
    /// Stop reading a socket at the first short read instead of at WouldBlock. On epoll (edge
    /// triggered) a read that does not fill the buffer shows the socket is drained, and tokio
    /// relies on it (tokio#5866): it saves the final read() that only returns EAGAIN.
    pub skip_final_read: bool,
}

struct Conn {
    stream: TcpStream,
    /// Bytes of an unfinished line (a real server keeps them to parse the line once whole).
    partial: Vec<u8>,
    /// Output the socket would not take yet; sent on the next writable event.
    pending: Vec<u8>,
}

impl Conn {
    /// Writes `data` after anything already queued; queues what the socket will not take.
    /// Returns whether the socket took everything at once.
    fn send(&mut self, data: &[u8]) -> std::io::Result<bool> {
        if !self.pending.is_empty() {
            self.pending.extend_from_slice(data);
            self.flush()?;
            return Ok(false);
        }
        let n = write_some(&self.stream, data)?;
        if n < data.len() {
            self.pending.extend_from_slice(&data[n..]);
            return Ok(false);
        }
        Ok(true)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        if !self.pending.is_empty() {
            let n = write_some(&self.stream, &self.pending)?;
            self.pending.drain(..n);
        }
        Ok(())
    }
}

/// This process's CPU time (user + system) in ns, threads that have exited included: the
/// fan-out's sender threads are gone by the time anyone could read their schedstat.
fn process_cpu_ns() -> u64 {
    // SAFETY: getrusage only writes into the struct it is given.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) } != 0 {
        return 0;
    }
    let ns = |t: libc::timeval| t.tv_sec as u64 * 1_000_000_000 + t.tv_usec as u64 * 1_000;
    ns(usage.ru_utime) + ns(usage.ru_stime)
}

/// Writes `line` once into every connection, on `threads` threads over equal runs of them.
/// Returns (taken whole, queued for later, failed).
fn fan_out(conns: &mut [Option<Conn>], line: &[u8], threads: usize) -> (u64, u64, u64) {
    fn run(conns: &mut [Option<Conn>], line: &[u8]) -> (u64, u64, u64) {
        let (mut written, mut blocked, mut errors) = (0u64, 0u64, 0u64);
        for c in conns.iter_mut().flatten() {
            match c.send(line) {
                Ok(true) => written += 1,
                Ok(false) => blocked += 1,
                Err(_) => errors += 1,
            }
        }
        (written, blocked, errors)
    }
    if threads <= 1 {
        return run(conns, line);
    }
    let per = conns.len().div_ceil(threads).max(1);
    std::thread::scope(|s| {
        let runs: Vec<_> = conns
            .chunks_mut(per)
            .map(|part| s.spawn(move || run(part, line)))
            .collect();
        runs.into_iter()
            .map(|h| h.join().unwrap_or((0, 0, 1)))
            .fold((0, 0, 0), |a, b| (a.0 + b.0, a.1 + b.1, a.2 + b.2))
    })
}

/// Writes as much of `data` as the socket takes now (a loop only for partial writes).
fn write_some(mut stream: &TcpStream, data: &[u8]) -> std::io::Result<usize> {
    let mut done = 0;
    while done < data.len() {
        match stream.write(&data[done..]) {
            Ok(0) => return Err(ErrorKind::WriteZero.into()),
            Ok(n) => done += n,
            Err(e) if e.kind() == ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(done)
}

/// Reads everything the socket has and answers every complete line. Returns false when the
/// connection is finished (EOF).
fn on_readable(
    conn: &mut Conn,
    buf: &mut [u8],
    out: &mut Vec<u8>,
    opts: ServerOptions,
) -> std::io::Result<bool> {
    let mut lines = 0usize;
    let mut open = true;
    loop {
        match (&conn.stream).read(buf) {
            Ok(0) => {
                open = false;
                break;
            }
            Ok(n) => {
                let chunk = &buf[..n];
                match chunk.iter().rposition(|&b| b == b'\n') {
                    Some(last) => {
                        lines += chunk.iter().filter(|&&b| b == b'\n').count();
                        // Whatever was unfinished is now a whole line; keep the new tail.
                        conn.partial.clear();
                        conn.partial.extend_from_slice(&chunk[last + 1..]);
                    }
                    None => conn.partial.extend_from_slice(chunk),
                }
                if opts.skip_final_read && n < buf.len() {
                    break;
                }
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    if lines > 0 {
        // One write for all the replies of this read batch.
        out.clear();
        for _ in 0..lines {
            out.extend_from_slice(REPLY);
        }
        conn.send(out)?;
    }
    Ok(open)
}

/// Runs the server until stdin ends. Errors are for a server that could not start or whose
/// event loop failed; a connection's own errors close that connection (noted on stderr).
pub fn run(opts: ServerOptions) -> anyhow::Result<()> {
    raise_nofile_limit()?;
    let mut poll = Poll::new().context("creating the poller")?;
    let mut listener = TcpListener::bind(([127, 0, 0, 1], 0).into()).context("binding")?;
    // mio listens with std's backlog of 128: a connect burst of 15,000 overflows it whenever
    // this thread is off the CPU for a moment, and each dropped SYN costs its client a 1 s
    // retransmit. Calling listen() again on a listening socket only changes the backlog (the
    // kernel caps it at net.core.somaxconn).
    // SAFETY: listen on a socket we own.
    if unsafe { libc::listen(listener.as_raw_fd(), 65_535) } != 0 {
        return Err(std::io::Error::last_os_error()).context("listen (backlog)");
    }
    let port = listener.local_addr()?.port();
    poll.registry()
        .register(&mut listener, LISTENER, Interest::READABLE)?;
    // This thread keeps a reference: the waker's eventfd must stay open until the loop has
    // collected the last wake-up (closing it drops a pending event from epoll).
    let waker = Arc::new(Waker::new(poll.registry(), CONTROL)?);
    let control_waker = waker.clone();
    let (tx, rx) = mpsc::channel::<Option<String>>();
    std::thread::Builder::new()
        .name("floor-control".into())
        .spawn(move || {
            for line in std::io::stdin().lock().lines() {
                let Ok(line) = line else { break };
                if tx.send(Some(line)).is_err() {
                    return;
                }
                let _ = control_waker.wake();
            }
            let _ = tx.send(None);
            let _ = control_waker.wake();
        })
        .context("starting the control thread")?;
    let mut stdout = std::io::stdout();
    writeln!(stdout, "port {port}")?;
    stdout.flush()?;

    let fanout = fanout_line();
    let mut conns: Vec<Option<Conn>> = Vec::new();
    let mut open = 0usize;
    let mut buf = vec![0u8; 64 * 1024];
    let mut out: Vec<u8> = Vec::with_capacity(64 * 1024);
    let mut events = Events::with_capacity(1024);
    let mut notes = 0u32;
    let mut note = |what: String| {
        if notes < NOTES_KEPT {
            eprintln!("floor-server: {what}");
        }
        notes += 1;
    };
    loop {
        if let Err(e) = poll.poll(&mut events, None) {
            if e.kind() == ErrorKind::Interrupted {
                continue;
            }
            return Err(e).context("epoll_wait");
        }
        for ev in events.iter() {
            match ev.token() {
                LISTENER => loop {
                    match listener.accept() {
                        Ok((mut stream, _)) => {
                            let _ = stream.set_nodelay(true);
                            let token = Token(FIRST_CONN + conns.len());
                            poll.registry().register(
                                &mut stream,
                                token,
                                Interest::READABLE | Interest::WRITABLE,
                            )?;
                            conns.push(Some(Conn {
                                stream,
                                partial: Vec::new(),
                                pending: Vec::new(),
                            }));
                            open += 1;
                        }
                        Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                        Err(e) if e.kind() == ErrorKind::Interrupted => {}
                        Err(e) if e.kind() == ErrorKind::ConnectionAborted => {}
                        Err(e) => {
                            // EMFILE and the like: the harness sees the shortfall in `count`.
                            note(format!("accept: {e} ({open} connections open)"));
                            break;
                        }
                    }
                },
                CONTROL => {
                    while let Ok(cmd) = rx.try_recv() {
                        match cmd.as_deref().map(str::trim) {
                            None => return Ok(()),
                            Some("count") => writeln!(stdout, "accepted {open}")?,
                            Some(line) if line.starts_with("fanout") => {
                                // `fanout [THREADS]`: the measured loop, one write of the line
                                // per socket in accept order, nothing else; with THREADS > 1
                                // the sockets are split into that many runs written at once
                                // (the floor of a proxy that fans out on several cores).
                                let threads = line["fanout".len()..]
                                    .trim()
                                    .parse::<usize>()
                                    .unwrap_or(1)
                                    .max(1);
                                let cpu_before = process_cpu_ns();
                                let start = mono_ns();
                                let (written, blocked, errors) =
                                    fan_out(&mut conns, &fanout, threads);
                                let ns = mono_ns() - start;
                                let cpu = process_cpu_ns().saturating_sub(cpu_before);
                                writeln!(
                                    stdout,
                                    "fanout {ns} {written} {blocked} {start} {errors} {cpu}"
                                )?;
                            }
                            Some(other) => writeln!(stdout, "error unknown command {other:?}")?,
                        }
                        stdout.flush()?;
                    }
                }
                Token(t) => {
                    let i = t - FIRST_CONN;
                    let Some(Some(conn)) = conns.get_mut(i) else {
                        continue;
                    };
                    let mut result = Ok(true);
                    if ev.is_writable() {
                        result = conn.flush().map(|()| true);
                    }
                    if result.is_ok() && (ev.is_readable() || ev.is_read_closed()) {
                        result = on_readable(conn, &mut buf, &mut out, opts);
                    }
                    let keep = match result {
                        Ok(open) => open,
                        Err(e) => {
                            note(format!("connection {i}: {e}"));
                            false
                        }
                    };
                    if !keep {
                        if let Some(mut c) = conns[i].take() {
                            let _ = poll.registry().deregister(&mut c.stream);
                        }
                        open -= 1;
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fanout_line_shape() {
        let l = fanout_line();
        assert_eq!(l.len(), FANOUT_LINE_LEN);
        assert_eq!(l.iter().filter(|&&b| b == b'\n').count(), 1);
        assert_eq!(l.last(), Some(&b'\n'));
        assert_eq!(REPLY.last(), Some(&b'\n'));
    }
}
