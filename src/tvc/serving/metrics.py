"""Prometheus metrics of one service (a registry of its own, so two services in one process —
the tests — do not share counters): requests, latency, errors, the version each slot serves,
swaps and failed loads."""

from __future__ import annotations

from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

if TYPE_CHECKING:
    from tvc.serving.service import Loaded

BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class Metrics:
    def __init__(self, model: str) -> None:
        self.model = model
        self.registry = r = CollectorRegistry()
        self.requests = Counter(
            "tvc_serve_requests",
            "Inference requests answered, by version and HTTP status",
            ["model", "version", "code"],
            registry=r,
        )
        self.latency = Histogram(
            "tvc_serve_request_seconds",
            "Inference request latency (body read to response built)",
            ["model"],
            buckets=BUCKETS,
            registry=r,
        )
        self.errors = Counter(
            "tvc_serve_errors",
            "Inference requests refused or failed, by kind",
            ["model", "kind"],
            registry=r,
        )
        self.version = Gauge(
            "tvc_serve_version_info",
            "1 for the version each followed ref is serving",
            ["model", "ref", "version", "version_id"],
            registry=r,
        )
        self.swaps = Counter(
            "tvc_serve_swaps", "Versions swapped in after a ref moved", ["model", "ref"], registry=r
        )
        self.load_failures = Counter(
            "tvc_serve_load_failures",
            "Versions a ref moved to that failed to load (the old one kept serving)",
            ["model", "ref"],
            registry=r,
        )
        self.last_failure = Gauge(
            "tvc_serve_last_load_failure_timestamp_seconds",
            "When a load last failed",
            ["model", "ref"],
            registry=r,
        )
        self.load_seconds = Histogram(
            "tvc_serve_load_seconds",
            "Checkout, load and warm-up time of a version",
            buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60),
            registry=r,
        )
        self.poll_errors = Counter(
            "tvc_serve_poll_errors", "Polls of a ref that failed", registry=r
        )
        self._shown: dict[str, tuple[str, str]] = {}

    def serving(self, ref: str, loaded: Loaded) -> None:
        old = self._shown.get(ref)
        if old is not None:
            self.version.remove(self.model, ref, *old)
            self.swaps.labels(self.model, ref).inc()
        shown = (loaded.target.ref, loaded.target.vid)
        self.version.labels(self.model, ref, *shown).set(1)
        self._shown[ref] = shown

    def load_failed(self, ref: str) -> None:
        import time

        self.load_failures.labels(self.model, ref).inc()
        self.last_failure.labels(self.model, ref).set(time.time())

    def render(self) -> bytes:
        return generate_latest(self.registry)
