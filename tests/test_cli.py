"""The command line, through click's CliRunner: exit codes, JSON and messages."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import click
import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image
from processes import child_processes

from nsfw_mobile.atomic import PARTIAL_GLOB
from nsfw_mobile.cli import (
    EXIT_BROKEN_PIPE,
    EXIT_UNREADABLE,
    EXIT_USAGE,
    EXIT_VALIDATION_FAILED,
    main,
)
from nsfw_mobile.formats import FORMATS


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
    assert out.is_file() and not list(tmp_path.glob(PARTIAL_GLOB))
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
            assert abs(p - b["probabilities"][name]) <= STRICT.max_floor


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

    monkeypatch.setenv("NSFW_MOBILE_CACHE", str(tmp_path))
    models = __import__("pathlib").Path(__file__).resolve().parent.parent / "models"
    result = run("predict", samples[0], "--model", models, "--json")
    assert result.exit_code == 0, result.output
    assert re.search(
        r"using nsfw_int8\.(tflite|onnx|ort) \((litert|onnxruntime|openvino)\), the fastest "
        "validated model of the release on this machine",
        result.stderr,
    ), result.stderr


# ------------------------------------------------------------------ one CLI everywhere

ROOT = Path(__file__).resolve().parent.parent
MODELS = ROOT / "models"


def _help_options(command):
    return [p for p in command.params if isinstance(p, click.Option) and not p.hidden]


def test_every_option_has_help_and_every_help_ends_with_examples():
    assert set(main.commands) >= {"predict", "convert", "release", "bench", "validate"}
    for name, command in [*main.commands.items(), ("", main)]:
        result = run(*[name] if name else [], "--help")
        assert result.exit_code == 0, name
        missing = [p.opts[0] for p in _help_options(command) if not (p.help or "").strip()]
        assert missing == [], f"{name}: options without help: {missing}"
        before, _, examples = result.output.rpartition("Examples:")
        lines = [line.strip() for line in examples.splitlines() if line.strip()]
        assert "Options:" in before, f"{name}: its help does not end with examples"
        assert 2 <= len(lines) <= 3, f"{name}: two or three examples, not {lines}"
        assert all(line.startswith("nsfw-mobile ") for line in lines), (name, lines)
        if name:  # a one-line summary for the grouped list, which cuts longer ones
            assert command.short_help and len(command.short_help) <= 63, f"{name}: short help"


def test_the_command_list_groups_every_command_by_task_once():
    from nsfw_mobile.cli import COMMAND_GROUPS

    named = [name for _, names in COMMAND_GROUPS for name in names]
    assert sorted(named) == sorted(main.commands), "each command in exactly one group"
    listing = run().output  # no arguments: the help, commands grouped by task
    titles = [title for title, _ in COMMAND_GROUPS]
    assert [line[:-1] for line in listing.splitlines() if line[:-1] in titles] == titles
    for title, names in COMMAND_GROUPS:
        section = listing.split(f"{title}:\n")[1].split("\n\n")[0]
        listed = [
            line.split()[0]
            for line in section.splitlines()
            if line.startswith("  ") and not line.startswith("   ")
        ]
        assert listed == list(names), (title, listed)
    assert "Other commands" not in listing


def test_every_format_of_the_registry_is_listed_where_formats_are_chosen():
    keys = {f.key for f in FORMATS}
    for name in ("convert", "release"):
        command = main.commands[name]
        (to,) = [p for p in command.params if p.name == "targets"]
        assert keys <= set(to.type.choices) and "all" in to.type.choices
        (quantize,) = [p for p in command.params if p.name == "quantize"]
        assert set(quantize.type.choices) == {f.quantization for f in FORMATS}
        assert all(key in run(name, "--help").output for key in keys)
    (format_option,) = [p for p in main.commands["validate"].params if p.name == "format_keys"]
    assert set(format_option.type.choices) == keys
    listed = run("formats")
    assert {line.split()[0] for line in listed.stdout.splitlines()} == keys
    assert {row["key"] for row in json.loads(run("formats", "--json").stdout)} == keys


MISSING = "no-such-path"
MISSING_PATH_CASES = [
    ["predict", MISSING],
    ["predict", "nsfw_mobile/samples/coffee.jpg", "--model", MISSING],
    ["validate", MISSING],
    ["validate", "models/nsfw_int8.tflite", "--reference", MISSING],
    ["validate", "models/nsfw_int8.tflite", "--images", MISSING],
    ["inspect", MISSING],
    ["bench", MISSING],
    ["convert", MISSING, "--to", "tflite"],
    ["convert", "--to", "tflite-int8", "--calibration", MISSING],
    ["release", MISSING, "--out", "dist"],
    ["release", "--check", MISSING],
    ["release", "--check", "models", "--reference", MISSING],
    ["evaluate", MISSING, "nsfw_mobile"],
    ["evaluate", "pretrained", MISSING],
    ["train", MISSING, "--out", "runs/x"],
    ["import-tfjs", MISSING, "x.keras"],
    ["models", "--fetch", "all", "--from", MISSING],
    ["serve", MISSING],
    ["serve", "--token-file", MISSING],
]


def test_the_missing_path_cases_cover_every_command_that_takes_a_path():
    assert {case[0] for case in MISSING_PATH_CASES} == set(main.commands) - {"formats"}


@pytest.mark.parametrize("args", MISSING_PATH_CASES, ids=" ".join)
def test_a_missing_path_is_a_usage_error_in_every_command(args, monkeypatch):
    monkeypatch.chdir(ROOT)
    result = run(*args)
    assert result.exit_code == EXIT_USAGE, result.output
    assert f"{MISSING}: no such file or folder" in result.stderr
    assert "Traceback" not in result.output


IGNORED_OPTION_CASES = [
    (["convert", "--to", "tflite-int8", "--quantize", "float16"], "--quantize float16 applies"),
    (["convert", "--to", "mlpackage-int8", "--precision", "float32"], "--precision float32"),
    (["convert", "--to", "tflite", "--io", "uint8"], "--io applies to full-integer TFLite"),
    (["convert", "--to", "tflite", "--calibration", "."], "--calibration applies to full-integer"),
    (["convert", "--to", "tflite", "--unsafe"], "--unsafe applies to .keras model files"),
    (["release", "--check", "models", "--to", "tflite"], "--to: options of making a release"),
    (["release", "--check", "models", "--thread-counts", "1,2", "--runs", "2"],
     "--thread-counts, --runs: options of making a release"),
    (["release", "--check", "models", "--name", "x"], "--name: options of making a release"),
    (["release", "--out", "dist", "--reference", "models/nsfw_int8.tflite"],
     "--reference applies to --check"),
    (["release", "--out", "dist", "--to", "tflite", "--io", "int8"], "--io applies"),
    (["predict", "nsfw_mobile/samples/coffee.jpg", "--keyframes"], "--keyframes: options for"),
    (["predict", "nsfw_mobile/samples/coffee.jpg", "--every", "2", "--min-segment", "1"],
     "--every, --min-segment: options for videos"),
    (["predict", "nsfw_mobile/samples/coffee.jpg", "--every", "2", "--keyframes"],
     "--every and --keyframes"),
    (["predict", "nsfw_mobile/samples/coffee.jpg", "--batch-size", "8"],
     "--batch-size applies to engines that take batches"),
    (["predict", "nsfw_mobile/samples/coffee.jpg", "--unsafe"], "--unsafe applies to .keras"),
    (["predict", "nsfw_mobile/samples/coffee.jpg", "--threads", "2"],
     "--threads is now --workers"),
    (["validate", "models/NSFW.mlmodel", "--threads", "2"], "no candidate runs on one"),
    (["bench", "pretrained", "--threads", "1,2"], "use --thread-counts 1,2"),
    (["bench", "pretrained", "--threads", "2", "--thread-counts", "1,2"],
     "--threads and --thread-counts"),
    (["formats", "--json", "--markdown"], "--json and --markdown"),
    (["train", "nsfw_mobile", "--out", "runs/x", "--fine-tune-epochs", "3"],
     "give --fine-tune N, or drop --fine-tune-epochs"),
    (["evaluate", "models/nsfw_int8.tflite", "nsfw_mobile", "--unsafe"], "--unsafe applies"),
]  # fmt: skip


@pytest.mark.parametrize(("args", "message"), IGNORED_OPTION_CASES, ids=lambda a: " ".join(a))
def test_an_option_that_would_be_ignored_is_refused(args, message, monkeypatch, tmp_path):
    monkeypatch.chdir(ROOT)
    result = run(*args)
    assert result.exit_code == EXIT_USAGE, result.output
    assert message in result.stderr, result.stderr
    assert result.stdout == ""  # refused before any work


def test_resume_refuses_settings_it_would_ignore(tmp_path):
    data = tmp_path / "data"
    (data / "a").mkdir(parents=True)
    result = run("train", data, "--out", tmp_path / "run", "--resume", "--epochs", "3",
                 "--lr", "0.1")  # fmt: skip
    assert result.exit_code == EXIT_USAGE
    assert "drop --epochs, --lr" in result.stderr


def test_predict_into_a_closed_pipe_ends_quietly(tmp_path, samples):
    """`nsfw-mobile predict dir | head -1`: no "Broken pipe", no traceback."""
    for copy in range(3):
        for sample in samples:
            shutil.copy(sample, tmp_path / f"{copy}_{sample.name}")
    process = subprocess.Popen(
        [sys.executable, "-m", "nsfw_mobile.cli", "predict", str(tmp_path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=ROOT,
    )
    first = process.stdout.readline()
    process.stdout.close()  # as `head -1` does after its line
    stderr = process.stderr.read().decode()
    process.wait(timeout=120)
    assert first.startswith(b"label")
    assert process.returncode == EXIT_BROKEN_PIPE, stderr
    assert stderr == "", stderr


@pytest.mark.parametrize("where", ["before", "after"])
def test_verbose_goes_before_or_after_the_command(where, samples):
    args = ["predict", str(samples[0]), "--model", str(MODELS / "nsfw_int8.tflite")]
    args = ["-v", *args] if where == "before" else [*args, "-v"]
    shown = subprocess.run([sys.executable, "-m", "nsfw_mobile.cli", *args],
                           capture_output=True, text=True, cwd=ROOT)  # fmt: skip
    assert shown.returncode == 0, shown.stderr
    assert "XNNPACK" in shown.stderr  # LiteRT's own log, hidden without -v


# ------------------------------------------------------------------ runners close


@pytest.fixture(scope="module")
def tiny_tfjs(tiny_source, tmp_path_factory):
    from nsfw_mobile.convert import convert_all
    from nsfw_mobile.formats import by_key

    out = tmp_path_factory.mktemp("tiny_tfjs")
    (artifact,) = convert_all(tiny_source, [by_key("tfjs-float32")], out)
    return artifact.path


def test_a_runner_is_a_context_manager_that_ends_its_node_process(tiny_tfjs):
    from nsfw_mobile import open_runner

    before = child_processes("node")
    with open_runner(tiny_tfjs) as runner:
        assert len(child_processes("node") - before) == 1
        assert runner.predict(np.zeros((2, 96, 96, 3), np.uint8)).shape == (2, 3)
    assert child_processes("node") - before == set()
    runner.close()  # a second close is harmless


def test_predict_and_validate_of_a_tfjs_model_leave_no_node_process(
    tiny_tfjs, tiny_model_path, tiny_images_dir, tmp_path, samples
):
    broken = tmp_path / "broken.jpg"
    broken.write_text("not an image")
    before = child_processes("node")
    predicted = run("predict", samples[0], broken, "--model", tiny_tfjs)
    assert predicted.exit_code == EXIT_UNREADABLE, predicted.output
    assert child_processes("node") - before == set()  # with the result (and its traceback) alive
    validated = run(
        "validate", tiny_tfjs, broken, "--reference", tiny_model_path, "--images", tiny_images_dir
    )
    assert validated.exit_code == EXIT_VALIDATION_FAILED, validated.output
    assert "PASS" in validated.stdout
    assert child_processes("node") - before == set()


def test_bench_measures_an_engine_without_a_thread_setting_once(tiny_tfjs):
    result = run("bench", tiny_tfjs, "--thread-counts", "1,2", "--runs", "1", "--seconds", "0",
                 "--json")  # fmt: skip
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert [row["threads"] for row in report["results"]] == [1]
    assert report["skipped"] == [f"{tiny_tfjs}: TF.js wasm (Node) has no thread setting: "
                                 "measured once, at 1 thread"]  # fmt: skip
    assert result.stderr == ""


# ------------------------------------------------------------------ release --to, progress


@pytest.mark.slow
def test_release_of_chosen_formats_reports_each_stage_and_file(
    tiny_model_path, tiny_images_dir, tmp_path
):
    out = tmp_path / "release"
    made = run(
        "release", tiny_model_path, "--out", out, "--to", "tflite", "--quantize", "float16",
        "--images", tiny_images_dir, "--runs", "1", "--seconds", "0",
    )  # fmt: skip
    assert made.exit_code == 0, made.output
    manifest = json.loads((out / "manifest.json").read_text())
    assert [f["file"] for f in manifest["files"]] == ["nsfw_float16.tflite"]
    expected = [
        "converting tiny to 1 format",
        "  [1/1] tflite-float16: nsfw_float16.tflite",
        "validating 1 file against the reference on 40 images",
        "  PASS     nsfw_float16.tflite",
        "benchmarking 2 files",
        "  nsfw_float16.tflite x1: ",
        "  tiny.keras x1: ",
        "writing manifest.json",
    ]
    lines = made.stderr.splitlines()
    at = [next(i for i, line in enumerate(lines) if line.startswith(e)) for e in expected]
    assert at == sorted(at), made.stderr
    check = ("release", "--check", out, "--reference", tiny_model_path, "--images", tiny_images_dir)
    quiet = run(*check, "--json")
    assert quiet.exit_code == 0, quiet.output
    assert json.loads(quiet.stdout)["passed"] and quiet.stderr == ""
    shown = run(*check)
    assert shown.exit_code == 0, shown.output
    assert "validating 1 file against the reference on 40 images" in shown.stderr
    assert "  PASS     nsfw_float16.tflite" in shown.stderr
