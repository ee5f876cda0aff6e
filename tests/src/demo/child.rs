//! The demo's child processes: the real `blgv-cloud` and `blgv-proxy` binaries, found next to
//! the demo's own executable, logging into the demo's data directory, stopped with SIGINT.

use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use anyhow::{bail, Context as _};
use tokio::process::{Child, Command};

/// Where a sibling binary of the running executable is (`target/<profile>/<name>`), or an
/// error that names the command that builds it.
pub fn find_binary(name: &str, overridden: Option<&Path>) -> anyhow::Result<PathBuf> {
    if let Some(p) = overridden {
        if p.is_file() {
            return Ok(p.to_path_buf());
        }
        bail!(
            "{} (given for {name}) is not a file; fix: point the option at a built {name} binary, \
             or leave it out to use the one next to blgv-demo",
            p.display()
        );
    }
    let exe = std::env::current_exe().context("finding the demo's own executable")?;
    let dir = exe
        .parent()
        .context("the demo's executable has no parent directory")?;
    let path = dir.join(name);
    if path.is_file() {
        return Ok(path);
    }
    let package = name;
    let release = dir.file_name().is_some_and(|d| d == "release");
    bail!(
        "{name} is not built: {} does not exist; fix: run `cargo build{} -p {package}` \
         (scripts/demo builds everything it needs), or pass --{}-bin PATH",
        path.display(),
        if release { " --release" } else { "" },
        name.trim_start_matches("blgv-"),
    )
}

/// A running child binary.
pub struct ChildProcess {
    pub name: &'static str,
    pub log: PathBuf,
    child: Child,
    pid: Option<u32>,
}

impl ChildProcess {
    /// Starts `bin --config config`, stdout and stderr appended to `log`.
    pub fn spawn(
        name: &'static str,
        bin: &Path,
        config: &Path,
        log: &Path,
    ) -> anyhow::Result<ChildProcess> {
        let out = std::fs::File::create(log)
            .with_context(|| format!("creating the log file {}", log.display()))?;
        let err = out
            .try_clone()
            .with_context(|| format!("opening {} twice", log.display()))?;
        let mut cmd = Command::new(bin);
        // BLGV_SECTION__KEY variables override config keys; one left in the user's shell (say
        // BLGV_PROXY__LISTEN) would move a child away from the ports the demo wrote and watches.
        for (var, _) in std::env::vars_os() {
            if var
                .to_str()
                .is_some_and(|v| v.starts_with("BLGV_") && v.contains("__"))
            {
                cmd.env_remove(var);
            }
        }
        cmd.arg("--config")
            .arg(config)
            .stdin(Stdio::null())
            .stdout(Stdio::from(out))
            .stderr(Stdio::from(err))
            // Info logs into the file, unless the user asked for something else.
            .env(
                "BLGV_LOG",
                std::env::var("BLGV_CHILD_LOG").unwrap_or_else(|_| "info".into()),
            )
            // Its own process group: a Ctrl-C in the terminal reaches the demo only, and the
            // demo stops the children itself, in order (miners, proxy, then pool).
            .process_group(0)
            // Should the demo die without stopping it, the child must not linger holding the
            // demo's ports (kill_on_drop covers panics and early returns, not SIGKILL).
            .kill_on_drop(true);
        #[cfg(target_os = "linux")]
        // SAFETY: prctl is async-signal-safe and touches only the forked child's own state.
        unsafe {
            cmd.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd
            .spawn()
            .with_context(|| format!("starting {name} ({})", bin.display()))?;
        let pid = child.id();
        Ok(ChildProcess {
            name,
            log: log.to_path_buf(),
            child,
            pid,
        })
    }

    pub fn pid(&self) -> Option<u32> {
        self.pid
    }

    /// `Some(status)` once it has exited.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// The last `lines` lines of its log, to show why it stopped.
    pub fn log_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// SIGINT (what Ctrl-C sends; both binaries shut down cleanly on it), then waits up to
    /// `grace`; a child still running then gets SIGKILL. Returns its exit status.
    pub async fn stop(&mut self, grace: Duration) -> anyhow::Result<ExitStatus> {
        if let Some(status) = self.exited() {
            return Ok(status);
        }
        if let Some(pid) = self.pid.and_then(|p| i32::try_from(p).ok()) {
            // SAFETY: plain kill(2) on our own child's pid, which is not reaped yet.
            unsafe {
                libc::kill(pid, libc::SIGINT);
            }
        }
        match tokio::time::timeout(grace, self.child.wait()).await {
            Ok(status) => Ok(status?),
            Err(_) => {
                let _ = self.child.kill().await;
                bail!(
                    "{} did not stop within {grace:?} of SIGINT and was killed; see {}",
                    self.name,
                    self.log.display()
                )
            }
        }
    }
}
