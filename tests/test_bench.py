"""bench: figures come from real child processes, interleaved, with machine facts."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner
from processes import child_processes

from nsfw_mobile.bench import bench
from nsfw_mobile.cli import main
from nsfw_mobile.errors import BenchmarkError
from nsfw_mobile.formats import PRETRAINED_TFLITE


def test_bench_tiny_tflite_and_onnx(tiny_artifacts):
    keys = ("tflite-float32", "tflite-int8", "onnx-int8", "mlmodel")
    paths = [str(tiny_artifacts[k].path) for k in keys]
    report = bench(paths, threads=(1, 2), min_runs=8, min_seconds=0.05, block=4)
    assert len(report.results) == 6 and len(report.skipped) == 1
    engines = {r.path.rsplit("/", 1)[-1]: r.engine for r in report.results}
    assert engines == {"nsfw_float32.tflite": "litert", "nsfw_int8.tflite": "litert",
                       "nsfw_int8.onnx": "onnxruntime"}  # fmt: skip
    assert "Core ML latency needs macOS" in report.skipped[0]
    for result in report.results:
        assert result.runs >= 8 and 0 < result.median_ms <= result.p99_ms
        assert result.peak_rss_mb > 20 and result.size_bytes > 0 and result.load_seconds > 0
    assert report.machine["cores"] >= 1 and "ai-edge-litert" in report.versions
    assert "onnxruntime" in report.versions


def test_bench_cli_json_and_usage(tiny_artifacts, tmp_path):
    path = str(tiny_artifacts["tflite-int8"].path)
    result = CliRunner().invoke(
        main,
        [
            "bench",
            path,
            "--runs",
            "5",
            "--seconds",
            "0",
            "--json",
            "--report",
            str(tmp_path / "bench.md"),
        ],
    )
    assert result.exit_code == 0, result.output
    (row,) = json.loads(result.stdout)["results"]
    assert row["engine"] == "litert" and row["threads"] == 1
    assert "| `nsfw_int8.tflite` | litert | 1 |" in (tmp_path / "bench.md").read_text()
    assert CliRunner().invoke(main, ["bench", path, "--thread-counts", "x"]).exit_code == 2


def test_children_already_started_are_closed_when_a_later_one_fails(tmp_path):
    bogus = tmp_path / "broken.tflite"
    bogus.write_bytes(b"TFL3" + bytes(200))
    before = child_processes()
    with pytest.raises(BenchmarkError, match="broken.tflite"):
        bench([str(PRETRAINED_TFLITE), str(bogus)], min_runs=1, min_seconds=0)
    assert child_processes() - before == set(), "a benchmark child was left running"


def test_a_release_folder_is_benchmarked_through_its_manifest(tmp_path):
    """`bench models/`, the README's example: manifest.json is no TF.js model, and only the
    files the manifest marks releasable are measured."""
    from nsfw_mobile.manifest import read_manifest
    from nsfw_mobile.resolve import MEASURE, resolve_model

    models = Path(__file__).resolve().parent.parent / "models"
    manifest = read_manifest(models)
    releasable = [models / e["file"] for e in manifest["files"] if e["releasable"]]
    assert [m.path for m in resolve_model(models, use=MEASURE).parts] == releasable
    assert releasable

    folder = tmp_path / "release"
    folder.mkdir()
    kept = {"nsfw_int8.tflite": True, "nsfw_dynamic.tflite": False}
    for name in kept:
        shutil.copy(models / name, folder / name)
    manifest["files"] = [
        {**e, "releasable": kept[e["file"]]} for e in manifest["files"] if e["file"] in kept
    ]
    (folder / "manifest.json").write_text(json.dumps(manifest))
    result = CliRunner().invoke(
        main, ["bench", str(folder), "--runs", "1", "--seconds", "0", "--json"]
    )
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)["results"]
    assert [Path(r["path"]).name for r in rows] == ["nsfw_int8.tflite"]
    table = CliRunner().invoke(main, ["bench", str(folder), "--runs", "1", "--seconds", "0"])
    assert table.exit_code == 0, table.output
    assert "not releasable: nsfw_dynamic.tflite" in table.stderr


def test_run_all_checks_its_out_folder_before_measuring(tmp_path):
    """benchmarks/run_all.py fails at once where it cannot write, makes a missing folder, and
    keeps what it measured in results.json when a later stage fails."""
    import subprocess
    import sys

    root = Path(__file__).resolve().parent.parent
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    refused = subprocess.run(
        [sys.executable, str(root / "benchmarks" / "run_all.py"), "--out", str(blocker / "out")],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert refused.returncode == 1 and "cannot write there" in refused.stderr
    sys.path.insert(0, str(root / "benchmarks"))
    try:
        from run_all import check_out, write_partial
    finally:
        sys.path.remove(str(root / "benchmarks"))
    check_out(tmp_path / "new" / "results")
    write_partial(tmp_path / "new" / "results", {"latency_ms": {"litert-int8": {"1": 2.0}}})
    kept = json.loads((tmp_path / "new" / "results" / "results.json").read_text())
    assert kept == {"latency_ms": {"litert-int8": {"1": 2.0}}, "complete": False}
    assert [p.name for p in (tmp_path / "new" / "results").iterdir()] == ["results.json"]
