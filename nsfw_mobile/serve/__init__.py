"""``nsfw-mobile serve``: the same validated model as an HTTP moderation service.

One ASGI application (Starlette), built by :func:`create_app` around one open model
(:func:`open_model`): embedded under uvicorn in one process by default, the same app
on every replica of a Ray Serve deployment when one machine is not enough
(``serve/on_ray.py``). Every answer is built by the code that builds ``predict``'s:
image decoding by ``images.py``, records by ``predict.Prediction.record``, videos by
``video.classify_video``.

Nothing here is imported by the rest of the library; Starlette, uvicorn,
python-multipart and prometheus-client come with the ``serve`` extra and are
imported only by this package.
"""

from __future__ import annotations

from .model import ServedModel, open_model
from .settings import Settings

__all__ = ["ServedModel", "Settings", "create_app", "open_model"]


def create_app(model: ServedModel, settings: Settings | None = None):
    """The ASGI application serving ``model`` (see ``serve/app.py``)."""
    from .app import create_app as build

    return build(model, settings or Settings())
