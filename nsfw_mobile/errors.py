"""Typed errors. The library raises these; only ``cli.py`` turns them into exit codes."""

from __future__ import annotations


class NsfwMobileError(Exception):
    """Base class of every error the toolkit raises on purpose."""


class UsageError(NsfwMobileError):
    """A bad option or combination of options; the message names the fix."""


class ImageError(NsfwMobileError):
    """A file that could not be read as an image (empty, truncated, not an image, too large).

    ``kind`` is machine-readable: unreadable (the OS refused), empty, not_an_image,
    unsupported_type (a suffix the toolkit does not read), missing_plugin, too_large,
    corrupt.
    """

    KINDS = (
        "unreadable", "empty", "not_an_image", "unsupported_type", "missing_plugin",
        "too_large", "corrupt",
    )  # fmt: skip

    def __init__(self, path, reason: str, kind: str = "corrupt"):
        self.path = str(path)
        self.reason = reason
        self.kind = kind
        super().__init__(f"{self.path}: {reason}")


class MissingFileError(UsageError):
    """A path the user named (a model, an image, a folder) that does not exist: the one
    error for it in every command and in the library (a usage error, exit code 2)."""

    def __init__(self, path):
        self.path = str(path)
        super().__init__(f"{self.path}: no such file or folder")


class ModelFileError(NsfwMobileError):
    """A model file that is missing, corrupt, of an unknown kind or unsafe to load."""


class UnsupportedOpError(NsfwMobileError):
    """A model contains an operation the toolkit cannot convert or execute."""


class ConversionError(NsfwMobileError):
    """A converter failed; no artefact was written under its final name."""


class LabelMismatchError(NsfwMobileError):
    """Two models disagree on their classes or their order: not comparable at all."""


class ValidationFailed(NsfwMobileError):
    """A candidate model disagrees with its reference beyond its format's tolerance."""


class BenchmarkError(NsfwMobileError):
    """A benchmark process died; the message carries the end of its stderr."""
