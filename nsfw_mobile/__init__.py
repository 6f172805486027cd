"""nsfw-mobile: an NSFW image classifier (Neutral / Porn / Sexy) for phones.

``open_runner(model)`` runs any model the command line takes, named the same way
(``nsfw_mobile.resolve``). Heavy dependencies (TensorFlow, coremltools) are imported only
by the functions that need them, so importing this package and ``nsfw-mobile --help`` stay fast.
"""

from __future__ import annotations

from .version import __version__

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


def open_runner(model=None, *, allow_unsafe: bool = False, engine: str | None = None, **options):
    """A Runner for ``model`` as ``predict --model`` takes it (None: the default model; a zoo
    name, a model file, a release folder: ``resolve.resolve_model``'s rules, use RUN).

    ``num_threads`` applies to engines with a thread setting (LiteRT, ONNX Runtime);
    ``allow_unsafe`` to .keras files with Lambda layers; ``engine`` (a key in
    ``formats.ENGINES``; None: the file type's own, or a release's chosen pair) runs the file
    on another engine that may run it (OpenVINO for .onnx); other ``options`` go to the file
    type's runner as they are."""
    from dataclasses import replace

    from .resolve import RUN, resolve_model

    ref = resolve_model(model, use=RUN, unsafe=allow_unsafe)
    if engine is not None:
        ref = replace(ref, engine_override=engine)
    return ref.open_runner(**options)
