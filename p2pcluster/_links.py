"""Work links: one in-order stream per destination for the work messages of a peer.

A link opens on the first message to a peer and stays open until that peer leaves or dies,
or the stream breaks. Messages go one way, in the order they were sent (the protocol relies
on it: a ``TasksMoved`` before the ``Holding`` report that no longer names those tasks).

When a link breaks, the messages it had not sent go out once more on a new link; what fails
again is handed to ``undeliverable`` with the reason (the work service returns a grant's
tasks to its queue, and says that results were lost: the owner will run those tasks again).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable

import trio

from ._errors import ProtocolError
from ._proto.messages import Message
from ._runner import Runner
from ._transport import Address

__all__ = ["WorkLinks"]

log = logging.getLogger("p2pcluster.peer")
#: Times a work message lost with a broken link is sent again on a new one.
LINK_RETRIES = 1

_Item = tuple[Message, int]  # a message and how often it was sent before


class WorkLinks:
    """The links of one peer. All methods run in the peer's trio run; none blocks but
    :meth:`drain`.

    ``address_of(peer)`` gives a live peer's address (None if it is unknown or gone);
    ``undeliverable(peer, message, why)`` takes what could not be sent; ``after_loss()`` is
    called once after a broken link's messages were dealt with.
    """

    def __init__(self, runner: Runner, nursery: trio.Nursery, *,
                 address_of: Callable[[bytes], Address | None],
                 undeliverable: Callable[[bytes, Message, str], None],
                 after_loss: Callable[[], None]) -> None:
        self._runner = runner
        self._nursery = nursery
        self._address_of = address_of
        self._undeliverable = undeliverable
        self._after_loss = after_loss
        self._links: dict[bytes, trio.MemorySendChannel[_Item]] = {}
        self._unsent = 0  #: messages queued on links and not yet written
        self._drained = trio.Event()

    def send(self, dst: bytes, msg: Message, attempt: int = 0) -> None:
        """Queue ``msg`` on the link to ``dst``, opening it if need be."""
        link = self._links.get(dst)
        if link is None:
            address = self._address_of(dst)
            if address is None:
                self._undeliverable(dst, msg, "its address is unknown")
                return
            link, receive = trio.open_memory_channel[_Item](math.inf)
            self._links[dst] = link
            self._nursery.start_soon(self._serve, dst, address, link, receive)
        self._unsent += 1
        link.send_nowait((msg, attempt))

    def close(self, dst: bytes) -> None:
        """``dst`` left or died: close its link (what it still held is lost with it)."""
        link = self._links.pop(dst, None)
        if link is not None:
            link.close()

    async def drain(self, timeout: float) -> None:
        """Wait (at most ``timeout``) until every queued message has been written."""
        with trio.move_on_after(timeout):
            while self._unsent:
                await self._drained.wait()

    def _sent(self, n: int = 1) -> None:
        self._unsent -= n
        if not self._unsent:
            self._drained.set()
            self._drained = trio.Event()

    async def _serve(self, dst: bytes, address: Address, link: trio.MemorySendChannel[_Item],
                     receive: trio.MemoryReceiveChannel[_Item]) -> None:
        current: _Item | None = None
        why = "the link closed"
        try:
            with trio.fail_after(2 * self._runner.config.handshake_timeout):
                stream = await self._runner.connect(address)
            async with stream:
                async for item in receive:
                    current = item
                    await stream.send(item[0])
                    current = None
                    self._sent()
        except (OSError, ProtocolError, trio.BrokenResourceError, trio.TooSlowError) as exc:
            why = str(exc) or type(exc).__name__
            log.debug("work link to %s:%d failed: %s", *address, why)
        finally:
            if self._links.get(dst) is link:
                del self._links[dst]
            receive.close()
            self._relink(dst, _leftovers(current, receive), why)

    def _relink(self, dst: bytes, lost: list[_Item], why: str) -> None:
        """Send what a broken link did not deliver again on a new one (once), unless the
        peer is gone; what still fails is undeliverable."""
        self._sent(len(lost))
        for msg, attempt in lost:
            if attempt < LINK_RETRIES and self._address_of(dst) is not None:
                self.send(dst, msg, attempt + 1)
            else:
                self._undeliverable(dst, msg, why)
        if lost:
            self._after_loss()


def _leftovers(current: _Item | None, receive: trio.MemoryReceiveChannel[_Item]) -> list[_Item]:
    lost = [current] if current is not None else []
    while True:
        try:
            lost.append(receive.receive_nowait())
        except (trio.WouldBlock, trio.ClosedResourceError, trio.EndOfChannel):
            return lost
