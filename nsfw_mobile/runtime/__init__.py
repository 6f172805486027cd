"""Runners: one per model file type, all with the same contract.

A Runner takes the uint8 RGB batch that ``images.py`` produces, ``(N, H, W, 3)``,
maps it to its own input (Keras and float TFLite: x / 255; integer TFLite: the
input tensor's quantization; Core ML: raw pixels into an image input whose
scale is 1/255) and returns float32 probabilities ``(N, classes)`` in the
order of its ``labels``. Which runner opens a file is the registry's answer
(``formats.file_type_of``); what a user's model argument means is the resolver's
(``resolve.resolve_model(...).open_runner()``, or ``nsfw_mobile.open_runner``). This
package sits below the registry: it never imports ``formats``.
"""

from __future__ import annotations

from .base import Runner

__all__ = ["Runner"]
