#!/usr/bin/env python3
"""Serve a power meter's register image with pymodbus, a third-party Modbus TCP server.

Used by the meter tests (blgv_tests::meter_sim::pymodbus) to check our Modbus client against an
implementation we did not write. Written for pymodbus 3.16 (pinned in scripts/test-deps/pip.txt),
which describes a device with SimData/SimDevice.

    python3 pymodbus_meter.py --input-f32 '{"0": 230.1, "52": 12345.5}' [--unit 1]

--input-f32 maps zero-based input-register addresses to values, each stored by pymodbus as an
IEEE float32 with the high word first (Eastron SDM layout); unlisted registers in between are 0.

Prints exactly one line on stdout, then serves until stdin closes or the process is killed:
    LISTENING <port>        bound to 127.0.0.1:<port> (port 0 = chosen by the OS)
    SKIP <why>              pymodbus is missing or unusable (exit code 3)
"""

import argparse
import asyncio
import json
import sys


def skip(why: str) -> int:
    print(f"SKIP {why}", flush=True)
    return 3


def build_device(unit: int, input_f32: dict):
    from pymodbus.simulator import DataType, SimData, SimDevice

    floats = {int(k): float(v) for k, v in input_f32.items()}
    if not floats:
        raise ValueError("--input-f32 is empty")
    end = max(floats) + 2
    input_regs = []
    addr = 0
    while addr < end:
        if addr in floats:
            input_regs.append(
                SimData(address=addr, values=floats[addr], datatype=DataType.FLOAT32)
            )
            addr += 2
        else:
            input_regs.append(SimData(address=addr, values=0, datatype=DataType.REGISTERS))
            addr += 1
    # Non-shared blocks: (coils, discrete inputs, holding registers, input registers).
    return SimDevice(
        id=unit,
        simdata=(
            [SimData(address=0, values=False, datatype=DataType.BITS)],
            [SimData(address=0, values=False, datatype=DataType.BITS)],
            [SimData(address=0, values=0, datatype=DataType.REGISTERS)],
            input_regs,
        ),
    )


async def serve(args) -> int:
    from pymodbus.server import ModbusTcpServer

    device = build_device(args.unit, json.loads(args.input_f32))
    server = ModbusTcpServer(device, address=("127.0.0.1", args.port))
    await server.serve_forever(background=True)
    sockets = getattr(server.transport, "sockets", None) or []
    if not sockets:
        print("could not find the listening socket", file=sys.stderr, flush=True)
        return 2
    port = sockets[0].getsockname()[1]
    print(f"LISTENING {port}", flush=True)

    # Serve until stdin closes (the test ended) or we are killed.
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(None, sys.stdin.read)
    await server.shutdown()
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--unit", type=int, default=1)
    parser.add_argument("--input-f32", required=True)
    args = parser.parse_args()
    try:
        import pymodbus
        from pymodbus.simulator import SimDevice  # noqa: F401  (3.16+ API)
    except Exception as e:  # ImportError, or an older pymodbus without the simulator API
        return skip(f"pymodbus not usable: {e!r}")
    print(f"pymodbus {pymodbus.__version__}", file=sys.stderr, flush=True)
    return asyncio.run(serve(args))


if __name__ == "__main__":
    sys.exit(main())
