"""Versions between peers: a peer answers :class:`FetchVersions` with its environment, and
asks others when its stealing machine needs to know (:class:`~._proto.workevents.AskVersions`)
or `p2pcluster members --versions` does.

Looking up installed versions reads files, so it runs in a thread; an answer about this
peer itself never touches the network.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import trio

from ._environment import describe
from ._errors import P2PClusterError, ProtocolError
from ._proto.eligibility import normalize
from ._proto.messages import FetchVersions, Message, Versions
from ._runner import Runner
from ._secure import SecureStream
from ._transport import Address

__all__ = ["DEFAULT_PACKAGES", "VersionQuestions", "VersionsUnavailable", "gather_versions"]

#: Seconds allowed for a peer's answer.
ASK_TIMEOUT = 10.0


class VersionsUnavailable(P2PClusterError):
    """A peer did not say its versions."""


class VersionQuestions:
    """This peer's answers, and its questions to others. ``tags`` are this peer's."""

    def __init__(self, runner: Runner, me: bytes, tags: Iterable[str],
                 address_of: Callable[[bytes], Address | None]) -> None:
        self._runner = runner
        self._me = me
        self._tags = tuple(tags)
        self._address_of = address_of

    async def serve(self, stream: SecureStream, first: Message) -> None:
        """Answer :class:`FetchVersions`, as long as the stream brings them."""
        msg: Message | None = first
        while isinstance(msg, FetchVersions):
            await stream.send(await self.local(msg.names))
            msg = await stream.receive()

    async def local(self, names: Iterable[str]) -> Versions:
        """This peer's own answer."""
        return await trio.to_thread.run_sync(describe, tuple(names), self._tags)

    async def ask(self, peer: bytes, names: Iterable[str]) -> Versions:
        """``peer``'s answer (this peer's own, for itself); :class:`VersionsUnavailable`."""
        names = tuple(names)
        if peer == self._me:
            return await self.local(names)
        address = self._address_of(peer)
        if address is None:
            raise VersionsUnavailable("not a live member")
        try:
            with trio.fail_after(ASK_TIMEOUT):
                async with await self._runner.connect(address) as stream:
                    await stream.send(FetchVersions(names))
                    reply = await stream.receive()
        except (OSError, ProtocolError, trio.BrokenResourceError, trio.TooSlowError) as exc:
            raise VersionsUnavailable(str(exc) or type(exc).__name__) from None
        if not isinstance(reply, Versions):
            raise VersionsUnavailable("it sent no answer")
        return reply


#: The distributions `p2pcluster members --versions` compares, besides those asked for.
DEFAULT_PACKAGES = ("p2pcluster", "trio", "cbor2", "zeroconf", "cryptography", "numpy",
                    "scipy", "pandas", "joblib")


async def gather_versions(questions: VersionQuestions, peers: Iterable[tuple[bytes, str]],
                          packages: Iterable[str], timeout: float = 5.0
                          ) -> list[dict[str, Any]]:
    """Ask every peer in ``peers`` (id, name) at once; one row per peer: ``name``,
    ``python``, ``implementation``, ``tags`` and ``packages`` (name -> version, ``""``
    not installed), or ``error``."""
    names = tuple(dict.fromkeys((*DEFAULT_PACKAGES, *(normalize(p) for p in packages))))
    rows: list[dict[str, Any]] = []

    async def one(peer: bytes, name: str) -> None:
        row: dict[str, Any] = {"name": name}
        rows.append(row)
        try:
            with trio.fail_after(timeout):
                answer = await questions.ask(peer, names)
        except (VersionsUnavailable, trio.TooSlowError) as exc:
            row["error"] = str(exc) or "no answer"
            return
        row.update(python=answer.python, implementation=answer.implementation,
                   tags=list(answer.tags), packages={d.name: d.version for d in answer.dists})

    async with trio.open_nursery() as nursery:
        for peer, name in peers:
            nursery.start_soon(one, peer, name)
    return sorted(rows, key=lambda r: str(r["name"]))
