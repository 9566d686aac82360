"""Who yields a name, as a table; the start time in the metadata; printable names."""

from __future__ import annotations

import dataclasses

import pytest

from p2pcluster import Config, ConfigError
from p2pcluster._names import must_yield, rival_start
from p2pcluster._proto.membership import Member
from p2pcluster._proto.messages import MemberStatus
from p2pcluster._proto.meta import NodeMeta

ME = Member(b"\x05" * 16, "lab1", "10.77.0.1", 7946, 0, MemberStatus.ALIVE,
            NodeMeta(2, started=1000).encode(), 0.0)


def other(started: int = 900, *, node: bytes = b"\x09" * 16, name: str = "lab1",
          host: str = "10.77.0.2", status: MemberStatus = MemberStatus.ALIVE) -> Member:
    return Member(node, name, host, 7946, 0, status, NodeMeta(2, started=started).encode(),
                  0.0)


@pytest.mark.parametrize(("rival", "yields"), [
    (other(900), True),  # it started first
    (other(1100), False),  # it started later: it yields
    (other(1000, node=b"\x01" * 16), True),  # same second, smaller id: the larger id yields
    (other(1000, node=b"\xff" * 16), False),
    (other(900, status=MemberStatus.SUSPECT), True),  # suspect is still live
])
def test_the_later_starter_yields(rival: Member, yields: bool) -> None:
    assert must_yield(ME, 1000, rival) is yields
    assert rival_start(ME, rival) == NodeMeta.decode(rival.meta).started


@pytest.mark.parametrize("member", [
    other(900, name="lab2"),  # another name
    other(900, host=ME.host),  # this machine: a predecessor, or a second peer by choice
    other(900, status=MemberStatus.DEAD),
    other(900, status=MemberStatus.LEFT),
    other(0),  # no start time published: an embedded peer, or an older version
    dataclasses.replace(ME, meta=NodeMeta(started=1).encode()),  # ourselves
])
def test_no_rival(member: Member) -> None:
    assert rival_start(ME, member) is None
    assert not must_yield(ME, 1000, member)


def test_the_start_time_travels_in_the_metadata_and_decodes_leniently() -> None:
    meta = NodeMeta(workers=2, queue=1, tags=("gpu",), version="0.1.0", started=1_790_000_000)
    assert NodeMeta.decode(meta.encode()) == meta
    unstamped = NodeMeta(workers=2).encode()
    assert b"\x61s" not in unstamped  # no "s" key at all while unknown: as older peers send
    assert NodeMeta.decode(unstamped).started == 0
    assert NodeMeta.decode(b"\xa1\x61s\x63abc").started == 0  # {"s": "abc"}
    assert NodeMeta.decode(b"\xa1\x61s\x20").started == 0  # {"s": -1}


@pytest.mark.parametrize("name", ["lab\n1", "lab\t1", "\x1b[31mred", "lab\x001"])
def test_a_name_must_be_printable(name: str) -> None:
    with pytest.raises(ConfigError, match="must be printable: no control characters") as info:
        Config(node_name=name)
    assert repr(name) in str(info.value)


def test_printable_names_are_fine() -> None:
    for name in ("lab1", "Labor für Optik", "rack 3 / node 7"):
        assert Config(node_name=name).node_name == name
