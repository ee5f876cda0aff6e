//! Emulated ASIC firmware control APIs: one real server per miner on 127.0.0.1 (port 0),
//! speaking the vendor's protocol, over a shared power model.
//!
//! * [`cgminer`]: cgminer JSON API (TCP, NUL-terminated answers, `api-allow` privileges).
//! * [`luxos`]: LUXminer API (cgminer-style JSON with LuxOS sessions, curtail, profiles).
//! * [`whatsminer`]: Whatsminer API v2 (plain reads, AES-256-ECB encrypted writes, md5-crypt
//!   tokens).
//! * [`braiins`]: Braiins OS public API v1, gRPC over a raw HTTP/2 server (`h2`), so the client's
//!   tonic stack is checked against an independent implementation.
//! * [`vnish`]: Vnish `/api/v1` over a small HTTP/1.1 server.
//!
//! [`AsicEmulator::start`] gives the address and an [`EmulatorHandle`] that derefs to the
//! shared [`EmulatedMiner`]: [`EmulatedMiner::power_w`] is what the machine would draw now (a
//! meter simulator sums these), [`EmulatedMiner::commands_seen`] what the firmware was asked,
//! and [`EmulatedMiner::set_fault`] makes it stop answering or answer garbage. Dropping the
//! handle stops the server.
//!
//! This file is also compiled into `blgv-sensors`' integration tests (`#[path]`), so it uses
//! only crates both packages depend on and no other module of this crate.

pub mod braiins;
pub mod cgminer;
pub mod luxos;
pub mod vnish;
pub mod whatsminer;

use std::io;
use std::net::SocketAddr;
use std::ops::Deref;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

pub use blgv_sensors::control::FirmwareKind;

/// Hash boards per emulated machine (cgminer lists them as ASC devices).
pub const BOARDS: usize = 3;

/// What the machine is doing, for assertions.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum MinerState {
    Hashing,
    Paused,
    /// Hashing under a power limit (watts).
    Limited(f64),
}

/// A failure to inject.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    None,
    /// Accept connections, never answer.
    Silent,
    /// Answer every request with bytes that are not the protocol.
    Garbage,
}

/// Login the emulated firmware accepts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credentials {
    pub username: String,
    pub password: String,
}

impl Credentials {
    pub fn new(username: impl Into<String>, password: impl Into<String>) -> Self {
        Credentials {
            username: username.into(),
            password: password.into(),
        }
    }

    /// The firmware's factory login.
    pub fn factory(kind: FirmwareKind) -> Self {
        match kind {
            FirmwareKind::BraiinsOs => Credentials::new("root", "root"),
            FirmwareKind::Whatsminer => Credentials::new("admin", "admin"),
            FirmwareKind::Vnish => Credentials::new("admin", "admin"),
            FirmwareKind::Cgminer | FirmwareKind::LuxOs => Credentials::new("", ""),
        }
    }
}

#[derive(Debug, Clone)]
pub struct EmulatorOptions {
    /// Power while paused; default 2% of nominal (fans and control board).
    pub idle_w: Option<f64>,
    /// Default: the firmware's factory login.
    pub credentials: Option<Credentials>,
    /// cgminer: the controller is in `api-allow W:` (default true).
    pub write_access: bool,
    /// cgminer: behave like stock bmminer, which has no `ascdisable`.
    pub bmminer: bool,
    /// LuxOS: another tool holds the only session.
    pub foreign_session: bool,
}

impl Default for EmulatorOptions {
    fn default() -> Self {
        EmulatorOptions {
            idle_w: None,
            credentials: None,
            write_access: true,
            bmminer: false,
            foreign_session: false,
        }
    }
}

#[derive(Debug)]
struct Power {
    boards: [bool; BOARDS],
    limit_w: Option<f64>,
}

/// The emulated machine behind the API.
#[derive(Debug)]
pub struct EmulatedMiner {
    kind: FirmwareKind,
    nominal_w: f64,
    idle_w: f64,
    credentials: Credentials,
    options: EmulatorOptions,
    power: Mutex<Power>,
    commands: Mutex<Vec<String>>,
    fault: AtomicU8,
}

impl EmulatedMiner {
    fn new(kind: FirmwareKind, nominal_w: f64, options: EmulatorOptions) -> Self {
        EmulatedMiner {
            kind,
            nominal_w,
            idle_w: options.idle_w.unwrap_or(nominal_w * 0.02),
            credentials: options
                .credentials
                .clone()
                .unwrap_or_else(|| Credentials::factory(kind)),
            options,
            power: Mutex::new(Power {
                boards: [true; BOARDS],
                limit_w: None,
            }),
            commands: Mutex::new(Vec::new()),
            fault: AtomicU8::new(0),
        }
    }

    pub fn kind(&self) -> FirmwareKind {
        self.kind
    }

    pub fn nominal_w(&self) -> f64 {
        self.nominal_w
    }

    pub fn idle_w(&self) -> f64 {
        self.idle_w
    }

    pub fn credentials(&self) -> &Credentials {
        &self.credentials
    }

    pub fn options(&self) -> &EmulatorOptions {
        &self.options
    }

    /// Watts the machine draws now: idle plus each working board's share of the (limited)
    /// hashing power.
    pub fn power_w(&self) -> f64 {
        let p = self.power.lock().unwrap();
        let working = p.boards.iter().filter(|b| **b).count() as f64 / BOARDS as f64;
        let full = p
            .limit_w
            .map(|l| l.clamp(self.idle_w, self.nominal_w))
            .unwrap_or(self.nominal_w);
        self.idle_w + (full - self.idle_w) * working
    }

    /// No hash board is working.
    pub fn is_paused(&self) -> bool {
        !self.power.lock().unwrap().boards.iter().any(|b| *b)
    }

    /// Some hash boards stopped and some still working: a pause or resume that disables or
    /// enables boards one by one (cgminer) is under way. Tests wait for this to clear before
    /// counting paused miners.
    pub fn is_partly_paused(&self) -> bool {
        let p = self.power.lock().unwrap();
        p.boards.iter().any(|b| *b) && !p.boards.iter().all(|b| *b)
    }

    pub fn state(&self) -> MinerState {
        let p = self.power.lock().unwrap();
        if !p.boards.iter().any(|b| *b) {
            MinerState::Paused
        } else if let Some(l) = p.limit_w {
            MinerState::Limited(l)
        } else {
            MinerState::Hashing
        }
    }

    /// The power limit set through the API, if any.
    pub fn power_limit_w(&self) -> Option<f64> {
        self.power.lock().unwrap().limit_w
    }

    /// The hash rate in GH/s the firmware reports (proportional to power above idle).
    pub fn hashrate_ghs(&self) -> f64 {
        let hashing = self.power_w() - self.idle_w;
        (hashing.max(0.0) / 30.0 * 1000.0).round()
    }

    /// Every command the firmware received, in order (method or command names).
    pub fn commands_seen(&self) -> Vec<String> {
        self.commands.lock().unwrap().clone()
    }

    pub fn set_fault(&self, fault: Fault) {
        let v = match fault {
            Fault::None => 0,
            Fault::Silent => 1,
            Fault::Garbage => 2,
        };
        self.fault.store(v, Ordering::SeqCst);
    }

    pub fn fault(&self) -> Fault {
        match self.fault.load(Ordering::SeqCst) {
            1 => Fault::Silent,
            2 => Fault::Garbage,
            _ => Fault::None,
        }
    }

    pub(crate) fn record(&self, command: impl Into<String>) {
        self.commands.lock().unwrap().push(command.into());
    }

    pub(crate) fn pause(&self) -> bool {
        let mut p = self.power.lock().unwrap();
        let was = !p.boards.iter().any(|b| *b);
        p.boards = [false; BOARDS];
        was
    }

    pub(crate) fn resume(&self) -> bool {
        let mut p = self.power.lock().unwrap();
        let was = p.boards.iter().all(|b| *b);
        p.boards = [true; BOARDS];
        was
    }

    pub(crate) fn board_enabled(&self, board: usize) -> bool {
        self.power.lock().unwrap().boards[board]
    }

    pub(crate) fn set_board(&self, board: usize, enabled: bool) {
        self.power.lock().unwrap().boards[board] = enabled;
    }

    pub(crate) fn set_limit(&self, watts: Option<f64>) {
        self.power.lock().unwrap().limit_w = watts;
    }
}

/// A running emulator; derefs to its [`EmulatedMiner`]. Dropping it stops the server.
pub struct EmulatorHandle {
    addr: SocketAddr,
    miner: Arc<EmulatedMiner>,
    task: tokio::task::JoinHandle<()>,
}

impl EmulatorHandle {
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The shared state, to keep after the handle is gone (e.g. in a meter simulator).
    pub fn miner(&self) -> Arc<EmulatedMiner> {
        self.miner.clone()
    }

    pub fn stop(&self) {
        self.task.abort();
    }
}

impl Deref for EmulatorHandle {
    type Target = EmulatedMiner;
    fn deref(&self) -> &EmulatedMiner {
        &self.miner
    }
}

impl Drop for EmulatorHandle {
    fn drop(&mut self) {
        self.task.abort();
    }
}

pub struct AsicEmulator;

impl AsicEmulator {
    /// Starts one emulated miner of `kind` drawing `nominal_w` while hashing. `credentials`
    /// default to the firmware's factory login.
    pub async fn start(
        kind: FirmwareKind,
        nominal_w: f64,
        credentials: Option<Credentials>,
    ) -> io::Result<(SocketAddr, EmulatorHandle)> {
        let options = EmulatorOptions {
            credentials,
            ..EmulatorOptions::default()
        };
        Self::start_with(kind, nominal_w, options).await
    }

    pub async fn start_with(
        kind: FirmwareKind,
        nominal_w: f64,
        options: EmulatorOptions,
    ) -> io::Result<(SocketAddr, EmulatorHandle)> {
        Self::start_at("127.0.0.1:0".parse().unwrap(), kind, nominal_w, options).await
    }

    /// Like [`AsicEmulator::start_with`] on a given address (e.g. to "restart" a miner on the
    /// port a client already knows).
    pub async fn start_at(
        bind: SocketAddr,
        kind: FirmwareKind,
        nominal_w: f64,
        options: EmulatorOptions,
    ) -> io::Result<(SocketAddr, EmulatorHandle)> {
        let listener = TcpListener::bind(bind).await?;
        let addr = listener.local_addr()?;
        let miner = Arc::new(EmulatedMiner::new(kind, nominal_w, options));
        let task = match kind {
            FirmwareKind::Cgminer => tokio::spawn(serve_json_tcp(
                listener,
                miner.clone(),
                Arc::new(cgminer::Cgminer),
            )),
            FirmwareKind::LuxOs => tokio::spawn(serve_json_tcp(
                listener,
                miner.clone(),
                Arc::new(luxos::LuxOs::default()),
            )),
            FirmwareKind::Whatsminer => tokio::spawn(serve_json_tcp(
                listener,
                miner.clone(),
                Arc::new(whatsminer::Whatsminer::new(&miner)),
            )),
            FirmwareKind::BraiinsOs => tokio::spawn(braiins::serve(listener, miner.clone())),
            FirmwareKind::Vnish => tokio::spawn(vnish::serve(listener, miner.clone())),
        };
        Ok((addr, EmulatorHandle { addr, miner, task }))
    }
}

/// Seconds since the epoch, for `When` fields.
pub(crate) fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

pub(crate) const GARBAGE: &[u8] = b"\x16\x03\x01garbage \xff\xfe not the protocol \x00\x01";

/// A firmware that answers one JSON request per TCP connection.
pub(crate) trait JsonTcpFirmware: Send + Sync + 'static {
    fn answer(&self, miner: &EmulatedMiner, request: &[u8]) -> Vec<u8>;
}

async fn serve_json_tcp<F: JsonTcpFirmware>(
    listener: TcpListener,
    miner: Arc<EmulatedMiner>,
    firmware: Arc<F>,
) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let miner = miner.clone();
        let firmware = firmware.clone();
        tokio::spawn(async move {
            let _ = json_connection(stream, &miner, &*firmware).await;
        });
    }
}

/// Holds a connection open without answering, until the peer leaves or a minute passes.
pub(crate) async fn hold_silently(mut stream: TcpStream) {
    let mut sink = [0u8; 1024];
    let _ = tokio::time::timeout(Duration::from_secs(60), async {
        while let Ok(n) = stream.read(&mut sink).await {
            if n == 0 {
                break;
            }
        }
    })
    .await;
}

async fn json_connection<F: JsonTcpFirmware>(
    mut stream: TcpStream,
    miner: &EmulatedMiner,
    firmware: &F,
) -> io::Result<()> {
    match miner.fault() {
        Fault::Silent => {
            hold_silently(stream).await;
            return Ok(());
        }
        Fault::Garbage => {
            let mut first = [0u8; 1024];
            let _ = tokio::time::timeout(Duration::from_secs(2), stream.read(&mut first)).await;
            stream.write_all(GARBAGE).await?;
            return stream.shutdown().await;
        }
        Fault::None => {}
    }
    // Like the firmware: read until one whole JSON document (or a NUL/EOF) has arrived.
    let mut request = Vec::new();
    let mut chunk = [0u8; 4096];
    let read = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let n = stream.read(&mut chunk).await?;
            if n == 0 {
                break;
            }
            request.extend_from_slice(&chunk[..n]);
            if request.contains(&0) || request.len() > 64 * 1024 {
                break;
            }
            let mut docs =
                serde_json::Deserializer::from_slice(&request).into_iter::<serde_json::Value>();
            match docs.next() {
                Some(Ok(_)) => break,
                Some(Err(e)) if e.is_eof() => continue,
                _ => break,
            }
        }
        Ok::<_, io::Error>(())
    })
    .await;
    if !matches!(read, Ok(Ok(()))) {
        return Ok(());
    }
    if request.is_empty() {
        return Ok(());
    }
    let end = request
        .iter()
        .position(|b| *b == 0)
        .unwrap_or(request.len());
    let answer = firmware.answer(miner, &request[..end]);
    stream.write_all(&answer).await?;
    stream.shutdown().await
}
