"""The encrypted stream alone: GB/s and CPU per GB of each end, with no task around it.

    python scripts/bench_stream.py [--json] [--gib N] [--streams S] [--buffer BYTES]

One process sends ``N`` GiB in 1 MiB frames (``SecureStream.send_payload``, the frame size
of a data stream) over ``S`` handshaken streams on 127.0.0.1 to a subprocess, which opens
each frame straight into a buffer it reuses (``receive_payload_into``, as a landing does).
The sender's frames are views of one 16 MiB buffer. Reported: the sender's GB/s
(``gbps``), and each end's CPU seconds per GB over the transfer (``send_cpu_s_per_gb``,
``receive_cpu_s_per_gb``), with the stream cipher the handshake chose (``stream_cipher``).
``--buffer`` sets ``SO_SNDBUF`` and ``SO_RCVBUF`` on both ends (default: left to the
kernel's autotuning). D1 of ``bench_data.py`` moves its arrays through this path; the
difference between the two is what the tasks' own path costs.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import socket
import subprocess
import sys
import time
from typing import Any

import trio

from p2pcluster._config import Config
from p2pcluster._proto.envelope import Keyring
from p2pcluster._secure import SecureWire
from p2pcluster._trio_transport import TrioTransport
from p2pcluster._wirechannels import SecureStream

FRAME = 1 << 20
SOURCE = 16 << 20


def _wire(secret: bytes) -> SecureWire:
    return SecureWire(TrioTransport(), Keyring.from_secrets([secret], "bench"), Config.local(),
                      node_id=os.urandom(16))


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _tune(stream: SecureStream, buffer: int) -> None:
    if buffer and isinstance(stream.stream, trio.SocketStream):
        for option in (socket.SO_SNDBUF, socket.SO_RCVBUF):
            stream.stream.socket.setsockopt(socket.SOL_SOCKET, option, buffer)


async def _receive(secret: bytes, frames: int, streams: int, buffer: int) -> None:
    """The receiving end: prints its port, then its CPU seconds once every frame is in."""
    listener = await TrioTransport().open_listener(("127.0.0.1", 0))
    print(listener.local_address[1], flush=True)
    done, left, started = trio.Event(), [streams], [0.0]

    async def handler(stream: SecureStream) -> None:
        _tune(stream, buffer)
        started[0] = started[0] or _cpu()
        dest, offset = memoryview(bytearray(SOURCE)), 0
        for _ in range(frames // streams):
            await stream.receive_payload_into(dest[offset:offset + FRAME])
            offset = (offset + FRAME) % SOURCE
        left[0] -= 1
        if not left[0]:
            print(json.dumps({"cpu_s": _cpu() - started[0]}), flush=True)
            done.set()

    async with trio.open_nursery() as nursery:
        await nursery.start(_wire(secret).serve, listener, handler)
        await done.wait()
        nursery.cancel_scope.cancel()


async def _send(secret: bytes, port: int, frames: int, streams: int, buffer: int
                ) -> dict[str, Any]:
    wire = _wire(secret)
    source = memoryview(bytearray(os.urandom(SOURCE)))
    opened = [await wire.connect(("127.0.0.1", port)) for _ in range(streams)]
    for stream in opened:
        _tune(stream, buffer)

    async def send(stream: SecureStream, first: int) -> None:
        offset = first
        for _ in range(frames // streams):
            await stream.send_payload(source[offset:offset + FRAME])
            offset = (offset + FRAME) % SOURCE

    cpu, start = _cpu(), time.perf_counter()
    async with trio.open_nursery() as nursery:
        for index, stream in enumerate(opened):
            nursery.start_soon(send, stream, index * SOURCE // streams // FRAME * FRAME)
    wall, cpu = time.perf_counter() - start, _cpu() - cpu
    counters = wire.statistics()
    for stream in opened:
        await stream.aclose()
    gb = frames // streams * streams * FRAME / 1e9
    return {"gbps": gb / wall, "send_cpu_s_per_gb": cpu / gb, "gb": gb,
            "stream_cipher": "aes-256-gcm" if counters.streams_aes_gcm else "chacha20-poly1305"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--gib", type=float, default=1.0, help="GiB to send (default 1)")
    parser.add_argument("--streams", type=int, default=1, help="streams at once (default 1)")
    parser.add_argument("--buffer", type=int, default=0,
                        help="SO_SNDBUF and SO_RCVBUF in bytes (default: autotuning)")
    parser.add_argument("--receiver", help=argparse.SUPPRESS)  # the secret, in hex
    args = parser.parse_args()
    frames = max(args.streams, int(args.gib * 1024))
    if args.receiver:
        trio.run(_receive, bytes.fromhex(args.receiver), frames, args.streams, args.buffer)
        return
    secret = os.urandom(32)
    command = [sys.executable, __file__, "--gib", str(args.gib), "--streams",
               str(args.streams), "--buffer", str(args.buffer), "--receiver", secret.hex()]
    with subprocess.Popen(command, stdout=subprocess.PIPE, text=True) as receiver:
        assert receiver.stdout is not None
        port = int(receiver.stdout.readline())
        result = trio.run(_send, secret, port, frames, args.streams, args.buffer)
        received = json.loads(receiver.stdout.readline())
    result["receive_cpu_s_per_gb"] = received["cpu_s"] / result["gb"]
    result = {key: round(value, 3) if isinstance(value, float) else value
              for key, value in result.items()}
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        for key, value in result.items():
            print(f"{key:>24}  {value}")


if __name__ == "__main__":
    main()
