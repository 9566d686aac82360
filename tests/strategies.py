"""Hypothesis strategies derived from the codec's own field specs.

Because they are built from :func:`p2pcluster._proto.codec.record_specs`, every message type
added later is covered without touching this file.
"""

from __future__ import annotations

import os
import random
from typing import Any

import cbor2
from hypothesis import strategies as st

from p2pcluster._proto import codec
from p2pcluster._proto.codec import FieldSpec
from p2pcluster._proto.messages import MESSAGE_CLASSES, Message

#: Examples for each fuzz test: at least 20k in CI (CI=true), fewer locally.
FUZZ_EXAMPLES = 20_000 if os.environ.get("CI") else 2_000


def _utf8_at_most(n: int) -> st.SearchStrategy[str]:
    return st.text(max_size=n).filter(lambda s: len(s.encode()) <= n)


def for_spec(spec: FieldSpec) -> st.SearchStrategy[Any]:  # noqa: PLR0911 - one per kind
    lim = spec.limit
    if spec.kind == "int":
        lo = lim.lo if lim and lim.lo is not None else -(2**63)
        hi = lim.hi if lim and lim.hi is not None else 2**64 - 1
        return st.integers(lo, hi)
    if spec.kind == "float":
        return st.floats(allow_nan=False)
    if spec.kind == "bool":
        return st.booleans()
    if spec.kind == "str":
        text = _utf8_at_most(lim.max_len if lim and lim.max_len else 64)
        return text.filter(str.isprintable) if lim and lim.printable else text
    if spec.kind == "bytes":
        return st.binary(max_size=lim.max_len if lim and lim.max_len else 64)
    if spec.kind == "optional":
        return st.none() | for_spec(spec.items)
    if spec.kind == "tuple":
        cap = min(lim.max_len, 4) if lim and lim.max_len else 4
        return st.lists(for_spec(spec.items), max_size=cap).map(tuple)
    if spec.kind == "record":
        return record(spec.cls, spec.items)  # type: ignore[arg-type]
    if spec.kind == "union":
        return st.one_of([record(cls, specs) for _, cls, specs in spec.items])
    raise AssertionError(spec.kind)


def record(cls: type, specs: tuple[FieldSpec, ...]) -> st.SearchStrategy[Any]:
    return st.builds(cls, *[for_spec(s) for s in specs])


def message_of(cls: type) -> st.SearchStrategy[Message]:
    return record(cls, codec.record_specs(cls))


messages: st.SearchStrategy[Message] = st.one_of(
    [message_of(cls) for cls in MESSAGE_CLASSES.values()]
)

#: Arbitrary CBOR-able structures, including tags and maps, to fuzz the structural checks.
cbor_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats()
    | st.text(max_size=8) | st.binary(max_size=8),
    lambda children: st.lists(children, max_size=6)
    | st.dictionaries(st.integers(0, 5) | st.text(max_size=3), children, max_size=4),
    max_leaves=20,
)


@st.composite
def mutated(draw: st.DrawFn, data: bytes) -> bytes:
    """``data`` with a few random edits: bit flips, truncation, insertion, deletion."""
    buf = bytearray(data)
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["flip", "truncate", "insert", "delete", "set"]))
        if not buf:
            op = "insert"
        pos = draw(st.integers(0, max(len(buf) - 1, 0)))
        if op == "flip":
            buf[pos] ^= 1 << draw(st.integers(0, 7))
        elif op == "truncate":
            del buf[pos:]
        elif op == "insert":
            buf[pos:pos] = draw(st.binary(min_size=1, max_size=8))
        elif op == "delete":
            del buf[pos : pos + draw(st.integers(1, 8))]
        else:
            buf[pos] = draw(st.integers(0, 255))
    return bytes(buf)


# --- fast generators: Hypothesis supplies a seeded Random, plain code does the rest --------
# Hypothesis draws cost about 0.3 ms each, so 20k examples of nested strategies take minutes.
# These generators make one draw (the Random) per example; a failure still reproduces, since
# Hypothesis reports the Random's seed.

_EDGE_INTS = (0, 1, 2, 255, 256, 65535, 65536, 2**32 - 1, 2**63 - 1, 2**64 - 1)


def random_value(spec: FieldSpec, rng: random.Random) -> Any:  # noqa: PLR0911
    lim = spec.limit
    if spec.kind == "int":
        lo = lim.lo if lim and lim.lo is not None else -(2**63)
        hi = lim.hi if lim and lim.hi is not None else 2**64 - 1
        edges = [v for v in (lo, hi, *_EDGE_INTS) if lo <= v <= hi]
        return rng.choice(edges) if rng.random() < 0.3 else rng.randint(lo, min(hi, lo + 10**6))
    if spec.kind == "float":
        return rng.choice([0.0, -1.5, 1e300, float("inf"), rng.random()])
    if spec.kind == "bool":
        return rng.random() < 0.5
    if spec.kind in ("str", "bytes"):
        cap = lim.max_len if lim and lim.max_len else 64
        n = rng.choice([0, 1, cap, rng.randint(0, cap)])
        if spec.kind == "bytes":
            return rng.randbytes(n)
        return "".join(rng.choice("aZ09-_.é") for _ in range(n)).encode()[:cap].decode(
            errors="ignore")
    if spec.kind == "optional":
        return None if rng.random() < 0.3 else random_value(spec.items, rng)
    if spec.kind == "tuple":
        cap = min(lim.max_len, 6) if lim and lim.max_len else 6
        return tuple(random_value(spec.items, rng) for _ in range(rng.randint(0, cap)))
    if spec.kind == "record":
        return spec.cls(*[random_value(s, rng) for s in spec.items])  # type: ignore[misc]
    if spec.kind == "union":
        _, cls, specs = rng.choice(spec.items)
        return cls(*[random_value(s, rng) for s in specs])
    raise AssertionError(spec.kind)


def random_message(rng: random.Random) -> Message:
    cls = rng.choice(list(MESSAGE_CLASSES.values()))
    return cls(*[random_value(s, rng) for s in codec.record_specs(cls)])


def mutate(data: bytes, rng: random.Random) -> bytes:
    """A few random edits of ``data``: bit flips, truncation, insertion, deletion, overwrite."""
    buf = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        op = rng.choice(("flip", "truncate", "insert", "delete", "set")) if buf else "insert"
        pos = rng.randrange(len(buf)) if buf else 0
        if op == "flip":
            buf[pos] ^= 1 << rng.randrange(8)
        elif op == "truncate":
            del buf[pos:]
        elif op == "insert":
            buf[pos:pos] = rng.randbytes(rng.randint(1, 8))
        elif op == "delete":
            del buf[pos : pos + rng.randint(1, 8)]
        else:
            buf[pos] = rng.randrange(256)
    return bytes(buf)


def random_cbor(rng: random.Random, depth: int = 0) -> Any:
    """An arbitrary plain CBOR value (maps, arrays, scalars, some tags)."""
    roll = rng.random()
    if depth < 4 and roll < 0.25:
        return [random_cbor(rng, depth + 1) for _ in range(rng.randint(0, 5))]
    if depth < 4 and roll < 0.32:
        return {rng.choice([0, 1, "k", b"b"]): random_cbor(rng, depth + 1)
                for _ in range(rng.randint(0, 3))}
    if roll < 0.35:
        return cbor2.CBORTag(rng.choice([0, 1, 2, 24, 258, 9999]), random_cbor(rng, depth + 1))
    return rng.choice([None, True, False, 0, -1, 2**64 - 1, -(2**64), 1.5, float("nan"),
                       "", "x" * rng.randint(0, 300), b"", rng.randbytes(rng.randint(0, 40)),
                       rng.randint(-1000, 1000)])


#: One draw per example; a failing example is reported as its seed.
seeded = st.integers(0, 2**64 - 1).map(random.Random)
