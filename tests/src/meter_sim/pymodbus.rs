//! pymodbus, a third-party Modbus TCP server, serving an SDM630 image (tests/tools/
//! pymodbus_meter.py). When python3 or pymodbus is missing, [`PymodbusSim::start_sdm630`]
//! says why instead of failing, so the test can print "skipped: <why>" and pass.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::process::{Child, Command};

use super::image::{sdm630_floats, ServedValues};

/// The launcher script, found from the crate that compiles this file (tests/ or sensors/).
pub fn launcher_path() -> Option<PathBuf> {
    let here = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    here.ancestors()
        .map(|d| d.join("tests/tools/pymodbus_meter.py"))
        .find(|p| p.is_file())
}

/// A running pymodbus server. Killed when dropped.
pub struct PymodbusSim {
    child: Child,
    addr: SocketAddr,
}

/// What starting pymodbus gave.
pub enum PyStart {
    Running(PymodbusSim),
    /// python3 or pymodbus is not available; the reason.
    Skipped(String),
}

impl PymodbusSim {
    /// Serve `values` (an SDM630 image: float32 input registers, high word first) on
    /// 127.0.0.1 with a port chosen by the OS. Errors are real failures (the launcher broke);
    /// a missing python3 or pymodbus is [`PyStart::Skipped`].
    pub async fn start_sdm630(values: &ServedValues, unit_id: u8) -> Result<PyStart, String> {
        let Some(script) = launcher_path() else {
            return Err("tests/tools/pymodbus_meter.py not found".into());
        };
        let floats: Vec<String> = sdm630_floats(values)
            .into_iter()
            .map(|(a, v)| format!("\"{a}\": {v:?}"))
            .collect();
        let json = format!("{{{}}}", floats.join(", "));
        let mut cmd = Command::new("python3");
        cmd.arg(&script)
            .arg("--port")
            .arg("0")
            .arg("--unit")
            .arg(unit_id.to_string())
            .arg("--input-f32")
            .arg(json)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut child = match cmd.spawn() {
            Ok(c) => c,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(PyStart::Skipped("python3 is not installed".into()))
            }
            Err(e) => return Err(format!("cannot run python3: {e}")),
        };
        let stdout = child.stdout.take().ok_or("no stdout")?;
        let mut lines = BufReader::new(stdout).lines();
        let first = tokio::time::timeout(Duration::from_secs(60), lines.next_line()).await;
        let line = match first {
            Ok(Ok(Some(line))) => line,
            Ok(_) => {
                let status = child.wait().await.map_err(|e| e.to_string())?;
                let mut err = String::new();
                if let Some(mut s) = child.stderr.take() {
                    let _ = s.read_to_string(&mut err).await;
                }
                return Err(format!("pymodbus launcher exited ({status}): {err}"));
            }
            Err(_) => return Err("pymodbus launcher did not start within 60 s".into()),
        };
        if let Some(why) = line.strip_prefix("SKIP ") {
            return Ok(PyStart::Skipped(why.to_string()));
        }
        let port: u16 = line
            .strip_prefix("LISTENING ")
            .and_then(|p| p.trim().parse().ok())
            .ok_or_else(|| format!("unexpected launcher output: {line:?}"))?;
        Ok(PyStart::Running(PymodbusSim {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
        }))
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stop the server and wait for the process to end.
    pub async fn stop(mut self) {
        let _ = self.child.kill().await;
    }
}
