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
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import ImageError

IMAGE_SUFFIXES = frozenset(
    {".jpg", ".jpeg", ".jpe", ".png", ".webp", ".gif", ".bmp", ".dib", ".tif", ".tiff"}
)
ALPHA_BACKGROUND = (255, 255, 255)
DEFAULT_MAX_PIXELS = 64_000_000
"""Largest decoded image accepted (64 megapixels, after JPEG draft scaling)."""

SAMPLES_DIR = Path(__file__).parent / "samples"

JPEG_SIGNATURE = b"\xff\xd8\xff"


def sample_images() -> list[Path]:
    """The safe, redistributable images shipped with the package (see samples/SOURCES.md)."""
    return find_images([SAMPLES_DIR])


def find_images(paths: Iterable[str | os.PathLike]) -> list[Path]:
    """Expand files and folders (recursively) into a list of files.

    Files named explicitly are always kept, whatever their suffix; inside folders
    only files with an image suffix are taken, in sorted order, and hidden files
    and folders (names starting with ".": dotfiles, interrupted ``.partial-*``
    writes) are skipped.
    """
    found: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            found.extend(
                sorted(
                    p
                    for p in path.rglob("*")
                    if p.is_file()
                    and p.suffix.lower() in IMAGE_SUFFIXES
                    and not any(part.startswith(".") for part in p.relative_to(path).parts)
                )
            )
        else:
            found.append(path)
    return found


def to_rgb(image: Image.Image) -> Image.Image:
    """Convert any Pillow mode to 8-bit RGB by the module's documented rules."""
    mode = image.mode
    if mode == "RGB":
        return image
    if mode.startswith("I;16") or mode == "I":
        values = np.asarray(image, dtype=np.float64)
        if values.size and values.max() > 65535:
            raise ValueError(f"32-bit integer pixels above 65535 are not supported (mode {mode})")
        grey = np.clip(np.rint(values / 257.0), 0, 255).astype(np.uint8)
        return Image.fromarray(grey, "L").convert("RGB")
    if mode == "F":
        grey = np.clip(np.rint(np.asarray(image, dtype=np.float64)), 0, 255).astype(np.uint8)
        return Image.fromarray(grey, "L").convert("RGB")
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
    return Image.open(io.BytesIO(data))


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
        raise ImageError(label, exc.strerror or str(exc)) from None
    if not data:
        raise ImageError(label, "empty file (0 bytes)")
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
            )
        image.load()
        image = ImageOps.exif_transpose(image)
        image = to_rgb(image)
        if image.size != (width, height):
            image = image.resize((width, height), Image.Resampling.BILINEAR)
    except ImageError:
        raise
    except Image.DecompressionBombError as exc:
        raise ImageError(label, f"{exc} (possible decompression bomb)") from None
    except UnidentifiedImageError:
        raise ImageError(label, "not an image Pillow can identify") from None
    except (OSError, ValueError, SyntaxError, EOFError) as exc:
        raise ImageError(label, f"cannot decode: {exc}") from None
    array = np.asarray(image, dtype=np.uint8)
    if array.shape != (height, width, 3):
        raise ImageError(label, f"decoded to shape {array.shape}, expected {(height, width, 3)}")
    return array


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
    workers = workers or min(8, os.cpu_count() or 1)

    def work(path: Path) -> np.ndarray | ImageError:
        try:
            return decode_image(path, size, max_pixels=max_pixels)
        except ImageError as exc:
            return exc

    if workers <= 1:
        for path in paths:
            yield path, work(path)
        return
    with ThreadPoolExecutor(max_workers=workers) as pool:
        # Bounded look-ahead keeps memory flat on folders of any size.
        window = workers * 4
        pending = [pool.submit(work, p) for p in paths[:window]]
        for index, path in enumerate(paths):
            result = pending[index].result()
            pending[index] = None
            ahead = index + window
            if ahead < len(paths):
                pending.append(pool.submit(work, paths[ahead]))
            yield path, result


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
