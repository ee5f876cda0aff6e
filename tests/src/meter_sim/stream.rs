//! The simulator's side of one TCP connection: passes bytes through, except that it can turn
//! answers into garbage and end the connection when the simulator stops.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};

use super::Shared;

pub struct SimStream {
    inner: TcpStream,
    shared: Arc<Shared>,
    stopped: Pin<Box<WaitForCancellationFutureOwned>>,
}

impl std::fmt::Debug for SimStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimStream")
            .field("inner", &self.inner)
            .finish()
    }
}

impl SimStream {
    pub fn new(inner: TcpStream, shared: Arc<Shared>, stop: CancellationToken) -> Self {
        SimStream {
            inner,
            shared,
            stopped: Box::pin(stop.cancelled_owned()),
        }
    }
}

/// Bytes that are not a Modbus TCP frame: the MBAP protocol identifier is 0xBEEF instead of 0
/// and the PDU is text. Same length as the real answer, so the client reads all of it at once.
pub fn garbage(answer: &[u8]) -> Vec<u8> {
    let filler = b"garbage, not modbus! ";
    let mut g: Vec<u8> = (0..answer.len())
        .map(|i| filler[i % filler.len()])
        .collect();
    if g.len() >= 7 {
        g[0..4].copy_from_slice(&[0xDE, 0xAD, 0xBE, 0xEF]);
        // Keep length and unit id, so the frame looks complete.
        g[4..7].copy_from_slice(&answer[4..7]);
    }
    g
}

impl AsyncRead for SimStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.stopped.as_mut().poll(cx).is_ready() {
            // End of stream: the server's connection task ends and closes the socket.
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for SimStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if self.stopped.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()));
        }
        if self.shared.garbage.load(Ordering::SeqCst) {
            let g = garbage(buf);
            return match Pin::new(&mut self.inner).poll_write(cx, &g) {
                Poll::Ready(Ok(_)) => Poll::Ready(Ok(buf.len())),
                other => other,
            };
        }
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
