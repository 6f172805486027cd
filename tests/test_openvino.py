"""OpenVINO: a second engine for the same .onnx files, validated per (engine, file) pair, and
the engine choice that picks only among pairs a release validated."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import assert_outputs_vary
from releases import fake_release

from nsfw_mobile import open_runner
from nsfw_mobile.cli import main
from nsfw_mobile.errors import UsageError
from nsfw_mobile.formats import (
    ENGINE_KEYS,
    FILE_TYPES,
    FORMATS,
    ONNX,
    ORT,
    engine_pairs,
    engines_markdown_table,
    tolerance_for,
)
from nsfw_mobile.runtime.onnx_runner import OnnxRunner
from nsfw_mobile.validate import validate

pytest.importorskip("openvino")
pytest.importorskip("onnxruntime")
onnx = pytest.importorskip("onnx")

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def reference(tiny_source):
    from nsfw_mobile.runtime.keras_runner import KerasRunner

    return KerasRunner(tiny_source)


# ------------------------------------------------------------------ the registry


def test_the_registry_states_which_engine_runs_which_file():
    assert ONNX.engines == ("onnxruntime", "openvino") and ORT.engines == ("onnxruntime",)
    assert all(t.engines and t.engines[0] == t.default_engine for t in FILE_TYPES)
    assert {key for t in FILE_TYPES for key in t.engines} == set(ENGINE_KEYS)
    table = engines_markdown_table()
    openvino = next(line for line in table.splitlines() if line.startswith("| openvino"))
    assert openvino.count("yes") == 1 and "`nsfw-mobile[openvino]`" in openvino
    # a pair with its own bounds; others keep the format's; a pair that cannot run is refused
    int8 = next(f for f in FORMATS if f.key == "onnx-int8")
    assert tolerance_for(int8, "openvino").measured != int8.tolerance.measured
    assert tolerance_for(int8, "openvino").multiplier == int8.tolerance.multiplier
    ort = next(f for f in FORMATS if f.key == "ort-int8")
    with pytest.raises(UsageError, match="openvino cannot run .ort files"):
        tolerance_for(ort, "openvino")


def test_engine_values_expand_to_pairs(tiny_artifacts):
    onnx_path, ort_path, tflite = (
        str(tiny_artifacts[k].path) for k in ("onnx-int8", "ort-int8", "tflite-int8")
    )
    paths = [onnx_path, ort_path, tflite]
    assert engine_pairs(paths, None)[1] == [None, None, None]
    everything = list(zip(*engine_pairs(paths, "all")[:2]))
    assert everything == [(onnx_path, "onnxruntime"), (onnx_path, "openvino"),
                          (ort_path, "onnxruntime"), (tflite, "litert")]  # fmt: skip
    chosen, engines, left_out = engine_pairs(paths, "openvino", skip_unrunnable=True)
    assert (chosen, engines) == ([onnx_path], ["openvino"]) and len(left_out) == 2
    with pytest.raises(UsageError, match="openvino cannot run .tflite files"):
        engine_pairs([tflite], "openvino")


# ------------------------------------------------------------------ the runner


def test_openvino_runs_the_onnx_file_as_onnx_runtime_does(tiny_artifacts, sample_pixels_tiny):
    path = tiny_artifacts["onnx-float32"].path
    with open_runner(path, engine="openvino") as runner, OnnxRunner(path) as ort_runner:
        assert runner.name == "openvino:nsfw_float32.onnx" and runner.precision == "f32"
        assert runner.contract == ort_runner.contract and runner.labels == ort_runner.labels
        ours, theirs = runner.predict(sample_pixels_tiny), ort_runner.predict(sample_pixels_tiny)
        assert_outputs_vary(ours)
        assert np.abs(ours - theirs).max() < 1e-5
        lanes = runner.lanes(2)
        try:
            assert [lane.num_threads for lane in lanes] == [1, 1]
            for lane in lanes:
                assert np.abs(lane.predict(sample_pixels_tiny[:3]) - ours[:3]).max() < 1e-6
        finally:
            for lane in lanes:
                lane.close()
    runner.close()  # closing twice is harmless
    assert runner.request is None and runner.compiled is None


def test_openvino_cannot_run_the_ort_format(tiny_artifacts):
    with pytest.raises(UsageError, match="openvino cannot run .ort files"):
        open_runner(tiny_artifacts["ort-int8"].path, engine="openvino")


def test_the_runner_needs_neither_tensorflow_nor_onnx_runtime(tiny_artifacts):
    code = (
        "import sys, numpy as np\n"
        "from nsfw_mobile import open_runner\n"
        f"runner = open_runner({str(tiny_artifacts['onnx-int8'].path)!r}, engine='openvino')\n"
        "print(runner.predict(np.zeros((2, 96, 96, 3), np.uint8)).shape, [m for m in "
        "('tensorflow', 'keras', 'onnx', 'onnxruntime') if m in sys.modules])\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=ROOT, check=True)  # fmt: skip
    assert out.stdout.strip() == "(2, 3) []"


def test_a_changed_weight_fails_on_openvino_and_the_file_passes(
    tiny_artifacts, reference, tiny_images_dir, tmp_path
):
    """The fast one of tests/test_onnx.py's broken files on OpenVINO (the rest are slow)."""
    from test_onnx import _edited, change_a_weight

    path = tiny_artifacts["onnx-int8"].path
    broken = _edited(path, change_a_weight, tmp_path / "nsfw_int8.onnx")
    report = validate(
        [path, broken], reference=reference, images=[tiny_images_dir], engines=["openvino"]
    )
    faithful, changed = report.candidates
    assert (faithful.status, faithful.engine) == ("pass", "openvino"), faithful.failures
    assert (changed.status, changed.engine) == ("fail", "openvino")


# ------------------------------------------------------------------ the commands


def test_validate_and_bench_take_an_engine(tiny_artifacts, tiny_model_path, tiny_images_dir):
    onnx_path = str(tiny_artifacts["onnx-float32"].path)
    tflite = str(tiny_artifacts["tflite-float32"].path)
    reference = str(tiny_model_path)
    arguments = ["--reference", reference, "--images", tiny_images_dir, "--json"]
    checked = CliRunner().invoke(main, ["validate", onnx_path, "--engine", "all", *arguments])
    assert checked.exit_code == 0, checked.output
    engines = [c["engine"] for c in json.loads(checked.stdout)["candidates"]]
    assert engines == ["onnxruntime", "openvino"]
    refused = CliRunner().invoke(main, ["validate", tflite, "--engine", "openvino"])
    assert refused.exit_code == 2 and "openvino cannot run .tflite files" in refused.output
    measured = CliRunner().invoke(
        main, ["bench", onnx_path, tflite, "--engine", "all", "--runs", "2", "--seconds", "0"]
    )
    assert measured.exit_code == 0, measured.output
    rows = [line.split()[:2] for line in measured.stdout.splitlines()[3:]]
    assert rows == [["nsfw_float32.onnx", "onnxruntime"], ["nsfw_float32.onnx", "openvino"],
                    ["nsfw_float32.tflite", "litert"]]  # fmt: skip
    assert "  nsfw_float32.onnx on openvino x1: " in measured.stderr


# ------------------------------------------------------------------ the engine choice


def _release(folder: Path, openvino: dict | None) -> Path:
    """A release of the shipped int8 files whose manifest records the int8 ONNX file on
    OpenVINO as ``openvino`` says (None: not recorded, as in a release made before it)."""
    claimed = {"latency": {"threads_1": {"median_ms": 2.0}}}
    onnx = dict(claimed)
    if openvino is not None:
        onnx["engines"] = {"onnxruntime": {"releasable": True, "latency": {}},
                           "openvino": openvino}  # fmt: skip
    return fake_release(folder, {"nsfw_int8.tflite": claimed, "nsfw_int8.onnx": onnx})


PROBED_OPENVINO = "nsfw_int8.onnx on openvino"


def test_the_choice_probes_only_pairs_the_release_validated(tmp_path, monkeypatch):
    from nsfw_mobile.engine_choice import TIE, fastest_here

    monkeypatch.setenv("NSFW_MOBILE_CACHE", str(tmp_path / "cache"))
    failed = {"releasable": False, "latency": {"threads_1": {"median_ms": 0.1}}}
    for name, openvino in (("older", None), ("failed", failed)):
        choice = fastest_here(_release(tmp_path / name, openvino))
        assert set(choice.probed_ms) == {"nsfw_int8.tflite", "nsfw_int8.onnx"}, name
        assert choice.engine_key is None  # a file on its own engine
    validated = {"releasable": True, "latency": {"threads_1": {"median_ms": 2.0}}}
    choice = fastest_here(_release(tmp_path / "validated", validated))
    assert set(choice.probed_ms) == {"nsfw_int8.tflite", "nsfw_int8.onnx", PROBED_OPENVINO}
    label = choice.path.name if choice.engine_key is None else PROBED_OPENVINO
    assert choice.probed_ms[label] <= min(choice.probed_ms.values()) * (1 + TIE)
    assert choice.engine == (choice.engine_key or choice.engine)
    again = fastest_here(tmp_path / "validated")
    assert again.cached and (again.path, again.engine_key) == (choice.path, choice.engine_key)


def test_the_chosen_pair_is_what_the_resolver_opens(tmp_path, monkeypatch):
    """The (engine, file) pair the choice picks flows into the ModelRef: its engine is the
    pair's, and its runner is that engine's, for the same .onnx file either way."""
    from nsfw_mobile import engine_choice
    from nsfw_mobile.resolve import RUN, resolve_model
    from nsfw_mobile.runtime.openvino_runner import OpenVINORunner

    validated = {"releasable": True, "latency": {"threads_1": {"median_ms": 2.0}}}
    folder = _release(tmp_path / "release", validated)
    cases = ((PROBED_OPENVINO, "openvino", OpenVINORunner),
             ("nsfw_int8.onnx", "onnxruntime", OnnxRunner))  # fmt: skip
    for fastest, engine, runner_type in cases:
        monkeypatch.setenv("NSFW_MOBILE_CACHE", str(tmp_path / f"cache-{engine}"))
        figures = {"nsfw_int8.tflite": 5.0, "nsfw_int8.onnx": 5.0, PROBED_OPENVINO: 5.0}
        figures[fastest] = 1.0  # the probe's figures: the timing itself is tested above
        monkeypatch.setattr(
            engine_choice, "probe", lambda pairs, f=figures: {p.label: f[p.label] for p in pairs}
        )
        ref = resolve_model(folder, use=RUN)
        assert (ref.path.name, ref.engine, ref.to_dict()["engine"]) == (
            "nsfw_int8.onnx",
            engine,
            engine,
        ), fastest
        assert f"({engine})" in ref.why
        with ref.open_runner() as runner:
            assert type(runner) is runner_type


def test_a_tie_goes_to_the_engine_first_in_the_registry():
    from nsfw_mobile.engine_choice import Pair, choose

    litert = Pair(ROOT / "models" / "nsfw_int8.tflite")
    ort = Pair(ROOT / "models" / "nsfw_int8.onnx")
    openvino = Pair(ROOT / "models" / "nsfw_int8.onnx", "openvino")
    pairs = [openvino, ort, litert]
    tied = {litert.label: 2.0, openvino.label: 1.95, ort.label: 2.5}
    assert choose(tied, pairs) == (litert, [openvino.label, litert.label])
    ahead = {litert.label: 2.0, openvino.label: 1.9, ort.label: 2.5}
    assert choose(ahead, pairs) == (openvino, [openvino.label])
    same_engine = {ort.label: 2.0, openvino.label: 1.99}
    assert choose(same_engine, [ort, openvino])[0] == ort


@pytest.mark.slow
def test_a_release_validates_its_onnx_file_on_every_engine(
    tiny_model_path, tiny_images_dir, tmp_path, monkeypatch
):
    """release records each engine's validation and latency; --check validates each again;
    predict on the release picks among those pairs."""
    monkeypatch.setenv("NSFW_MOBILE_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "release"
    made = CliRunner().invoke(main, ["release", str(tiny_model_path), "--out", str(out), "--to",
                                     "onnx", "--quantize", "none", "--images", str(tiny_images_dir),
                                     "--runs", "2", "--seconds", "0"])  # fmt: skip
    assert made.exit_code == 0, made.output
    assert "validating 1 file, 2 (file, engine) pairs against the reference" in made.stderr
    assert "  PASS     nsfw_float32.onnx on openvino" in made.stderr
    manifest = json.loads((out / "manifest.json").read_text())
    (entry,) = manifest["files"]
    assert entry["engine"] == "onnxruntime" and set(entry["engines"]) == {"onnxruntime", "openvino"}
    openvino = entry["engines"]["openvino"]
    assert openvino["releasable"] and openvino["validation"]["status"] == "pass"
    assert openvino["latency"]["threads_1"]["median_ms"] > 0
    assert "`nsfw_float32.onnx` on openvino" in (out / "MODEL_CARD.md").read_text()
    check = CliRunner().invoke(main, ["release", "--check", out, "--reference", tiny_model_path,
                                      "--images", tiny_images_dir])  # fmt: skip
    assert check.exit_code == 0, check.output
    assert "  PASS     nsfw_float32.onnx on openvino" in check.stderr
