"""The same app on Ray Serve: one deployment, N replicas, each the app of ``serve/app.py``.

Each replica opens the model with ``open_model`` (so the model must be reachable at the
same path on every machine of the cluster: the file the package ships, a shared folder or
a zoo name) and builds the ASGI app with ``create_app``; Ray Serve's proxy spreads
requests over the replicas, and inside each replica the app's own scheduler gives the
lanes or dynamic batches it gives embedded, so an answer is the same wherever it is made.
"""

from __future__ import annotations

import logging
import signal
import socket
import threading
from collections.abc import Callable

from ..errors import NsfwMobileError
from .settings import Settings

APP_NAME = "nsfw-mobile"
REPLICA_CPUS = 0.5
"""Fractional, so replicas never hold every CPU of a small machine (docs/cluster.md)."""


def free_port(host: str) -> int:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
        probe.bind((host, 0))
        return probe.getsockname()[1]


def deployment(given, *, classes, settings: Settings, replicas: int):
    """The bound Ray Serve application: ``replicas`` copies of the app around ``given``."""
    from ray import serve

    class NsfwMobileReplica:
        def __init__(self, given, classes, settings):
            from . import open_model

            self.model = open_model(given, classes=classes)
            self.settings = settings

        def __serve_build_asgi_app__(self):
            from . import create_app

            return create_app(self.model, self.settings)

    wrapped = serve.ingress()(NsfwMobileReplica)
    bound = serve.deployment(
        name="nsfw_mobile",
        num_replicas=replicas,
        ray_actor_options={"num_cpus": REPLICA_CPUS},
        max_ongoing_requests=max(8, settings.max_queue),
        graceful_shutdown_timeout_s=settings.timeout_s + 5,
    )(wrapped)
    return bound.bind(None if given is None else str(given), classes, settings)


def serve_on_ray(
    given,
    *,
    classes: int | None,
    settings: Settings,
    address: str,
    replicas: int,
    host: str,
    port: int,
    on_listening: Callable[[str], None],
    log: Callable[[str], None],
) -> None:
    """Start (or join) Ray, run the app on ``replicas`` replicas behind Ray Serve's proxy on
    ``host:port`` until SIGTERM or SIGINT, then shut Serve down (requests under way end
    first) and return."""
    try:
        import ray
        from ray import serve
    except ImportError as exc:
        raise NsfwMobileError(
            f"serve --ray needs Ray Serve ({exc.name} is missing): "
            "pip install 'nsfw-mobile[serve-ray]'"
        ) from None

    if port == 0:
        port = free_port(host)
    options = {"include_dashboard": False, "log_to_driver": False,
               "logging_level": logging.ERROR}  # fmt: skip
    if address == "local":  # a new Ray, even if `ray start` made one on this machine
        ray.init(address="local", **options)
    else:
        ray.init(address=address, **options)
    stop = threading.Event()
    handled = (signal.SIGINT, signal.SIGTERM)
    previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in handled}
    try:
        serve.start(http_options={"host": host, "port": port})
        serve.run(
            deployment(given, classes=classes, settings=settings, replicas=replicas),
            name=APP_NAME,
            route_prefix="/",
        )
        on_listening(f"http://{host}:{port}" if ":" not in host else f"http://[{host}]:{port}")
        log(f"{replicas} replica(s) on Ray ({address})")
        while not stop.wait(0.5):
            pass
        serve.shutdown()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        ray.shutdown()
