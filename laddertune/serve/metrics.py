"""The server's Prometheus metrics (``GET /metrics``), with prometheus_client (the ``serve`` extra, imported when a
server is made), in a registry of its own per server."""

from __future__ import annotations

import collections
import threading
import time

from ..errors import import_optional

ENDPOINTS = (
    "/v1/completions", "/v1/chat/completions", "/v1/classify", "/v1/models", "/v1/models/load",
    "/v1/models/unload", "/health", "/metrics",
)  # fmt: skip
RATE_WINDOW = 10.0  # seconds over which tokens_per_second is measured


class Metrics:
    """Counters, gauges and histograms of one server; :meth:`render` is the text ``/metrics`` returns."""

    def __init__(self) -> None:
        prom = import_optional("prometheus_client", "serve", "laddertune serve")
        Counter, Gauge, Histogram = prom.Counter, prom.Gauge, prom.Histogram  # noqa: N806 (their own names)
        self._render = prom.generate_latest
        r = self.registry = prom.CollectorRegistry()
        self.requests = Counter(
            "laddertune_requests", "HTTP requests by endpoint and status", ["endpoint", "status"], registry=r
        )
        self.latency = Histogram(
            "laddertune_request_seconds", "request time, to the last byte (streams included)", ["endpoint"],
            buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120), registry=r,
        )  # fmt: skip
        self.queue = Gauge("laddertune_queue_depth", "requests waiting for a place in the batch", registry=r)
        self.running = Gauge(
            "laddertune_running_rows", "rows (request choices) in the decoding batch", registry=r
        )
        rows = (1, 2, 4, 8, 16, 32, 64, 128)
        self.step_rows = Histogram("laddertune_step_rows", "rows per decoding step", buckets=rows, registry=r)
        self.step_sides = Histogram(
            "laddertune_step_sides",
            "side networks per decoding step",
            buckets=(1, 2, 3, 4, 6, 8, 16),
            registry=r,
        )
        self.prefill_rows = Histogram(
            "laddertune_prefill_rows", "rows per prefill pass", buckets=rows, registry=r
        )
        self.classify_rows = Histogram(
            "laddertune_classify_rows", "inputs per classification pass", buckets=rows, registry=r
        )
        self.prompt_tokens = Counter(
            "laddertune_prompt_tokens", "prompt tokens prefilled", ["model"], registry=r
        )
        self.generated = Counter("laddertune_generated_tokens", "tokens generated", ["model"], registry=r)
        self.rejected = Counter("laddertune_rejected", "requests refused with 429 (queue full)", registry=r)
        self.cancelled = Counter("laddertune_cancelled", "requests whose client went away", registry=r)
        self.timeouts = Counter("laddertune_timeouts", "requests past their timeout", registry=r)
        self.failures = Counter("laddertune_failures", "requests that failed inside the model", registry=r)
        self.models = Gauge("laddertune_models", "side networks served", registry=r)
        self.tokens_per_second = Gauge(
            "laddertune_tokens_per_second",
            f"tokens generated per second over the last {RATE_WINDOW:g} s",
            registry=r,
        )
        self._recent: collections.deque = collections.deque()  # (time, tokens)
        self._lock = threading.Lock()
        self.tokens_per_second.set_function(self.rate)

    def count_generated(self, model: str, tokens: int) -> None:
        self.generated.labels(model).inc(tokens)
        with self._lock:
            self._recent.append((time.monotonic(), tokens))

    def rate(self) -> float:
        """Tokens generated per second over the last :data:`RATE_WINDOW` seconds."""
        now = time.monotonic()
        with self._lock:
            while self._recent and self._recent[0][0] < now - RATE_WINDOW:
                self._recent.popleft()
            return sum(n for _, n in self._recent) / RATE_WINDOW

    def observe_request(self, path: str, status: int, seconds: float) -> None:
        endpoint = path if path in ENDPOINTS else "other"
        self.requests.labels(endpoint, str(status)).inc()
        self.latency.labels(endpoint).observe(seconds)

    def render(self) -> bytes:
        return self._render(self.registry)
