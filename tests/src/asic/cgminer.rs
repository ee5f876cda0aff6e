//! cgminer (and stock bmminer) JSON API emulator: `{"command","parameter"}` in, one JSON answer
//! with a trailing NUL out, connection closed. Devices are the machine's hash boards, listed
//! as ASCs. Writing commands need `api-allow W:` ([`super::EmulatorOptions::write_access`]);
//! `bmminer` mode answers `ascdisable`/`ascenable` with "Invalid command" like stock Antminers.
//! `cmd1+cmd2` multi-commands are answered as cgminer does (`{"cmd1":[..],"cmd2":[..]}`).

use serde_json::{json, Value};

use super::{now_secs, EmulatedMiner, JsonTcpFirmware, BOARDS};

#[derive(Default)]
pub struct Cgminer;

const PRIVILEGED: &[&str] = &[
    "ascdisable",
    "ascenable",
    "pgadisable",
    "pgaenable",
    "disablepool",
    "enablepool",
    "switchpool",
    "restart",
    "quit",
    "save",
];

fn description(miner: &EmulatedMiner) -> &'static str {
    if miner.options().bmminer {
        "bmminer 1.0.0"
    } else {
        "cgminer 4.12.1"
    }
}

fn status(miner: &EmulatedMiner, severity: &str, code: i64, msg: &str) -> Value {
    json!([{ "STATUS": severity, "When": now_secs(), "Code": code, "Msg": msg, "Description": description(miner) }])
}

fn reply(miner: &EmulatedMiner, severity: &str, code: i64, msg: &str) -> Value {
    json!({ "STATUS": status(miner, severity, code, msg), "id": 1 })
}

fn one(miner: &EmulatedMiner, command: &str, parameter: Option<&str>) -> Value {
    miner.record(match parameter {
        Some(p) => format!("{command}|{p}"),
        None => command.to_string(),
    });
    if PRIVILEGED.contains(&command) && !miner.options().write_access {
        return reply(
            miner,
            "E",
            45,
            &format!("Access denied to '{command}' command"),
        );
    }
    let boards: Vec<Value> = (0..BOARDS)
        .map(|i| {
            let enabled = miner.board_enabled(i);
            let mhs = if enabled {
                miner.hashrate_ghs() * 1000.0 / BOARDS as f64
            } else {
                0.0
            };
            json!({
                "ASC": i, "Name": "BTM", "ID": i, "Enabled": if enabled { "Y" } else { "N" },
                "Status": "Alive", "Temperature": 65.0, "MHS av": mhs, "MHS 5s": mhs,
                "Accepted": 100, "Rejected": 0, "Hardware Errors": 0
            })
        })
        .collect();
    match command {
        "version" => {
            let mut r = reply(miner, "S", 22, "CGMiner versions");
            r["VERSION"] = json!([{ "CGMiner": "4.12.1", "API": "3.7" }]);
            r
        }
        "summary" => {
            let mhs = miner.hashrate_ghs() * 1000.0;
            let mut r = reply(miner, "S", 11, "Summary");
            r["SUMMARY"] = json!([{
                "Elapsed": 3600, "MHS av": mhs, "MHS 5s": mhs, "Accepted": 300, "Rejected": 1,
                "Hardware Errors": 0, "Utility": 5.0, "Work Utility": 1000.0
            }]);
            r
        }
        "devs" => {
            let mut r = reply(miner, "S", 9, &format!("{BOARDS} ASC(s)"));
            r["DEVS"] = Value::Array(boards);
            r
        }
        "asccount" => {
            let mut r = reply(miner, "S", 104, "ASC count");
            r["ASCS"] = json!([{ "Count": BOARDS }]);
            r
        }
        "pools" => {
            let mut r = reply(miner, "S", 7, "1 Pool(s)");
            r["POOLS"] = json!([{
                "POOL": 0, "URL": "stratum+tcp://127.0.0.1:3333", "Status": "Alive",
                "Priority": 0, "User": "site.worker", "Stratum Active": true
            }]);
            r
        }
        "ascdisable" | "ascenable" => {
            if miner.options().bmminer {
                return reply(miner, "E", 14, "Invalid command");
            }
            let enable = command == "ascenable";
            let Some(p) = parameter else {
                return reply(miner, "E", 15, "Missing device id parameter");
            };
            let id = match p.trim().parse::<usize>() {
                Ok(id) if id < BOARDS => id,
                _ => {
                    return reply(
                        miner,
                        "E",
                        107,
                        &format!("Invalid ASC id {p} - range is 0 - {}", BOARDS - 1),
                    )
                }
            };
            if miner.board_enabled(id) == enable {
                let (code, msg) = if enable {
                    (108, format!("ASC {id} already enabled"))
                } else {
                    (109, format!("ASC {id} already disabled"))
                };
                return reply(miner, "I", code, &msg);
            }
            miner.set_board(id, enable);
            if enable {
                reply(miner, "I", 110, &format!("ASC {id} sent enable message"))
            } else {
                reply(miner, "I", 111, &format!("ASC {id} set disable flag"))
            }
        }
        "pgadisable" | "pgaenable" => reply(miner, "E", 10, "No PGAs"),
        _ => reply(miner, "E", 14, "Invalid command"),
    }
}

impl JsonTcpFirmware for Cgminer {
    fn answer(&self, miner: &EmulatedMiner, request: &[u8]) -> Vec<u8> {
        let value = match serde_json::from_slice::<Value>(request) {
            Ok(v) if v.is_object() => v,
            _ => {
                let mut out = reply(miner, "E", 23, "Invalid JSON")
                    .to_string()
                    .into_bytes();
                out.push(0);
                return out;
            }
        };
        let answer = match value.get("command").and_then(Value::as_str) {
            None => reply(miner, "E", 24, "Missing JSON 'command'"),
            Some(command) => {
                let parameter = match value.get("parameter") {
                    Some(Value::String(s)) => Some(s.clone()),
                    Some(Value::Number(n)) => Some(n.to_string()),
                    _ => None,
                };
                if command.contains('+') {
                    let mut joined = serde_json::Map::new();
                    for part in command.split('+') {
                        joined.insert(
                            part.to_string(),
                            json!([one(miner, part, parameter.as_deref())]),
                        );
                    }
                    Value::Object(joined)
                } else {
                    one(miner, command, parameter.as_deref())
                }
            }
        };
        let mut out = answer.to_string().into_bytes();
        out.push(0);
        out
    }
}
