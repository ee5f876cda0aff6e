//! A TCP relay that tests put between a client and a server to break the link the ways real
//! networks do: black-hole it (the connection stays up, bytes vanish), swallow only the
//! server's answers, cut every open connection, or send new connections elsewhere (a
//! restarted server on another port). It also keeps every byte the server answered, delivered
//! or not.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

/// The switches the relay's tasks read for every chunk.
#[derive(Default)]
struct Switches {
    /// Client → server bytes vanish.
    drop_requests: AtomicBool,
    /// Server → client bytes vanish (they are still recorded in `answers`).
    drop_answers: AtomicBool,
    answers: Mutex<String>,
}

pub struct Relay {
    /// Where clients connect.
    pub addr: SocketAddr,
    target: Arc<Mutex<SocketAddr>>,
    switches: Arc<Switches>,
    /// Cancelled to cut every connection open now; replaced by a fresh one for later ones.
    cut: Arc<Mutex<CancellationToken>>,
}

impl Relay {
    /// A relay on 127.0.0.1:0 to `target`. A connection the target refuses is closed, as a
    /// refused one would be.
    pub async fn start(target: SocketAddr) -> Relay {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let relay = Relay {
            addr: listener.local_addr().unwrap(),
            target: Arc::new(Mutex::new(target)),
            switches: Arc::default(),
            cut: Arc::new(Mutex::new(CancellationToken::new())),
        };
        let (target, switches, cut) = (
            relay.target.clone(),
            relay.switches.clone(),
            relay.cut.clone(),
        );
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let to = *target.lock().unwrap();
                let token = cut.lock().unwrap().clone();
                let switches = switches.clone();
                tokio::spawn(async move {
                    let Ok(server) = TcpStream::connect(to).await else {
                        return;
                    };
                    let (cr, cw) = client.into_split();
                    let (sr, sw) = server.into_split();
                    tokio::spawn(pipe(cr, sw, switches.clone(), false, token.clone()));
                    pipe(sr, cw, switches, true, token).await;
                });
            }
        });
        relay
    }

    /// Black hole: every byte either way vanishes while on; connections stay up.
    pub fn set_black_hole(&self, on: bool) {
        self.switches.drop_requests.store(on, Ordering::SeqCst);
        self.switches.drop_answers.store(on, Ordering::SeqCst);
    }

    /// Swallow the server's answers while on (requests still reach it): the server acts on a
    /// request the client never sees acknowledged.
    pub fn set_hold_answers(&self, on: bool) {
        self.switches.drop_answers.store(on, Ordering::SeqCst);
    }

    /// New connections go to `target` from now on (open ones stay where they are).
    pub fn set_target(&self, target: SocketAddr) {
        *self.target.lock().unwrap() = target;
    }

    /// Close every connection open now (new ones pass).
    pub fn cut_all(&self) {
        let mut token = self.cut.lock().unwrap();
        token.cancel();
        *token = CancellationToken::new();
    }

    /// Every byte the server answered so far, delivered or not (lossy UTF-8).
    pub fn answers(&self) -> String {
        self.switches.answers.lock().unwrap().clone()
    }
}

/// Copy `from` to `to` until either side ends or the relay cuts the link, then close `to`'s
/// write side so the peer sees the end too.
async fn pipe(
    mut from: impl AsyncRead + Unpin,
    mut to: impl AsyncWrite + Unpin,
    switches: Arc<Switches>,
    answers: bool,
    cut: CancellationToken,
) {
    let dropping = if answers {
        &switches.drop_answers
    } else {
        &switches.drop_requests
    };
    let mut buf = vec![0u8; 16384];
    loop {
        let n = tokio::select! {
            r = from.read(&mut buf) => match r { Ok(0) | Err(_) => break, Ok(n) => n },
            _ = cut.cancelled() => break,
        };
        if answers {
            switches
                .answers
                .lock()
                .unwrap()
                .push_str(&String::from_utf8_lossy(&buf[..n]));
        }
        if !dropping.load(Ordering::SeqCst) && to.write_all(&buf[..n]).await.is_err() {
            break;
        }
    }
    let _ = to.shutdown().await;
}
