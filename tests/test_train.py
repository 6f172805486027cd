"""train and evaluate on a learnable synthetic dataset written as real image files."""

from __future__ import annotations

import csv
import json
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import synthetic_batch
from PIL import Image

from nsfw_mobile.cli import EXIT_USAGE, main
from nsfw_mobile.data import class_weights, parse_merge, scan
from nsfw_mobile.errors import UsageError
from nsfw_mobile.labels import LABELS

SIZE = 96
TRAIN_ARGS = [
    "--backbone",
    "none",
    "--alpha",
    "0.35",
    "--input-size",
    str(SIZE),
    "--optimizer",
    "adam",
    "--lr",
    "0.001",
    "--batch-size",
    "32",
]
CORRUPT = ["porn/broken.jpg", "sexy/empty.png", "neutral/truncated.jpg"]


@pytest.fixture(scope="module")
def dataset_dir(tmp_path_factory):
    """Three classes with different colour and texture statistics, 300 JPEG/PNG files
    of 96x96, and three corrupt files."""
    root = tmp_path_factory.mktemp("synthetic_data")
    images, labels = synthetic_batch(300, SIZE, seed=11)
    names = ["neutral", "porn", "sexy"]
    for index, (image, label) in enumerate(zip(images, labels)):
        folder = root / names[label]
        folder.mkdir(exist_ok=True)
        suffix = ".jpg" if index % 2 else ".png"
        Image.fromarray(image).save(folder / f"{index:03d}{suffix}")
    (root / CORRUPT[0]).write_text("not an image")
    (root / CORRUPT[1]).write_bytes(b"")
    good = (root / "neutral").glob("*.jpg").__next__().read_bytes()
    (root / CORRUPT[2]).write_bytes(good[: len(good) // 3])
    return root


@pytest.fixture(scope="module")
def trained_run(dataset_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "first"
    result = CliRunner().invoke(
        main, ["train", str(dataset_dir), "--out", str(out), *TRAIN_ARGS, "--epochs", "8", "--json"]
    )
    assert result.exit_code == 0, result.output
    return out, json.loads(result.stdout), result.stderr


@pytest.mark.slow
def test_train_reaches_90_percent_and_skips_corrupt_files(trained_run):
    out, summary, log = trained_run
    print(
        f"\nbest validation accuracy {summary['best_val_accuracy']:.3f} in {summary['seconds']} s"
    )
    assert summary["best_val_accuracy"] >= 0.90
    for name in CORRUPT:
        assert any(name in line for line in summary["corrupt_files"]), name
        assert name.split("/")[1] in (out / "corrupt.txt").read_text()
        assert "skipped unreadable file" in log
    for name in (
        "best.keras",
        "last.keras",
        "labels.txt",
        "metrics.csv",
        "curves.png",
        "state.json",
    ):
        assert (out / name).is_file(), name
    assert (out / "tensorboard").is_dir()
    assert (out / "labels.txt").read_text().split() == ["Neutral", "Porn", "Sexy"]
    assert "training images per class" in log and "class weights" in log
    assert epochs_in_csv(out) == list(range(8))


def epochs_in_csv(run_dir) -> list[int]:
    with open(run_dir / "metrics.csv", newline="") as handle:
        return [int(row["epoch"]) for row in csv.DictReader(handle)]


@pytest.mark.slow
def test_evaluate_matches_keras_evaluate(trained_run, dataset_dir, tmp_path):
    import keras

    from nsfw_mobile.evaluate import evaluate, write_reports
    from nsfw_mobile.images import load_images

    out, _, _ = trained_run
    report = evaluate(out / "best.keras", dataset_dir)
    assert report.images == 300 and len(report.unreadable) == 3
    model = keras.models.load_model(out / "best.keras")
    model.compile(loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    scanned = scan(dataset_dir, val_split=0.5)
    paths = scanned.train.paths + scanned.val.paths
    labels = dict(zip(map(str, paths), np.concatenate([scanned.train.labels, scanned.val.labels])))
    batch = load_images(paths, SIZE)
    truth = np.asarray([labels[str(p)] for p in batch.paths])
    _, keras_accuracy = model.evaluate(batch.pixels / np.float32(255), truth, verbose=0)
    print(f"\nevaluate accuracy {report.accuracy:.4f}, keras evaluate {keras_accuracy:.4f}")
    assert report.accuracy == pytest.approx(keras_accuracy, abs=1e-6)
    assert sum(map(sum, report.confusion)) == 300
    assert report.roc_auc is not None and 0.5 < report.roc_auc <= 1.0
    assert [row.max_false_positive_rate for row in report.thresholds] == [0.01, 0.05, 0.10]
    for row in report.thresholds:
        assert row.false_positive_rate <= row.max_false_positive_rate + 1e-9
    written = {p.name for p in write_reports(report, tmp_path / "eval")}
    assert written == {"report.md", "report.json", "confusion.png", "roc.png", "pr.png"}


@pytest.mark.slow
def test_evaluate_cli_on_a_tflite_model(trained_run, dataset_dir, tmp_path):
    out, _, _ = trained_run
    runner = CliRunner()
    converted = runner.invoke(
        main,
        ["convert", str(out / "best.keras"), "--to", "tflite", "--out", str(tmp_path / "dist")],
    )
    assert converted.exit_code == 0, converted.output
    result = runner.invoke(
        main,
        ["evaluate", str(tmp_path / "dist" / "nsfw_float32.tflite"), str(dataset_dir), "--json"],
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["accuracy"] >= 0.85


@pytest.mark.slow
def test_resume_after_kill_continues_without_gaps(dataset_dir, tmp_path):
    out = tmp_path / "run"
    command = [
        sys.executable,
        "-m",
        "nsfw_mobile.cli",
        "train",
        str(dataset_dir),
        "--out",
        str(out),
        *TRAIN_ARGS,
        "--epochs",
        "4",
        "--steps-per-epoch",  # short epochs: the test is about the state, not the accuracy
        "3",
    ]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline and process.poll() is None:
        state = out / "state.json"
        if state.is_file() and json.loads(state.read_text())["epochs_done"] >= 2:
            process.send_signal(signal.SIGKILL)
            break
        time.sleep(0.05)
    process.wait()
    done_before = json.loads((out / "state.json").read_text())["epochs_done"]
    assert 2 <= done_before < 4, "the run was not killed in the middle"

    again = CliRunner().invoke(
        main, ["train", str(dataset_dir), "--out", str(out), *TRAIN_ARGS, "--epochs", "4"]
    )
    assert again.exit_code == EXIT_USAGE and "--resume" in again.stderr
    result = CliRunner().invoke(
        main, ["train", str(dataset_dir), "--out", str(out), "--resume", "--json"]
    )
    assert result.exit_code == 0, result.output
    assert f"resuming after epoch {done_before} of 4" in result.stderr
    assert json.loads(result.stdout)["epochs_run"] == 4
    assert epochs_in_csv(out) == [0, 1, 2, 3]


def test_dataset_layout_errors(tmp_path):
    for name in ("neutral", "porn"):
        (tmp_path / name).mkdir()
    with pytest.raises(UsageError, match="no folder for class Sexy"):
        scan(tmp_path, class_names=LABELS)
    (tmp_path / "Sexy").mkdir()
    (tmp_path / "drawings").mkdir()
    with pytest.raises(UsageError, match="'drawings' is not a class.*--merge drawings=CLASS"):
        scan(tmp_path, class_names=LABELS)
    with pytest.raises(UsageError, match="--merge names paintings, which"):
        scan(tmp_path, merge={"paintings": "neutral"})
    with pytest.raises(UsageError, match="--merge 'drawings'"):
        parse_merge("drawings")


def test_classes_come_from_the_folders(tmp_path):
    for name in ("drawings", "neutral", "Porn", "sexy"):
        (tmp_path / name).mkdir()
        Image.new("RGB", (8, 8)).save(tmp_path / name / "a.png")
    assert scan(tmp_path).class_names == ("Drawing", "Neutral", "Porn", "Sexy")
    merged = scan(tmp_path, merge=parse_merge("drawings=neutral"))
    assert merged.class_names == LABELS
    assert len(merged.train.paths) + len(merged.val.paths) == 4
    neutral = [p.parent.name for p, y in zip(merged.train.paths + merged.val.paths,
               list(merged.train.labels) + list(merged.val.labels)) if y == 0]  # fmt: skip
    assert sorted(neutral) == ["drawings", "neutral"]


def test_train_and_test_folders(tmp_path):
    for split in ("train", "test"):
        for name in ("neutral", "porn", "sexy"):
            folder = tmp_path / split / name
            folder.mkdir(parents=True)
            Image.new("RGB", (8, 8)).save(folder / "a.png")
    dataset = scan(tmp_path)
    assert dataset.val_source == "test/ folder" and len(dataset.val.paths) == 3
    with pytest.raises(UsageError, match="drop --val-split"):
        scan(tmp_path, val_split=0.1)


def test_class_weights_are_inverse_frequency():
    weights = class_weights(np.array([0, 0, 0, 1, 2, 2]), 3)
    assert weights == pytest.approx({0: 6 / 9, 1: 2.0, 2: 1.0})


def test_option_checks(dataset_dir, tmp_path):
    runner = CliRunner()
    result = runner.invoke(
        main,
        [
            "train",
            str(dataset_dir),
            "--out",
            str(tmp_path / "r"),
            "--backbone",
            "nsfw",
            "--alpha",
            "0.35",
        ],
    )
    assert result.exit_code == EXIT_USAGE and "alpha 1.0" in result.stderr
    result = runner.invoke(
        main,
        ["train", str(dataset_dir), "--out", str(tmp_path / "r"), "--augment", "rotation,wobble"],
    )
    assert result.exit_code == EXIT_USAGE and "wobble" in result.stderr
    result = runner.invoke(
        main, ["train", str(dataset_dir), "--out", str(tmp_path / "r"), "--fine-tune", "20"]
    )
    assert result.exit_code == EXIT_USAGE and "--fine-tune-epochs" in result.stderr
    assert not (tmp_path / "r").exists()


def test_nsfw_backbone_copies_the_pretrained_weights(pretrained3):
    from nsfw_mobile.train import TrainConfig, _backbone, build_model

    config = TrainConfig(data_dir="", out="", backbone="nsfw", input_size=96, labels=LABELS)
    model = build_model(config)
    ours = _backbone(model).get_layer("block_16_project").get_weights()[0]
    theirs = pretrained3.get_layer("block_16_project").get_weights()[0]
    np.testing.assert_array_equal(ours, theirs)


def test_fine_tune_phase_unfreezes_top_layers_but_not_batchnorm():
    import keras

    from nsfw_mobile.train import TrainConfig, _backbone, build_model, set_phase

    config = TrainConfig(
        data_dir="",
        out="",
        backbone="nsfw",
        input_size=96,
        fine_tune_layers=20,
        fine_tune_epochs=1,
        labels=LABELS,
    )
    model = build_model(config)
    backbone = _backbone(model)
    set_phase(model, config, 1)
    assert not backbone.trainable and not backbone.trainable_weights
    set_phase(model, config, 2)
    top = backbone.layers[-20:]
    assert all(not layer.trainable for layer in backbone.layers[:-20] if layer.weights)
    assert any(layer.trainable for layer in top if layer.weights)
    assert all(
        not layer.trainable for layer in top if isinstance(layer, keras.layers.BatchNormalization)
    )


@pytest.mark.slow
def test_seed_makes_cpu_runs_repeatable(dataset_dir, tmp_path):
    rows = []
    for name in ("a", "b"):
        result = CliRunner().invoke(
            main,
            [
                "train",
                str(dataset_dir),
                "--out",
                str(tmp_path / name),
                *TRAIN_ARGS,
                "--epochs",
                "2",
                "--steps-per-epoch",
                "2",
                "--seed",
                "7",
            ],
        )
        assert result.exit_code == 0, result.output
        rows.append((tmp_path / name / "metrics.csv").read_text())
    assert rows[0] == rows[1]


@pytest.mark.slow
def test_two_phases_with_the_nsfw_backbone(dataset_dir, tmp_path):
    out = tmp_path / "run"
    result = CliRunner().invoke(
        main,
        [
            "train",
            str(dataset_dir),
            "--out",
            str(out),
            "--backbone",
            "nsfw",
            "--input-size",
            str(SIZE),
            "--epochs",
            "1",
            "--fine-tune",
            "10",
            "--fine-tune-epochs",
            "1",
            "--steps-per-epoch",
            "2",
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "fine-tuning the top 10 backbone layers" in result.stderr
    state = json.loads((out / "state.json").read_text())
    assert state["phase"] == 2 and state["phase2_end"] == 2 and state["epochs_done"] == 2
    assert epochs_in_csv(out) == [0, 1]


@pytest.mark.slow
def test_train_fails_before_decoding_and_leaves_the_process_alone(dataset_dir, tmp_path):
    import random

    import keras
    from tensorflow.python.framework import config as tf_config

    from nsfw_mobile.train import TrainConfig, train

    bad = tmp_path / "backbone.weights.h5"
    bad.write_bytes(b"not a weights file")
    lines = []
    common = dict(data_dir=str(dataset_dir), alpha=0.35, input_size=SIZE, epochs=1)
    with pytest.raises(UsageError, match="cannot load these weights"):
        train(TrainConfig(out=str(tmp_path / "bad"), backbone=str(bad), **common), log=lines.append)
    assert lines and not any("decoding" in line for line in lines)  # failed before decoding
    random.seed(123)
    np.random.seed(123)
    python_state, numpy_state = random.getstate(), np.random.get_state()
    policy = keras.mixed_precision.global_policy().name
    assert not tf_config.is_op_determinism_enabled()
    config = TrainConfig(out=str(tmp_path / "r"), backbone="none", steps_per_epoch=1, **common)
    train(config, log=lines.append)
    assert any("decoding" in line for line in lines)
    assert random.getstate() == python_state
    assert all(np.array_equal(a, b) for a, b in zip(np.random.get_state(), numpy_state))
    assert keras.mixed_precision.global_policy().name == policy
    assert not tf_config.is_op_determinism_enabled()


@pytest.mark.slow
def test_no_backbone_trains_every_layer_batchnorm_included_from_the_first_epoch(
    dataset_dir, tmp_path
):
    """--backbone none: nothing is frozen in phase 1; every backbone weight moves in one short
    epoch (kernels, BatchNorm scale and offset, and its moving statistics)."""
    import keras

    from nsfw_mobile.models import load_keras_model
    from nsfw_mobile.train import TrainConfig, _backbone, build_model

    out = tmp_path / "scratch"
    args = [*TRAIN_ARGS, "--epochs", "1", "--steps-per-epoch", "3", "--augment", "none"]
    result = CliRunner().invoke(main, ["train", str(dataset_dir), "--out", str(out), *args])
    assert result.exit_code == 0, result.output
    keras.utils.set_random_seed(0)  # train's default --seed: the same initial weights
    config = TrainConfig(data_dir="", out="", alpha=0.35, input_size=SIZE, backbone="none",
                         labels=LABELS)  # fmt: skip
    initial = _backbone(build_model(config))
    trained = _backbone(load_keras_model(out / "last.keras"))
    unchanged = [
        variable.path
        for before, after in zip(initial.layers, trained.layers)
        for variable, start in zip(after.weights, before.get_weights())
        if np.allclose(variable.numpy(), start)
    ]
    assert not unchanged, f"{len(unchanged)} backbone weights never moved: {unchanged[:5]}"
