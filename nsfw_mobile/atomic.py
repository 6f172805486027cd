"""Atomic writes: an artefact appears under its final name only when complete.

The write goes to a temporary entry beside the final one, renamed into place
when complete. Its name says who made it and proves that the toolkit made it::

    .nsfw-mobile-partial-<owner>-<pid>-<nonce><check>-<final name>

``owner`` is 8 hex digits of a hash of the host name and the PID namespace
(the inode of ``/proc/self/ns/pid`` where it exists), so that a PID is only
read as a PID of ours. ``nonce`` is random and ``check`` is 8 hex digits of a
hash of everything before it and the final name: a name a user picked, even
one that starts with the same words, fails the check. A folder being replaced
is moved aside under the same scheme with ``old`` for ``partial``.

Clean-up (before every atomic write, in the folder written to) removes only
entries whose name passes the check, and of those only:

- entries of this host and PID namespace whose process no longer exists;
- any entry (another host on a shared volume, another container, a PID we
  cannot judge) in which nothing changed for ``FOREIGN_STALE_AFTER`` seconds
  (7 days): no write of the toolkit leaves its output untouched that long.

An ``old`` entry whose final name is missing (the writer died between the two
renames of a folder replacement) is renamed back instead of removed.
Everything else is left alone, a user's ``.old-backup/`` or
``.partial-draft.txt`` above all. A temporary entry is also removed when its
write fails or is interrupted (Ctrl-C, and SIGTERM once the CLI turns it into
an exception); only a process killed outright leaves one behind. Readers of
folders (``bench DIR``, ``predict DIR``) skip hidden entries.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import secrets
import shutil
import socket
import time
from collections.abc import Iterator
from pathlib import Path

from .pause import phase

MARKER = ".nsfw-mobile-"
PARTIAL_GLOB = f"{MARKER}partial-*"
"""Glob of the toolkit's in-progress writes in a folder."""
FOREIGN_STALE_AFTER = 7 * 24 * 3600
_NAME = re.compile(
    re.escape(MARKER)
    + r"(partial|old)-([0-9a-f]{8})-([0-9]{1,10})-([0-9a-f]{8})([0-9a-f]{8})-(.+)",
    re.DOTALL,
)


def _pid_namespace() -> str:
    try:
        return str(os.stat("/proc/self/ns/pid").st_ino)
    except OSError:  # no /proc (macOS, Windows): one PID space per host
        return ""


def _owner() -> str:
    """This host and PID namespace (computed per call: a fork may enter a new namespace)."""
    identity = f"{socket.gethostname()}\0{_pid_namespace()}"
    return hashlib.sha256(identity.encode()).hexdigest()[:8]


def _check(kind: str, owner: str, pid: str, nonce: str, name: str) -> str:
    text = f"nsfw-mobile\0{kind}\0{owner}\0{pid}\0{nonce}\0{name}"
    return hashlib.sha256(text.encode("utf-8", "surrogateescape")).hexdigest()[:8]


def temporary_name(final_name: str, kind: str = "partial") -> str:
    owner, pid, nonce = _owner(), str(os.getpid()), secrets.token_hex(4)
    check = _check(kind, owner, pid, nonce, final_name)
    return f"{MARKER}{kind}-{owner}-{pid}-{nonce}{check}-{final_name}"


def _parse(name: str) -> tuple[str, str, int, str] | None:
    """(kind, owner, pid, final name) of a name this module made, else None."""
    match = _NAME.fullmatch(name)
    if match is None:
        return None
    kind, owner, pid, nonce, check, final = match.groups()
    if _check(kind, owner, pid, nonce, final) != check:
        return None
    return kind, owner, int(pid), final


def is_temporary(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a temporary entry of an atomic write (its name passes the check)."""
    return _parse(Path(path).name) is not None


def final_name(path: str | os.PathLike) -> str | None:
    """The name a temporary entry was going to get, or None for any other name."""
    parsed = _parse(Path(path).name)
    return parsed[3] if parsed else None


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def _process_alive(pid: int) -> bool | None:
    """True or False for a PID of this namespace; None where it cannot be told."""
    if os.name != "posix":  # os.kill(pid, 0) on Windows sends CTRL_C_EVENT
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, owned by someone else
        return True
    except OverflowError:
        return None
    return True


def _last_change(path: Path) -> float:
    """The newest mtime of ``path`` and, for a folder, of everything inside it."""
    newest = path.lstat().st_mtime
    if path.is_dir() and not path.is_symlink():
        for root, folders, files in os.walk(path):
            for name in folders + files:
                with contextlib.suppress(OSError):
                    newest = max(newest, os.lstat(os.path.join(root, name)).st_mtime)
    return newest


def _stale(entry: Path, owner: str, pid: int) -> bool:
    if owner == _owner() and _process_alive(pid) is False:
        return True
    try:
        return time.time() - _last_change(entry) > FOREIGN_STALE_AFTER
    except OSError:
        return False


def remove_stale_entries(folder: Path) -> list[Path]:
    """Remove the toolkit's temporary entries whose writer is gone (see the module doc)."""
    removed = []
    try:
        entries = list(Path(folder).iterdir())
    except OSError:
        return removed
    for entry in entries:
        parsed = _parse(entry.name)
        if parsed is None:
            continue
        kind, owner, pid, final = parsed
        if not _stale(entry, owner, pid):
            continue
        if kind == "old" and not (entry.parent / final).exists():
            # the writer died between moving the old folder aside and moving the new one
            # in: the old one goes back under its name, as if the write never started
            with contextlib.suppress(OSError):
                os.replace(entry, entry.parent / final)
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


def _replace_folder(temporary: Path, final: Path) -> None:
    """rename() cannot replace a non-empty folder: move the old one aside, then back on failure."""
    old = final.with_name(temporary_name(final.name, "old"))
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
    temporary = final.with_name(temporary_name(final.name))
    try:
        yield temporary
        if not temporary.exists():
            raise FileNotFoundError(f"{temporary} was not written")
        phase(f"write:{final.name}")
        _fsync(temporary)
        if final.is_dir() and not final.is_symlink():
            _replace_folder(temporary, final)
        else:
            os.replace(temporary, final)
        _fsync(final.parent)
        phase(f"renamed:{final.name}")
    except BaseException:
        _remove(temporary)
        raise
