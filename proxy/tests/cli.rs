//! The `blgv-proxy` binary: check-config on the shipped example and on broken files.

use std::path::Path;
use std::process::Command;

fn proxy() -> Command {
    Command::new(env!("CARGO_BIN_EXE_blgv-proxy"))
}

fn example() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/config/proxy.example.toml")
}

#[test]
fn example_config_checks_ok() {
    let out = proxy().arg("check-config").arg(example()).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("OK (2 upstream pools"), "{stdout}");
}

#[test]
fn broken_configs_exit_2_naming_key_and_fix() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        ("[proxy]\nlisten = \"0.0.0.0:3333\"\n", "`upstreams`"),
        (
            "[[upstreams]]\nurl = \"pool:3333\"\nuser = \"a\"\n[vardiff]\nmin = -1\n",
            "`vardiff.min`",
        ),
        (
            "[[upstreams]]\nurl = \"pool\"\nuser = \"a\"\n",
            "`upstreams[0].url`",
        ),
    ];
    for (text, key) in cases {
        let path = dir.path().join("bad.toml");
        std::fs::write(&path, text).unwrap();
        let out = proxy().arg("check-config").arg(&path).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{stderr}");
        assert!(
            stderr.contains(key) && stderr.contains("fix:"),
            "{key}: {stderr}"
        );
    }
    let out = proxy()
        .arg("check-config")
        .arg(dir.path().join("missing.toml"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot read config file"));
}

#[test]
fn env_override_applies_in_check_config() {
    let out = proxy()
        .arg("check-config")
        .arg(example())
        .env("BLGV_PROXY__LISTEN", "127.0.0.1:4555")
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("127.0.0.1:4555"));
    let out = proxy()
        .arg("check-config")
        .arg(example())
        .env("BLGV_VARDIFF__MIN", "zero")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("vardiff"));
}

#[test]
fn running_without_config_explains_the_fix() {
    let out = proxy().output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--config FILE"));
}

#[test]
fn version_flag_prints_version() {
    let out = proxy().arg("--version").output().unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("blgv-proxy 0."));
}

/// Started from a shell with the common soft limit (here 256), the proxy raises its own
/// open-files limit to the hard limit, so a site is not capped at ~1000 miners by accident.
#[cfg(target_os = "linux")]
#[test]
fn the_proxy_raises_its_open_files_limit_to_the_hard_limit() {
    use std::os::unix::process::CommandExt;
    use std::time::{Duration, Instant};
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("proxy.toml");
    // The upstream is a closed port: the proxy keeps retrying it, which is fine here.
    std::fs::write(
        &config,
        format!(
            "[proxy]\nlisten = \"127.0.0.1:0\"\n[[upstreams]]\nurl = \"127.0.0.1:9\"\nuser = \"u\"\n\
             [ledger]\npath = {:?}\n[api]\nenabled = false\n",
            dir.path().join("ledger.db")
        ),
    )
    .unwrap();
    let mut cmd = proxy();
    cmd.arg("--config").arg(&config).env("BLGV_LOG", "info");
    // SAFETY: setrlimit in the forked child before exec touches only the child.
    unsafe {
        cmd.pre_exec(|| {
            let mut lim = libc::rlimit {
                rlim_cur: 0,
                rlim_max: 0,
            };
            if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            lim.rlim_cur = 256.min(lim.rlim_max);
            if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = cmd
        .stderr(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let limits = format!("/proc/{}/limits", child.id());
    let read = || -> Option<(String, String)> {
        let text = std::fs::read_to_string(&limits).ok()?;
        let line = text.lines().find(|l| l.starts_with("Max open files"))?;
        let mut f = line["Max open files".len()..].split_whitespace();
        Some((f.next()?.to_string(), f.next()?.to_string()))
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut last = None;
    while Instant::now() < deadline {
        last = read();
        if let Some((soft, hard)) = &last {
            if soft == hard && soft != "256" {
                break;
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
    let (soft, hard) = last.expect("the proxy's /proc limits are readable");
    assert_eq!(soft, hard, "soft limit raised to the hard limit");
    if hard != "256" {
        assert_ne!(
            soft, "256",
            "the limit the proxy was started with was raised"
        );
    }
}
