"""Test clips made with PyAV's encoders: no video is downloaded or shipped."""

from __future__ import annotations

from collections.abc import Sequence
from fractions import Fraction
from pathlib import Path

import numpy as np

MILLISECONDS = Fraction(1, 1000)


def write_clip(
    path: Path,
    frames: Sequence[np.ndarray],
    *,
    fps: float = 10,
    times_ms: Sequence[int] | None = None,
    codec: str = "mpeg4",
    bit_rate: int = 2_000_000,
    keyframe_every: int | None = None,
    rotation: int | None = None,
) -> Path:
    """Encode RGB frames (all the same size, even sides). ``times_ms`` sets each frame's
    presentation time (variable frame rate); otherwise frames are 1/fps apart. The bit rate
    is real: at the encoder's default, a static frame washes out within a second."""
    import av

    height, width = frames[0].shape[:2]
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=Fraction(fps).limit_denominator(1000))
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.bit_rate = bit_rate
        if keyframe_every:
            stream.codec_context.gop_size = keyframe_every
        if times_ms is not None:
            stream.codec_context.time_base = MILLISECONDS
        if rotation is not None:
            stream.set_display_rotation(rotation)
        for index, pixels in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(pixels), format="rgb24")
            if times_ms is not None:
                frame.pts, frame.time_base = int(times_ms[index]), MILLISECONDS
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path
