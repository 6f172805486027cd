"""Atomic writes: an artefact appears under its final name only when complete.

The temporary entry is named ``.partial-<pid>-<random>-<name>`` beside the
final one. It is removed when the write fails or is interrupted (Ctrl-C, and
SIGTERM once the CLI turns it into an exception). A process killed outright
leaves it behind; the next write into the same folder removes every
``.partial-*`` and ``.old-*`` entry whose process is gone, and readers of
folders (``bench DIR``, ``predict DIR``) skip hidden entries.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

PREFIXES = (".partial-", ".old-")


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, owned by someone else
        return True
    return True


def remove_stale_entries(folder: Path) -> list[Path]:
    """Remove the temporary entries of writes whose process no longer exists."""
    removed = []
    try:
        entries = list(folder.iterdir())
    except OSError:
        return removed
    for entry in entries:
        prefix = next((p for p in PREFIXES if entry.name.startswith(p)), None)
        if prefix is None:
            continue
        pid_text = entry.name[len(prefix) :].split("-", 1)[0]
        if pid_text.isdigit() and _process_alive(int(pid_text)):
            continue
        _remove(entry)
        removed.append(entry)
    return removed


def _fsync(path: Path) -> None:
    """Flush a file, or every file of a folder and the folder itself, to disk."""
    targets = [p for p in path.rglob("*")] + [path] if path.is_dir() else [path]
    for target in targets:
        flags = os.O_RDONLY | (os.O_DIRECTORY if target.is_dir() else 0)
        try:
            descriptor = os.open(target, flags)
        except OSError:
            continue
        try:
            os.fsync(descriptor)
        except OSError:  # some file systems do not fsync folders
            pass
        finally:
            os.close(descriptor)


def _temporary_name(final: Path, prefix: str) -> Path:
    return final.with_name(f"{prefix}{os.getpid()}-{uuid.uuid4().hex[:8]}-{final.name}")


def _replace_folder(temporary: Path, final: Path) -> None:
    """rename() cannot replace a non-empty folder: move the old one aside, then back on failure."""
    old = _temporary_name(final, ".old-")
    os.replace(final, old)
    try:
        os.replace(temporary, final)
    except BaseException:
        os.replace(old, final)
        raise
    _remove(old)


@contextlib.contextmanager
def atomic_path(final: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``final``; rename it into place on success.

    Works for files and for folders (``.mlpackage``). The temporary name keeps
    the suffix (converters look at it). Before the rename the new entry is
    flushed to disk; on error or interruption it is removed.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_entries(final.parent)
    temporary = _temporary_name(final, ".partial-")
    try:
        yield temporary
        if not temporary.exists():
            raise FileNotFoundError(f"{temporary} was not written")
        _fsync(temporary)
        if final.is_dir() and not final.is_symlink():
            _replace_folder(temporary, final)
        else:
            os.replace(temporary, final)
        _fsync(final.parent)
    except BaseException:
        _remove(temporary)
        raise
