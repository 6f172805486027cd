"""Heavy imports, in one place, so that light commands never pay for them.

Each import runs inside ``quiet.native_output()``: TensorFlow prints its oneDNN
banner from C++ at import, before any logging setting applies, and coremltools
logs its version warnings at import.
"""

from __future__ import annotations

from .quiet import native_output


def import_keras():
    with native_output():
        import keras

    return keras


def import_tensorflow():
    with native_output():
        import tensorflow as tf

    return tf


def import_coremltools():
    with native_output():
        import coremltools

    return coremltools
