"""validate: correct artefacts pass, deliberately broken ones fail, each by a test."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import SECOND_SEED, assert_outputs_vary

from nsfw_mobile.cli import EXIT_USAGE, EXIT_VALIDATION_FAILED, main
from nsfw_mobile.errors import UsageError
from nsfw_mobile.formats import FORMATS, by_key
from nsfw_mobile.validate import format_of, validate


def save_spec(spec, path, weights_from=None):
    import coremltools as ct

    if path.suffix == ".mlpackage":
        shutil.copytree(weights_from, path)
        ct.utils.save_spec(
            spec, str(path), weights_dir=str(weights_from / "Data/com.apple.CoreML/weights")
        )
    else:
        ct.utils.save_spec(spec, str(path))
    return path


def edited(path, edit, out):
    """A copy of a Core ML artefact with its spec changed by ``edit(spec)``."""
    from nsfw_mobile.runtime.coreml_spec import load_spec

    spec = load_spec(path)
    edit(spec)
    if out.suffix == ".mlpackage":
        import coremltools as ct

        shutil.copytree(path, out)
        ct.utils.save_spec(spec, str(out / "Data/com.apple.CoreML/model.mlmodel"))
        return out
    return save_spec(spec, out)


@pytest.fixture(
    scope="module",
    params=[0, pytest.param(SECOND_SEED, marks=pytest.mark.slow)],
    ids=lambda seed: f"seed{seed}",
)
def tiny_report(request, tiny_images_dir):
    """Every format of the tiny model validated; trained from seed 0 (quick loop) and from
    a second seed (slow tier): the bounds must hold for any faithful artefact."""
    if request.param == 0:
        artifacts, model_path = (
            request.getfixturevalue(n) for n in ("tiny_artifacts", "tiny_model_path")
        )
    else:
        artifacts, model_path = (
            request.getfixturevalue(n) for n in ("second_seed_artifacts", "second_seed_model_path")
        )
    candidates = [artifacts[f.key].path for f in FORMATS]
    report = validate(candidates, reference=model_path, images=[tiny_images_dir])
    report.model_path = model_path
    return report


def test_every_correct_tiny_artefact_passes(tiny_report, sample_pixels_tiny):
    from nsfw_mobile.models import load_keras_model

    model = load_keras_model(tiny_report.model_path)
    assert_outputs_vary(model.predict(sample_pixels_tiny / 255.0, verbose=0))
    print()
    for result in tiny_report.candidates:
        print(
            f"{result.format:<18} max {result.max_abs_diff:.2e} mean {result.mean_abs_diff:.2e} "
            f"top-1 {result.top1_agreement:.1%}"
        )
    for result in tiny_report.candidates:
        assert result.status == "pass", (result.format, result.failures)
    assert tiny_report.passed and tiny_report.images >= 20


def test_format_comes_from_metadata(tiny_artifacts):
    for key, artifact in tiny_artifacts.items():
        assert format_of(artifact.path).key == key


EMULATION_MISSES = {
    SECOND_SEED: {"tflite-dynamic"},
}
"""Known misses of the emulation, by training seed, left for the tolerance population (issue
30) to fix, not loosened here. Seed 1, tflite-dynamic: the artefact's max difference 0.0374
against the emulation's 0.306, ratio 0.12 < 0.3 (the emulation overstates, so the bound,
2x 0.306, is far looser than the file needs)."""


def test_reduced_precision_bounds_follow_the_references_own_sensitivity(tiny_report, request):
    """Every quantized format's bound comes from the reference run at its precision, and
    that emulation is close to what the real artefact shows (0.3-1.5x here)."""
    misses = {}
    for result in tiny_report.candidates:
        fmt = by_key(result.format)
        if fmt.tolerance.precision is None:
            assert result.sensitivity == {} and result.bounds["max_abs"] == 1e-4
            continue
        own = result.sensitivity["max_abs"]
        assert own > 1e-5, (result.format, own)  # the emulation really rounds something
        assert result.bounds["max_abs"] == max(
            fmt.tolerance.max_floor, fmt.tolerance.multiplier * own
        )
        ratio = result.max_abs_diff / own
        print(f"{result.format:<18} artefact {result.max_abs_diff:.3g} emulation {own:.3g} "
              f"ratio {ratio:.2f}")  # fmt: skip
        if not 0.3 < ratio < 1.5:
            misses[result.format] = (result.max_abs_diff, own, round(ratio, 3))
    known = EMULATION_MISSES.get(request.node.callspec.params["tiny_report"], set())
    assert set(misses) <= known, misses
    if misses:
        pytest.xfail(f"known emulation misses (EMULATION_MISSES): {misses}")


def test_emulation_leaves_the_model_as_it_was(tiny_model, sample_pixels_tiny):
    from nsfw_mobile.precision import PRECISIONS, emulate

    before = [w.copy() for w in tiny_model.get_weights()]
    for key in PRECISIONS:
        emulate(tiny_model, sample_pixels_tiny[:4], key)
    for old, new in zip(before, tiny_model.get_weights()):
        np.testing.assert_array_equal(old, new)


def test_a_flip_within_the_allowed_difference_is_a_tie():
    from nsfw_mobile.formats import FLOAT16
    from nsfw_mobile.validate import compare, sensitivity_of

    reference = np.array([[0.501, 0.499, 0.0], [0.9, 0.05, 0.05], [0.2, 0.7, 0.1]])
    emulated = reference + np.array([[-0.004, 0.004, 0], [0, 0, 0], [0, 0, 0]])
    own = sensitivity_of(reference, emulated, FLOAT16.precision)
    flipped_tie = reference.copy()
    flipped_tie[0] = [0.499, 0.501, 0.0]  # the near tie flips: within 2x its allowance
    figures, failures = compare(reference, flipped_tie, FLOAT16, own)
    assert figures["ties"] == 1 and figures["top1_agreement"] == 1.0, figures
    assert failures == []
    clear_flip = reference.copy()
    clear_flip[2] = [0.7, 0.2, 0.1]  # a decisive image changes its answer
    figures, failures = compare(reference, clear_flip, FLOAT16, own)
    assert figures["top1_agreement"] == 0.5 and any("top-1" in f for f in failures)
    assert any("max abs diff" in f for f in failures)


def test_full_integer_models_are_not_judged_on_their_calibration_images(
    tiny_artifacts, tiny_model_path, tiny_calibration_dir, tiny_images_dir
):
    int8 = tiny_artifacts["tflite-int8"].path
    with pytest.raises(UsageError, match="calibrated it"):
        validate([int8], reference=tiny_model_path, images=[tiny_calibration_dir])
    report = validate(
        [int8], reference=tiny_model_path, images=[tiny_calibration_dir, tiny_images_dir]
    )
    (result,) = report.candidates
    assert report.images == 60 and result.images == 40
    assert result.calibration_images_excluded == 20 and result.status == "pass"


def test_the_reference_is_a_keras_model(tiny_artifacts):
    good = tiny_artifacts["tflite-float32"].path
    with pytest.raises(UsageError, match="runs it in Keras"):
        validate([good], reference=tiny_artifacts["tflite-float16"].path)


# ------------------------------------------------------------------ broken artefacts


def nn_scaler(spec):
    return spec.neuralNetworkClassifier.preprocessing[0].scaler


def test_wrong_image_scale_is_caught_neural_network(
    tiny_artifacts, tiny_model_path, tmp_path, tiny_images_dir
):
    def half_range(spec):
        nn_scaler(spec).channelScale = 1 / 127.5

    broken = edited(tiny_artifacts["mlmodel"].path, half_range, tmp_path / "NSFW.mlmodel")
    (result,) = validate([broken], reference=tiny_model_path, images=[tiny_images_dir]).candidates
    assert result.status == "fail" and "max abs diff" in result.failures[0]


def test_wrong_image_scale_is_caught_ml_program(
    tiny_artifacts, tiny_model_path, tmp_path, tiny_images_dir
):
    def half_range(spec):
        from nsfw_mobile.runtime.coreml_spec import main_block

        for op in main_block(spec).operations:
            if op.type == "const" and op.outputs[0].name.startswith("image__scaled__"):
                op.attributes["val"].immediateValue.tensor.floats.values[0] = 1 / 127.5
                return
        raise AssertionError("no image scale constant in the program")

    broken = edited(
        tiny_artifacts["mlpackage-float32"].path, half_range, tmp_path / "NSFW.mlpackage"
    )
    (result,) = validate([broken], reference=tiny_model_path, images=[tiny_images_dir]).candidates
    assert result.status == "fail"


def test_bgr_instead_of_rgb_is_caught(tiny_artifacts, tiny_model_path, tmp_path, tiny_images_dir):
    def bgr(spec):
        spec.description.input[0].type.imageType.colorSpace = 30

    broken = edited(tiny_artifacts["mlmodel"].path, bgr, tmp_path / "NSFW.mlmodel")
    (result,) = validate([broken], reference=tiny_model_path, images=[tiny_images_dir]).candidates
    assert result.status == "fail"


def test_labels_in_the_wrong_order_are_a_mismatch(
    tiny_artifacts, tiny_model_path, tmp_path, tiny_images_dir
):
    def swap(spec):
        labels = spec.neuralNetworkClassifier.stringClassLabels.vector
        labels[0], labels[1] = labels[1], labels[0]

    broken = edited(tiny_artifacts["mlmodel"].path, swap, tmp_path / "NSFW.mlmodel")
    (result,) = validate([broken], reference=tiny_model_path, images=[tiny_images_dir]).candidates
    assert result.status == "mismatch" and "label order" in result.failures[0]
    assert result.max_abs_diff is None  # structure is checked before any tolerance


def test_one_perturbed_convolution_weight_is_caught(
    tiny_artifacts, tiny_model_path, tmp_path, tiny_images_dir
):
    def perturb(spec):
        for layer in spec.neuralNetworkClassifier.layers:
            if layer.WhichOneof("layer") == "convolution":
                layer.convolution.weights.floatValue[0] += 25.0
                return

    broken = edited(tiny_artifacts["mlmodel"].path, perturb, tmp_path / "NSFW.mlmodel")
    (result,) = validate([broken], reference=tiny_model_path, images=[tiny_images_dir]).candidates
    assert result.status == "fail", result.max_abs_diff


def test_int8_calibrated_on_black_images_is_caught(
    tiny_source, tiny_model_path, tmp_path, tiny_images_dir
):
    from nsfw_mobile.export.tflite import keras2tflite

    black = np.zeros((24, 96, 96, 3), np.uint8)
    artifact = keras2tflite(
        tiny_source, tmp_path / "nsfw_int8.tflite", quantization="int8", calibration=black
    )
    (result,) = validate(
        [artifact.path], reference=tiny_model_path, images=[tiny_images_dir]
    ).candidates
    assert result.status == "fail", (result.mean_abs_diff, result.top1_agreement)


# ------------------------------------------------------------------ CLI


def test_cli_exit_codes(tiny_artifacts, tiny_model_path, tiny_images_dir, tmp_path):
    good = str(tiny_artifacts["tflite-float32"].path)
    runner = CliRunner()
    result = runner.invoke(
        main,
        [
            "validate",
            good,
            "--reference",
            str(tiny_model_path),
            "--images",
            str(tiny_images_dir),
            "--report",
            str(tmp_path / "report.md"),
        ],
    )
    assert result.exit_code == 0, result.output
    assert "all candidates pass" in result.stdout
    assert (
        "| `nsfw_float32.tflite` | tflite-float32 | pass |" in (tmp_path / "report.md").read_text()
    )

    def bgr(spec):
        spec.description.input[0].type.imageType.colorSpace = 30

    broken = edited(tiny_artifacts["mlmodel"].path, bgr, tmp_path / "NSFW.mlmodel")
    result = runner.invoke(
        main, ["validate", good, str(broken), "--reference", str(tiny_model_path)]
    )
    assert result.exit_code == EXIT_VALIDATION_FAILED
    assert "VALIDATION FAILED" in result.stdout and "FAIL " in result.stdout

    result = runner.invoke(main, ["validate", str(tmp_path / "missing.tflite")])
    assert result.exit_code == EXIT_USAGE and "missing.tflite: no such file" in result.stderr
    result = runner.invoke(main, ["validate", good, "--format", "tflite-int4"])
    assert result.exit_code == EXIT_USAGE and "'tflite-int4' is not one of" in result.stderr


def test_cli_json(tiny_artifacts, tiny_model_path, tiny_images_dir):
    import json

    result = CliRunner().invoke(
        main,
        [
            "validate",
            str(tiny_artifacts["tflite-int8"].path),
            "--reference",
            str(tiny_model_path),
            "--images",
            str(tiny_images_dir),
            "--json",
        ],
    )
    document = json.loads(result.stdout)
    (candidate,) = document["candidates"]
    assert document["passed"] is True and candidate["format"] == "tflite-int8"
    assert set(candidate) >= {
        "max_abs_diff",
        "mean_abs_diff",
        "top1_agreement",
        "worst",
        "tolerance",
    }
    tolerance = by_key("tflite-int8").tolerance
    assert candidate["tolerance"]["precision"] == tolerance.precision == "int8-full"
    own = candidate["sensitivity"]
    assert own["precision"] == "int8-full" and own["max_abs"] > 0 and own["mean_abs"] > 0
    assert candidate["bounds"]["mean_abs"] == pytest.approx(
        max(tolerance.mean_floor, tolerance.multiplier * own["mean_abs"])
    )
    assert candidate["images"] == 40 and candidate["calibration_images_excluded"] == 0


@pytest.mark.slow
def test_full_size_every_artefact_passes(full_artifacts):
    # TF.js runs MobileNetV2 at about 1 s per image in the pure-JS backend; its full-size
    # exports are validated by `release --check models/` (test_models_release.py) and run
    # in tfjs through nsfwjs.load() (test_parity_nsfwjs.py), so CI pays for them once.
    keys = [f.key for f in FORMATS if f.target != "tfjs"]
    report = validate([full_artifacts[key].path for key in keys])
    print()
    for result in report.candidates:
        print(
            f"{result.format:<18} max {result.max_abs_diff:.2e} mean {result.mean_abs_diff:.2e} "
            f"top-1 {result.top1_agreement:.1%}"
        )
        assert result.status == "pass", (result.format, result.failures)
