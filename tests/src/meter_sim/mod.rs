//! A Modbus meter simulator whose power follows the emulated miners.
//!
//! [`MeterSim`] is our own Modbus TCP server (tokio-modbus) on 127.0.0.1 serving the register
//! image of an Eastron SDM630 / SDM120, a Carlo Gavazzi EM24 or a SunSpec meter (models 203 and
//! 213). The total power is asked from a closure at every request, so an end-to-end test can make
//! it follow the hashing miners. Fault switches make it misbehave like real meters do:
//! [`MeterSim::set_exception`], [`MeterSim::set_silent`], [`MeterSim::set_garbage`],
//! [`MeterSim::stop`] (and [`MeterSim::restart`] on the same port).
//!
//! [`MeterSim::service`] gives the same register brain as a tokio-modbus [`Service`], to serve
//! it over any other transport (e.g. Modbus RTU on a pseudo terminal).
//!
//! [`pymodbus::PymodbusSim`] starts a third-party server (pymodbus) with an SDM630 image, so the
//! meter client is also tested against Modbus code we did not write.
//!
//! This module only uses tokio, tokio-util and tokio-modbus, so the sensors crate's tests can
//! include it with `#[path]` (they cannot depend on this crate).

pub mod image;
pub mod pymodbus;
mod stream;
pub mod wait;

use std::collections::HashMap;
use std::future::Ready;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio_modbus::server::tcp::Server;
use tokio_modbus::server::Service;
use tokio_modbus::{ExceptionCode, Request, Response};
use tokio_util::sync::CancellationToken;

pub use image::{ServedPhase, ServedValues, SimProfile, Table};

/// Watts, asked at every request.
pub type PowerFn = Arc<dyn Fn() -> f64 + Send + Sync>;

/// State shared by the server, its connections and the test.
pub struct Shared {
    profile: SimProfile,
    power: PowerFn,
    import_energy_kwh: Mutex<f64>,
    exception: Mutex<Option<ExceptionCode>>,
    silent: AtomicBool,
    pub(crate) garbage: AtomicBool,
    requests: AtomicU64,
}

impl Shared {
    fn ideal(&self) -> ServedValues {
        let kwh = *self
            .import_energy_kwh
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        image::ideal(self.profile, (self.power)(), kwh)
    }

    fn answer(&self, req: Request<'static>) -> Result<Option<Response>, ExceptionCode> {
        self.requests.fetch_add(1, Ordering::SeqCst);
        if self.silent.load(Ordering::SeqCst) {
            return Ok(None);
        }
        if let Some(code) = *self.exception.lock().unwrap_or_else(|e| e.into_inner()) {
            return Err(code);
        }
        let (table, addr, count) = match req {
            Request::ReadInputRegisters(a, c) => (Table::Input, a, c),
            Request::ReadHoldingRegisters(a, c) => (Table::Holding, a, c),
            _ => return Err(ExceptionCode::IllegalFunction),
        };
        if count == 0 || count > 125 {
            return Err(ExceptionCode::IllegalDataValue);
        }
        if table != self.profile.table() {
            return Err(ExceptionCode::IllegalDataAddress);
        }
        let img: HashMap<u16, u16> = image::image(self.profile, &self.ideal());
        let words = (0..count)
            .map(|i| addr.checked_add(i).and_then(|a| img.get(&a).copied()))
            .collect::<Option<Vec<u16>>>()
            .ok_or(ExceptionCode::IllegalDataAddress)?;
        Ok(Some(match table {
            Table::Input => Response::ReadInputRegisters(words),
            Table::Holding => Response::ReadHoldingRegisters(words),
        }))
    }
}

/// The simulator's register brain as a tokio-modbus service (TCP or RTU).
#[derive(Clone)]
pub struct SimService {
    shared: Arc<Shared>,
}

impl Service for SimService {
    type Request = Request<'static>;
    type Response = Option<Response>;
    type Exception = ExceptionCode;
    type Future = Ready<Result<Self::Response, Self::Exception>>;

    fn call(&self, req: Self::Request) -> Self::Future {
        std::future::ready(self.shared.answer(req))
    }
}

struct Running {
    task: JoinHandle<()>,
    stop: CancellationToken,
}

/// A simulated meter on 127.0.0.1. Dropping it stops it.
pub struct MeterSim {
    shared: Arc<Shared>,
    addr: SocketAddr,
    running: Mutex<Option<Running>>,
}

impl MeterSim {
    /// Start serving `profile` on 127.0.0.1 with a port chosen by the OS. `power` gives the total
    /// power in watts at each request. The import energy counter starts at 12 345.6 kWh.
    pub async fn start(profile: SimProfile, power: PowerFn) -> io::Result<MeterSim> {
        let shared = Arc::new(Shared {
            profile,
            power,
            import_energy_kwh: Mutex::new(12_345.6),
            exception: Mutex::new(None),
            silent: AtomicBool::new(false),
            garbage: AtomicBool::new(false),
            requests: AtomicU64::new(0),
        });
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let sim = MeterSim {
            shared,
            addr,
            running: Mutex::new(None),
        };
        sim.serve(listener);
        Ok(sim)
    }

    /// A simulator at a constant power.
    pub async fn constant(profile: SimProfile, watts: f64) -> io::Result<MeterSim> {
        MeterSim::start(profile, Arc::new(move || watts)).await
    }

    fn serve(&self, listener: TcpListener) {
        let stop = CancellationToken::new();
        let shared = self.shared.clone();
        let conn_stop = stop.clone();
        let task = tokio::spawn(async move {
            let server = Server::new(listener);
            let on_connected = move |stream: TcpStream, _peer: SocketAddr| {
                let _ = stream.set_nodelay(true);
                let service = SimService {
                    shared: shared.clone(),
                };
                let stream = stream::SimStream::new(stream, shared.clone(), conn_stop.clone());
                async move { io::Result::Ok(Some((service, stream))) }
            };
            let _ = server.serve(&on_connected, |_err: io::Error| {}).await;
        });
        *self.running.lock().unwrap_or_else(|e| e.into_inner()) = Some(Running { task, stop });
    }

    /// Where the simulator listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The profile served.
    pub fn profile(&self) -> SimProfile {
        self.shared.profile
    }

    /// The values served right now, rounded as the profile's encoding carries them.
    pub fn served(&self) -> ServedValues {
        image::quantize(self.shared.profile, self.shared.ideal())
    }

    /// Answer every request with this Modbus exception (`None`: answer normally).
    pub fn set_exception(&self, code: Option<ExceptionCode>) {
        *self
            .shared
            .exception
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = code;
    }

    /// Accept connections and requests but never answer (the client times out).
    pub fn set_silent(&self, silent: bool) {
        self.shared.silent.store(silent, Ordering::SeqCst);
    }

    /// Answer with bytes that are not a valid Modbus TCP frame.
    pub fn set_garbage(&self, garbage: bool) {
        self.shared.garbage.store(garbage, Ordering::SeqCst);
    }

    pub fn set_import_energy_kwh(&self, kwh: f64) {
        *self
            .shared
            .import_energy_kwh
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = kwh;
    }

    /// Requests received so far (answered or not).
    pub fn requests(&self) -> u64 {
        self.shared.requests.load(Ordering::SeqCst)
    }

    /// The register brain as a service for another transport (e.g. an RTU server).
    pub fn service(&self) -> SimService {
        SimService {
            shared: self.shared.clone(),
        }
    }

    /// Stop listening and close every open connection: the meter disappears.
    pub fn stop(&self) {
        if let Some(r) = self
            .running
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
        {
            r.stop.cancel();
            r.task.abort();
        }
    }

    /// Come back on the same address after [`MeterSim::stop`] (or while running: stop first).
    pub async fn restart(&self) -> io::Result<()> {
        self.stop();
        let old = self
            .running
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(r) = old {
            let _ = r.task.await;
        }
        // The old listener is closed; the port may take a moment to be free again.
        let mut tries = 0;
        let listener = loop {
            match TcpListener::bind(self.addr).await {
                Ok(l) => break l,
                Err(e) if tries < 50 => {
                    tries += 1;
                    let _ = e;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => return Err(e),
            }
        };
        self.serve(listener);
        Ok(())
    }
}

impl Drop for MeterSim {
    fn drop(&mut self) {
        self.stop();
    }
}
