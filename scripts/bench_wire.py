"""Cost of the wire path per small message: encode+seal and open+decode, in microseconds.

    python scripts/bench_wire.py [--json] [--seconds S]

Each figure is the fastest of 5 timed batches (per call), the usual microbenchmark statistic
on a shared machine: slower batches measure interference, not the code. The baselines,
measured in the same run, split the cost: plain ``cbor2.dumps``/``loads`` of the same list
(the schema layer's overhead is the difference) and the bare ChaCha20-Poly1305 call (the
envelope's overhead is the difference).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from collections.abc import Callable
from typing import Any

import cbor2
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

from p2pcluster._proto import wire
from p2pcluster._proto.envelope import DatagramOpener, DatagramSealer, Keyring
from p2pcluster._proto.handshake import ClientHandshake, ServerHandshake
from p2pcluster._proto.messages import Ack, Alive, Message, Ping

NODE = bytes(range(16))
PEER = bytes(range(16, 32))
MESSAGES: dict[str, Message] = {
    "ping_empty": Ping(seq=123456, target=NODE),
    "ack_empty": Ack(seq=123456),
    "ping_6_updates": Ping(seq=123456, target=NODE, updates=tuple(
        Alive(node=bytes([i]) * 16, incarnation=i, name=f"host-{i}", host=f"10.0.0.{i}",
              port=7946, meta=b"\xa1\x61w\x08") for i in range(6))),
}


def per_call_us(fn: Callable[[], Any], seconds: float) -> float:
    n = 1
    while True:  # calibrate a batch of about seconds / 5
        start = time.perf_counter()
        for _ in range(n):
            fn()
        if time.perf_counter() - start > seconds / 25:
            break
        n *= 2
    samples = []
    for _ in range(5):
        start = time.perf_counter()
        for _ in range(n):
            fn()
        samples.append((time.perf_counter() - start) / n * 1e6)
    return min(samples)


def bench(seconds: float) -> dict[str, Any]:
    ring = Keyring.from_secrets([os.urandom(32)], "default")
    results: dict[str, Any] = {name: message_costs(ring, msg, seconds)
                               for name, msg in MESSAGES.items()}
    client = ClientHandshake(ring, os.urandom, node_id=NODE, max_frame=1 << 26)
    server = ServerHandshake(ring, os.urandom, node_id=PEER, max_frame=1 << 26)
    session, proof = client.receive(server.receive(client.hello()))
    server_session = server.finish(proof)
    frame_payload = wire.encode(MESSAGES["ping_6_updates"])

    def frame_round_trip() -> None:
        server_session.feed(session.seal(frame_payload))
        server_session.next_payload()

    results["stream_frame_seal_open_us"] = round(per_call_us(frame_round_trip, seconds), 2)
    results["handshake_us"] = round(per_call_us(lambda: _handshake(ring), seconds), 1)
    return results


def message_costs(ring: Keyring, msg: Any, seconds: float) -> dict[str, Any]:
    """One message's size on the wire and costs, beside cbor2's and the bare AEAD's."""
    sealer = DatagramSealer(ring, os.urandom, NODE)
    now = time.time()
    aead = ChaCha20Poly1305(os.urandom(32))
    nonce, hdr = os.urandom(12), os.urandom(61)
    payload = wire.encode(msg)
    datagram = sealer.seal(payload, now, PEER)
    opener = DatagramOpener(ring, PEER, window=1e12, cache_size=10**9, max_size=1400)

    def open_decode() -> None:
        # The same datagram each time, so forget it first (a 1-entry dict clear) rather
        # than pre-sealing millions of distinct ones.
        opener.replay._seen.clear()
        wire.decode(opener.open(datagram, now).payload)

    raw = cbor2.loads(payload)
    sealed_ct = aead.encrypt(nonce, payload, hdr)
    return {
        "bytes_on_wire": len(datagram),
        "encode_seal_us": round(per_call_us(lambda m=msg: sealer.seal(wire.encode(m), now, PEER),
                                            seconds), 2),
        "open_decode_us": round(per_call_us(open_decode, seconds), 2),
        "baseline_cbor2_dumps_us": round(per_call_us(lambda r=raw: cbor2.dumps(r), seconds), 2),
        "baseline_cbor2_loads_us": round(per_call_us(lambda p=payload: cbor2.loads(p),
                                                     seconds), 2),
        "baseline_aead_encrypt_us": round(per_call_us(
            lambda p=payload: aead.encrypt(nonce, p, hdr), seconds), 2),
        "baseline_aead_decrypt_us": round(per_call_us(
            lambda c=sealed_ct: aead.decrypt(nonce, c, hdr), seconds), 2),
    }


def _handshake(ring: Keyring) -> None:
    client = ClientHandshake(ring, os.urandom, node_id=NODE, max_frame=1 << 20)
    server = ServerHandshake(ring, os.urandom, node_id=PEER, max_frame=1 << 20)
    _, proof = client.receive(server.receive(client.hello()))
    server.finish(proof)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--seconds", type=float, default=1.0, help="time per measurement")
    args = parser.parse_args()
    results = bench(args.seconds)
    if args.json:
        print(json.dumps(results, indent=2))
        return
    for name, value in results.items():
        print(f"{name}: {value}")


if __name__ == "__main__":
    main()
