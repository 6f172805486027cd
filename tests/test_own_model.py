"""Your own model, end to end: the scraper's folders, one contract in every artefact, and a
release that checks anywhere; models with other label sets predict, evaluate and validate."""

from __future__ import annotations

import csv
import json
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import SECOND_SEED, TINY_SIZE, set_batchnorm_statistics, synthetic_batch
from PIL import Image

from nsfw_mobile.cli import EXIT_ERROR, EXIT_VALIDATION_FAILED, main

SCRAPER_FOLDERS = ("drawings", "hentai", "neutral", "porn", "sexy")
# Which synthetic class (0 neutral-like, 1 porn-like, 2 sexy-like) fills each scraper folder.
LOOKS_LIKE = {"drawings": 0, "hentai": 1, "neutral": 0, "porn": 1, "sexy": 2}
ACME = ["--name", "acme", "--author", "Acme Inc.", "--license", "Apache-2.0"]
ACME += ["--model-version", "2.1"]


def run(*args, **kwargs):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False, **kwargs)


def _write_images(folder: Path, kind: int, count: int, seed: int) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    images, labels = synthetic_batch(count * 4, TINY_SIZE, seed)
    for index, image in enumerate(images[labels == kind][:count]):
        Image.fromarray(image).save(folder / f"{seed}_{index:03d}.png")


@pytest.fixture(scope="module")
def scraped(tmp_path_factory):
    """The nsfw_data_scraper layout: train/ and test/ with five folders each, one file in
    both splits and one corrupt file."""
    root = tmp_path_factory.mktemp("scraped")
    for split, count, seed in (("train", 24, 1), ("test", 8, 2)):
        for offset, folder in enumerate(SCRAPER_FOLDERS):
            _write_images(root / split / folder, LOOKS_LIKE[folder], count, seed * 10 + offset)
    twin = next((root / "train" / "neutral").iterdir())
    shutil.copy(twin, root / "test" / "neutral" / "copied_from_train.png")
    (root / "train" / "porn" / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really")
    return root


def train_acme(scraped: Path, out: Path, seed: int = 0):
    """Two epochs from random weights: a weakly trained user model, the hard case for the
    validator (its outputs move more at reduced precision than a well-trained model's)."""
    result = run(
        "train", scraped, "--out", out, "--merge", "drawings=neutral,hentai=porn",
        "--backbone", "none", "--alpha", "0.35", "--input-size", TINY_SIZE,
        "--optimizer", "adam", "--epochs", "2", "--batch-size", "16", "--seed", seed,
        "--json", *ACME,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    return out, result.stderr


def release_acme(model: Path, out: Path, validation_images, calibration_images):
    """A release of every format; exit 0 when every artefact passes its bounds."""
    return run(
        "release", model, "--out", out, "--images", validation_images,
        "--calibration", calibration_images, "--runs", "3", "--seconds", "0", *ACME,
    )  # fmt: skip


@pytest.fixture(scope="module")
def acme_run(scraped, tmp_path_factory):
    return train_acme(scraped, tmp_path_factory.mktemp("runs") / "acme")


@pytest.fixture(scope="module")
def validation_images(tmp_path_factory):
    """Images like the training data, near ties included: the validator must tell a faithful
    artefact's flip of a near tie from a real disagreement."""
    folder = tmp_path_factory.mktemp("acme_validation")
    for kind in range(3):
        _write_images(folder, kind, 10, 40 + kind)
    return folder


@pytest.fixture(scope="module")
def calibration_images(tmp_path_factory):
    """Other images like the training data, to calibrate the full-integer formats on."""
    folder = tmp_path_factory.mktemp("acme_calibration")
    for kind in range(3):
        _write_images(folder, kind, 8, 50 + kind)
    return folder


@pytest.fixture(scope="module")
def acme_release(acme_run, validation_images, calibration_images, tmp_path_factory):
    run_dir, _ = acme_run
    out = tmp_path_factory.mktemp("acme_release") / "release"
    result = release_acme(run_dir / "best.keras", out, validation_images, calibration_images)
    assert result.exit_code == 0, result.output
    return out


KNOWN_MISS_ON_AMD = pytest.mark.xfail(
    reason="issue 30, open: on AMD EPYC CPUs a faithful acme ONNX float16 file misses the "
    "emulation-based bound (measured 0.0244 > 0.0238) and OpenVINO's int8 top-1 on the shipped "
    "samples is 92.9-94.1% < 95%; the bounds are being re-derived on a population of models "
    "(work in progress), not loosened here",
    strict=False,
)


@pytest.mark.slow
@KNOWN_MISS_ON_AMD
def test_a_user_model_of_another_seed_releases_and_checks_anywhere(
    scraped, validation_images, calibration_images, tmp_path
):
    """acme_release's model trained from a second seed: every faithful artefact passes its
    bounds on the user's images and again, from another folder, on the shipped samples."""
    run_dir, _ = train_acme(scraped, tmp_path / "acme", seed=SECOND_SEED)
    out = tmp_path / "elsewhere" / "release"
    released = release_acme(run_dir / "best.keras", out, validation_images, calibration_images)
    assert released.exit_code == 0, released.output
    checked = run("release", "--check", out, "--reference", run_dir / "best.keras", "--json")
    assert checked.exit_code == 0, checked.output


@pytest.mark.slow
def test_train_on_the_scraper_layout_reports_duplicates_and_corrupt_files(acme_run, scraped):
    run_dir, log = acme_run
    assert "classes: Neutral, Porn, Sexy; NSFW: Porn, Sexy" in log
    assert "duplicate across splits (same SHA-256)" in log and "copied_from_train.png" in log
    assert "corrupt.jpg" in log
    from nsfw_mobile.models import load_source

    source = load_source(run_dir / "best.keras")
    contract = source.contract
    assert contract.labels == ("Neutral", "Porn", "Sexy")
    assert (contract.name, contract.author, contract.license, contract.version) == (
        "acme", "Acme Inc.", "Apache-2.0", "2.1",
    )  # fmt: skip
    assert "NSFWJS" not in json.dumps(contract.to_properties())


def test_five_classes_as_they_are(scraped):
    from nsfw_mobile.data import scan

    dataset = scan(scraped)
    assert dataset.class_names == ("Drawing", "Hentai", "Neutral", "Porn", "Sexy")
    from nsfw_mobile.metadata import nsfw_labels_by_name

    assert nsfw_labels_by_name(dataset.class_names) == ("Hentai", "Porn", "Sexy")


@pytest.mark.slow
def test_release_carries_exactly_the_users_contract(acme_release):
    import coremltools as ct

    from nsfw_mobile.export.tfjs import nsfwjs_note

    names = sorted(p.name for p in acme_release.iterdir())
    assert "acme.mlmodel" in names and "acme_int8.tflite" in names and "acme.mlpackage" in names
    assert not any(n.startswith(("NSFW", "nsfw")) for n in names)
    # The one NSFWJS mention allowed is the TF.js export's note that the nsfwjs library
    # cannot name these labels; nothing of the pretrained model's provenance.
    compatibility_note = nsfwjs_note(("Neutral", "Porn", "Sexy")).encode()
    for path in acme_release.iterdir():
        files = path.rglob("*") if path.is_dir() else [path]
        for file in files:
            if file.is_file():
                content = file.read_bytes().replace(compatibility_note, b"")
                assert b"NSFWJS" not in content, f"{file} mentions NSFWJS"
    for name in ("acme.mlmodel", "acme.mlpackage"):
        spec = ct.utils.load_spec(str(acme_release / name))
        meta = spec.description.metadata
        assert (meta.author, meta.license, meta.versionString) == ("Acme Inc.", "Apache-2.0", "2.1")
        assert meta.userDefined["name"] == "acme"
        assert json.loads(meta.userDefined["nsfw_labels"]) == ["Porn", "Sexy"]
    card = (acme_release / "MODEL_CARD.md").read_text()
    assert "Acme Inc." in card and "Apache-2.0" in card and "nsfw_score = P(Porn) + P(Sexy)" in card
    assert "Not stated by the model's author" in card  # no inherited known limits
    inspected = run("inspect", acme_release / "acme_int8.tflite", "--json")
    metadata = json.loads(inspected.stdout)["metadata"]
    assert (metadata["name"], metadata["author"], metadata["license"], metadata["version"]) == (
        "acme", "Acme Inc.", "Apache-2.0", "2.1",
    )  # fmt: skip
    assert json.loads(metadata["nsfw_labels"]) == ["Porn", "Sexy"]


@pytest.mark.slow
def test_release_ships_validated_onnx_with_the_users_contract(acme_release):
    """ONNX and ORT files are in the manifest (validated, benchmarked on ONNX Runtime), the
    model card and the files' own metadata; release --check covers them (the test below)."""
    import onnxruntime as ort

    manifest = json.loads((acme_release / "manifest.json").read_text())
    by_format = {entry["format"]: entry for entry in manifest["files"]}
    card = (acme_release / "MODEL_CARD.md").read_text()
    for key, name in (("onnx-float32", "acme_float32.onnx"), ("onnx-float16", "acme_float16.onnx"),
                      ("onnx-int8", "acme_int8.onnx"), ("ort-int8", "acme_int8.ort")):  # fmt: skip
        entry = by_format[key]
        assert entry["file"] == name and entry["releasable"], entry
        assert entry["validation"]["status"] == "pass" and entry["latency"]["threads_1"]
        assert f"| `{name}` |" in card
        meta = ort.InferenceSession(str(acme_release / name)).get_modelmeta().custom_metadata_map
        assert (meta["name"], meta["author"], meta["license"]) == ("acme", "Acme Inc.",
                                                                  "Apache-2.0")  # fmt: skip
        assert json.loads(meta["nsfw_labels"]) == ["Porn", "Sexy"]
    assert "onnxruntime" in (acme_release / "REPORT.md").read_text()


@pytest.mark.slow
def test_mediapipe_reads_the_labels_of_a_users_tflite(acme_release, validation_images):
    mediapipe = pytest.importorskip("mediapipe")
    from mediapipe.tasks.python import vision
    from mediapipe.tasks.python.core.base_options import BaseOptions

    options = vision.ImageClassifierOptions(
        base_options=BaseOptions(model_asset_path=str(acme_release / "acme_int8.tflite")),
        max_results=3,
    )
    image = np.asarray(Image.open(next(validation_images.iterdir())).convert("RGB"))
    with vision.ImageClassifier.create_from_options(options) as classifier:
        result = classifier.classify(mediapipe.Image(mediapipe.ImageFormat.SRGB, image))
    names = {c.category_name for c in result.classifications[0].categories}
    assert names == {"Neutral", "Porn", "Sexy"}


@pytest.mark.slow
@KNOWN_MISS_ON_AMD
def test_release_checks_from_another_machine_and_directory(
    acme_release, acme_run, validation_images, tmp_path, monkeypatch, tiny_model_path
):
    copy = tmp_path / "elsewhere" / "release"
    shutil.copytree(acme_release, copy)
    third = tmp_path / "third"
    third.mkdir()
    monkeypatch.chdir(third)
    reference = acme_run[0] / "best.keras"
    checked = ("release", "--check", copy, "--reference", reference)
    passed = run(*checked, "--images", validation_images)
    assert passed.exit_code == 0, passed.output
    assert "the same images the release was validated on" in passed.stderr
    # The shipped samples are nothing like this model's training data: near ties abound,
    # and a faithful release still passes there.
    other_images = run(*checked, "--json")
    assert other_images.exit_code == 0, other_images.output
    (note,) = json.loads(other_images.stdout)["notes"]  # with --json, in the document
    assert "the release was validated on 30 user images, 0 of them among these" in note
    assert other_images.stderr == ""
    no_reference = run("release", "--check", copy)
    assert no_reference.exit_code == 2 and "pass it with --reference" in no_reference.stderr
    wrong = run("release", "--check", copy, "--reference", tiny_model_path)
    assert wrong.exit_code == EXIT_ERROR
    manifest = json.loads((copy / "manifest.json").read_text())
    assert manifest["source"]["sha256"] in wrong.stderr
    from nsfw_mobile.files import sha256_file

    assert sha256_file(tiny_model_path) in wrong.stderr
    tampered = copy / "acme_float16.tflite"
    data = bytearray(tampered.read_bytes())
    data[len(data) // 2] ^= 0xFF
    tampered.write_bytes(bytes(data))
    failed = run(*checked, "--images", validation_images)
    assert failed.exit_code == EXIT_VALIDATION_FAILED
    assert "FAIL acme_float16.tflite: SHA-256" in failed.stderr


@pytest.mark.parametrize("bad_name", ["../outside.tflite", "/etc/passwd"])
@pytest.mark.slow
def test_a_manifest_path_that_leaves_the_folder_is_refused(acme_release, tmp_path, bad_name):
    copy = tmp_path / "release"
    shutil.copytree(acme_release, copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["files"][0]["file"] = bad_name
    (copy / "manifest.json").write_text(json.dumps(manifest))
    for args in (
        ("release", "--check", copy),
        ("predict", copy / "MODEL_CARD.md", "--model", copy),
    ):
        result = run(*args)
        assert result.exit_code == EXIT_ERROR, result.output
        assert "refused" in result.stderr or "not relative" in result.stderr


@pytest.fixture(scope="module")
def layer_norm_model(tmp_path_factory):
    """A small model with LayerNormalization: it converts to every format, but the ML Program
    executor lacks the `square` op it becomes, so each .mlpackage raises inside validation."""
    import keras

    keras.utils.set_random_seed(5)
    inputs = keras.Input((TINY_SIZE, TINY_SIZE, 3), name="image")
    x = keras.layers.Conv2D(8, 3, strides=4, activation="relu")(inputs)
    x = keras.layers.LayerNormalization()(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    outputs = keras.layers.Dense(3, activation="softmax", name="probabilities")(x)
    path = tmp_path_factory.mktemp("layer_norm") / "layer_norm.keras"
    keras.Model(inputs, outputs).save(path)
    return path


@pytest.mark.slow
def test_a_candidate_that_raises_is_an_error_and_the_others_are_validated(
    layer_norm_model, tiny_images_dir, tmp_path
):
    dist = tmp_path / "dist"
    converted = run("convert", layer_norm_model, "--to", "mlpackage", "--to", "tflite-float32",
                    "--out", dist)  # fmt: skip
    assert converted.exit_code == 0, converted.output
    garbage = dist / "garbage.tflite"
    garbage.write_bytes(b"TFL3" + bytes(64))
    result = run(
        "validate", dist / "NSFW.mlpackage", garbage, dist / "nsfw_float32.tflite",
        "--reference", layer_norm_model, "--images", tiny_images_dir, "--json",
    )  # fmt: skip
    assert result.exit_code == EXIT_VALIDATION_FAILED
    statuses = [c["status"] for c in json.loads(result.stdout)["candidates"]]
    assert statuses == ["error", "error", "pass"]
    failures = [c["failures"] for c in json.loads(result.stdout)["candidates"]]
    assert "'square'" in failures[0][0] and "not a loadable TFLite model" in failures[1][0]


@pytest.mark.slow
def test_release_with_a_broken_artefact_writes_its_manifest_and_exits_4(
    layer_norm_model, tiny_images_dir, tmp_path
):
    out = tmp_path / "release"
    result = run(
        "release", layer_norm_model, "--out", out, "--images", tiny_images_dir,
        "--runs", "2", "--seconds", "0",
    )  # fmt: skip
    assert result.exit_code == EXIT_VALIDATION_FAILED, result.output
    manifest = json.loads((out / "manifest.json").read_text())
    by_format = {f["format"]: f for f in manifest["files"]}
    for key in ("mlpackage", "mlpackage-float32", "mlpackage-int8"):
        assert by_format[key]["validation"]["status"] == "error"
        assert "'square'" in by_format[key]["validation"]["failures"][0]
        assert by_format[key]["releasable"] is False
    for key in ("mlmodel", "tflite-float32"):  # validated although others raised
        assert by_format[key]["validation"]["status"] == "pass"
        assert by_format[key]["releasable"] is True
    assert manifest["passed"] is False and (out / "MODEL_CARD.md").is_file()


# ------------------------------------------------------------------ other label sets


@pytest.fixture(scope="module")
def safe_unsafe_model(tmp_path_factory):
    """A 2-class model (safe, unsafe) whose contract names `unsafe` as its NSFW label."""
    import keras

    from nsfw_mobile.metadata import ModelContract, write_keras_contract
    from nsfw_mobile.models import build_classifier

    keras.utils.set_random_seed(3)
    model = build_classifier(alpha=0.35, input_size=TINY_SIZE, weights=None, classes=2)
    images, labels = synthetic_batch(96, TINY_SIZE, seed=3)
    binary = (labels > 0).astype(np.int64)
    set_batchnorm_statistics(model, images)
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy")
    model.fit(images / 255.0, binary, batch_size=32, epochs=10, verbose=0)
    set_batchnorm_statistics(model, images)
    path = tmp_path_factory.mktemp("two_class") / "guard.keras"
    model.save(path)
    contract = ModelContract(("safe", "unsafe"), ("unsafe",), (TINY_SIZE, TINY_SIZE), name="guard")
    write_keras_contract(path, contract)
    data = tmp_path_factory.mktemp("two_class_data")
    for index, (image, label) in enumerate(zip(images[:40], binary[:40])):
        folder = data / ("unsafe" if label else "safe")
        folder.mkdir(exist_ok=True)
        Image.fromarray(image).save(folder / f"{index:02d}.png")
    return path, data


@pytest.mark.slow
def test_two_class_model_predicts_evaluates_and_validates(safe_unsafe_model, tmp_path):
    model, data = safe_unsafe_model
    predicted = run("predict", data, "--model", model, "--json", "--threshold", "0.5")
    assert predicted.exit_code == 0, predicted.output
    lines = [json.loads(line) for line in predicted.stdout.splitlines()]
    assert all(set(line["probabilities"]) == {"safe", "unsafe"} for line in lines)
    assert all(line["nsfw_score"] == line["probabilities"]["unsafe"] for line in lines)
    assert len({round(line["nsfw_score"], 3) for line in lines}) > 5  # it varies by image
    csv_path = tmp_path / "predictions.csv"
    evaluated = run("evaluate", model, data, "--json", "--predictions", csv_path)
    assert evaluated.exit_code == 0, evaluated.output
    report = json.loads(evaluated.stdout)
    assert report["nsfw_labels"] == ["unsafe"] and report["roc_auc"] > 0.5
    rows = list(csv.DictReader(csv_path.open()))
    assert len(rows) == 40 and set(rows[0]) == {
        "path", "true_label", "predicted_label", "p_safe", "p_unsafe", "nsfw_score",
    }  # fmt: skip
    assert float(rows[0]["nsfw_score"]) == pytest.approx(float(rows[0]["p_unsafe"]))
    converted = run("convert", model, "--to", "tflite-float32", "--out", tmp_path / "dist")
    assert converted.exit_code == 0, converted.output
    validated = run(
        "validate", tmp_path / "dist" / "nsfw_float32.tflite", "--reference", model,
        "--images", data,
    )  # fmt: skip
    assert validated.exit_code == 0, validated.output


@pytest.mark.slow
def test_a_model_without_nsfw_labels_still_predicts(safe_unsafe_model, tmp_path):
    from nsfw_mobile.metadata import ModelContract, write_keras_contract

    model, data = safe_unsafe_model
    plain = tmp_path / "plain.keras"
    with zipfile.ZipFile(model) as source, zipfile.ZipFile(plain, "w") as target:
        for item in source.namelist():
            if item != "nsfw_mobile.json":
                target.writestr(item, source.read(item))
    write_keras_contract(plain, ModelContract(("cats", "dogs"), (), (TINY_SIZE, TINY_SIZE)))
    result = run("predict", data, "--model", plain, "--json", "--threshold", "0.5")
    assert result.exit_code == 0, result.output
    assert "names no NSFW labels" in result.stderr and "Traceback" not in result.output
    first = json.loads(result.stdout.splitlines()[0])
    assert first["nsfw_score"] is None and first["flagged"] is False


@pytest.mark.slow
def test_evaluate_five_classes_counts_hentai_as_nsfw(tmp_path, samples):
    from nsfw_mobile.metadata import write_keras_contract
    from nsfw_mobile.models import pretrained, pretrained_contract

    path = tmp_path / "five.keras"
    pretrained(classes=5).save(path)
    write_keras_contract(path, pretrained_contract(5))
    for index, sample in enumerate(samples[:15]):
        folder = tmp_path / "data" / SCRAPER_FOLDERS[index % 5]
        folder.mkdir(parents=True, exist_ok=True)
        shutil.copy(sample, folder / sample.name)
    result = run("evaluate", path, tmp_path / "data", "--json", "--predictions", tmp_path / "p.csv")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["nsfw_labels"] == ["Hentai", "Porn", "Sexy"]
    rows = list(csv.DictReader((tmp_path / "p.csv").open()))
    positive = np.array([r["true_label"] in ("Hentai", "Porn", "Sexy") for r in rows])
    scores = np.array([float(r["nsfw_score"]) for r in rows])
    for row in rows:
        expected = sum(float(row[f"p_{n}"]) for n in ("Hentai", "Porn", "Sexy"))
        assert float(row["nsfw_score"]) == pytest.approx(expected, abs=1e-5)
    from nsfw_mobile.evaluate import roc_curve

    fpr, tpr, _ = roc_curve(positive, scores)
    assert report["roc_auc"] == pytest.approx(
        float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2))
    )
    assert positive.sum() == 9  # Hentai, Porn and Sexy folders: 3 images each
    predicted = run("predict", samples[0], "--model", path, "--json")
    (line,) = [json.loads(text) for text in predicted.stdout.splitlines()]
    assert set(line["probabilities"]) == {"Drawing", "Hentai", "Neutral", "Porn", "Sexy"}
    nsfw = sum(line["probabilities"][n] for n in ("Hentai", "Porn", "Sexy"))
    assert line["nsfw_score"] == pytest.approx(nsfw, abs=2e-6)
    converted = run("convert", path, "--to", "tflite-float32", "--out", tmp_path / "dist")
    assert converted.exit_code == 0, converted.output
    candidate = tmp_path / "dist" / "nsfw_float32.tflite"
    validated = run("validate", candidate, "--reference", path, "--json")
    assert validated.exit_code == 0, validated.output
    assert json.loads(validated.stdout)["candidates"][0]["status"] == "pass"
