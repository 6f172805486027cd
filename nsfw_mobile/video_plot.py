"""A PNG of a clip's timeline: score over time, the threshold, flagged segments shaded."""

from __future__ import annotations

import os
from pathlib import Path

from .atomic import atomic_path
from .errors import UsageError


def require_matplotlib() -> None:
    """Fail at once, before any work, where matplotlib is missing."""
    try:
        import matplotlib.figure  # noqa: F401
    except ImportError:
        raise UsageError(
            "--timeline-plot needs matplotlib, which a runtime-only install leaves out: "
            "pip install 'nsfw-mobile[full]', or drop --timeline-plot"
        ) from None


def plot_paths(clips: list[Path], target: Path) -> dict[Path, Path]:
    """Where each clip's PNG goes. ``target`` is a .png file name when there is one clip;
    otherwise a folder (a name without a suffix, or an existing folder), where each clip's
    PNG mirrors its path below the clips' common folder (a/clip.mp4 -> a/clip.mp4.png,
    b/clip.mp4 -> b/clip.mp4.png), so two clips never share a PNG."""
    target = Path(target)
    if target.suffix.lower() == ".png" and not target.is_dir():
        if len(clips) > 1:
            raise UsageError(
                f"--timeline-plot {target} names one PNG and there are {len(clips)} clips: "
                f"give a folder instead, such as --timeline-plot {target.with_suffix('')}"
            )
        return {clip: target for clip in clips}
    if target.suffix and not target.is_dir():
        raise UsageError(
            f"--timeline-plot {target}: give a folder name without a suffix (one PNG per "
            f"clip), or a .png file name when there is one clip"
        )
    if target.exists() and not target.is_dir():
        raise UsageError(f"--timeline-plot {target}: a file, expected a folder")
    if not clips:
        return {}
    resolved = [clip.resolve() for clip in clips]
    root = Path(os.path.commonpath([clip.parent for clip in resolved]))
    return {
        clip: target / full.parent.relative_to(root) / f"{clip.name}.png"
        for clip, full in zip(clips, resolved)
    }


def timeline_figure(result, rule):
    """The figure: a step line (the score holds from one sample to the next), a marker at
    each sample, the threshold and exit lines, flagged segments shaded, the legend outside
    the axes so that it hides no sample."""
    from matplotlib.figure import Figure  # no pyplot: no global state in the caller

    times = [entry["t_ms"] / 1000 for entry in result.timeline]
    scores = [entry["nsfw_score"] for entry in result.timeline]
    end = max(result.verdict["duration_ms"] / 1000, times[-1] if times else 1)
    figure = Figure(figsize=(9, 2.6), dpi=100, layout="constrained")
    axes = figure.add_subplot()
    for segment in result.segments:
        first = segment is result.segments[0]
        axes.axvspan(segment["start_ms"] / 1000, segment["end_ms"] / 1000, color="tab:red",
                     alpha=0.2, label="flagged" if first else None)  # fmt: skip
    if times:  # the last sample's score holds to the end of the clip
        axes.plot([*times, end], [*scores, scores[-1]], drawstyle="steps-post",
                  color="tab:blue", label="nsfw score")  # fmt: skip
        axes.plot(times, scores, linestyle="none", marker=".", color="tab:blue")
    smoothed = [entry["smoothed"] for entry in result.timeline]
    if times:
        axes.plot(times, smoothed, color="tab:purple", linewidth=1, label="smoothed (live rule)")
    axes.axhline(rule.on, color="tab:red", linestyle="--", linewidth=1, label="on")
    axes.axhline(rule.off_threshold, color="tab:orange", linestyle=":", linewidth=1, label="off")
    axes.set_ylim(0, 1)
    axes.set_xlim(0, end)
    axes.set_xlabel("seconds")
    score = result.verdict["score"]
    axes.set_title(f"{Path(result.path).name}: {result.verdict['label']} "
                   f"{'-' if score is None else f'{score:.2f}'} ({result.sampling})",
                   fontsize=9)  # fmt: skip
    axes.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=7, borderaxespad=0)
    return figure


def plot_timeline(result, rule, out_path: Path) -> Path:
    require_matplotlib()
    figure = timeline_figure(result, rule)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(out_path) as partial:
        figure.savefig(partial, format="png")
    return out_path
