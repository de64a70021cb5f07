"""Group commit for the issued cards: the calls answered at about the same moment share one transaction.

A call's cards must be in the store before its response leaves (feedback on a card the store has not kept would
be refused), and a transaction per call costs a commit per call. So each call hands its rows over and waits;
they are written with everything else waiting, in one transaction, and every call of that batch is woken after
the commit. Under load, many calls share a commit; alone, a call waits for its own commit only.

Where they are written: a SQLite store (a local file append of a fraction of a millisecond) is written on the
event loop itself, once the calls ready in this turn of the loop have all handed theirs over. In a writer
thread, the same write waited for the GIL while the loop decided other calls: up to 5 ms at each of its
dozen hand-overs, so a batch of four took 18 ms (measured) and all eight connections of a busy EHR could end up
waiting for commits while the loop sat idle. The loop never waits on the database for it: when another worker
holds the write lock, or anything fails, the batch goes to the writer thread, which also does every PostgreSQL
write (network round trips), the WAL checkpoints, and the retries: a batch that fails is written again call by
call, so one call's bad row fails that call alone.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
from dataclasses import dataclass

from cds.hooks.store import IssuedCard, Snapshot, Store

log = logging.getLogger(__name__)

MAX_BATCH = 256  # calls per transaction at most: a commit stays short however far behind the writer is
CHECKPOINT_EVERY = 200  # commits on the loop between WAL checkpoints (about SQLite's own 1,000 pages)
_CHECKPOINT = "checkpoint"  # the writer thread's job besides batches


@dataclass(frozen=True)
class _Waiting:
    cards: list[IssuedCard]
    patient_id: str
    snapshot: Snapshot | None
    loop: asyncio.AbstractEventLoop
    done: asyncio.Future[None]


class CardWriter:
    """The store's one writer of issued cards (its thread started on first use, stopped by `close`). `inline`:
    write on the event loop when the store allows it (the service); off, everything goes through the thread."""

    def __init__(self, store: Store, max_batch: int = MAX_BATCH, *, inline: bool = False,
                 checkpoint_every: int = CHECKPOINT_EVERY) -> None:
        self.store, self.max_batch, self.checkpoint_every = store, max_batch, checkpoint_every
        self.inline = inline and store.writes_inline
        self._queue: queue.SimpleQueue[_Waiting | str | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._starting = threading.Lock()
        self._pending: dict[asyncio.AbstractEventLoop, list[_Waiting]] = {}
        self._since_checkpoint = 0
        # how much grouping happened, and where (tests, and the bench's report)
        self.transactions = self.calls = self.inline_transactions = self.checkpoints = 0

    async def record(self, cards: list[IssuedCard], patient_id: str, snapshot: Snapshot | None = None) -> None:
        """Returns once the cards (and their snapshot) are committed; raises what the store raised."""
        loop = asyncio.get_running_loop()
        waiting = _Waiting(cards, patient_id, snapshot, loop, loop.create_future())
        if self.inline:
            pending = self._pending.setdefault(loop, [])
            pending.append(waiting)
            if len(pending) == 1:
                loop.call_soon(self._flush, loop)  # after the other calls ready in this turn have added theirs
        else:
            self._to_thread(waiting)
        await waiting.done

    def _flush(self, loop: asyncio.AbstractEventLoop) -> None:
        batch = self._pending.pop(loop, [])
        while batch:
            part, batch = batch[:self.max_batch], batch[self.max_batch:]
            if not self._inline_write(part):
                for waiting in part:
                    self._to_thread(waiting)
                continue
            self.transactions, self.calls = self.transactions + 1, self.calls + len(part)
            self.inline_transactions += 1
            for waiting in part:
                _settle(waiting.done, None)
            self._since_checkpoint += 1
            if self._since_checkpoint >= self.checkpoint_every:
                self._since_checkpoint = 0
                self._to_thread(_CHECKPOINT)

    def _inline_write(self, part: list[_Waiting]) -> bool:
        """False for the thread to write the part. Whatever the store raises here (say its connection cannot be
        opened) goes that way too: raised in a loop callback it would reach no call, and the calls would wait
        for ever; the thread writes them, or hands each call its own error."""
        try:
            return self.store.record_calls_inline([(w.cards, w.patient_id, w.snapshot) for w in part])
        except Exception:  # noqa: BLE001 -- see above: the thread path raises it to the calls
            return False

    def _to_thread(self, item: _Waiting | str) -> None:
        self._start()
        self._queue.put(item)

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
            if isinstance(first, str):
                self._checkpoint()
                continue
            batch = [first]
            while len(batch) < self.max_batch:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if isinstance(item, str) or item is None:
                    self._queue.put(item)  # after this batch: a checkpoint, or the stop
                    break
                batch.append(item)
            self._write(batch)

    def _checkpoint(self) -> None:
        try:
            self.store.checkpoint()
            self.checkpoints += 1
        except Exception:  # noqa: BLE001 -- a later checkpoint (or SQLite's own, by other connections) catches up
            log.warning("WAL checkpoint failed; the next one will try again", exc_info=False)

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
