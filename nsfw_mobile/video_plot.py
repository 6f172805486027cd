"""A PNG of a clip's timeline: score over time, the threshold, flagged segments shaded."""

from __future__ import annotations

from pathlib import Path

from .atomic import atomic_path
from .errors import UsageError


def plot_timeline(result, rule, out_path: Path) -> Path:
    try:
        from matplotlib.figure import Figure  # no pyplot: no global state in the caller
    except ImportError:
        raise UsageError(
            "--timeline-plot needs matplotlib: pip install 'nsfw-mobile[full]'"
        ) from None
    times = [entry["t_ms"] / 1000 for entry in result.timeline]
    scores = [entry["nsfw_score"] for entry in result.timeline]
    figure = Figure(figsize=(8, 2.6), dpi=100)
    axes = figure.add_subplot()
    for segment in result.segments:
        first = segment is result.segments[0]
        axes.axvspan(segment["start_ms"] / 1000, segment["end_ms"] / 1000, color="tab:red",
                     alpha=0.2, label="flagged" if first else None)  # fmt: skip
    axes.plot(times, scores, marker=".", color="tab:blue", label="nsfw score")
    axes.axhline(rule.threshold, color="tab:red", linestyle="--", linewidth=1, label="threshold")
    axes.axhline(rule.exit_below, color="tab:orange", linestyle=":", linewidth=1, label="exit")
    axes.set_ylim(0, 1)
    axes.set_xlim(0, max(result.verdict["duration_ms"] / 1000, times[-1] if times else 1))
    axes.set_xlabel("seconds")
    axes.set_title(f"{Path(result.path).name}: {result.verdict['label']} "
                   f"{result.verdict['score']:.2f} ({result.sampling})", fontsize=9)  # fmt: skip
    axes.legend(loc="upper right", fontsize=7)
    figure.tight_layout()
    out_path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(out_path) as partial:
        figure.savefig(partial, format="png")
    return out_path
