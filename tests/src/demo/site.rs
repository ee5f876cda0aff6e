//! The demo site's hardware: ASICs with emulated firmware APIs, each paired with a hashing
//! [`SimMiner`] whose boards follow that firmware, and the SDM630 meter that measures them.
//!
//! Adapted from the site of the curtailment tests (tests/tests/common/site.rs): the same
//! emulators, power switch and meter, with demo-sized numbers and the `[[miners]]` TOML the
//! proxy's config needs.

use std::net::SocketAddr;
use std::sync::Arc;

use blgv_sensors::control::FirmwareKind;

use crate::asic::{AsicEmulator, EmulatedMiner, EmulatorHandle};
use crate::meter_sim::{MeterSim, PowerFn, SimProfile};
use crate::{MinerConfig, PowerSwitch, SimMiner, SubscribeStyle};

/// Cooling, lights and the office: drawn whatever the miners do.
pub const OTHER_LOAD_W: f64 = 2_000.0;

/// One kind of machine the demo site has, with the firmware it runs and its real-world power
/// and efficiency (the curtailment loop sheds the least efficient first).
#[derive(Debug, Clone, Copy)]
pub struct Model {
    pub name: &'static str,
    pub firmware: FirmwareKind,
    pub nominal_w: f64,
    pub j_per_th: f64,
}

/// The site's machine park, cycled through for miners 0, 1, 2, ...
pub const MODELS: [Model; 5] = [
    Model {
        name: "Antminer S19j Pro",
        firmware: FirmwareKind::Cgminer,
        nominal_w: 3050.0,
        j_per_th: 29.5,
    },
    Model {
        name: "Antminer S19 XP",
        firmware: FirmwareKind::LuxOs,
        nominal_w: 3010.0,
        j_per_th: 21.5,
    },
    Model {
        name: "Antminer S21",
        firmware: FirmwareKind::BraiinsOs,
        nominal_w: 3500.0,
        j_per_th: 17.5,
    },
    Model {
        name: "Whatsminer M50S",
        firmware: FirmwareKind::Whatsminer,
        nominal_w: 3276.0,
        j_per_th: 26.0,
    },
    Model {
        name: "Antminer S19k Pro",
        firmware: FirmwareKind::Vnish,
        nominal_w: 2760.0,
        j_per_th: 23.0,
    },
];

/// One simulated ASIC.
pub struct Asic {
    /// Short name, e.g. "asic03"; its Stratum worker is `<account>.<name>`.
    pub name: String,
    pub worker: String,
    pub model: Model,
    /// Efficiency used for ranking: the model's, nudged by the unit's age so no two tie.
    pub j_per_th: f64,
    /// Where its firmware API listens.
    pub api: SocketAddr,
    pub machine: Arc<EmulatedMiner>,
    emulator: EmulatorHandle,
}

/// The machines and the meter (the miners that hash are started separately, once the proxy
/// listens: [`Machines::start_miners`]).
pub struct Machines {
    pub asics: Vec<Asic>,
    pub meter: MeterSim,
    site_w: PowerFn,
}

impl Machines {
    /// Starts `n` firmware API emulators on 127.0.0.1 (ports chosen by the OS) and the SDM630
    /// meter whose reading is [`OTHER_LOAD_W`] plus what every machine draws now (a paused one
    /// draws its idle power, 2 % of nominal).
    pub async fn start(n: usize, account: &str) -> std::io::Result<Machines> {
        let mut asics = Vec::with_capacity(n);
        for i in 0..n {
            let model = MODELS[i % MODELS.len()];
            let (api, emulator) =
                AsicEmulator::start(model.firmware, model.nominal_w, None).await?;
            let name = format!("asic{i:02}");
            asics.push(Asic {
                worker: format!("{account}.{name}"),
                name,
                model,
                // Later units of a model are older and a little less efficient.
                j_per_th: model.j_per_th + 0.1 * (i / MODELS.len()) as f64,
                api,
                machine: emulator.miner(),
                emulator,
            });
        }
        let machines: Vec<Arc<EmulatedMiner>> = asics.iter().map(|a| a.machine.clone()).collect();
        let site_w: PowerFn =
            Arc::new(move || OTHER_LOAD_W + machines.iter().map(|m| m.power_w()).sum::<f64>());
        let meter = MeterSim::start(SimProfile::Sdm630, site_w.clone()).await?;
        Ok(Machines {
            asics,
            meter,
            site_w,
        })
    }

    /// What the meter reads now, in kW.
    pub fn site_kw(&self) -> f64 {
        (self.site_w)() / 1000.0
    }

    /// What the site draws with every machine hashing, in kW.
    pub fn full_kw(&self) -> f64 {
        (OTHER_LOAD_W + self.asics.iter().map(|a| a.model.nominal_w).sum::<f64>()) / 1000.0
    }

    /// The machines whose firmware has their boards off.
    pub fn paused(&self) -> Vec<&Asic> {
        self.asics
            .iter()
            .filter(|a| a.machine.is_paused())
            .collect()
    }

    /// The `[[miners]]` sections of the proxy config: each machine's firmware API, login,
    /// power and efficiency.
    pub fn miners_toml(&self) -> String {
        let mut out = String::new();
        for a in &self.asics {
            let creds = a.machine.credentials();
            out.push_str(&format!(
                "\n[[miners]]                           # {} ({})\n\
                 worker = \"{}\"\nfirmware = \"{}\"\naddress = \"{}\"\n",
                a.name,
                a.model.name,
                a.worker,
                a.model.firmware.as_str(),
                a.api,
            ));
            // cgminer and LuxOS APIs have no login: leave the keys out, as on a real site.
            if !creds.username.is_empty() {
                out.push_str(&format!("username = \"{}\"\n", creds.username));
            }
            if !creds.password.is_empty() {
                out.push_str(&format!("password = \"{}\"\n", creds.password));
            }
            out.push_str(&format!(
                "timeout_ms = 1000\nnominal_w = {}\nefficiency_j_per_th = {:.1}\n",
                a.model.nominal_w, a.j_per_th
            ));
        }
        out
    }

    /// One hashing miner per machine, connecting to `stratum` (the proxy), each hashing at most
    /// `hashrate` H/s while its machine's firmware has the boards on. Pausing through the
    /// firmware API therefore really stops the hashing, as it does on an ASIC, while its
    /// Stratum session stays up.
    pub fn start_miners(&self, stratum: SocketAddr, hashrate: u64) -> Vec<SimMiner> {
        self.asics
            .iter()
            .enumerate()
            .map(|(i, a)| {
                let machine = a.machine.clone();
                let mut c = MinerConfig::new(stratum, a.worker.clone());
                // A mix of the handshakes real firmware sends.
                c.subscribe_style = [
                    SubscribeStyle::Empty,
                    SubscribeStyle::Agent,
                    SubscribeStyle::AgentNull,
                    SubscribeStyle::AgentSession,
                ][i % 4];
                c.version_rolling = i % 2 == 0;
                c.extranonce_subscribe = true;
                c.user_agent = format!("blgv-demo/{}", a.model.firmware.as_str());
                c.hashrate = hashrate;
                c.power = Some(PowerSwitch::new(move || !machine.is_paused()));
                SimMiner::spawn(c)
            })
            .collect()
    }

    /// Stops the firmware APIs and the meter.
    pub fn stop(&self) {
        for a in &self.asics {
            a.emulator.stop();
        }
        self.meter.stop();
    }
}
