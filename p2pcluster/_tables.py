"""The tables `p2pcluster members` prints: the members, and (``--versions``) what differs
between the peers' environments, like Dask's ``get_versions`` check."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

__all__ = ["print_members", "print_table", "print_versions", "versions_table"]


def print_table(table: Sequence[Sequence[str]]) -> None:
    widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]
    for row in table:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True))
              .rstrip())


def print_members(rows: list[dict[str, Any]], self_id: str) -> None:
    """The members table; a TAGS column when some peer has tags (`join --tag`)."""
    tagged = any(r.get("tags") for r in rows)
    header = ("NAME", "ADDRESS", "STATE", "INC", "WORKERS", "QUEUE", "AGE") + (
        ("TAGS",) if tagged else ())
    table = [header] + [
        (r["name"] + (" *" if r["id"] == self_id else ""), f"{r['host']}:{r['port']}",
         r["status"], str(r["incarnation"]), str(r["workers"]), str(r["queue"]),
         age(r["age"])) + ((",".join(r.get("tags", ())),) if tagged else ())
        for r in rows]
    print_table(table)


def versions_table(peers: Sequence[dict[str, Any]]) -> tuple[list[list[str]], list[str]]:
    """One row per item that differs between the answering ``peers`` (a column each):
    ``python``, ``system``, ``machine``, ``p2pcluster`` (the gossiped software version) and
    each package (``-`` not installed); and the names of the items that agree."""
    answered = [p for p in peers if "error" not in p]
    items: dict[str, list[str]] = {
        "python": [f"{p.get('implementation', '')} {p.get('python', '')}".strip()
                   for p in answered],
        "system": [str(p.get("system", "")) for p in answered],
        "machine": [str(p.get("machine", "")) for p in answered],
    }
    names = sorted({n for p in answered for n in p.get("packages", {})})
    for name in names:
        items[name] = [p.get("packages", {}).get(name) or "-" for p in answered]
    rows = [["", *(str(p["name"]) for p in answered)]]
    same: list[str] = []
    for item, values in items.items():
        if len(set(values)) > 1:
            rows.append([item, *values])
        elif values and values[0] != "-":
            same.append(f"{item} {values[0]}")
    return rows, same


def print_versions(answer: dict[str, Any], *, as_json: bool = False) -> int:
    """Print what differs between the peers (or everything, as JSON); exit status 0."""
    peers = answer.get("peers", [])
    if as_json:
        print(json.dumps(answer, indent=2))
        return 0
    rows, same = versions_table(peers)
    if len(rows) > 1:
        print_table(rows)
    else:
        print("no differences between the peers that answered")
    if same:
        print(f"\nthe same on every peer: {', '.join(same)}")
    for peer in peers:
        if "error" in peer:
            print(f"{peer['name']}: no answer ({peer['error']})")
    answered = sum("error" not in p for p in peers)
    print(f"cluster {answer.get('cluster')!r}: {answered} of {len(peers)} live peers answered")
    return 0


def age(seconds: float) -> str:
    seconds = int(seconds)
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
