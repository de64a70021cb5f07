"""Group commit for the issued cards: the calls answered at about the same moment share one transaction.

A call's cards must be in the store before its response leaves (feedback on a card the store has not kept would
be refused), and a transaction per call costs a commit per call. So each call hands its rows to one writer
thread and waits; the writer takes everything that is waiting, writes it in one transaction, commits, and then
wakes every call of that batch. Under load, many calls share a commit; alone, a call waits for its own commit
only. A batch that fails is written again call by call, so one call's bad row fails that call alone.
"""

from __future__ import annotations

import asyncio
import queue
import threading
from dataclasses import dataclass

from cds.hooks.store import IssuedCard, Snapshot, Store

MAX_BATCH = 256  # calls per transaction at most: a commit stays short however far behind the writer is


@dataclass(frozen=True)
class _Waiting:
    cards: list[IssuedCard]
    patient_id: str
    snapshot: Snapshot | None
    loop: asyncio.AbstractEventLoop
    done: asyncio.Future[None]


class CardWriter:
    """The store's one writer of issued cards (started on first use, stopped by `close`)."""

    def __init__(self, store: Store, max_batch: int = MAX_BATCH) -> None:
        self.store, self.max_batch = store, max_batch
        self._queue: queue.SimpleQueue[_Waiting | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._starting = threading.Lock()
        self.transactions = self.calls = 0  # how much grouping happened (tests, and the bench's report)

    async def record(self, cards: list[IssuedCard], patient_id: str, snapshot: Snapshot | None = None) -> None:
        """Returns once the cards (and their snapshot) are committed; raises what the store raised."""
        loop = asyncio.get_running_loop()
        done: asyncio.Future[None] = loop.create_future()
        self._start()
        self._queue.put(_Waiting(cards, patient_id, snapshot, loop, done))
        await done

    def close(self) -> None:
        """Write what is waiting, then stop the thread."""
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join(timeout=30)
            self._thread = None

    def _start(self) -> None:
        with self._starting:
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="card-writer", daemon=True)
                self._thread.start()

    def _run(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            batch = [first]
            while len(batch) < self.max_batch:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is None:
                    self._queue.put(None)  # stop after this batch
                    break
                batch.append(item)
            self._write(batch)

    def _write(self, batch: list[_Waiting]) -> None:
        try:
            self.store.record_calls([(w.cards, w.patient_id, w.snapshot) for w in batch])
            self.transactions, self.calls = self.transactions + 1, self.calls + len(batch)
            outcomes: list[BaseException | None] = [None] * len(batch)
        except Exception:  # noqa: BLE001 -- each call is written alone and gets its own outcome
            outcomes = [self._alone(w) for w in batch]
        for waiting, outcome in zip(batch, outcomes, strict=True):
            waiting.loop.call_soon_threadsafe(_settle, waiting.done, outcome)

    def _alone(self, waiting: _Waiting) -> BaseException | None:
        try:
            self.store.record_calls([(waiting.cards, waiting.patient_id, waiting.snapshot)])
            self.transactions, self.calls = self.transactions + 1, self.calls + 1
            return None
        except Exception as exc:  # noqa: BLE001 -- handed to the waiting call, which raises it
            return exc


def _settle(done: asyncio.Future[None], outcome: BaseException | None) -> None:
    if done.done():
        return  # the call was cancelled (its client went away); its cards are written all the same
    if outcome is None:
        done.set_result(None)
    else:
        done.set_exception(outcome)
