"""SWIM's precedence rules, against an oracle written from the paper's text."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from p2pcluster._proto.membership import PRECEDENCE, Entry, EventKind, MemberTable
from p2pcluster._proto.messages import Alive, Dead, Left, MemberStatus, Suspect, Update
from p2pcluster._proto.meta import NodeMeta

A, S, D, L = MemberStatus.ALIVE, MemberStatus.SUSPECT, MemberStatus.DEAD, MemberStatus.LEFT
ME = b"me" * 8
X = b"xx" * 8


def oracle(update: Update, held: MemberStatus, j: int) -> MemberStatus | None:
    """The status after ``update`` arrives, or None if it is ignored.

    SWIM, section 4.2: "{Alive Ml, inc=i} overrides {Suspect Ml, inc=j}, i > j, and
    {Alive Ml, inc=j}, i > j. {Suspect Ml, inc=i} overrides {Suspect Ml, inc=j}, i > j, and
    {Alive Ml, inc=j}, i >= j. {Confirm Ml, inc=i} overrides {Alive Ml, inc=j} and
    {Suspect Ml, inc=j}, any j." A confirmed (dead) member only comes back with a higher
    incarnation; left is a confirm the member announces about itself.
    One deviation, memberlist's: a confirm (Dead) older than the incarnation we hold is stale
    news the member has already refuted, and is ignored.
    """
    i = update.incarnation
    if isinstance(update, Alive):
        return A if i > j else None
    if isinstance(update, Suspect):
        if held == A:
            return S if i >= j else None
        return S if held == S and i > j else None
    if isinstance(update, Dead):
        return D if held in (A, S) and i >= j else None
    return L if held in (A, S, D) else None


def table_with(status: MemberStatus, j: int) -> MemberTable:
    table = MemberTable(Entry(ME, "me", "10.0.0.1", 1, b"", 0, A, 0.0))
    table.apply(Alive(X, j, "x", "10.0.0.2", 1, b""), 0.0)
    entry = table.get(X)
    assert entry is not None
    table._set_status(entry, status, 0.0)
    return table


updates = st.one_of(
    st.builds(Alive, st.just(X), st.integers(0, 5), st.just("x"), st.just("10.0.0.2"),
              st.just(1), st.just(b"")),
    st.builds(Suspect, st.just(X), st.integers(0, 5), st.just(b"by")),
    st.builds(Dead, st.just(X), st.integers(0, 5), st.just(b"by")),
    st.builds(Left, st.just(X), st.integers(0, 5)),
)


@given(updates, st.sampled_from([A, S, D, L]), st.integers(0, 5))
def test_apply_follows_the_paper(update: Update, held: MemberStatus, j: int) -> None:
    table = table_with(held, j)
    changes = table.apply(update, 1.0)
    expected = oracle(update, held, j)
    entry = table.get(X)
    assert entry is not None
    if expected is None:
        confirmation = isinstance(update, Suspect) and held == S and update.incarnation == j
        assert all(c.confirmation for c in changes) == confirmation or not changes
        assert (entry.status, entry.incarnation) == (held, j)
    else:
        assert entry.status == expected
        assert entry.incarnation == max(j, update.incarnation)


@given(st.lists(updates, max_size=30))
def test_incarnations_never_decrease(sequence: list[Update]) -> None:
    table = table_with(A, 0)
    seen = 0
    for update in sequence:
        table.apply(update, 1.0)
        entry = table.get(X)
        assert entry is not None and entry.incarnation >= seen
        seen = entry.incarnation


@given(st.lists(updates, max_size=30))
def test_live_count_stays_consistent(sequence: list[Update]) -> None:
    table = table_with(A, 0)
    for update in sequence:
        table.apply(update, 1.0)
        assert table.live_count == sum(e.status in (A, S) for e in table)


def test_the_table_is_complete() -> None:
    assert {(u, s) for u in (Alive, Suspect, Dead, Left) for s in (A, S, D, L)} == set(
        PRECEDENCE)


def test_suspect_at_the_same_incarnation_is_a_confirmation() -> None:
    table = table_with(S, 3)
    (change,) = table.apply(Suspect(X, 3, b"other"), 1.0)
    assert change.confirmation and change.event is None


def test_unknown_member_is_created_only_by_alive() -> None:
    table = MemberTable(Entry(ME, "me", "10.0.0.1", 1, b"", 0, A, 0.0))
    for update in (Suspect(X, 1, b"b"), Dead(X, 1, b"b"), Left(X, 1)):
        assert table.apply(update, 1.0) == []
        assert table.get(X) is None
    (change,) = table.apply(Alive(X, 0, "x", "10.0.0.2", 1, b""), 1.0)
    assert change.event == EventKind.JOIN


@pytest.mark.parametrize(("update", "event"), [
    (Dead(X, 0, b"b"), EventKind.FAIL),
    (Left(X, 0), EventKind.LEAVE),
    (Alive(X, 1, "x", "10.0.0.2", 1, b"new meta"), EventKind.UPDATE),
    (Alive(X, 1, "x", "10.0.0.2", 1, b""), None),  # a refutation changes nothing visible
])
def test_events(update: Update, event: EventKind | None) -> None:
    table = table_with(A, 0)
    (change,) = table.apply(update, 1.0)
    assert change.event == event


def test_recover_event() -> None:
    table = table_with(D, 2)
    (change,) = table.apply(Alive(X, 3, "x", "10.0.0.2", 1, b""), 1.0)
    assert change.event == EventKind.RECOVER


def test_left_replaces_dead() -> None:
    table = table_with(D, 2)
    (change,) = table.apply(Left(X, 2), 1.0)
    assert change.event == EventKind.LEAVE


def test_restart_at_the_same_address_declares_the_predecessor_dead() -> None:
    table = table_with(A, 4)
    new = b"nn" * 8
    changes = table.apply(Alive(new, 0, "x", "10.0.0.2", 1, b""), 1.0)
    assert [(c.entry.node, c.event) for c in changes] == [(X, EventKind.FAIL),
                                                          (new, EventKind.JOIN)]
    assert table.at_address(("10.0.0.2", 1)).node == new  # type: ignore[union-attr]
    # Stale gossip about the predecessor cannot bring it back.
    assert table.apply(Alive(X, 4, "x", "10.0.0.2", 1, b""), 2.0) == []


def started(t: int) -> bytes:
    return NodeMeta(workers=1, started=t).encode()


def test_a_late_alive_for_an_older_process_cannot_take_the_address() -> None:
    # Seed 30 of the soak: a push-pull table relays an Alive for a crashed process, at the
    # address of its restarted successor, which we hold alive. The successor stays alive.
    table = MemberTable(Entry(ME, "me", "10.0.0.1", 1, b"", 0, A, 0.0))
    table.apply(Alive(X, 3, "x", "10.0.0.2", 1, started(2_000)), 0.0)
    old = b"oo" * 8
    (change,) = table.apply(Alive(old, 5, "x", "10.0.0.2", 1, started(1_000)), 1.0)
    assert (change.entry.node, change.entry.status, change.event) == (old, D, None)
    assert table.get(X).status == A  # type: ignore[union-attr]
    assert table.at_address(("10.0.0.2", 1)).node == X  # type: ignore[union-attr]
    # A later refutation of the old process, at a higher incarnation, keeps it dead.
    (change,) = table.apply(Alive(old, 9, "x", "10.0.0.2", 1, started(1_000)), 2.0)
    assert (change.entry.status, change.event, change.entry.incarnation) == (D, None, 9)
    assert table.get(X).status == A  # type: ignore[union-attr]


def test_the_later_start_time_takes_the_address_whichever_is_heard_first() -> None:
    table = MemberTable(Entry(ME, "me", "10.0.0.1", 1, b"", 0, A, 0.0))
    table.apply(Alive(X, 3, "x", "10.0.0.2", 1, started(1_000)), 0.0)
    new = b"nn" * 8
    changes = table.apply(Alive(new, 0, "x", "10.0.0.2", 1, started(1_001)), 1.0)
    assert [(c.entry.node, c.event) for c in changes] == [(X, EventKind.FAIL),
                                                          (new, EventKind.JOIN)]
    # Equal start times (a restart within a second) fall back to the one heard last.
    newest = b"ww" * 8
    changes = table.apply(Alive(newest, 0, "x", "10.0.0.2", 1, started(1_001)), 2.0)
    assert [(c.entry.node, c.event) for c in changes] == [(new, EventKind.FAIL),
                                                          (newest, EventKind.JOIN)]


def test_our_own_predecessor_is_a_tombstone() -> None:
    table = MemberTable(Entry(ME, "me", "10.0.0.1", 1, b"", 0, A, 0.0))
    ghost = b"gg" * 8
    (change,) = table.apply(Alive(ghost, 7, "me", "10.0.0.1", 1, b""), 1.0)
    assert change.entry.status == D and change.event is None
    assert table.at_address(("10.0.0.1", 1)).node == ME  # type: ignore[union-attr]
    assert table.apply(Alive(ghost, 8, "me", "10.0.0.1", 1, b""), 2.0) == []


def test_purge_keeps_tombstones_for_the_retention() -> None:
    table = table_with(D, 1)
    assert table.purge(100.0, retention=200.0) == []
    assert [e.node for e in table.purge(300.0, retention=200.0)] == [X]
    assert table.get(X) is None


def test_checksum_covers_every_visible_field() -> None:
    a, b = table_with(A, 1), table_with(A, 1)
    assert a.checksum() == b.checksum()
    b.apply(Alive(X, 2, "x", "10.0.0.2", 1, b"m"), 1.0)
    assert a.checksum() != b.checksum()
