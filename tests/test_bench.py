"""bench: figures come from real child processes, interleaved, with machine facts."""

from __future__ import annotations

import json

from click.testing import CliRunner

from nsfw_mobile.bench import bench
from nsfw_mobile.cli import main


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
    assert CliRunner().invoke(main, ["bench", path, "--threads", "x"]).exit_code == 2
