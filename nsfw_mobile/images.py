"""The one place where image files become model input.

Rules, decided here and nowhere else:

* Formats: whatever Pillow decodes (JPEG, PNG, WebP, GIF, BMP, TIFF, ...). GIF and
  other multi-frame files: the first frame.
* Orientation: the EXIF orientation tag is applied, so pixels are upright as a
  phone shows them.
* Colour: every mode becomes 8-bit RGB. Transparent pixels are composited onto
  white (``ALPHA_BACKGROUND``): a transparent PNG looks as it does on a web page.
  16-bit and 32-bit integer greyscale are scaled to 8 bits (value / 257), never
  clipped.
* Size: the whole image is squashed, without cropping, to the model's square
  input with Pillow's bilinear filter (as NSFWJS and the seed do; Pillow's filter
  widens its support when shrinking, so a large photo is averaged, not aliased).
  JPEGs are first decoded in draft mode at the smallest DCT scale (1/2, 1/4, 1/8)
  that stays at least as large as the input, which makes big photos fast.
* Safety: an image whose decoded pixel count is above ``max_pixels`` (after
  draft mode) is refused as a decompression bomb before its pixels are decoded.
  Pillow's own limit (``Image.MAX_IMAGE_PIXELS``, the caller's to set) applies
  too, except to JPEGs, whose full size draft mode never decodes.
* Side effects: none. Pillow's warnings (a malformed EXIF block, say) reach the
  caller's warning filters unchanged; the command line hides them.
* Output: ``uint8`` array ``(H, W, 3)``; batches are ``(N, H, W, 3)``.

A file that cannot be read raises :class:`ImageError`; batch loaders return one
error per bad file and keep going.
"""

from __future__ import annotations

import contextlib
import io
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import ImageError
from .parallel import default_workers, ordered_map

IMAGE_SUFFIXES = frozenset(
    {".jpg", ".jpeg", ".jpe", ".png", ".webp", ".gif", ".bmp", ".dib", ".tif", ".tiff"}
    | {".heic", ".heif", ".hif", ".avif"}  # phones' formats: pillow-heif, Pillow's AVIF
)
VIDEO_SUFFIXES = frozenset({".mp4", ".mov", ".m4v", ".mkv", ".webm", ".avi"})
"""Containers ``video.py`` reads; folder walks take them beside images."""
HEIF_BRANDS = frozenset({b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"mif1", b"msf1"})
"""ISO-BMFF ``ftyp`` brands of HEIF images (HEIC from iPhones), which Pillow does not read."""
ALPHA_BACKGROUND = (255, 255, 255)
DEFAULT_MAX_PIXELS = 64_000_000
"""Largest decoded image accepted (64 megapixels, after JPEG draft scaling)."""

SAMPLES_DIR = Path(__file__).parent / "samples"
CALIBRATION_DIR = SAMPLES_DIR / "calibration"
"""The shipped samples that calibrate full-integer models by default (10 of the 21)."""

JPEG_SIGNATURE = b"\xff\xd8\xff"


def sample_images() -> list[Path]:
    """The safe, redistributable images shipped with the package (see samples/SOURCES.md)."""
    return find_images([SAMPLES_DIR])


def calibration_samples() -> list[Path]:
    """The shipped samples that calibrate full-integer models when no images are given."""
    return find_images([CALIBRATION_DIR])


@dataclass
class InputFiles:
    """What a list of files and folders expands to."""

    images: list[Path]
    """Files to decode: every file named explicitly, and image and video files in folders."""
    unsupported: list[Path]
    """Files found in folders whose suffix the toolkit does not read."""


def unsupported_reason(path: Path) -> str:
    """Why a file of a folder is skipped: its suffix is not an image or video type."""
    return f"not a file type the toolkit reads ({path.suffix or 'no suffix'})"


def walk_inputs(paths: Iterable[str | os.PathLike]) -> InputFiles:
    """Expand files and folders (recursively) into the files to classify.

    Files named explicitly are always kept, whatever their suffix. Inside folders,
    files with an image or video suffix are taken in sorted order, the others are
    listed as ``unsupported``; hidden files and folders (names starting with ".":
    dotfiles, macOS ``._*`` AppleDouble files, the ``.nsfw-mobile-partial-*`` entries
    of interrupted writes) are skipped; symbolic links to folders are followed, each
    folder at most once, so a link cycle ends. A file reached twice (named twice, or
    through a link) is listed once.
    """
    images: list[Path] = []
    unsupported: list[Path] = []
    seen_files: set[str] = set()
    for raw in paths:
        path = Path(raw)
        found = _walk_folder(path) if path.is_dir() else [path]
        for file in found:
            key = os.path.realpath(file)
            if key in seen_files:
                continue
            seen_files.add(key)
            if path.is_dir() and file.suffix.lower() not in IMAGE_SUFFIXES | VIDEO_SUFFIXES:
                unsupported.append(file)
            else:
                images.append(file)
    return InputFiles(images, unsupported)


def _walk_folder(root: Path) -> list[Path]:
    files: list[Path] = []
    seen_folders: set[tuple[int, int]] = set()
    for folder, subfolders, names in os.walk(root, followlinks=True):
        info = os.stat(folder)
        if (info.st_dev, info.st_ino) in seen_folders:
            subfolders[:] = []
            continue
        seen_folders.add((info.st_dev, info.st_ino))
        subfolders[:] = [d for d in subfolders if not d.startswith(".")]
        files += [Path(folder) / n for n in names if not n.startswith(".")]
    return sorted(f for f in files if f.is_file())


def find_images(paths: Iterable[str | os.PathLike]) -> list[Path]:
    """The files to decode among ``paths`` (see ``walk_inputs``)."""
    return walk_inputs(paths).images


def to_rgb(image: Image.Image) -> Image.Image:
    """Convert any Pillow mode to 8-bit RGB by the module's documented rules."""
    mode = image.mode
    if mode == "RGB":
        return image
    if mode.startswith("I;16") or mode == "I":
        values = np.asarray(image)
        if values.size and (values.max() > 65535 or values.min() < 0):
            raise ValueError(f"integer pixels outside 0..65535 are not supported (mode {mode})")
        return Image.fromarray(_to_eight_bits(values)).convert("RGB")
    if mode == "F":
        values = np.asarray(image)
        return Image.fromarray(_to_eight_bits(values, floats=True)).convert("RGB")
    if mode == "P":
        has_alpha = "transparency" in image.info or image.palette.mode == "RGBA"
        image = image.convert("RGBA" if has_alpha else "RGB")
    elif mode in ("LA", "La", "RGBa", "PA") or mode in ("L", "1") and "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode == "RGBA":
        background = Image.new("RGB", image.size, ALPHA_BACKGROUND)
        background.paste(image, mask=image.getchannel("A"))
        return background
    return image.convert("RGB")


def _to_eight_bits(values: np.ndarray, *, floats: bool = False, rows: int = 256) -> np.ndarray:
    """Grey levels as uint8, a band of rows at a time so no wide copy is made at full size.

    Integers: round(v / 257) computed as (v + 128) // 257, exact for 0..65535.
    Floats (mode F): rounded and clipped to 0..255.
    """
    grey = np.empty(values.shape, np.uint8)
    for start in range(0, values.shape[0], rows):
        band = values[start : start + rows]
        if floats:
            grey[start : start + rows] = np.clip(np.rint(band), 0, 255)
        else:
            grey[start : start + rows] = (band.astype(np.uint32) + 128) // 257
    return grey


def _open(data: bytes) -> Image.Image:
    """Open an image without decoding its pixels.

    JPEGs are opened through their plugin directly: ``Image.open`` would apply
    Pillow's process-wide pixel limit to the full size, before draft mode
    shrinks the decode, and the toolkit's own limit applies after it. Every
    other format gets Pillow's limit (as the caller's process sets it) and ours.
    """
    if data.startswith(JPEG_SIGNATURE):
        from PIL import JpegImagePlugin

        with contextlib.suppress(SyntaxError, OSError, ValueError):
            return JpegImagePlugin.JpegImageFile(io.BytesIO(data))
    if data[4:8] == b"ftyp" and data[8:12] in HEIF_BRANDS:
        return _open_heif(data)
    return Image.open(io.BytesIO(data))


def _open_heif(data: bytes) -> Image.Image:
    """A HEIF/HEIC image through pillow-heif, without registering it in Pillow.

    libheif applies the file's rotation and mirroring and resets the EXIF
    orientation, so the image comes out upright as a JPEG's does after
    ``exif_transpose``.
    """
    try:
        import pillow_heif
    except ImportError:
        message = "HEIC/HEIF needs pillow-heif: pip install pillow-heif"
        raise UnidentifiedImageError(message) from None
    try:
        return pillow_heif.open_heif(io.BytesIO(data), convert_hdr_to_8bit=True).to_pillow()
    except (ValueError, RuntimeError, IndexError, KeyError, TypeError) as exc:
        # libheif's errors, and pillow-heif's wrapper on malformed boxes (IndexError found
        # by fuzz/targets.py: fuzz_image)
        raise OSError(f"HEIF: {exc}") from None


def decode_image(
    source: str | os.PathLike | bytes,
    size: int | tuple[int, int],
    *,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> np.ndarray:
    """Decode one image file (path or bytes) to uint8 RGB ``(height, width, 3)``."""
    height, width = (size, size) if isinstance(size, int) else size
    label = "<bytes>" if isinstance(source, bytes) else str(source)
    try:
        if isinstance(source, bytes):
            data = source
        else:
            with open(source, "rb") as handle:
                data = handle.read()
    except OSError as exc:
        raise ImageError(label, exc.strerror or str(exc), "unreadable") from None
    if not data:
        raise ImageError(label, "empty file (0 bytes)", "empty")
    try:
        image = _open(data)
        if image.format == "JPEG":
            image.draft("RGB", (width, height))
        pixels = image.size[0] * image.size[1]
        if pixels > max_pixels:
            raise ImageError(
                label,
                f"{image.size[0]}x{image.size[1]} pixels is over the limit of "
                f"{max_pixels:,} (possible decompression bomb)",
                "too_large",
            )
        image.load()
        image = ImageOps.exif_transpose(image)
        array = fit_to_input(image, (height, width))
    except ImageError:
        raise
    except Image.DecompressionBombError as exc:
        raise ImageError(label, f"{exc} (possible decompression bomb)", "too_large") from None
    except UnidentifiedImageError as exc:
        if "pillow-heif" in str(exc):
            raise ImageError(label, str(exc), "missing_plugin") from None
        raise ImageError(label, "not an image Pillow can identify", "not_an_image") from None
    except (OSError, ValueError, SyntaxError, EOFError, RuntimeError, TypeError) as exc:
        # Found by fuzz/targets.py: fuzz_image: RuntimeError is how Pillow's AVIF plugin and
        # pillow-heif report libavif/libheif failures; TypeError comes from the TIFF plugin
        # on a malformed tag ("'IFDRational' object cannot be interpreted as an integer").
        raise ImageError(label, f"cannot decode: {exc}") from None
    if array.shape != (height, width, 3):
        raise ImageError(label, f"decoded to shape {array.shape}, expected {(height, width, 3)}")
    return array


def reduced_size(width: int, height: int, size: int | tuple[int, int]) -> tuple[int, int]:
    """The size a decoder may shrink a picture to before ``fit_to_input``, as JPEG draft mode
    does: halved up to three times while both sides stay at least the input's largest side.
    Video frames are scaled to it by swscale (area averaging) as they are converted to RGB."""
    side = max((size, size) if isinstance(size, int) else size)
    scale = 1
    while scale < 8 and min(width, height) // (scale * 2) >= side:
        scale *= 2
    return width // scale, height // scale


def fit_to_input(image: Image.Image, size: int | tuple[int, int]) -> np.ndarray:
    """An upright picture as model input: 8-bit RGB (see ``to_rgb``), the whole picture
    squashed to (height, width) with Pillow's bilinear filter. Images and video frames
    both go through here."""
    height, width = (size, size) if isinstance(size, int) else size
    image = to_rgb(image)
    if image.size != (width, height):
        image = image.resize((width, height), Image.Resampling.BILINEAR)
    return np.asarray(image, dtype=np.uint8)


@dataclass
class ImageBatch:
    """Images that decoded, in input order, and the files that did not."""

    pixels: np.ndarray
    paths: list[Path]
    errors: list[ImageError] = field(default_factory=list)


def iter_decoded(
    paths: Iterable[str | os.PathLike],
    size: int | tuple[int, int],
    *,
    workers: int | None = None,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> Iterator[tuple[Path, np.ndarray | ImageError]]:
    """Decode files on a thread pool, yielding ``(path, pixels or error)`` in input order.

    Pillow releases the GIL while decoding, so threads overlap decoding with
    whatever the consumer does (inference) on the other cores.
    """
    paths = [Path(p) for p in paths]
    workers = workers or default_workers()

    def work(path: Path) -> np.ndarray | ImageError:
        try:
            return decode_image(path, size, max_pixels=max_pixels)
        except ImageError as exc:
            return exc

    yield from ordered_map(work, paths, workers)


def load_images(
    paths: Iterable[str | os.PathLike],
    size: int | tuple[int, int],
    *,
    workers: int | None = None,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> ImageBatch:
    """Decode files and folders into one uint8 batch plus a per-file error list."""
    height, width = (size, size) if isinstance(size, int) else size
    arrays, good, errors = [], [], []
    for path, result in iter_decoded(
        find_images(paths), (height, width), workers=workers, max_pixels=max_pixels
    ):
        if isinstance(result, ImageError):
            errors.append(result)
        else:
            arrays.append(result)
            good.append(path)
    pixels = np.stack(arrays) if arrays else np.zeros((0, height, width, 3), np.uint8)
    return ImageBatch(pixels=pixels, paths=good, errors=errors)
