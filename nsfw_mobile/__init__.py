"""nsfw-mobile: an NSFW image classifier (Neutral / Porn / Sexy) for phones.

Heavy dependencies (TensorFlow, coremltools) are imported only by the functions
that need them, so importing this package and ``nsfw-mobile --help`` stay fast.
"""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__", "pretrained", "build_classifier", "tfjs2keras", "open_runner"]


def pretrained(classes: int = 3, *, name: str = "nsfwjs-mobilenet-v2"):
    """A zoo model as Keras, by default the shipped NSFWJS MobileNetV2 (see ``models.pretrained``
    and ``nsfw-mobile models``)."""
    from .models import pretrained as _pretrained

    return _pretrained(classes=classes, name=name)


def build_classifier(**kwargs):
    from .models import build_classifier as _build

    return _build(**kwargs)


def tfjs2keras(model_json, **kwargs):
    from .tfjs import tfjs2keras as _tfjs2keras

    return _tfjs2keras(model_json, **kwargs)


def open_runner(path=None, **kwargs):
    from .runtime import open_runner as _open_runner

    return _open_runner(path, **kwargs)
