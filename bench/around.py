"""`make bench`, the cost around the decision: P01 hook calls through the real ASGI app in this process (its
middlewares, authentication off, request parsing, prefetch gathering, deciding, the group-committed card
insert into a SQLite store, encoding, the log line and metrics), new Observation ids each call, decision
cache off, one call at a time; no sockets, so the HTTP server's own cost (the bare endpoint's figure) is left
out. Each step's time is taken by wrapping the function that does it; "around" is the whole call less the
decision, and "the rest" is what no listed step accounts for (routing, middlewares, the response object).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import functools
import os
import tempfile
import time
from collections.abc import Callable, Iterator
from typing import Any

from bench.service import body_with, with_new_ids
from tests.support.paths import EXAMPLE_DATE

CALLS, WARM = 1000, 100


@contextlib.contextmanager
def timed_steps(totals: dict[str, float]) -> Iterator[None]:
    """Wrap each step's function so its time adds up in `totals` (undone on exit)."""
    from cds.clinical.pipeline import Decision, Pipeline
    from cds.hooks import call, groupcommit, store
    from cds.web import calls, observability, service

    steps: list[tuple[Any, str, str]] = [
        (service, "parse_request", "parsing the request"), (call, "gather", "gathering the prefetch"),
        (Pipeline, "decide", "deciding"), (call, "snapshot_of", "the replay snapshot"),
        (call, "issued_cards", "the issued-card records"), (groupcommit.CardWriter, "record", "the card insert"),
        (store.Store, "record_calls_inline", "of which the transaction, on the loop (SQLite)"),
        (store.Store, "record_calls", "of which the transaction, in the writer thread"),
        (Decision, "response", "encoding the response"), (calls.log, "info", "the log line"),
        (observability.Metrics, "observe", "metrics")]
    originals = [(owner, name, getattr(owner, name)) for owner, name, _ in steps]
    for owner, name, label in steps:
        setattr(owner, name, _timed(getattr(owner, name), label, totals))
    try:
        yield
    finally:
        for owner, name, original in originals:
            setattr(owner, name, original)


def _timed(function: Callable[..., Any], label: str, totals: dict[str, float]) -> Callable[..., Any]:
    if asyncio.iscoroutinefunction(function):
        @functools.wraps(function)
        async def timed_async(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return await function(*args, **kwargs)
            finally:
                totals[label] += time.perf_counter() - started
        return timed_async

    @functools.wraps(function)
    def timed(*args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        try:
            return function(*args, **kwargs)
        finally:
            totals[label] += time.perf_counter() - started
    return timed


async def _call(app: Any, body: bytes) -> int:
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
             "path": "/cds-services/hipflex-patient-view", "raw_path": b"/cds-services/hipflex-patient-view",
             "query_string": b"", "client": ("127.0.0.1", 50000), "server": ("127.0.0.1", 8080),
             "headers": [(b"host", b"127.0.0.1:8080"), (b"content-type", b"application/json"),
                         (b"content-length", str(len(body)).encode())]}
    messages = [{"type": "http.request", "body": body, "more_body": False}]
    status: list[int] = []

    async def receive() -> dict[str, Any]:
        if messages:
            return messages.pop()
        await asyncio.sleep(3600)  # the client never disconnects during a call
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            status.append(message["status"])

    await app(scope, receive, send)
    return status[0]


def run() -> dict[str, Any]:
    """ms per call for the whole call, the decision, what is around it, and each step."""
    with tempfile.TemporaryDirectory() as folder:
        os.environ.update({"HIPFLEX_DATA_DIR": folder, "HIPFLEX_AS_OF": EXAMPLE_DATE.isoformat(),
                           "HIPFLEX_DECISION_CACHE_SIZE": "0"})
        from cds.clinical.gctuning import settle_after_loading
        from cds.settings import Settings
        from cds.web.app import create_app

        app = create_app(Settings(), bind="127.0.0.1")
        settle_after_loading()  # as `serve` does
        raw = body_with(None)
        bodies = [with_new_ids(raw, i) for i in range(CALLS + WARM)]
        totals: dict[str, float] = collections.defaultdict(float)
        return asyncio.run(_measure(app, bodies, totals))


async def _measure(app: Any, bodies: list[bytes], totals: dict[str, float]) -> dict[str, Any]:
    async with app.router.lifespan_context(app):
        for body in bodies[:WARM]:
            assert await _call(app, body) == 200
        with timed_steps(totals):
            started = time.perf_counter()
            for body in bodies[WARM:]:
                assert await _call(app, body) == 200
            whole = (time.perf_counter() - started) / CALLS * 1000
    steps = {label: round(seconds / CALLS * 1000, 3) for label, seconds in totals.items()}
    deciding = steps.pop("deciding")
    around = whole - deciding
    inside = sum(v for k, v in steps.items() if not k.startswith("of which"))
    return {"ms_per_call": round(whole, 3), "ms_deciding": deciding, "ms_around_the_decision": round(around, 3),
            "steps_ms": steps | {"the rest": round(around - inside, 3)}}


if __name__ == "__main__":
    import json

    print(json.dumps(run(), indent=2))
