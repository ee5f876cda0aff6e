#!/usr/bin/env python3
"""Write the realistic seed inputs of each fuzz target into fuzz/corpus/<target>/seed-*.

Seeds: real Stratum lines (a miner's session and the mainnet block 702861 job from
../shared/vectors), the same job as a share_header input, an SDM630 register image and a
SunSpec model 203 image, a valid grid signal of each kind, a valid energy report. Run from the
repository root; the fuzzers grow the corpus from these, and `cargo fuzz cmin` keeps it small.
"""
import json
import os
import struct
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VECTOR = os.path.join(ROOT, "..", "shared", "vectors", "mainnet-block-702861-job.json")
if not os.path.exists(VECTOR):
    VECTOR = "/work/shared/vectors/mainnet-block-702861-job.json"


def write(target, name, data):
    d = os.path.join(ROOT, "fuzz", "corpus", target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "seed-" + name), "wb") as f:
        f.write(data)


job = json.load(open(VECTOR))

# --- stratum_line: byte 0 = cap (8 + 8*b0), byte 1 = chunking, then the stream.
session = [
    {"id": 1, "method": "mining.configure", "params": [["version-rolling"], {"version-rolling.mask": "1fffe000", "version-rolling.min-bit-count": 2}]},
    {"id": 2, "method": "mining.subscribe", "params": ["bmminer/2.0.0", None]},
    {"id": 3, "method": "mining.authorize", "params": ["acct.rig1", "x"]},
    {"id": 4, "method": "mining.suggest_difficulty", "params": [1024]},
    {"id": 5, "method": "mining.extranonce.subscribe", "params": []},
    {"id": 6, "method": "mining.submit", "params": ["acct.rig1", "1a", "00000001", "6553f100", "deadbeef", "00002000"]},
    {"id": 7, "method": "mining.submit", "params": ["acct.rig1", 17, "0001", "6553f100", "deadbeef", None]},
]
pool = [
    {"id": 2, "result": [[["mining.set_difficulty", "1"], ["mining.notify", "1"]], "0475a455", 4], "error": None},
    {"id": None, "method": "mining.set_difficulty", "params": [2048]},
    {"id": None, "method": "mining.set_version_mask", "params": ["1fffe000"]},
    {"id": None, "method": "mining.set_extranonce", "params": ["0475a455", 4]},
    {"id": None, "method": "mining.notify", "params": job["notify"]},
    {"id": None, "method": "client.reconnect", "params": ["pool.example", 3333, 5]},
    {"id": 6, "result": None, "error": [23, "Low difficulty share", None]},
]
miner_lines = "".join(json.dumps(m, separators=(",", ":")) + "\n" for m in session)
pool_lines = "".join(json.dumps(m, separators=(",", ":")) + "\r\n" for m in pool)
real_submit = {"id": 9, "method": "mining.submit", "params": job["submit"]}
write("stratum_line", "miner-session", bytes([64, 0]) + miner_lines.encode())
write("stratum_line", "miner-session-chunked", bytes([64, 13]) + miner_lines.encode())
write("stratum_line", "pool-session", bytes([255, 7]) + pool_lines.encode())
write("stratum_line", "mainnet-submit", bytes([32, 0]) + (json.dumps(real_submit) + "\n").encode())
write("stratum_line", "overlong-line", bytes([1, 3]) + b'{"id":1,"method":"mining.subscribe","params":["' + b"x" * 200 + b'"]}\n')

# --- share_header: the mainnet job, its solving share, the network target.
def u32(v):
    return struct.pack("<I", v)


def swap_words(b):
    return b"".join(b[i:i + 4][::-1] for i in range(0, 32, 4))


n = job["notify"]
coinb1 = bytes.fromhex(n[2])
coinb2 = bytes.fromhex(n[3])
assert len(coinb1) < 256 and len(coinb2) < 256, (len(coinb1), len(coinb2))
s = job["submit"]
share = b"".join([
    swap_words(bytes.fromhex(n[1])),
    u32(int(n[5], 16)), u32(int(n[6], 16)), u32(int(n[7], 16)),
    bytes([len(coinb1)]), coinb1, bytes([len(coinb2)]), coinb2,
    bytes([len(n[4])]), b"".join(bytes.fromhex(h) for h in n[4]),
    bytes([4]), bytes.fromhex(job["extranonce1"]),
    bytes([4]), bytes.fromhex(s[2]),
    u32(int(s[3], 16)), u32(int(s[4], 16)),
    bytes([0]),  # no version bits
    u32(0x1FFFE000), u32(int(n[7], 16)), u32(int(n[7], 16) + 7200), bytes([4]),
    bytes([1]), u32(int(n[6], 16)),  # target from the job's nbits
    # pool coinbase: height 702861, 8 extranonce bytes, a tag, one P2WPKH output, commitment
    u32(702861), bytes([8]), bytes([12]), b"/blgv-site/\x00",
    bytes([1]), struct.pack("<Q", 629948405), bytes([22]), bytes.fromhex("00143156afc4249915008020f932783319f3e610b97d"),
    bytes([1]), bytes(range(32)),
    bytes.fromhex("0475a45500000000"),
    bytes([5]), b"".join(bytes([i]) * 32 for i in range(5)),
])
write("share_header", "mainnet-702861", share)

# --- modbus_decode: byte 0 = map (0 SDM630, 5 SunSpec at 40000), then big-endian words at
# register address = word index.
img = [0] * 0x4A
def put_f32(addr, v):
    b = struct.pack(">f", v)
    img[addr], img[addr + 1] = struct.unpack(">HH", b)
for i, (v, a, w) in enumerate([(230.1, 4.35, 998.2), (231.4, 4.12, 951.0), (229.8, 4.40, 1010.7)]):
    put_f32(0x00 + 2 * i, v)
    put_f32(0x06 + 2 * i, a)
    put_f32(0x0C + 2 * i, w)
img += [0] * (0x4A - len(img))
put_f32(0x34, 2959.9)
img += [0, 0]
put_f32(0x48, 18234.5)
write("modbus_decode", "sdm630", bytes([0]) + b"".join(struct.pack(">H", x) for x in img))
nan = list(img)
nan[0x34], nan[0x35] = 0x7FC0, 0x0000  # NaN total power
write("modbus_decode", "sdm630-nan", bytes([0]) + b"".join(struct.pack(">H", x) for x in nan))

# SunSpec: after "SunS" at 40000, common model 1 (66 registers), then meter model 203 (105).
common = [1, 66] + [0] * 66
# Offsets count from the model's ID register (sensors/src/meter/sunspec.rs).
model = [0] * 107
model[0], model[1] = 203, 105
model[3:6] = [435, 412, 440]                    # AphA..C, A_SF at 6
model[6] = 0xFFFE                               # A_SF = -2
model[8:11] = [2301, 2314, 2298]                # PhVphA..C, V_SF at 15
model[15] = 0xFFFF                              # V_SF = -1
model[18] = 2960                                # W, W_SF at 22
model[19:22] = [998, 951, 1011]                 # WphA..C
model[22] = 0                                   # W_SF = 0
model[46], model[47] = 0, 18234                 # TotWhImp acc32, TotWh_SF at 54
model[54] = 3                                   # TotWh_SF = 3
sunspec = common + model + [0xFFFF, 0]
write("modbus_decode", "sunspec-203", bytes([5]) + b"".join(struct.pack(">H", x) for x in sunspec))

# --- grid_signal: the replay clock is 1_800_000_000 (2027-01-15T08:00:00Z).
signals = {
    "limit": {"signal_id": "evt-42", "issued_at": "2027-01-15T07:59:50Z", "start": "2027-01-15T08:00:05Z", "duration_s": 900, "limit_kw": 400.0},
    "level": {"signal_id": "evt-43", "issued_at": 1799999990, "duration_s": 600, "level": 2},
    "end": {"signal_id": "evt-42", "end": True},
}
for name, sig in signals.items():
    write("grid_signal", name, json.dumps(sig).encode())

# --- energy_report: the replay clock is 1_767_225_900.
report = {
    "version": 1, "site_id": "site1", "interval_start": 1767225600, "interval_end": 1767225900,
    "sources": [
        {"kind": "solar", "meter": "pv", "kwh": 12.5, "measured_secs": 300.0},
        {"kind": "grid", "meter": "grid-in", "region": "DE", "kwh": 3.1, "measured_secs": 300.0, "g_co2_per_kwh": 350.0},
    ],
    "average_kw": 187.2, "peak_kw": 201.3, "hashes": 1.3e18,
    "curtailment": {"signal_secs": 120.0, "compliant_secs": 118.0, "signal_ids": ["evt-42"],
                    "events": [{"at": 1767225610, "signal_id": "evt-42", "what": "shed 3 miners"}],
                    "events_omitted": 0},
}
write("energy_report", "report", json.dumps(report).encode())
print("seeds written", file=sys.stderr)
