"""Video files: frames sampled by presentation time, a timeline, flagged segments, a verdict.

Containers (mp4, mov, m4v, mkv, webm, avi) are decoded with PyAV (the ``video``
extra), imported only when a video is met. Animated GIF and WebP are read with
Pillow's frame iterator (FFmpeg 8 cannot decode animated WebP), with each frame's
own duration. Every sampled frame becomes model input through
``images.fit_to_input``, the rule images follow.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from .errors import NsfwMobileError, UsageError
from .images import (
    DEFAULT_MAX_PIXELS,
    HEIF_BRANDS,
    IMAGE_SUFFIXES,
    VIDEO_SUFFIXES,
    fit_to_input,
    reduced_size,
)
from .live_rule import ON, LiveRule, LiveRuleParams
from .runtime.base import Runner

ANIMATION_SUFFIXES = frozenset({".gif", ".webp"})
SEEK_AT_LEAST_S = 10.0
"""Sampling intervals this long seek to each sample instead of decoding every frame."""
MAX_SAMPLES = 100_000
"""Samples per clip (28 hours at 1 s); a file claiming more is cut there, with a warning."""
VIDEO_THRESHOLD = LiveRuleParams().on
"""The nsfw_score above which the live rule flags a stretch of a video when no --threshold is
given (``predict``'s help reads it from here)."""


class VideoError(NsfwMobileError):
    """A file that could not be read as a video. ``kind``: empty, unreadable, not_a_video,
    no_video_stream, missing_codec, missing_dependency, too_large, corrupt."""

    def __init__(self, path, reason: str, kind: str = "corrupt"):
        self.path, self.reason, self.kind = str(path), reason, kind
        super().__init__(f"{self.path}: {reason}")


@dataclass
class VideoResult:
    path: str
    labels: tuple[str, ...]
    timeline: list[dict]
    segments: list[dict]
    verdict: dict
    complete: bool
    warnings: list[str] = field(default_factory=list)
    sampling: str = ""
    stopped: dict | None = None
    """With ``stop_at_flag``, where reading stopped: at_ms (the sample at which the rule
    flagged the clip), read_fraction (of the duration), read_bytes and file_bytes."""

    def to_dict(self) -> dict:
        return {
            "path": self.path,
            "type": "video",
            "label": self.verdict["label"],
            "nsfw_score": self.verdict["score"],
            "verdict": self.verdict,
            "segments": self.segments,
            "complete": self.complete,
            "warnings": self.warnings,
            "sampling": self.sampling,
            "stopped": self.stopped,
            "timeline": self.timeline,
        }


def is_video(path: str | os.PathLike) -> bool:
    """A container by its suffix (or, for a file whose suffix is neither an image's nor a
    video's, by its first bytes), or a GIF or WebP with more than one frame."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix in VIDEO_SUFFIXES:
        return True
    if suffix not in ANIMATION_SUFFIXES:
        return suffix not in IMAGE_SUFFIXES and _container_signature(path)
    try:
        with Image.open(path) as image:
            return getattr(image, "n_frames", 1) > 1
    except (OSError, ValueError, SyntaxError, EOFError):
        return False  # the image decoder reports it


def _container_signature(path: Path) -> bool:
    """ISO media (ftyp, but not the HEIF/AVIF image brands), Matroska/WebM or AVI."""
    try:
        with open(path, "rb") as handle:
            head = handle.read(12)
    except OSError:
        return False
    return is_container(head)


def is_container(head: bytes) -> bool:
    """Whether a file's first 12 bytes are those of a video container (see
    ``_container_signature``): how ``serve`` tells a video sent as an image."""
    if head[4:8] == b"ftyp":
        return head[8:12] not in HEIF_BRANDS | {b"avif", b"avis"}  # still images
    return head.startswith(b"\x1a\x45\xdf\xa3") or (head[:4] == b"RIFF" and head[8:12] == b"AVI ")


# ------------------------------------------------------------------ sampling


@dataclass
class _Stream:
    """What sampling learnt about the file as it went."""

    duration_s: float | None = None
    read_bytes: int | None = None
    """The furthest byte of the file demuxed (containers only)."""
    samples: int = 0
    complete: bool = True
    warnings: list[str] = field(default_factory=list)


def _shown_at(frames: Iterator[tuple[float, object]], every: float, state: _Stream):
    """``(t, frame)`` for t = 0, every, 2 every, ...: the frame on screen at t, the last one
    whose presentation time is at or before t. ``frames`` come in presentation order; the
    last one stays on screen to the end of the clip (``state.duration_s``, known once the
    frames are exhausted for animations)."""
    target, held, held_t = 0.0, None, None
    for t, frame in frames:
        while held is not None and t > target + 1e-6:
            if held_t <= target + 1e-6:
                yield target, held
            target += every
        held, held_t = frame, t
    # a clip cut short ends at its last frame, not where its header says it should
    complete = state.complete and state.duration_s is not None
    last = state.duration_s if complete else (held_t or 0.0)
    while held is not None and (target < last - 1e-6 or target <= held_t + 1e-6):
        yield target, held
        target += every


def frame_time(time: float | None, start: float, previous: float | None, rate: float) -> float:
    """A frame's presentation time relative to the stream's start; a frame without a pts
    is shown one frame duration (1 / average rate) after the previous one."""
    if time is not None:
        return time - start
    return 0.0 if previous is None else previous + 1 / rate


def _import_av(path):
    try:
        import av
    except ImportError:
        raise VideoError(
            path, "videos need PyAV: pip install 'nsfw-mobile[video]'", "missing_dependency"
        ) from None
    return av


MAX_TOP_LEVEL_BOXES = 10_000
"""Top-level ISO boxes read while looking for the index; real files have a handful (a
fragmented MP4 one pair per fragment, after its moov)."""


def _mp4_without_index(path: Path) -> bool:
    """An ISO media file (ftyp first) whose top-level boxes hold no moov (the index): the
    tail of the file is missing. FFmpeg only logs this, its error says "invalid data".
    Reads the 16-byte box headers only, seeking over the boxes' contents: a 4 GB upload
    costs a few reads, not 4 GB of memory."""
    with open(path, "rb") as handle:
        end = handle.seek(0, os.SEEK_END)
        offset = 0
        for _ in range(MAX_TOP_LEVEL_BOXES):
            if offset + 8 > end:
                return True
            handle.seek(offset)
            header = handle.read(16)
            size, kind = int.from_bytes(header[:4], "big"), header[4:8]
            if offset == 0 and kind != b"ftyp":
                return False
            if kind == b"moov":
                return False
            if size == 1 and len(header) == 16:  # 64-bit size
                size = int.from_bytes(header[8:16], "big")
            elif size == 0:  # the box runs to the end of the file
                return True
            if size < 8:
                return True
            offset += size
    return False  # too many boxes to be a plain MP4: say nothing about an index


def _open_container(av, path: Path):
    try:
        # metadata_errors: tags that are not UTF-8 would raise UnicodeDecodeError (fuzz_video)
        return av.open(str(path), metadata_errors="replace")
    except (av.error.FFmpegError, ValueError) as exc:
        if _mp4_without_index(path):
            raise VideoError(path, "truncated MP4: no moov atom (index)", "corrupt") from None
        raise VideoError(path, f"not a video FFmpeg can read ({exc})", "not_a_video") from None


def _pyav_frames(path: Path, size, every: float, keyframes: bool, state: _Stream):
    """``(t_seconds, RGB picture, upright)`` of the sampled frames of a container."""
    av = _import_av(path)
    from av.video.reformatter import VideoReformatter

    container = _open_container(av, path)
    with container:
        if not container.streams.video:
            raise VideoError(path, "no video stream (audio only?)", "no_video_stream")
        stream = container.streams.video[0]
        try:
            codec = stream.codec_context
        except av.error.FFmpegError:
            codec = None
        if codec is None:
            raise VideoError(path, "no decoder for this video codec", "missing_codec")
        if keyframes:
            codec.skip_frame = "NONKEY"
        else:
            stream.thread_type = "AUTO"
        base = stream.time_base
        start = float(stream.start_time * base) if stream.start_time is not None else 0.0
        if stream.duration is not None:
            state.duration_s = float(stream.duration * base)
        elif container.duration is not None:
            state.duration_s = container.duration / 1_000_000
        reformatter = VideoReformatter()  # one swscale context for the whole clip

        def picture(frame) -> Image.Image:
            if frame is cache[0]:  # on screen at several samples: converted once
                return cache[1]
            width, height = reduced_size(frame.width, frame.height, size)
            try:
                rgb = reformatter.reformat(
                    frame, format="rgb24", width=width, height=height, interpolation="AREA"
                ).to_image()
            except (av.error.FFmpegError, OSError, ValueError) as exc:
                # swscale refuses some decoded frames ("Operation not supported", fuzz_video)
                state.warnings.append(f"skipped a frame that cannot be converted ({exc})")
                return None
            rotation = getattr(frame, "rotation", 0) or 0
            # frame.rotation: degrees counter-clockwise that make the frame upright on screen
            cache[:] = frame, rgb.rotate(rotation, expand=True) if rotation % 360 else rgb
            return cache[1]

        cache: list = [None, None]

        def decoded() -> Iterator[tuple[float, object]]:
            last = None
            reached = 0.0  # the furthest packet time demuxed: keyframes alone stop short of it
            rate = float(stream.average_rate or 25)
            try:
                for packet in container.demux(stream):
                    if packet.pos is not None and packet.pos >= 0:
                        end_byte = packet.pos + packet.size
                        state.read_bytes = max(state.read_bytes or 0, end_byte)
                    if packet.pts is not None and packet.time_base is not None:
                        reached = max(reached, float(packet.pts * packet.time_base) - start)
                    try:
                        frames = packet.decode()
                    except av.error.FFmpegError as exc:
                        state.warnings.append(f"skipped a packet that does not decode ({exc})")
                        continue
                    for frame in frames:
                        t = frame_time(frame.time, start, last, rate)
                        if last is not None and t <= last:
                            continue
                        last = t
                        yield t, frame
            except av.error.FFmpegError as exc:
                state.complete = False
                state.warnings.append(f"stream ends early at {last or 0:.2f} s ({exc})")
            end = max(reached, last or 0.0)
            if state.duration_s and last is not None and end < state.duration_s - 2 / rate - 1:
                state.complete = False
                state.warnings.append(
                    f"stream ends at {end:.2f} s of {state.duration_s:.2f} s: cut or truncated"
                )

        if keyframes:
            for t, frame in decoded():
                yield t, picture(frame)
        elif every >= SEEK_AT_LEAST_S and state.duration_s:
            yield from _seek_samples(container, stream, start, every, state, picture)
        else:
            for t, frame in _shown_at(decoded(), every, state):
                yield t, picture(frame)


def _seek_samples(container, stream, start, every, state, picture):
    """One seek per sample: to the keyframe before it, then decode forward to it."""
    target = 0.0
    while target < state.duration_s:
        container.seek(int((target + start) / stream.time_base), stream=stream, backward=True)
        chosen = None
        for frame in container.decode(stream):
            if frame.time is None:
                continue
            if frame.time - start > target + 1e-6:
                break
            chosen = frame
        if chosen is None:
            break
        yield target, picture(chosen)
        target += every


ANIMATION_ERRORS = (
    OSError, ValueError, EOFError, SyntaxError, RuntimeError, IndexError, KeyError, TypeError,
    struct.error, Image.DecompressionBombError,
)  # fmt: skip
"""What Pillow raises on a bad GIF or WebP frame. Found by fuzz/targets.py: fuzz_video:
DecompressionBombError (a frame claiming billions of pixels), IndexError (GIF seek)."""


def _pillow_frames(path: Path, every: float, state: _Stream):
    """Animated GIF and WebP: each frame shown for its own ``duration`` (ms)."""
    try:
        image = Image.open(path)
    except ANIMATION_ERRORS as exc:
        raise VideoError(path, f"cannot open the animation ({exc})", "corrupt") from None
    with image:
        if image.width * image.height > DEFAULT_MAX_PIXELS:  # the limit images have
            raise VideoError(
                path,
                f"{image.width}x{image.height} pixels is over the limit of "
                f"{DEFAULT_MAX_PIXELS:,} (possible decompression bomb)",
                "too_large",
            )

        def frames() -> Iterator[tuple[float, Image.Image]]:
            t = 0.0
            try:
                for index in range(getattr(image, "n_frames", 1)):  # PCX has none (fuzz_video)
                    image.seek(index)
                    if image.width * image.height > DEFAULT_MAX_PIXELS:  # a frame can grow
                        raise ValueError(f"frame {index} is {image.width}x{image.height} pixels")
                    yield t, image.convert("RGBA")
                    t += max(int(image.info.get("duration") or 100), 10) / 1000
            except ANIMATION_ERRORS as exc:
                state.complete = False
                state.warnings.append(f"animation ends early at {t:.2f} s ({exc})")
            state.duration_s = t

        yield from _shown_at(frames(), every, state)


def sample_frames(
    path: str | os.PathLike,
    size: tuple[int, int],
    *,
    every: float = 1.0,
    keyframes: bool = False,
    state: _Stream | None = None,
) -> Iterator[tuple[int, np.ndarray]]:
    """``(t_ms, model input)`` for each sampled frame, ``t_ms`` strictly increasing."""
    if every <= 0:
        raise UsageError("--every must be above 0 seconds")
    path = Path(path)
    state = state if state is not None else _Stream()
    try:
        if path.stat().st_size == 0:
            raise VideoError(path, "empty file (0 bytes)", "empty")
    except OSError as exc:
        raise VideoError(path, exc.strerror or str(exc), "unreadable") from None
    if path.suffix.lower() in ANIMATION_SUFFIXES:
        frames = _pillow_frames(path, every, state)
    else:
        frames = _pyav_frames(path, size, every, keyframes, state)
    last_ms, last_picture, pixels = -1, None, None
    try:
        for t, picture in frames:
            t_ms = int(round(t * 1000))
            if t_ms <= last_ms or picture is None:
                continue
            if state.samples >= MAX_SAMPLES:
                state.complete = False
                state.warnings.append(
                    f"stopped after {MAX_SAMPLES:,} samples: use a larger --every"
                )
                return
            state.samples += 1
            if picture is not last_picture:  # a frame on screen at several samples: one input
                last_picture, pixels = picture, fit_to_input(picture, size)
            last_ms = t_ms
            yield t_ms, pixels
    finally:
        frames.close()  # a caller that stops early closes the file now


# ------------------------------------------------------------------ results


def _apply_rule(times, scores, params: LiveRuleParams, end_ms: int) -> tuple[list, list]:
    """The live rule's state after each sample, and the stretches it flagged as
    ``[start_ms, end_ms]``: from when the smoothed score crossed ``on`` (for a stretch that
    then turned the state on) to when it crossed ``off``, or the end of the clip. The last
    sample's score holds to the end of the clip."""
    rule, states, stretches = LiveRule(params), [], []
    for t_ms, score in zip(times, scores):
        state = rule.update(t_ms / 1000, score)
        if state.flagged and not (stretches and stretches[-1][1] is None):
            stretches.append([state.since * 1000, None])
        elif not state.flagged and stretches and stretches[-1][1] is None:
            stretches[-1][1] = state.since * 1000
        states.append(state)
    if stretches and stretches[-1][1] is None:
        last = rule.at_end(end_ms / 1000) if end_ms > times[-1] else states[-1]
        stretches[-1][1] = end_ms if last.flagged else last.since * 1000
    return states, stretches


def _segments(times, scores, probabilities, labels, nsfw, stretches):
    segments = []
    bounds = [*times[1:], float("inf")]
    for begin, end in stretches:
        # the samples on screen during the stretch: each holds until the next one
        inside = [i for i, t in enumerate(times) if t < end and bounds[i] > begin]
        mean = probabilities[inside].mean(axis=0)
        label = max(nsfw, key=lambda name: mean[labels.index(name)]) if nsfw else None
        segments.append({
            "start_ms": int(round(begin)),
            "end_ms": int(round(max(end, begin))),
            "peak": round(float(max(scores[i] for i in inside)), 6),
            "label": label,
        })  # fmt: skip
    return segments


def _verdict(states, scores, probabilities, labels, segments, duration_ms, complete):
    if not len(scores):
        return {"label": None, "score": None, "flagged": False, "flagged_fraction": 0.0,
                "duration_ms": duration_ms, "complete": complete, "samples": 0}  # fmt: skip
    smoothed = [state.smoothed for state in states]
    peak = int(np.argmax(smoothed))
    # the smoothed score at a sample comes from the scores on screen up to it
    source = max(range(max(peak - 1, 0), peak + 1), key=lambda i: scores[i])
    flagged_ms = sum(s["end_ms"] - s["start_ms"] for s in segments)
    return {
        "label": labels[int(np.argmax(probabilities[source]))],
        "score": round(float(smoothed[peak]), 6),
        "flagged": bool(segments),
        "flagged_fraction": round(flagged_ms / duration_ms, 4) if duration_ms else 0.0,
        "duration_ms": duration_ms,
        "complete": complete,
        "samples": len(scores),
    }


def _nsfw_scores(runner: Runner, probabilities: np.ndarray) -> np.ndarray:
    scores = runner.contract.nsfw_score(probabilities)
    return np.zeros(len(probabilities)) if scores is None else np.asarray(scores, np.float64)


def classify_video(
    runner: Runner,
    path: str | os.PathLike,
    *,
    every: float = 1.0,
    keyframes: bool = False,
    rule: LiveRuleParams | None = None,
    batch_size: int = 16,
    stop_at_flag: bool = False,
) -> VideoResult:
    """Sample, classify, and summarise one video file with the live rule
    (docs/live-rule.md). Raises VideoError when nothing can be read; a clip cut short gives
    the samples up to the cut with ``complete`` False.

    ``stop_at_flag``: classify one sample at a time and stop decoding at the sample where
    the rule's state turns on (an upload gate); ``stopped`` says where and how much of the
    file was read."""
    rule = rule or LiveRuleParams()
    state = _Stream()
    times: list[int] = []
    rows: list[np.ndarray] = []
    pending: list[np.ndarray] = []
    repeats: list[int] = []  # how many consecutive samples show each classified picture
    last = None
    watch = LiveRule(rule) if stop_at_flag else None
    stopped = None
    frames = sample_frames(path, runner.input_size, every=every, keyframes=keyframes, state=state)
    try:
        for t_ms, pixels in frames:
            times.append(t_ms)
            if pixels is last:
                repeats[-1] += 1
            else:
                last = pixels
                repeats.append(1)
                pending.append(pixels)
                if len(pending) == batch_size or watch is not None:
                    rows.append(runner.predict(np.stack(pending)))
                    pending.clear()
            if watch is not None:
                score = float(_nsfw_scores(runner, rows[-1][-1:])[0])
                if watch.update(t_ms / 1000, score).state == ON:
                    stopped = t_ms
                    break
    finally:
        frames.close()  # closes the container: no more decoding
    if pending:
        rows.append(runner.predict(np.stack(pending)))
    if not times and not state.complete:
        raise VideoError(path, "; ".join(state.warnings) or "no frame decodes", "corrupt")
    if not times:
        raise VideoError(path, "no frame decodes", "corrupt")
    if keyframes and len(times) < 2 and (state.duration_s or 0) > 2 * every and stopped is None:
        fallback = classify_video(runner, path, every=every, rule=rule, batch_size=batch_size,
                                  stop_at_flag=stop_at_flag)  # fmt: skip
        fallback.warnings.insert(
            0, f"one keyframe for the whole clip: sampled every {every:g} s instead"
        )
        return fallback
    probabilities = np.repeat(np.concatenate(rows), repeats, axis=0)
    scores = _nsfw_scores(runner, probabilities)
    labels, nsfw = tuple(runner.labels), tuple(runner.contract.nsfw_labels or ())
    duration_ms = int(round((state.duration_s or times[-1] / 1000) * 1000))
    end_ms = duration_ms if stopped is None else stopped
    states, stretches = _apply_rule(times, scores, rule, end_ms)
    timeline = [
        {
            "t_ms": t,
            "probabilities": {n: round(float(p), 6) for n, p in zip(labels, row)},
            "nsfw_score": round(float(score), 6),
            "smoothed": round(live.smoothed, 6),
            "state": live.state,
        }
        for t, row, score, live in zip(times, probabilities, scores, states)
    ]
    segments = _segments(times, scores, probabilities, labels, nsfw, stretches)
    if stopped is not None:
        file_bytes = Path(path).stat().st_size
        stopped = {
            "at_ms": stopped,
            "read_fraction": round(stopped / duration_ms, 4) if duration_ms else None,
            "read_bytes": state.read_bytes,
            "file_bytes": file_bytes,
        }
    return VideoResult(
        path=str(path),
        labels=labels,
        timeline=timeline,
        segments=segments,
        verdict=_verdict(
            states, scores, probabilities, labels, segments, duration_ms, state.complete
        ),  # fmt: skip
        complete=state.complete,
        warnings=state.warnings,
        sampling="keyframes" if keyframes else f"every {every:g} s",
        stopped=stopped,
    )
