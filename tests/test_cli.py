"""The command line, through click's CliRunner: exit codes, JSON and messages."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from click.testing import CliRunner
from PIL import Image

from nsfw_mobile.cli import EXIT_UNREADABLE, EXIT_USAGE, main


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def test_every_command_has_help():
    for name, command in main.commands.items():
        result = run(name, "--help")
        assert result.exit_code == 0, name
        assert command.help and "Example" in result.output, f"{name} has no examples in its help"


def test_help_does_not_import_tensorflow():
    code = "import sys; from nsfw_mobile.cli import main; print('tensorflow' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


@pytest.fixture()
def mixed_folder(tmp_path, samples):
    folder = tmp_path / "photos"
    (folder / "nested").mkdir(parents=True)
    for sample in samples[:3]:
        (folder / sample.name).write_bytes(sample.read_bytes())
    Image.open(samples[3]).save(folder / "nested" / "deep.png")
    (folder / "broken.jpg").write_text("not an image")
    return folder


def test_predict_json_lines_with_errors_and_exit_code(mixed_folder, tiny_model_path):
    result = run(
        "predict", mixed_folder, "--model", tiny_model_path, "--json", "--threshold", "0.5"
    )
    assert result.exit_code == EXIT_UNREADABLE
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(lines) == 5
    by_name = {line["path"].split("/")[-1]: line for line in lines}
    assert by_name["broken.jpg"] == {
        "path": str(mixed_folder / "broken.jpg"),
        "error": "not an image Pillow can identify",
        "kind": "not_an_image",
    }
    good = by_name["deep.png"]
    assert set(good) == {"path", "label", "probabilities", "nsfw_score", "flagged"}
    assert set(good["probabilities"]) == {"Neutral", "Porn", "Sexy"}
    assert good["label"] == max(good["probabilities"], key=good["probabilities"].get)
    assert good["nsfw_score"] == pytest.approx(
        good["probabilities"]["Porn"] + good["probabilities"]["Sexy"], abs=2e-6
    )
    assert good["flagged"] == (good["nsfw_score"] > 0.5)
    assert "1 of 5 files could not be read" in result.stderr


def test_predict_table_all_readable_exits_zero(tmp_path, samples, tiny_model_path):
    result = run("predict", samples[0], samples[1], "--model", tiny_model_path)
    assert result.exit_code == 0, result.output
    rows = result.stdout.splitlines()
    assert rows[0].split()[:4] == ["label", "Neutral", "Porn", "Sexy"]
    assert len(rows) == 3 and rows[1].endswith(str(samples[0]))


def test_predict_usage_errors(tmp_path, tiny_model_path):
    result = run("predict", tmp_path / "nope.jpg")
    assert result.exit_code == EXIT_USAGE and "no such file or folder" in result.stderr
    result = run("predict", tmp_path)
    assert result.exit_code == EXIT_USAGE and "no image files found" in result.stderr
    result = run("predict", tmp_path, "--threshold", "2")
    assert result.exit_code == EXIT_USAGE


def test_predict_bad_model_file_is_one_line_error(tmp_path, samples):
    bad = tmp_path / "model.keras"
    bad.write_text("garbage")
    result = run("predict", samples[0], "--model", bad)
    assert result.exit_code == 1
    assert result.stderr.startswith("Error: ") and len(result.stderr.strip().splitlines()) == 1


def test_import_tfjs_writes_a_keras_model(tmp_path):
    from nsfw_mobile.models import PRETRAINED_JSON

    out = tmp_path / "nsfw.keras"
    result = run("import-tfjs", PRETRAINED_JSON, out)
    assert result.exit_code == 0, result.output
    assert out.is_file() and not list(tmp_path.glob(".partial-*"))
    assert run("import-tfjs", PRETRAINED_JSON, tmp_path / "x.h5").exit_code == EXIT_USAGE


def test_predict_default_model_on_shipped_samples(samples):
    result = run("predict", samples[0].parent, "--json")
    assert result.exit_code == 0
    documents = [json.loads(line) for line in result.stdout.splitlines()]
    skipped = [d["path"] for d in documents if "skipped" in d]
    assert skipped == [str(samples[0].parent / "SOURCES.md")]
    lines = [d for d in documents if "skipped" not in d]
    assert len(lines) == len(samples)
    assert sum(line["label"] == "Neutral" for line in lines) >= len(lines) - 3


def test_default_model_answers_as_the_keras_reference(samples):
    """predict's default (the shipped float32 TFLite) and --model pretrained (Keras) agree."""
    from nsfw_mobile.formats import STRICT

    chosen = samples[:6]
    default = run("predict", *chosen, "--json")
    keras = run("predict", *chosen, "--model", "pretrained", "--json")
    assert default.exit_code == keras.exit_code == 0, default.output + keras.output
    for a, b in zip(default.stdout.splitlines(), keras.stdout.splitlines(), strict=True):
        a, b = json.loads(a), json.loads(b)
        assert a["path"] == b["path"] and a["label"] == b["label"]
        for name, p in a["probabilities"].items():
            assert abs(p - b["probabilities"][name]) <= STRICT.max_abs


def test_tflite_predict_never_imports_the_heavy_stack():
    """predict's default model needs only the runtime dependencies (no TensorFlow)."""
    code = (
        "import sys; from click.testing import CliRunner; from nsfw_mobile.cli import main; "
        "r = CliRunner().invoke(main, ['predict', 'nsfw_mobile/samples/coffee.jpg', '--json']); "
        "assert r.exit_code == 0, r.output; "
        "print(sorted(m for m in ('tensorflow', 'keras', 'coremltools') if m in sys.modules))"
    )
    root = __import__("pathlib").Path(__file__).resolve().parent.parent
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=root
    )
    assert out.stdout.strip() == "[]"


def test_predict_with_a_release_folder_uses_its_fastest_validated_model(
    samples, tmp_path, monkeypatch
):
    """Which int8 file wins depends on this CPU (tests/test_onnx.py checks the probe)."""
    import re

    monkeypatch.setenv("NSFW_MOBILE_CACHE", str(tmp_path))
    models = __import__("pathlib").Path(__file__).resolve().parent.parent / "models"
    result = run("predict", samples[0], "--model", models, "--json")
    assert result.exit_code == 0, result.output
    assert re.search(
        r"using nsfw_int8\.(tflite|onnx|ort) \((litert|onnxruntime)\), the fastest validated "
        "model of the release on this machine",
        result.stderr,
    ), result.stderr
