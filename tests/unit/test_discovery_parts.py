"""Pieces of discovery and the daemon that need no network: names, TXT, metadata, interfaces."""

from __future__ import annotations

import socket

import pytest
from zeroconf import ServiceInfo

from p2pcluster._discovery import SERVICE_TYPE, instance_label, parse_info
from p2pcluster._netutil import Interface, choose_interface, default_route_interface, interfaces
from p2pcluster._proto.meta import NodeMeta


@pytest.mark.parametrize(("name", "label"), [
    ("lab1", "lab1"),
    ("lab one", "lab one"),
    ("with.dots.in.it", "with-dots-in-it"),
    ("back\\slash", "back-slash"),
    ("tab\tand\nnewline", "tab and newline"),
    ("", "peer"),
    ("...", "---"),
])
def test_instance_labels_are_safe_for_every_mdns_implementation(name: str, label: str) -> None:
    assert instance_label(name) == label


def test_instance_labels_fit_a_dns_label_with_room_for_a_conflict_suffix() -> None:
    long = instance_label("é" * 100)
    assert len(long.encode()) <= 63 - 6
    assert long == "é" * 28  # cut at a character boundary, never inside one


def make_info(props: dict[str, str], addresses: list[str] | None = None) -> ServiceInfo:
    return ServiceInfo(SERVICE_TYPE, f"x.{SERVICE_TYPE}", port=7946,
                       addresses=[socket.inet_aton(a) for a in addresses or ["10.0.0.5"]],
                       properties=props, server="x.local.")


def test_txt_record_round_trip_and_size() -> None:
    node = bytes(range(16))
    props = {"id": node.hex(), "c": "default", "v": "1", "u": "7946"}
    found = parse_info(make_info(props))
    assert found is not None
    assert (found.node_id, found.cluster, found.version, found.address) == (
        node, "default", 1, ("10.0.0.5", 7946))
    txt = make_info(props).text
    assert len(txt) < 200  # the whole TXT record, cluster name of 63 bytes aside
    assert len(make_info({**props, "c": "c" * 63}).text) < 200


@pytest.mark.parametrize("props", [
    {"c": "default"},  # no id
    {"id": "zz", "c": "default"},  # not hex
    {"id": "00" * 8, "c": "default"},  # wrong length
    {"id": "00" * 16, "c": "default", "u": "70000"},  # bad port
])
def test_foreign_or_broken_records_are_ignored(props: dict[str, str]) -> None:
    assert parse_info(make_info(props)) is None


def test_metadata_round_trip_and_leniency() -> None:
    meta = NodeMeta(workers=8, queue=3, tags=("gpu",), version="0.1.0")
    assert NodeMeta.decode(meta.encode()) == meta
    assert NodeMeta.decode(b"") == NodeMeta()
    assert NodeMeta.decode(b"\xff\xff") == NodeMeta()
    assert NodeMeta.decode(b"\xa1\x61w\x20") == NodeMeta()  # a negative worker count
    with pytest.raises(ValueError, match="512"):
        NodeMeta(tags=("x" * 100,) * 6).encode()


IFACES = [
    Interface("lo", "127.0.0.1", up=True, loopback=True),
    Interface("docker0", "172.17.0.1", up=True, loopback=False),
    Interface("eth0", "192.168.1.5", up=True, loopback=False),
    Interface("wlan0", "10.1.0.7", up=False, loopback=False),
]


def test_the_default_route_interface_wins() -> None:
    assert choose_interface(available=IFACES, default="eth0").name == "eth0"


def test_without_a_default_route_docker_and_loopback_come_last() -> None:
    assert choose_interface(available=IFACES, default="").name == "eth0"
    only_virtual = [IFACES[0], IFACES[1]]
    assert choose_interface(available=only_virtual, default="").name == "docker0"
    assert choose_interface(available=[IFACES[0]], default="").name == "lo"


def test_a_chosen_interface_by_name_or_address() -> None:
    assert choose_interface("wlan0", available=IFACES).address == "10.1.0.7"
    assert choose_interface("172.17.0.1", available=IFACES).name == "docker0"
    with pytest.raises(ValueError, match="available: lo"):
        choose_interface("eth9", available=IFACES)


def test_this_machine_has_a_loopback_interface() -> None:
    assert any(i.loopback and i.address == "127.0.0.1" for i in interfaces())
    assert default_route_interface() is None or isinstance(default_route_interface(), str)
