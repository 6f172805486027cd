"""Photos as phones save them (HEIC, AVIF), folder walking, and predict's moderation gates."""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import tracemalloc

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from nsfw_mobile.cli import EXIT_FLAGGED, EXIT_UNREADABLE, EXIT_USAGE, main
from nsfw_mobile.images import decode_image, to_rgb, walk_inputs

ORIENTATION = 0x0112


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def _two_colour_picture() -> Image.Image:
    """Left half red, right half blue: which way up it is shows in the decoded pixels."""
    pixels = np.zeros((60, 120, 3), np.uint8)
    pixels[:, :60] = (230, 20, 20)
    pixels[:, 60:] = (20, 20, 230)
    return Image.fromarray(pixels)


def _exif(orientation: int) -> bytes:
    exif = Image.Exif()
    exif[ORIENTATION] = orientation
    return exif.tobytes()


@pytest.fixture(scope="module")
def phone_photos(tmp_path_factory):
    """The same picture as JPEG, HEIC and AVIF, each tagged 'rotate 90 clockwise to view'."""
    pillow_heif = pytest.importorskip("pillow_heif")
    folder = tmp_path_factory.mktemp("phone")
    picture = _two_colour_picture()
    picture.save(folder / "photo.jpg", quality=95, exif=_exif(6))
    pillow_heif.from_pillow(picture).save(folder / "photo.heic", quality=95, exif=_exif(6))
    picture.save(folder / "photo.avif", quality=95, exif=_exif(6))
    return folder


@pytest.mark.parametrize("name", ["photo.heic", "photo.avif"])
def test_heic_and_avif_decode_upright_like_jpeg(phone_photos, name):
    reference = decode_image(phone_photos / "photo.jpg", 32).astype(int)
    decoded = decode_image(phone_photos / name, 32).astype(int)
    # Rotated upright, the red half is on top: a wrong orientation swaps or mirrors it.
    assert decoded[:12, :, 0].mean() > 180 and decoded[-12:, :, 2].mean() > 180
    assert np.abs(decoded - reference).mean() < 6


def test_heic_is_read_without_registering_a_pillow_plugin(phone_photos):
    decode_image(phone_photos / "photo.heic", 32)
    with pytest.raises(Exception, match="cannot identify"):
        Image.open(phone_photos / "photo.heic")  # the caller's Pillow is as it was


def test_predict_reads_phone_formats_and_reports_unsupported_files(phone_photos, tmp_path):
    folder = tmp_path / "camera_roll"
    shutil.copytree(phone_photos, folder)
    (folder / "notes.txt").write_text("not a photo")
    result = run("predict", folder, "--model", "models/nsfw_int8.tflite", "--json")
    assert result.exit_code == 0, result.output
    lines = {os.path.basename(d["path"]): d for d in map(json.loads, result.stdout.splitlines())}
    assert {"photo.jpg", "photo.heic", "photo.avif", "notes.txt"} == set(lines)
    assert all("label" in lines[n] for n in ("photo.jpg", "photo.heic", "photo.avif"))
    assert lines["notes.txt"]["kind"] == "unsupported_type" and "skipped" in lines["notes.txt"]
    assert "; 1 skipped;" in result.stderr.splitlines()[-1]
    named = run("predict", folder / "notes.txt", "--model", "models/nsfw_int8.tflite", "--json")
    assert named.exit_code == EXIT_UNREADABLE  # named explicitly: decoded, and it fails
    assert json.loads(named.stdout)["kind"] == "not_an_image"


def test_folder_walking_dedupes_follows_links_once_and_skips_hidden(tmp_path, samples):
    root = tmp_path / "photos"
    (root / "album").mkdir(parents=True)
    shutil.copy(samples[0], root / "album" / "a.jpg")
    shutil.copy(samples[1], root / ".hidden.jpg")
    shutil.copy(samples[1], root / "._a.jpg")  # macOS AppleDouble
    (root / ".thumbnails").mkdir()
    shutil.copy(samples[2], root / ".thumbnails" / "t.jpg")
    (root / "album" / "loop").symlink_to(root, target_is_directory=True)  # a cycle
    outside = tmp_path / "outside"
    outside.mkdir()
    shutil.copy(samples[3], outside / "b.png")
    (root / "linked").symlink_to(outside, target_is_directory=True)
    found = walk_inputs([root, root / "album" / "a.jpg", root])
    names = sorted(p.name for p in found.images)
    assert names == ["a.jpg", "b.png"], found.images
    result = run("predict", root, root / "album" / "a.jpg", "--model", "models/nsfw_int8.tflite",
                 "--json")  # fmt: skip
    assert result.exit_code == 0, result.output
    assert len(result.stdout.splitlines()) == 2


def test_sixteen_bit_images_never_make_a_float64_copy():
    values = (np.arange(2000 * 2000, dtype=np.uint32) % 65536).astype(np.uint16)
    image = Image.fromarray(values.reshape(2000, 2000))
    assert image.mode == "I;16"
    tracemalloc.start()
    try:
        rgb = to_rgb(image)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 6 * 2000 * 2000, f"peak {peak / 1e6:.0f} MB: a float64 copy would be 32 MB"
    expected = np.clip(np.rint(values[:10].astype(np.float64) / 257), 0, 255)
    assert np.array_equal(np.asarray(rgb)[0, :10, 0], expected.astype(np.uint8))


def test_gates_exit_code_csv_and_summary(tmp_path, samples):
    flagged_one = next(s for s in samples if s.name == "microaneurysms.tif")
    folder = tmp_path / "uploads"
    folder.mkdir()
    for sample in (flagged_one, samples[0], samples[1]):
        shutil.copy(sample, folder / sample.name)
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff garbage")
    model = "models/nsfw_int8.tflite"
    gate = run("predict", folder, "--model", model, "--threshold", "0.5", "--fail-on-flagged")
    assert gate.exit_code == EXIT_FLAGGED, gate.output
    assert "1 flagged; 1 errors" in gate.stderr.splitlines()[-1]
    assert gate.stderr.splitlines()[-1].startswith("summary: 4 files: ")
    relaxed = run("predict", folder, "--model", model, "--threshold", "0.99", "--fail-on-flagged")
    assert relaxed.exit_code == EXIT_UNREADABLE  # nothing flagged; the broken file remains
    table = run("predict", folder, "--model", model, "--csv", "--threshold", "0.5",
                "--only-flagged")  # fmt: skip
    rows = list(csv.DictReader(io.StringIO(table.stdout)))
    assert [r["path"].split("/")[-1] for r in rows] == ["broken.jpg", "microaneurysms.tif"]
    broken, flagged = rows
    assert broken["kind"] == "not_an_image" and broken["label"] == ""
    assert flagged["flagged"] == "1" and float(flagged["nsfw_score"]) > 0.5
    assert float(flagged["nsfw_score"]) == pytest.approx(
        float(flagged["p_Porn"]) + float(flagged["p_Sexy"]), abs=1e-5
    )
    usage = run("predict", folder, "--fail-on-flagged")
    assert usage.exit_code == EXIT_USAGE and "need --threshold" in usage.stderr
    both = run("predict", folder, "--json", "--csv")
    assert both.exit_code == EXIT_USAGE
