//! Cross-check: the public Python client pyasic (scripts/test-deps/pip.txt) drives our emulators.
//! If pyasic accepts their answers and they end up paused/limited, the emulators speak the real
//! protocols, not just our client's idea of them. Without python3 or pyasic the test prints
//! "skipped: <why>" and passes.

#[allow(dead_code)]
#[path = "../../tests/src/asic/mod.rs"]
mod asic;

use std::time::Duration;

use asic::{AsicEmulator, Credentials, MinerState};
use blgv_sensors::control::FirmwareKind;

const PASSWORD: &str = "pyasic-Pw1";

const SCRIPT: &str = r#"
import asyncio, json, sys, warnings
warnings.simplefilter("ignore")
cfg = json.loads(sys.argv[1])
out = {}

async def section(name, body):
    try:
        out[name] = await body()
    except Exception as e:  # reported, the Rust side fails the test
        out[name] = {"error": repr(e)}

async def cgminer():
    from pyasic.rpc.cgminer import CGMinerRPCAPI
    rpc = CGMinerRPCAPI("127.0.0.1", port=cfg["cgminer"])
    version = await rpc.version()
    devs = await rpc.devs()
    for d in devs["DEVS"]:
        await rpc.ascdisable(str(d["ASC"]))
    multi = await rpc.multicommand("summary", "devs")
    return {"version": version["VERSION"][0]["CGMiner"], "devs": len(devs["DEVS"]),
            "multi": sorted(k for k in multi if k != "multicommand")}

async def luxos():
    from pyasic.rpc.luxminer import LUXMinerRPCAPI
    rpc = LUXMinerRPCAPI("127.0.0.1", port=cfg["luxos"])
    profiles = await rpc.profiles()
    slept = await rpc.sleep()
    chosen = profiles["PROFILES"][3]["Profile Name"]
    profile = await rpc.profileset(chosen)
    power = await rpc.power()
    return {"curtail": slept["CURTAIL"][0]["Action"], "profile": profile["PROFILE"][0]["Profile"],
            "watts": power["POWER"][0]["Watts"]}

async def whatsminer():
    from pyasic.rpc.btminer import BTMinerRPCAPI
    rpc = BTMinerRPCAPI("127.0.0.1", port=cfg["whatsminer"])
    rpc.pwd = cfg["password"]
    off = await rpc.power_off(respbefore=True)
    limit = await rpc.adjust_power_limit(2500)
    summary = await rpc.summary()
    status = await rpc.status()
    return {"power_off": off["Msg"], "limit": limit["Msg"], "power": summary["SUMMARY"][0]["Power"],
            "mineroff": status["Msg"]["mineroff"]}

async def braiins():
    from pyasic.web.braiins_os.boser import BOSerWebAPI
    api = BOSerWebAPI("127.0.0.1")
    api.port = cfg["braiins"]
    api.pwd = cfg["password"]
    await api.pause_mining()
    target = await api.set_power_target(2500)
    details = await api.get_miner_details()
    stats = await api.get_miner_stats()
    return {"target": target["powerTarget"]["watt"], "status": details.get("status"),
            "power": stats["powerStats"]["approximatedConsumption"]["watt"]}

async def vnish():
    from pyasic.web.vnish import VNishWebAPI
    api = VNishWebAPI("127.0.0.1")
    api.port = cfg["vnish"]
    api.pwd = cfg["password"]
    paused = await api.pause_mining()
    summary = await api.summary()
    return {"pause": paused, "state": summary["miner"]["miner_status"]["miner_state"]}

async def main():
    for name, body in [("cgminer", cgminer), ("luxos", luxos), ("whatsminer", whatsminer),
                       ("braiins", braiins), ("vnish", vnish)]:
        await asyncio.wait_for(section(name, body), 60)
    print(json.dumps(out))

asyncio.run(main())
"#;

async fn python_with_pyasic() -> Result<(String, String), String> {
    for python in ["python3", "python"] {
        let probe = tokio::process::Command::new(python)
            .args([
                "-c",
                "import pyasic, importlib.metadata as m; print(m.version('pyasic'))",
            ])
            .output()
            .await;
        match probe {
            Ok(out) if out.status.success() => {
                return Ok((
                    python.to_string(),
                    String::from_utf8_lossy(&out.stdout).trim().to_string(),
                ))
            }
            Ok(out) => {
                let err = String::from_utf8_lossy(&out.stderr);
                let last = err.lines().last().unwrap_or("").to_string();
                return Err(format!("pyasic is not importable by {python} ({last}); install scripts/test-deps/pip.txt"));
            }
            Err(_) => continue,
        }
    }
    Err("no python3 on PATH".into())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pyasic_drives_the_emulators() {
    let (python, version) = match python_with_pyasic().await {
        Ok(found) => found,
        Err(why) => {
            println!("skipped: {why}");
            return;
        }
    };
    println!("using pyasic {version}");
    let start =
        |kind: FirmwareKind, creds: Option<Credentials>| AsicEmulator::start(kind, 3250.0, creds);
    let (cg_addr, cg) = start(FirmwareKind::Cgminer, None).await.unwrap();
    let (lx_addr, lx) = start(FirmwareKind::LuxOs, None).await.unwrap();
    let (wm_addr, wm) = start(
        FirmwareKind::Whatsminer,
        Some(Credentials::new("admin", PASSWORD)),
    )
    .await
    .unwrap();
    let (bos_addr, bos) = start(
        FirmwareKind::BraiinsOs,
        Some(Credentials::new("root", PASSWORD)),
    )
    .await
    .unwrap();
    let (vn_addr, vn) = start(
        FirmwareKind::Vnish,
        Some(Credentials::new("admin", PASSWORD)),
    )
    .await
    .unwrap();
    let cfg = serde_json::json!({
        "password": PASSWORD,
        "cgminer": cg_addr.port(), "luxos": lx_addr.port(), "whatsminer": wm_addr.port(),
        "braiins": bos_addr.port(), "vnish": vn_addr.port(),
    });
    let run = tokio::process::Command::new(&python)
        .args(["-c", SCRIPT, &cfg.to_string()])
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(240), run)
        .await
        .expect("pyasic script finished in time")
        .expect("python runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "script failed:\n{stdout}\n{stderr}");
    let report: serde_json::Value = serde_json::from_str(stdout.lines().last().unwrap_or(""))
        .unwrap_or_else(|_| panic!("no JSON report:\n{stdout}\n{stderr}"));
    println!("pyasic report: {report}");
    for name in ["cgminer", "luxos", "whatsminer", "braiins", "vnish"] {
        assert!(
            report[name].get("error").is_none(),
            "pyasic {name}: {}",
            report[name]
        );
    }

    assert_eq!(report["cgminer"]["devs"], 3);
    assert_eq!(
        report["cgminer"]["multi"],
        serde_json::json!(["devs", "summary"])
    );
    assert!(cg.is_paused(), "cgminer: {:?}", cg.commands_seen());

    assert_eq!(report["luxos"]["curtail"], "sleep mode");
    assert!(lx.is_paused());
    assert!(matches!(lx.state(), MinerState::Paused) && lx.power_limit_w().is_some());

    assert_eq!(report["whatsminer"]["power_off"], "API command OK");
    assert_eq!(report["whatsminer"]["mineroff"], "true");
    assert!(wm.is_paused());
    assert_eq!(wm.power_limit_w(), Some(2500.0));

    assert_eq!(report["braiins"]["target"], 2500);
    assert!(bos.is_paused());
    assert_eq!(bos.power_limit_w(), Some(2500.0));

    assert_eq!(report["vnish"]["state"], "paused");
    assert!(vn.is_paused());
}
