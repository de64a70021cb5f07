"""Reading the EHR's FHIR server safely: allow-listed servers only, no private addresses unless listed,
one deadline per call, capped in size, no redirects, no proxies from the environment.

A hook request names its own `fhirServer`, so without these limits anyone who can call the service
could make it fetch internal URLs with the caller's token (SSRF). The host is resolved once and the
connection made to the checked address (with the original Host header and TLS name), so a DNS answer
that changes between check and connect cannot redirect it. Failures are reported in generic words: a
caller learns that a read failed, not which network error it was.
"""

from __future__ import annotations

import asyncio
import collections
import ipaddress
import logging
import re
import socket
import time
import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httpx

from cds.errors import HipflexError
from cds.jsonlimits import parse_json
from cds.settings import FhirReads


class FetchFailed(HipflexError):
    """Why a FHIR read failed, in words safe to show the caller (no token, no patient data, no network detail);
    `check` is the failed check in one word, for the log line (not-allowed, private-address, unreachable,
    timeout, status, too-large, not-fhir, budget, pages, no-server, not-found)."""

    def __init__(self, message: str, check: str = "unreachable") -> None:
        super().__init__(message)
        self.check = check


class OutOfTime(FetchFailed):
    """A read stopped at the call's deadline (counted for /health)."""

    def __init__(self, message: str) -> None:
        super().__init__(message, "timeout")


@dataclass
class ReadBudget:
    """The bytes the reads of one hook call may still take (one slow patient cannot make the service hold
    max_bytes x max_pages x every template)."""

    bytes_left: int


@dataclass(frozen=True)
class Target:
    """A checked URL: where to connect (an address) and what to say it is (Host header, TLS name)."""

    connect_url: str
    host_header: str
    tls_name: str | None


def same_origin(url: str, other: str) -> bool:
    """Same scheme, host and port (default ports filled in); False for anything that is not an http(s) URL."""
    try:
        return _origin(url)[:3] == _origin(other)[:3]
    except ValueError:
        return False


def _origin(url: str) -> tuple[str, str, int, str]:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("not an http(s) URL")
    port = parts.port or (443 if parts.scheme == "https" else 80)
    return parts.scheme, parts.hostname.lower(), port, parts.path.rstrip("/")


AMBIGUOUS_PATH = re.compile(r"(^|/)\.{1,2}(/|$)|%2e|%2f|%5c|\\", re.IGNORECASE)


def allowed_base(url: str, allowed: Sequence[str]) -> str | None:
    """The allow-list entry `url` falls under (same scheme, host, port, and path at or below it), or None. A path a
    server could read differently from this comparison (dot segments, encoded dots or slashes, backslashes:
    `.../ok/../admin`) is under no entry: a FHIR server's URLs never need them."""
    try:
        scheme, host, port, path = _origin(url)
    except ValueError:
        return None
    if AMBIGUOUS_PATH.search(urlsplit(url).path):
        return None
    for entry in allowed:
        try:
            e_scheme, e_host, e_port, e_path = _origin(entry)
        except ValueError:
            continue
        if (scheme, host, port) == (e_scheme, e_host, e_port) and (path == e_path or path.startswith(e_path + "/")):
            return entry
    return None


def _listed_literally(host: str) -> bool:
    """An allow-list entry that names an address (or localhost) itself may be private: it was listed on purpose."""
    if host == "localhost":
        return True
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def is_public_address(address: str) -> bool:
    """Whether an address may be connected to unlisted (an IPv4-mapped IPv6 address counts as its IPv4 one)."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return not (ip.is_private or ip.is_loopback or ip.is_link_local or ip.is_multicast or ip.is_reserved
                or ip.is_unspecified)


CONNECTIONS_PER_ORIGIN = 20  # one slow server can hold at most these; every other origin has its own pool
SLOW_READS, SLOW_WINDOW_SECONDS = 3, 60.0  # this many reads out of time within the window: /health says degraded


class FhirReader:
    """GETs JSON resources from allow-listed FHIR servers; one instance per process, one client per event loop and
    origin, so that one slow EHR can fill only its own pool, never another EHR's."""

    def __init__(self, limits: FhirReads, transport: httpx.AsyncBaseTransport | None = None) -> None:
        logging.getLogger("httpx").setLevel(logging.WARNING)  # it logs each URL, and ours carry patient ids
        self.limits, self.transport = limits, transport
        self._clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[str, httpx.AsyncClient]] = (
            weakref.WeakKeyDictionary())
        self.in_flight: dict[str, int] = {}  # reads under way, by origin
        self.slow: dict[str, collections.deque[float]] = {}  # when reads of an origin last ran out of time

    def health(self, now: float | None = None) -> dict[str, Any]:
        """'degraded' while some origin has its pool full or ran out of time on SLOW_READS reads in the last
        SLOW_WINDOW_SECONDS; counts only (an origin's name is the caller's business, not /health's)."""
        now = time.monotonic() if now is None else now
        full = sum(n >= CONNECTIONS_PER_ORIGIN for n in list(self.in_flight.values()))
        slow = sum(sum(t > now - SLOW_WINDOW_SECONDS for t in list(times)) >= SLOW_READS
                   for times in list(self.slow.values()))
        status = "degraded" if full or slow else "ok"
        return {"status": status, "origins_with_a_full_pool": full, "origins_timing_out": slow,
                "reads_in_flight": sum(self.in_flight.values())}

    def _ran_out_of_time(self, origin: str) -> None:
        self.slow.setdefault(origin, collections.deque(maxlen=SLOW_READS)).append(time.monotonic())

    def _client(self, origin: str) -> httpx.AsyncClient:
        clients = self._clients.setdefault(asyncio.get_running_loop(), {})
        client = clients.get(origin)
        if client is None:
            timeout = httpx.Timeout(self.limits.read_seconds, connect=self.limits.connect_seconds)
            limits = httpx.Limits(max_connections=CONNECTIONS_PER_ORIGIN, max_keepalive_connections=5)
            client = httpx.AsyncClient(timeout=timeout, limits=limits, follow_redirects=False, trust_env=False,
                                       transport=self.transport)
            clients[origin] = client
        return client

    async def aclose(self) -> None:
        for client in self._clients.pop(asyncio.get_running_loop(), {}).values():
            await client.aclose()

    async def target(self, url: str, allowed: Sequence[str]) -> Target:
        """Where `url` may be read from, or FetchFailed: not listed, or resolving to a private address."""
        entry = allowed_base(url, allowed)
        if entry is None:
            raise FetchFailed("the request's fhirServer is not one this service may read from", "not-allowed")
        parts = urlsplit(url)
        scheme, host, port, _ = _origin(url)
        if _listed_literally(_origin(entry)[1]):
            return Target(url, parts.netloc, None)
        try:
            infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except (OSError, UnicodeError):
            raise FetchFailed("the FHIR server could not be read") from None
        addresses = sorted({str(info[4][0]) for info in infos})
        if not addresses or not all(is_public_address(a) for a in addresses):
            raise FetchFailed("the request's fhirServer resolves to an address this service does not read from",
                              "private-address")
        literal = f"[{addresses[0]}]" if ":" in addresses[0] else addresses[0]
        connect = parts._replace(netloc=f"{literal}:{port}").geturl()
        return Target(connect, parts.netloc, host if scheme == "https" else None)

    async def get(self, url: str, token: str | None, allowed: Sequence[str], deadline: float,
                  budget: ReadBudget | None = None) -> dict[str, Any] | None:
        """The JSON resource at `url`; None for 404/410 on a read (nothing there); FetchFailed otherwise."""
        target = await self.target(url, allowed)
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise FetchFailed(f"the FHIR server did not answer within {self.limits.deadline_seconds:g} s", "timeout")
        headers = {"Accept": "application/fhir+json", "Host": target.host_header}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        extensions = {"sni_hostname": target.tls_name} if target.tls_name else {}
        timeout = httpx.Timeout(min(self.limits.read_seconds, remaining),
                                connect=min(self.limits.connect_seconds, remaining), pool=remaining)
        origin = urlsplit(target.connect_url).netloc
        client = self._client(origin)
        self.in_flight[origin] = self.in_flight.get(origin, 0) + 1
        try:
            async with client.stream("GET", target.connect_url, headers=headers, timeout=timeout,
                                      extensions=extensions) as response:
                if response.status_code in (404, 410) and "?" not in url:
                    return None  # a read of something that is not there; a search never 404s on no match
                if response.status_code != 200:
                    raise FetchFailed("the FHIR server could not be read", f"status-{response.status_code}")
                body = await self._read_capped(response, deadline, budget)
        except httpx.TimeoutException:
            self._ran_out_of_time(origin)
            raise FetchFailed("the FHIR server could not be read", "timeout") from None
        except (OutOfTime, asyncio.CancelledError):  # cancelled: the call's deadline passed
            self._ran_out_of_time(origin)
            raise
        except httpx.HTTPError:
            raise FetchFailed("the FHIR server could not be read") from None
        finally:
            self.in_flight[origin] -= 1
        try:
            data = parse_json(body, "the FHIR server's answer", characters_only=True)
        except (ValueError, UnicodeDecodeError, RecursionError):
            raise FetchFailed("the FHIR server's answer is not usable FHIR JSON", "not-fhir") from None
        if not isinstance(data, dict) or not isinstance(data.get("resourceType"), str):
            raise FetchFailed("the FHIR server's answer is not a FHIR resource", "not-fhir")
        return data

    async def _read_capped(self, response: httpx.Response, deadline: float, budget: ReadBudget | None) -> bytes:
        chunks, size = [], 0
        async for chunk in response.aiter_bytes():
            size += len(chunk)
            if size > self.limits.max_bytes:
                raise FetchFailed(f"the FHIR server's answer is over {self.limits.max_bytes} bytes", "too-large")
            if budget is not None:
                budget.bytes_left -= len(chunk)
                if budget.bytes_left < 0:
                    raise FetchFailed(f"the FHIR server's answers for this call are over {self.limits.call_bytes} "
                                      "bytes together (HIPFLEX_FHIR_CALL_BYTES)", "budget")
            if time.monotonic() > deadline:
                raise OutOfTime(f"the FHIR server did not answer within {self.limits.deadline_seconds:g} s")
            chunks.append(chunk)
        return b"".join(chunks)
