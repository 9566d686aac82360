"""`MemberInfo`: a member of the cluster as `Cluster.members` reports it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = ["MemberInfo"]


@dataclass(frozen=True, slots=True)
class MemberInfo:
    """A member as :meth:`Cluster.members` reports it."""

    name: str
    id: str
    host: str
    port: int
    status: str
    workers: int
    queue: int

    @property
    def alive(self) -> bool:
        return self.status in ("alive", "suspect")

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> MemberInfo:
        """From a row of the control protocol's ``members`` answer."""
        return cls(row["name"], row["id"], row["host"], row["port"], row["status"],
                   row["workers"], row["queue"])
