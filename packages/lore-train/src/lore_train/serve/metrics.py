"""Prometheus metrics of one server: requests, latency, batches, users.

Why a registry per server (not the process-wide default): tests and
benchmarks start several servers in one process, and each must count only
its own traffic. Route labels are the route templates (``/v1/users/{user}``),
never the raw path, so a user id never becomes a label.
"""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
TOKEN_BUCKETS = (64, 256, 1024, 2048, 4096, 8192, 16384, 32768, 65536)


class ServeMetrics:
    """The counters and histograms lore-serve exports on ``GET /metrics``."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(self, users: Callable[[], int]) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("lore_serve_requests", "HTTP requests by route and status",
                                ["route", "method", "status"], registry=r)
        self.latency = Histogram("lore_serve_request_seconds", "Request latency by route",
                                 ["route"], buckets=LATENCY_BUCKETS, registry=r)
        self.batch_size = Histogram("lore_serve_batch_conversations",
                                    "Conversations per backbone forward", buckets=SIZE_BUCKETS,
                                    registry=r)
        self.batch_tokens = Histogram("lore_serve_batch_tokens", "Tokens per backbone forward",
                                      buckets=TOKEN_BUCKETS, registry=r)
        self.forward = Histogram("lore_serve_forward_seconds", "Seconds per backbone forward",
                                 buckets=LATENCY_BUCKETS, registry=r)
        self.comparisons = Counter("lore_serve_comparisons",
                                   "Comparisons stored (acknowledged)", registry=r)
        self.users = Gauge("lore_serve_users", "Users with weights (the model's and adapted ones)",
                           registry=r)
        self.users.set_function(users)

    def observe_request(self, route: str, method: str, status: int, seconds: float) -> None:
        self.requests.labels(route, method, str(status)).inc()
        self.latency.labels(route).observe(seconds)

    def observe_batch(self, conversations: int, tokens: int, seconds: float) -> None:
        self.batch_size.observe(conversations)
        self.batch_tokens.observe(tokens)
        self.forward.observe(seconds)

    def render(self) -> bytes:
        return generate_latest(self.registry)
