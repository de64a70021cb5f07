"""Structured JSON logs and Prometheus metrics.

Log records carry ids and outcomes only: service, status, hookInstance, correlation id, issuer,
jti, timings. Request bodies, tokens and patient ids are never passed to a logger, so they
cannot leak through one; tests capture the logs of real calls to hold that line.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
from collections.abc import Callable
from typing import Any, Protocol

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

CONTEXT_FIELDS = ("service", "status", "hook_instance", "correlation_id", "issuer", "kid", "auth_check", "jti",
                  "duration_ms", "cards", "error", "origin", "prefetch_key", "check", "field", "cors_origin")


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": dt.datetime.fromtimestamp(record.created, dt.UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(), "logger": record.name, "message": record.getMessage()}
        entry |= {k: getattr(record, k) for k in CONTEXT_FIELDS if hasattr(record, k)}
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def configure_logging(level: int = logging.INFO) -> None:
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True


class EngineHealth(Protocol):
    failed_sessions: int


class CacheHealth(Protocol):
    hits: int
    misses: int


MULTIPROCESS_DIR = "PROMETHEUS_MULTIPROC_DIR"  # set by `serve --workers N`: every worker writes its values there


class Metrics:
    """One registry per app, so several apps in one process (tests) do not collide. With several workers
    (MULTIPROCESS_DIR set) every worker's values are read from the shared folder, so any worker's scrape
    gives the service's totals, not its own; gauges are then set after each request, not read at scrape."""

    def __init__(self, engine: EngineHealth | None = None, cache: CacheHealth | None = None) -> None:
        self.registry = CollectorRegistry()
        self.multiprocess = bool(os.environ.get(MULTIPROCESS_DIR))
        self.gauges: list[tuple[Gauge, Callable[[], float]]] = []
        if cache is not None:
            for name, read in (("hits", lambda: cache.hits), ("misses", lambda: cache.misses)):
                self._gauge(f"hipflex_decision_cache_{name}_total", f"Decision cache {name}", read)
        if engine is not None:
            self._gauge("hipflex_engine_failed_sessions", "Rule-engine sessions that failed and whose ids were "
                        "replaced", lambda: engine.failed_sessions)
        self.requests = Counter("hipflex_requests_total", "HTTP requests by endpoint and status",
                                ["service", "endpoint", "status"], registry=self.registry)
        self.latency = Histogram("hipflex_request_seconds", "Request latency by endpoint", ["service", "endpoint"],
                                 buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
                                 registry=self.registry)
        self.cards = Counter("hipflex_cards_total", "Cards issued, by card kind", ["card"], registry=self.registry)
        self.card_rules = Counter("hipflex_card_rules_total", "Rule versions behind the issued cards (a card "
                                  "counts once for each rule behind it)", ["card", "rule"], registry=self.registry)
        self.feedback = Counter("hipflex_feedback_total", "Feedback items stored by card kind and outcome",
                                ["card", "outcome"], registry=self.registry)
        self.shadow_calls = Counter("hipflex_shadow_calls_total", "Hook calls decided again under the shadow "
                                    "release", ["release"], registry=self.registry)
        self.shadow_disagreements = Counter("hipflex_shadow_disagreements_total", "Shadow decisions whose cards "
                                            "differ from the live answer", ["release"], registry=self.registry)
        self.shadow_skipped = Counter("hipflex_shadow_skipped_total", "Calls not shadowed: dropped (too many "
                                      "waiting) or failed", ["reason"], registry=self.registry)

    def shadow_decided(self, release: str, disagreed: bool) -> None:
        self.shadow_calls.labels(release).inc()
        if disagreed:
            self.shadow_disagreements.labels(release).inc()

    def _gauge(self, name: str, text: str, read: Callable[[], float]) -> None:
        if self.multiprocess:
            self.gauges.append((Gauge(name, text, registry=self.registry, multiprocess_mode="sum"), read))
        else:
            Gauge(name, text, registry=self.registry).set_function(read)

    def observe(self, service: str, endpoint: str, status: int, seconds: float) -> None:
        self.requests.labels(service, endpoint, str(status)).inc()
        self.latency.labels(service, endpoint).observe(seconds)
        for gauge, read in self.gauges:
            gauge.set(read())

    def exposition(self) -> bytes:
        if not self.multiprocess:
            return generate_latest(self.registry)
        from prometheus_client import multiprocess

        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        return generate_latest(registry)
