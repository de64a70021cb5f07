"""HTTP connections that cannot be held open for free: a time limit for the request head and for the body.

uvicorn times out only an idle keep-alive connection after a response: a connection that never sends a
request, or sends its headers or its body a byte at a time, stays open for ever (300 slow-header, 300
slow-body and 1,000 idle connections once held the service at its open-file limit). This protocol, uvicorn's
httptools one with two timers, closes such a connection: with 408 when the head is in and the body is late,
silently when not even a request head arrived. `serve` also passes uvicorn its connection limit (503 beyond
it) and keep-alive timeout, so no reverse proxy is needed for these; one in front is still welcome.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any, ClassVar

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol


class TimedHttpProtocol(HttpToolsProtocol):
    """uvicorn's protocol, closing a connection whose request head or body does not arrive in time."""

    head_seconds: ClassVar[float] = 10.0
    body_seconds: ClassVar[float] = 30.0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._deadline: asyncio.TimerHandle | None = None

    @classmethod
    def configure(cls, head_seconds: float, body_seconds: float) -> None:
        """Set the limits for every connection this process accepts (before serving)."""
        cls.head_seconds, cls.body_seconds = head_seconds, body_seconds

    def _arm(self, seconds: float, late: str) -> None:
        self._disarm()
        self._deadline = self.loop.call_later(seconds, self._too_late, late)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _too_late(self, late: str) -> None:
        self._deadline = None
        if self.transport.is_closing():
            return
        if late == "body" and self.cycle is not None and not self.cycle.response_started:
            message = json.dumps({"error": "request-timeout", "message": "the request body did not arrive within "
                                  f"{self.body_seconds:g} s"}).encode()
            self.transport.write(b"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\n"
                                 b"connection: close\r\ncontent-length: " + str(len(message)).encode()
                                 + b"\r\n\r\n" + message)
        self.transport.close()

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm(self.head_seconds, "head")

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if self._deadline is None:
            self._arm(self.head_seconds, "head")

    def on_headers_complete(self) -> None:
        super().on_headers_complete()
        self._arm(self.body_seconds, "body")

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._disarm()
