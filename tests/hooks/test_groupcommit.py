"""Group commit on both backends: concurrent calls share transactions, each call returns only once its cards are
in the store, and one call's bad rows fail that call alone."""

from __future__ import annotations

import asyncio
import threading
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
