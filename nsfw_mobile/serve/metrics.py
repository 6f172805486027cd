"""Prometheus metrics of one app, in a registry of its own (the process's default registry
is left alone): requests by route and status, latency and batch-size histograms, queue
depth and the model's facts."""

from __future__ import annotations


class Metrics:
    def __init__(self, model_info: dict):
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info

        self.registry = CollectorRegistry()
        self.requests = Counter(
            "nsfw_serve_requests",
            "HTTP requests by route, method and status.",
            ("route", "method", "status"),
            registry=self.registry,
        )
        self.latency = Histogram(
            "nsfw_serve_request_seconds",
            "Time from a request's arrival to its answer, by route.",
            ("route",),
            buckets=(0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10, 30),
            registry=self.registry,
        )
        self.batch_size = Histogram(
            "nsfw_serve_batch_size",
            "Images per model call.",
            buckets=(1, 2, 4, 8, 16, 32, 64),
            registry=self.registry,
        )
        self.queue_depth = Gauge(
            "nsfw_serve_queue_depth", "Images waiting or being classified.", registry=self.registry
        )
        info = Info("nsfw_serve_model", "The model this server answers with.",
                    registry=self.registry)  # fmt: skip
        facts = ("name", "file", "format", "engine", "sha256")
        info.info({key: str(model_info[key]) for key in facts})

    def observe(self, route: str, method: str, status: int, seconds: float) -> None:
        self.requests.labels(route, method, str(status)).inc()
        self.latency.labels(route).observe(seconds)

    def render(self) -> tuple[bytes, str]:
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        return generate_latest(self.registry), CONTENT_TYPE_LATEST
