"""predict on Ray (distributed.py, ``predict --ray``): the same answers as one machine,
one row per file when a worker dies, Parquet that pandas reads, runs never mixed.

Ray starts once for the module (a local Ray of 2 CPUs, about 5 s); the command-line run
starts its own, as users do. A hung Ray must not hang the suite: the module has a
deadline (faulthandler dumps the stacks and ends the process) and subprocesses have
timeouts.
"""

from __future__ import annotations

import faulthandler
import json
import logging
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from PIL import Image

from nsfw_mobile import distributed
from nsfw_mobile.cli import EXIT_ERROR, EXIT_UNREADABLE, EXIT_USAGE, main
from nsfw_mobile.errors import ModelFileError
from nsfw_mobile.formats import PRETRAINED_TFLITE

ROOT = Path(__file__).resolve().parent.parent
MODULE_DEADLINE_S = 420
RUN_TIMEOUT_S = 240
LABELS = ["Neutral", "Porn", "Sexy"]


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


@pytest.fixture(scope="module")
def ray_cluster():
    import ray

    faulthandler.dump_traceback_later(MODULE_DEADLINE_S, exit=True)
    ray.init(num_cpus=2, address="local", include_dashboard=False,
             logging_level=logging.ERROR, log_to_driver=False)  # fmt: skip
    yield ray
    ray.shutdown()
    faulthandler.cancel_dump_traceback_later()


@pytest.fixture(scope="module")
def library(tmp_path_factory, samples):
    """Images of every kind predict reads, a HEIC, broken files, a nested folder, a text
    file (skipped) and a hidden file (left out)."""
    pillow_heif = pytest.importorskip("pillow_heif")
    folder = tmp_path_factory.mktemp("library") / "photos"
    (folder / "nested" / "deeper").mkdir(parents=True)
    chosen = samples[-9:]  # the samples outside the calibration set, two of them flagged
    for sample in chosen[:8]:
        shutil.copy(sample, folder / sample.name)
    shutil.copy(chosen[8], folder / "nested" / "deeper" / chosen[8].name)
    with Image.open(samples[0]) as picture:
        pillow_heif.from_pillow(picture.convert("RGB")).save(folder / "nested" / "phone.heic")
    jpeg = next(s for s in samples if s.suffix == ".jpg").read_bytes()
    (folder / "truncated.jpg").write_bytes(jpeg[:300])
    (folder / "empty.png").write_bytes(b"")
    (folder / "fake.jpg").write_text("not an image")
    (folder / "notes.txt").write_text("a note")
    shutil.copy(samples[0], folder / ".hidden.jpg")
    return folder


def _rows(out: Path) -> dict[str, dict]:
    import pandas

    frame = pandas.read_parquet(out)
    assert list(frame.columns) == distributed.column_names(LABELS)
    assert frame["path"].is_unique
    return {row["path"]: row for row in frame.to_dict("records")}


def _missing(value) -> bool:
    return value is None or value != value  # pandas gives NaN for a null string or float


@pytest.mark.slow
def test_ray_answers_equal_predict_json_row_by_row(library, tmp_path):
    """The acceptance run: `--ray` alone starts a local Ray; every row equals predict's."""
    alone = run("predict", library, "--json", "--threshold", "0.5")
    assert alone.exit_code == EXIT_UNREADABLE, alone.output
    expected = {d["path"]: d for d in map(json.loads, alone.stdout.splitlines())}
    out = tmp_path / "results"
    cluster = subprocess.run(
        [sys.executable, "-m", "nsfw_mobile.cli", "predict", str(library), "--threshold", "0.5",
         "--ray", "--out", str(out)],
        capture_output=True, text=True, cwd=ROOT, timeout=RUN_TIMEOUT_S,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )  # fmt: skip
    assert cluster.returncode == EXIT_UNREADABLE, cluster.stderr
    assert cluster.stdout == ""  # nothing of Ray's on stdout
    rows = _rows(out)
    assert set(rows) == set(expected) and len(rows) == 14  # .hidden.jpg left out by both
    labels = set()
    for path, want in expected.items():
        row = rows[path]
        if "skipped" in want:
            assert (row["error"], row["kind"]) == (want["skipped"], "unsupported_type")
        elif "error" in want:
            assert (row["error"], row["kind"]) == (want["error"], want["kind"]), path
            assert _missing(row["label"]) and _missing(row["nsfw_score"]), path
        else:
            assert row["label"] == want["label"] and _missing(row["error"]), path
            for name, p in want["probabilities"].items():
                assert abs(row[f"p_{name}"] - p) <= 1e-6, (path, name)
            assert abs(row["nsfw_score"] - want["nsfw_score"]) <= 1e-6
            assert row["flagged"] == want["flagged"]
            labels.add(row["label"])
    assert len(labels) > 1  # the answers vary: equal rows mean something
    assert {r["kind"] for r in rows.values()} >= {"empty", "not_an_image", "unsupported_type"}
    assert rows[str(library / "nested" / "phone.heic")]["label"] in LABELS

    def summary(text: str) -> str:
        return re.sub(r"[\d.]+ images/s", "N images/s", text.strip().splitlines()[-1])

    assert summary(cluster.stderr) == summary(alone.stderr)
    assert f"wrote 14 rows to {out} (Parquet)" in cluster.stderr
    assert "core_worker" not in cluster.stderr  # Ray's own lines stay hidden

    again = run("predict", library, "--ray", "--out", out)  # never mixed with the first run
    assert again.exit_code == EXIT_USAGE and "already holds files" in again.stderr
    assert set(_rows(out)) == set(expected)


def _dying_classifier(marker: Path):
    class DiesOnItsSecondBatch(distributed.Classifier):
        """The real classifier, whose process exits on its second batch while ``marker``
        exists (removed first, so that exactly one actor dies, once)."""

        calls = 0

        def __call__(self, batch):
            self.calls += 1
            if self.calls == 2:
                try:
                    os.unlink(marker)
                except FileNotFoundError:
                    pass
                else:
                    os._exit(1)
            return super().__call__(batch)

    return DiesOnItsSecondBatch


@pytest.mark.slow
def test_a_worker_killed_mid_run_loses_and_repeats_no_row(ray_cluster, library, tmp_path):
    marker = tmp_path / "die-once"
    marker.write_text("")
    out = tmp_path / "runs" / "results"
    summary = distributed.run(
        [library], out, model=ROOT / "models" / "nsfw_int8.tflite", labels=LABELS,
        threshold=0.01, batch_size=2, actors=1, classifier=_dying_classifier(marker),
    )  # fmt: skip
    assert not marker.exists()  # the actor did die, after one batch was done
    rows = _rows(out)
    images, skipped, _ = distributed.split_inputs([library])
    assert set(rows) == {str(p) for p in images + skipped} and summary.rows == len(rows)
    assert summary.errors == 3 and summary.skipped == 1
    assert sum(summary.by_label.values()) == len(rows) - 4
    flagged = [p for p, row in rows.items() if row["flagged"] is True]
    assert summary.flagged == len(flagged) > 0
    assert all(rows[p]["nsfw_score"] > 0.01 for p in flagged)
    assert [p.name for p in out.parent.iterdir()] == ["results"]  # no .partial left behind
    assert all(p.suffix == ".parquet" for p in out.iterdir())


# ------------------------------------------------------------------ no Ray needed


def test_options_that_do_not_apply_with_ray_are_refused(samples, tmp_path):
    cases = [
        (["--out", tmp_path / "r"], "--out applies with --ray only"),
        (["--ray", "--out", tmp_path / "r", "--json"], "--json does not apply with --ray"),
        (["--ray", "--out", tmp_path / "r", "--every", "2"], "--every does not apply"),
        (["--ray"], "--ray needs --out"),
    ]
    for options, message in cases:
        result = run("predict", samples[0], *options)
        assert result.exit_code == EXIT_USAGE and message in result.stderr, (options, result)
    as_address = run("predict", samples[0], "--ray", samples[1], "--out", tmp_path / "r")
    assert as_address.exit_code == EXIT_USAGE and "not a Ray address" in as_address.stderr
    uri = run("predict", "s3://bucket/photos")
    assert uri.exit_code == EXIT_USAGE and "URIs are read on Ray only" in uri.stderr
    assert not (tmp_path / "r").exists()


def test_an_out_folder_with_files_is_refused_before_ray_starts(samples, tmp_path):
    out = tmp_path / "results"
    out.mkdir()
    (out / "earlier.parquet").write_bytes(b"a user's file")
    result = run("predict", samples[0], "--ray", "--out", out)
    assert result.exit_code == EXIT_USAGE and "already holds files" in result.stderr
    assert [p.name for p in out.iterdir()] == ["earlier.parquet"]
    assert (out / "earlier.parquet").read_bytes() == b"a user's file"


def test_without_ray_one_line_says_how_to_install_it(samples, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # as if it were not installed
    result = run("predict", samples[0], "--ray", "--out", tmp_path / "r")
    assert result.exit_code == EXIT_ERROR
    assert result.stderr == 'Error: running on Ray needs Ray Data: pip install "nsfw-mobile[ray]"\n'


def test_the_command_line_imports_no_ray_until_a_run_needs_it():
    code = "import sys, nsfw_mobile.cli; print([m for m in ('ray', 'pyarrow') if m in sys.modules])"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=ROOT, timeout=60)  # fmt: skip
    assert out.stdout.strip() == "[]"


def test_model_files_ship_a_tfjs_model_json_with_its_shards_only(tmp_path):
    folder = tmp_path / "tfjs"
    shutil.copytree(ROOT / "models" / "nsfw_tfjs_uint8", folder)
    (folder / "holiday.jpg").write_bytes(b"a user's photo beside the model")
    shipped = distributed.ModelFiles.read(folder / "model.json")
    shards = json.loads((folder / "model.json").read_text())["weightsManifest"][0]["paths"]
    assert set(shipped.files) == {"model.json", *shards}
    opened = shipped.unpack(tmp_path / "worker")
    assert opened == tmp_path / "worker" / "model.json"
    assert (opened.parent / shards[0]).read_bytes() == (folder / shards[0]).read_bytes()
    whole = distributed.ModelFiles.read(folder)  # a model folder travels whole
    assert "tfjs/holiday.jpg" in whole.files and whole.entry == "tfjs"


def test_model_files_refuse_a_shard_outside_the_model_folder(tmp_path):
    folder = tmp_path / "tfjs"
    folder.mkdir()
    (tmp_path / "secret.bin").write_bytes(b"x")
    document = {"weightsManifest": [{"paths": ["../secret.bin"], "weights": []}]}
    (folder / "model.json").write_text(json.dumps(document))
    with pytest.raises(ModelFileError, match="not in its folder"):
        distributed.ModelFiles.read(folder / "model.json")


def test_model_files_default_to_the_shipped_tflite_and_pretrained_stays_by_name():
    default = distributed.ModelFiles.read(None)
    assert default.entry == PRETRAINED_TFLITE.name
    assert default.files[PRETRAINED_TFLITE.name] == PRETRAINED_TFLITE.read_bytes()
    by_name = distributed.ModelFiles.read("pretrained")  # each worker resolves the name itself
    assert by_name.unpack(Path("unused")) == "nsfwjs-mobilenet-v2" and not by_name.files


def test_pool_size_is_one_actor_per_cpu_and_refuses_more():
    assert distributed.pool_size(2.0) == 2 and distributed.pool_size(16.0, 4) == 4
    assert distributed.reader_count(2) == 1 and distributed.reader_count(64) == 16
    with pytest.raises(Exception, match="choose at most 2"):
        distributed.pool_size(2.0, 3)


def test_the_verbose_plan_names_actors_cpus_batches_and_files():
    plan = distributed.Plan(8.0, 8, 1.0, 2, 32, 1000, 3, ())
    assert plan.describe() == (
        "plan: 8 actors x 1 CPU (cluster: 8 CPUs), single-threaded model per actor, batches "
        "of 32; 2 read tasks at a time (no CPU reserved); 1000 files to classify, 3 skipped"
    )
