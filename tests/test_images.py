"""images.py: every mode, every format, orientation, and every kind of bad file."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from nsfw_mobile.errors import ImageError
from nsfw_mobile.images import (
    ALPHA_BACKGROUND,
    decode_image,
    find_images,
    iter_decoded,
    load_images,
    sample_images,
)

SIZE = 32


def solid(mode, size=(40, 30), color=None):
    return Image.new(mode, size, color)


@pytest.mark.parametrize(
    ("mode", "color", "suffix", "expected"),
    [
        ("RGB", (200, 10, 30), ".png", (200, 10, 30)),
        ("L", 77, ".png", (77, 77, 77)),
        ("1", 1, ".png", (255, 255, 255)),
        ("LA", (90, 255), ".png", (90, 90, 90)),
        ("LA", (90, 0), ".png", ALPHA_BACKGROUND),
        ("RGBA", (0, 128, 255, 255), ".png", (0, 128, 255)),
        ("RGBA", (0, 128, 255, 0), ".png", ALPHA_BACKGROUND),
        ("CMYK", (0, 255, 255, 0), ".jpg", (255, 0, 0)),
        ("CMYK", (0, 0, 0, 0), ".tif", (255, 255, 255)),
        ("I;16", 65535, ".png", (255, 255, 255)),
        ("I;16", 32896, ".png", (128, 128, 128)),
        ("I", 257 * 40, ".tif", (40, 40, 40)),
        ("F", 99.6, ".tif", (100, 100, 100)),
    ],
)
def test_every_mode_becomes_rgb(tmp_path, mode, color, suffix, expected):
    path = tmp_path / f"image{suffix}"
    solid(mode, color=color).save(path)
    pixels = decode_image(path, SIZE)
    assert pixels.dtype == np.uint8 and pixels.shape == (SIZE, SIZE, 3)
    tolerance = 12 if suffix == ".jpg" else 0
    np.testing.assert_allclose(pixels[SIZE // 2, SIZE // 2], expected, atol=tolerance)


def test_palette_with_transparency_uses_white_background(tmp_path):
    image = Image.new("P", (20, 20), 0)
    image.putpalette([255, 0, 0, 0, 255, 0] + [0] * 762)
    image.paste(1, (0, 0, 10, 20))
    path = tmp_path / "p.png"
    image.save(path, transparency=0)
    pixels = decode_image(path, (20, 20))
    assert tuple(pixels[10, 15]) == ALPHA_BACKGROUND  # transparent index
    assert tuple(pixels[10, 2]) == (0, 255, 0)


def test_palette_without_transparency(tmp_path):
    image = Image.new("RGB", (20, 20), (10, 200, 30)).convert("P", palette=Image.ADAPTIVE)
    path = tmp_path / "p.bmp"
    image.save(path)
    assert tuple(decode_image(path, 8)[4, 4]) == (10, 200, 30)


@pytest.mark.parametrize("suffix", [".jpg", ".png", ".webp", ".bmp", ".tif", ".gif"])
def test_formats(tmp_path, suffix):
    path = tmp_path / f"image{suffix}"
    solid("RGB", color=(0, 0, 255)).save(path)
    np.testing.assert_allclose(decode_image(path, SIZE)[5, 5], (0, 0, 255), atol=8)


def test_gif_takes_the_first_frame(tmp_path):
    path = tmp_path / "animated.gif"
    frames = [solid("RGB", color=(255, 0, 0)), solid("RGB", color=(0, 255, 0))]
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=100)
    assert Image.open(path).n_frames == 2
    np.testing.assert_allclose(decode_image(path, SIZE)[5, 5], (255, 0, 0), atol=4)


def test_exif_orientation_is_applied(tmp_path):
    image = Image.new("RGB", (60, 40), (255, 0, 0))
    image.paste((0, 0, 255), (30, 0, 60, 40))  # left red, right blue
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    rotated, plain = tmp_path / "rotated.jpg", tmp_path / "plain.jpg"
    image.save(rotated, exif=exif, quality=95)
    image.save(plain, quality=95)

    upright = decode_image(rotated, SIZE).astype(int)
    assert upright[4, SIZE // 2, 0] > 200 and upright[SIZE - 4, SIZE // 2, 2] > 200  # red on top
    as_stored = decode_image(plain, SIZE).astype(int)
    assert as_stored[SIZE // 2, 4, 0] > 200 and as_stored[SIZE // 2, SIZE - 4, 2] > 200


def test_resize_is_bilinear_squash_without_crop(tmp_path):
    image = Image.new("RGB", (400, 100), (255, 255, 255))
    image.paste((0, 0, 0), (0, 0, 200, 100))  # left half black
    path = tmp_path / "wide.png"
    image.save(path)
    pixels = decode_image(path, 16)
    assert pixels[:, :7].max() == 0 and pixels[:, 9:].min() == 255


def test_jpeg_draft_mode_matches_full_decode(tmp_path):
    rng = np.random.default_rng(0)
    smooth = np.kron(rng.integers(0, 255, (12, 16, 3)), np.ones((100, 100, 1))).astype(np.uint8)
    path = tmp_path / "photo.jpg"
    Image.fromarray(smooth).save(path, quality=92)  # 1600x1200
    drafted = decode_image(path, 224).astype(int)
    full = np.asarray(Image.open(path).convert("RGB").resize((224, 224), Image.BILINEAR)).astype(
        int
    )
    assert np.abs(drafted - full).mean() < 2


def bad_files(folder):
    (folder / "empty.jpg").write_bytes(b"")
    (folder / "text.jpg").write_text("this is not an image\n")
    good = folder / "good.jpg"
    solid("RGB", (200, 200), (10, 20, 30)).save(good, quality=90)
    data = good.read_bytes()
    (folder / "truncated.jpg").write_bytes(data[: len(data) // 3])
    Image.new("1", (10_000, 10_000)).save(folder / "bomb.png")  # 100 megapixels, ~12 kB
    return good


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("empty.jpg", "empty file"),
        ("text.jpg", "not an image"),
        ("truncated.jpg", "cannot decode"),
        ("bomb.png", "decompression bomb"),
        ("missing.jpg", "No such file"),
    ],
)
def test_bad_files_raise_a_named_error(tmp_path, name, reason):
    bad_files(tmp_path)
    with pytest.raises(ImageError, match=reason) as info:
        decode_image(tmp_path / name, SIZE)
    assert info.value.path.endswith(name)


def test_one_bad_file_never_stops_the_rest(tmp_path):
    bad_files(tmp_path)
    (tmp_path / "notes.txt").write_text("skipped: not an image suffix")
    batch = load_images([tmp_path], SIZE, workers=2)
    assert [p.name for p in batch.paths] == ["good.jpg"]
    assert batch.pixels.shape == (1, SIZE, SIZE, 3)
    assert sorted(e.path.split("/")[-1] for e in batch.errors) == [
        "bomb.png",
        "empty.jpg",
        "text.jpg",
        "truncated.jpg",
    ]


def test_iter_decoded_keeps_input_order(tmp_path):
    paths = []
    for i in range(30):
        path = tmp_path / f"{i:02d}.png"
        solid("L", color=i * 8).save(path)
        paths.append(path)
    paths.insert(7, tmp_path / "missing.png")
    results = list(iter_decoded(paths, 8, workers=3))
    assert [p for p, _ in results] == paths
    assert isinstance(results[7][1], ImageError)
    values = [int(r[0, 0, 0]) for _, r in results if not isinstance(r, ImageError)]
    assert values == [i * 8 for i in range(30)]


def test_sample_images_are_shipped_and_decode():
    samples = sample_images()
    assert len(samples) >= 20
    batch = load_images(samples, 224)
    assert not batch.errors and len(batch.paths) == len(samples)


def test_find_images_keeps_explicit_files(tmp_path):
    odd = tmp_path / "photo.data"
    odd.write_bytes(b"x")
    assert find_images([odd]) == [odd]
    assert find_images([tmp_path]) == []
