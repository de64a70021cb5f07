"""Group commit on both backends: concurrent calls share transactions, each call returns only once its cards are
in the store, and one call's bad rows fail that call alone."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from cds.hooks.groupcommit import CardWriter
from cds.hooks.store import IssuedCard, Store
from tests.hooks.test_store import card


class HeldStore(Store):
    """A real store whose first transaction waits until released, so the calls behind it queue up."""

    def __init__(self, url: str) -> None:
        super().__init__(url, b"key")
        self.release = threading.Event()
        self.batches: list[int] = []

    def record_calls(self, calls: list[Any]) -> None:
        if not self.batches:
            self.release.wait(10)
        self.batches.append(len(calls))
        super().record_calls(calls)


def test_concurrent_calls_share_a_commit_and_return_after_it(database_url: str) -> None:
    store = HeldStore(database_url)
    writer = CardWriter(store)
    issued = [[card(), card()] for _ in range(40)]

    async def one(cards: list[IssuedCard]) -> bool:
        await writer.record(cards, "p")
        return all(store.issued(c.card_uuid) == c for c in cards)  # durable when the call goes on

    async def run() -> list[bool]:
        calls = [asyncio.ensure_future(one(c)) for c in issued]
        await asyncio.sleep(0.2)  # every call is waiting behind the held first transaction
        store.release.set()
        return await asyncio.gather(*calls)

    assert asyncio.run(run()) == [True] * 40
    assert sum(store.batches) == 40
    assert len(store.batches) <= 3  # the held first call, then the 39 waiting in one or two transactions
    assert (writer.transactions, writer.calls) == (len(store.batches), 40)
    writer.close()
    store.close()


def test_a_failing_call_fails_alone(database_url: str) -> None:
    store = HeldStore(database_url)
    writer = CardWriter(store)
    before = card()
    store.release.set()
    store.record_cards([before], "p")
    store.release.clear()
    store.batches.clear()
    good = [[card()] for _ in range(5)]
    bad = [card(), before]  # `before` is already stored: this call's transaction breaks the primary key

    async def run() -> list[Any]:
        calls = [asyncio.ensure_future(writer.record(c, "p")) for c in [*good[:2], bad, *good[2:]]]
        await asyncio.sleep(0.2)
        store.release.set()
        return await asyncio.gather(*calls, return_exceptions=True)

    outcomes = asyncio.run(run())
    assert [type(o).__name__ for o in outcomes] == ["NoneType"] * 2 + ["IntegrityError"] + ["NoneType"] * 3
    assert all(isinstance(o, sa.exc.IntegrityError) for o in outcomes[2:3])
    assert all(store.issued(c.card_uuid) is not None for call in good for c in call)
    assert store.issued(bad[0].card_uuid) is None  # the failed call wrote nothing
    writer.close()
    store.close()


def test_close_writes_what_is_waiting(store: Store) -> None:
    writer = CardWriter(store)
    cards = [card() for _ in range(3)]

    async def run() -> None:
        await asyncio.gather(*(writer.record([c], "p") for c in cards))

    asyncio.run(run())
    writer.close()
    assert [store.issued(c.card_uuid) for c in cards] == cards


@pytest.mark.parametrize("batch", [1, 2])
def test_batches_are_bounded(store: Store, batch: int) -> None:
    writer = CardWriter(store, max_batch=batch)
    sizes: list[int] = []
    real = store.record_calls

    def counted(calls: list[Any]) -> None:
        sizes.append(len(calls))
        real(calls)

    store.record_calls = counted  # type: ignore[method-assign]

    async def run() -> None:
        await asyncio.gather(*(writer.record([card()], "p") for _ in range(6)))

    asyncio.run(run())
    writer.close()
    assert sum(sizes) == 6
    assert max(sizes) <= batch


def test_on_sqlite_the_calls_of_one_loop_turn_share_one_commit_on_the_loop(store: Store) -> None:
    writer = CardWriter(store, inline=True)
    issued = [[card(), card()] for _ in range(12)]

    async def one(cards: list[IssuedCard]) -> bool:
        await writer.record(cards, "p")
        return all(store.issued(c.card_uuid) == c for c in cards)

    async def run() -> list[bool]:
        return await asyncio.gather(*(one(c) for c in issued))

    assert asyncio.run(run()) == [True] * 12
    assert (writer.inline_transactions, writer.transactions, writer.calls) == (1, 1, 12)
    assert writer._thread is None  # nothing needed the writer thread
    writer.close()


def test_a_held_write_lock_sends_the_calls_to_the_thread_and_the_loop_goes_on(store: Store,
                                                                             tmp_path: Path) -> None:
    writer = CardWriter(store, inline=True)
    holder = sqlite3.connect(tmp_path / "store.sqlite3", isolation_level=None, check_same_thread=False)
    holder.execute("BEGIN IMMEDIATE")  # another worker's write, say
    cards = [card()]
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0.01)

    async def run() -> tuple[bool, int]:
        ticking = asyncio.ensure_future(ticker())
        call = asyncio.ensure_future(writer.record(cards, "p"))
        await asyncio.sleep(0.3)
        waiting, during = not call.done(), ticks
        holder.execute("ROLLBACK")
        await call
        ticking.cancel()
        return waiting, during

    waiting, during = asyncio.run(run())
    assert waiting  # the call waited for the lock...
    assert during >= 10  # ...and the loop did not
    assert store.issued(cards[0].card_uuid) == cards[0]
    assert (writer.inline_transactions, writer.transactions) == (0, 1)
    writer.close()


def test_a_failing_call_fails_alone_when_written_inline(store: Store) -> None:
    writer = CardWriter(store, inline=True)
    before = card()
    store.record_cards([before], "p")
    good = [[card()] for _ in range(4)]
    bad = [card(), before]

    async def run() -> list[Any]:
        return await asyncio.gather(*(writer.record(c, "p") for c in [*good[:2], bad, *good[2:]]),
                                    return_exceptions=True)

    outcomes = asyncio.run(run())
    assert [type(o).__name__ for o in outcomes] == ["NoneType"] * 2 + ["IntegrityError"] + ["NoneType"] * 2
    assert all(store.issued(c.card_uuid) is not None for call in good for c in call)
    assert store.issued(bad[0].card_uuid) is None
    writer.close()


def _wal_bytes_after(tmp_path: Path, name: str, checkpoint_every: int) -> int:
    store = Store(f"sqlite:///{tmp_path / name}", b"k")
    writer = CardWriter(store, inline=True, checkpoint_every=checkpoint_every)

    async def run() -> None:
        for _ in range(120):
            await writer.record([card(), card()], "p")
            await asyncio.sleep(0.002)  # a checkpoint's turn in the writer thread

    asyncio.run(run())
    writer.close()
    size = (tmp_path / f"{name}-wal").stat().st_size
    assert writer.checkpoints == 120 // checkpoint_every
    store.close()
    return size


def test_the_writer_thread_checkpoints_what_the_loop_writes_so_the_wal_stays_small(tmp_path: Path) -> None:
    never = _wal_bytes_after(tmp_path, "never.sqlite3", 10_000)
    often = _wal_bytes_after(tmp_path, "often.sqlite3", 10)
    assert often < never / 3


def test_a_postgresql_store_is_written_by_the_thread_alone(database_url: str) -> None:
    store = Store(database_url, b"key")
    assert CardWriter(store, inline=True).inline is database_url.startswith("sqlite")
    store.close()


class NoInlineConnection(Store):
    """A real store whose loop connection cannot be opened (the file's folder gone for it, say)."""

    def _inline_connection(self) -> Any:
        raise sa.exc.OperationalError("connect", {}, Exception("unable to open database file"))


def test_a_store_that_fails_on_the_loop_leaves_no_call_waiting(tmp_path: Path) -> None:
    store = NoInlineConnection(f"sqlite:///{tmp_path / 'store.sqlite3'}", b"k")
    writer = CardWriter(store, inline=True)
    cards = [card()]

    async def run() -> None:
        await asyncio.wait_for(writer.record(cards, "p"), timeout=10)

    asyncio.run(run())
    assert store.issued(cards[0].card_uuid) == cards[0]  # written by the thread instead
    assert (writer.inline_transactions, writer.transactions) == (0, 1)
    writer.close()
    store.close()
