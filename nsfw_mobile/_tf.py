"""Heavy imports, in one place, so that light commands never pay for them."""

from __future__ import annotations

import os


def quiet_tensorflow() -> None:
    """Silence TensorFlow's C++ start-up chatter unless the user asked for it."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def import_keras():
    quiet_tensorflow()
    import keras

    return keras


def import_tensorflow():
    quiet_tensorflow()
    import tensorflow as tf

    return tf
