"""Atomic writes: an artefact appears under its final name only when complete."""

from __future__ import annotations

import contextlib
import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


@contextlib.contextmanager
def atomic_path(final: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``final``; rename it into place on success.

    Works for files and for folders (``.mlpackage``). The temporary name keeps
    the suffix (converters look at it) and starts with ``.partial-`` so a
    crashed run leaves only an obviously unfinished hidden entry, never a file
    under the final name. On error the temporary entry is removed.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    temporary = final.with_name(f".partial-{uuid.uuid4().hex[:8]}-{final.name}")
    try:
        yield temporary
        if not temporary.exists():
            raise FileNotFoundError(f"{temporary} was not written")
        if final.is_dir() and not final.is_symlink():
            # rename() cannot replace a non-empty folder: move the old one aside first.
            old = final.with_name(f".old-{uuid.uuid4().hex[:8]}-{final.name}")
            os.replace(final, old)
            os.replace(temporary, final)
            _remove(old)
        else:
            os.replace(temporary, final)
    except BaseException:
        _remove(temporary)
        raise
