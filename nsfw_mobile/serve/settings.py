"""The service's limits and options, one frozen record for the app, the CLI and Ray."""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import UsageError


@dataclass(frozen=True)
class Settings:
    threshold: float | None = None
    """Marks records whose nsfw_score is above it (``flagged``), as ``predict --threshold``."""
    workers: int | None = None
    """Lanes (engines with copies, TFLite) or decoding threads (batching engines); None: one
    per core, at most 8."""
    max_batch: int = 16
    """Most images per model call for engines that take batches."""
    batch_wait_ms: float = 5.0
    """How long a batch waits for more images once its first is decoded."""
    max_body_mb: float = 20.0
    """Largest request body for image routes, refused while it streams in."""
    max_video_mb: float = 200.0
    max_video_s: float = 600.0
    """Longest video /v1/classify-video takes, by the container's duration."""
    max_queue: int = 64
    """Images waiting or under way at most; more answer 503 with Retry-After at once."""
    max_images: int = 32
    """Images in one request at most."""
    timeout_s: float = 30.0
    """Per request: its body must arrive and its images be classified within this."""
    max_pixels: int = 64_000_000
    cors_origins: tuple[str, ...] = ()
    token: str | None = None
    """Bearer token every route but the health checks needs; None: no authentication."""

    def __post_init__(self):
        if self.threshold is not None and not 0 <= self.threshold <= 1:
            raise UsageError(f"threshold {self.threshold}: choose a value from 0 to 1")
        for name in ("max_batch", "max_queue", "max_images"):
            if getattr(self, name) < 1:
                raise UsageError(f"{name} {getattr(self, name)}: choose 1 or more")
        for name in ("max_body_mb", "max_video_mb", "max_video_s", "timeout_s"):
            if getattr(self, name) <= 0:
                raise UsageError(f"{name} {getattr(self, name)}: choose a value above 0")
        if self.batch_wait_ms < 0:
            raise UsageError(f"batch_wait_ms {self.batch_wait_ms}: choose 0 or more")
        if self.token is not None and not self.token.strip():
            raise UsageError("the bearer token is empty: set a non-empty token or none")

    @property
    def max_body_bytes(self) -> int:
        return int(self.max_body_mb * 1024 * 1024)

    @property
    def max_video_bytes(self) -> int:
        return int(self.max_video_mb * 1024 * 1024)
