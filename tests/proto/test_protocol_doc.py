"""docs/protocol.md's test vectors agree with the code."""

from __future__ import annotations

import re
from pathlib import Path

from p2pcluster._proto import wire
from p2pcluster._proto.envelope import DatagramOpener, DatagramSealer, Keyring, derive_key
from p2pcluster._proto.messages import Nack, Ping, Suspect

DOC = (Path(__file__).parents[2] / "docs" / "protocol.md").read_text()
SECRET = bytes(range(32))


def vector(label: str) -> bytes:
    match = re.search(rf"^{re.escape(label)}:\s+([0-9a-f]+)$", DOC, re.MULTILINE)
    assert match, f"docs/protocol.md lost its {label!r} vector"
    return bytes.fromhex(match.group(1))


def block_after(phrase: str) -> bytes:
    match = re.search(re.escape(phrase) + r".*?```\n([0-9a-f]+)\n```", DOC, re.DOTALL)
    assert match, phrase
    return bytes.fromhex(match.group(1))


def test_key_derivation_vectors() -> None:
    key = derive_key(SECRET, "default")
    assert key.key_id == vector("key id")
    assert key.datagram_key == vector("datagram key")
    assert key.stream_psk == vector("stream psk")


def test_message_vectors() -> None:
    nack = re.search(r"`Nack\(seq=7\)` encodes as `([0-9a-f]+)`", DOC)
    assert nack, "docs/protocol.md lost its Nack vector"
    assert wire.encode(Nack(seq=7)).hex() == nack.group(1) == "83050407"
    ping = Ping(seq=1, target=bytes(16),
                updates=(Suspect(node=b"\x01" * 16, incarnation=3, by=b"\x02" * 16),))
    assert wire.encode(ping) == block_after("encodes as:")
    assert wire.decode(block_after("encodes as:")) == ping


def test_datagram_vector() -> None:
    ring = Keyring([derive_key(SECRET, "default")])
    sealer = DatagramSealer(ring, lambda n: bytes.fromhex("0102030405060708"), b"\x0a" * 16)
    sealed = sealer.seal(wire.encode(Nack(seq=7)), 1_800_000_000.0, b"\x0b" * 16)
    assert sealed == block_after("counter 0:")
    opener = DatagramOpener(ring, b"\x0b" * 16, window=60, cache_size=1000, max_size=1400)
    opened = opener.open(sealed, 1_800_000_010.0)
    assert wire.decode(opened.payload) == Nack(seq=7) and opened.origin.node == b"\x0a" * 16
