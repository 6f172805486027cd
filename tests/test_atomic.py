"""Atomic writes remove only what the toolkit made (nsfw_mobile/atomic.py).

Clean-up of interrupted writes runs before every atomic write; it must never take a
user's file, and never a live writer's partial seen from another host or container.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from nsfw_mobile import atomic
from nsfw_mobile.atomic import PARTIAL_GLOB, atomic_path, remove_stale_entries

ROOT = Path(__file__).resolve().parent.parent


def _python(code: str, *prefix: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*prefix, sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT
    )


def _dead_pid() -> int:
    return int(_python("import os; print(os.getpid())").stdout)


def _dead_writers_name(final: str, kind: str = "partial", host: str | None = None) -> str:
    """The temporary name a writer (on ``host``, else this one) made before it ended."""
    code = f"import socket; socket.gethostname = lambda: {host!r}\n" if host else ""
    code += (
        f"from nsfw_mobile.atomic import temporary_name; print(temporary_name({final!r}, {kind!r}))"
    )
    name = _python(code).stdout.strip()
    assert atomic.is_temporary(name)
    return name


def _user_entries(folder: Path) -> dict[Path, str]:
    """Hidden entries a user may keep beside outputs, some looking much like ours."""
    backup = folder / ".old-backup"
    backup.mkdir()
    drafts = {
        backup / "model.tflite": "backup",
        folder / ".partial-draft.txt": "draft",
        folder / f".partial-{_dead_pid()}-0badc0de-model.tflite": "the old naming",
        folder / ".old-12345": "a dead PID, once",
        # the toolkit's marker with a made-up tail: the check fails, so it is not ours
        folder / ".nsfw-mobile-partial-0badc0de-1-00000000deadbeef-x.tflite": "imitation",
    }
    for path, text in drafts.items():
        path.write_text(text)
    (folder / ".old-empty").mkdir()
    drafts[folder / ".old-empty"] = None
    return drafts


def _assert_untouched(entries: dict[Path, str]) -> None:
    for path, text in entries.items():
        assert path.exists(), f"{path.name} was deleted"
        if text is not None:
            assert path.read_text() == text


def _ours(folder: Path) -> list[Path]:
    return [p for p in folder.glob(PARTIAL_GLOB) if atomic.is_temporary(p)]


def test_user_entries_survive_convert_out_and_report(tmp_path, tiny_model_path):
    from nsfw_mobile.cli import main

    folder = tmp_path / "dist"
    folder.mkdir()
    mine = _user_entries(folder)
    result = CliRunner().invoke(
        main, ["convert", str(tiny_model_path), "--to", "tflite", "--out", str(folder)]
    )
    assert result.exit_code == 0, result.output
    (model,) = [p for p in folder.glob("*.tflite") if not p.name.startswith(".")]
    report = folder / "bench.md"
    result = CliRunner().invoke(
        main,
        ["bench", str(model), "--runs", "2", "--seconds", "0"] + ["--report", str(report)],
    )
    assert result.exit_code == 0, result.output
    assert report.read_text().strip()
    _assert_untouched(mine)
    assert not _ours(folder)


def test_a_dead_writers_partial_of_this_host_is_removed(tmp_path):
    folder = tmp_path / "out"
    # a writer killed outright mid-write of a file and of a folder (.mlpackage)
    code = (
        "import os, signal\nfrom nsfw_mobile.atomic import atomic_path\n"
        f"with atomic_path({str(folder / 'model.tflite')!r}) as file, "
        f"atomic_path({str(folder / 'NSFW.mlpackage')!r}) as package:\n"
        "    file.write_bytes(b'half'); package.mkdir()\n"
        "    os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    assert _python(code).returncode == -signal.SIGKILL
    left = sorted(_ours(folder))
    assert sorted(atomic.final_name(p) for p in left) == ["NSFW.mlpackage", "model.tflite"]
    mine = _user_entries(folder)
    with atomic_path(folder / "labels.txt") as temporary:
        temporary.write_text("a\n")
    assert not _ours(folder)
    assert sorted(p.name for p in folder.iterdir() if not p.name.startswith(".")) == ["labels.txt"]
    _assert_untouched(mine)


def test_a_folder_moved_aside_by_a_dead_writer_goes_back_under_its_name(tmp_path):
    # killed between the two renames of a folder replacement: the old folder is aside,
    # the new one not yet in place
    aside = tmp_path / _dead_writers_name("NSFW.mlpackage", "old")
    aside.mkdir()
    (aside / "model.mlmodel").write_text("the previous release")
    assert remove_stale_entries(tmp_path) == []
    assert [p.name for p in tmp_path.iterdir()] == ["NSFW.mlpackage"]
    assert (tmp_path / "NSFW.mlpackage" / "model.mlmodel").read_text() == "the previous release"


def test_a_partial_of_another_host_is_kept_until_a_week_old(tmp_path, monkeypatch):
    # what a writer on another machine sharing the folder would name its partial: its PID
    # means nothing here, and this one is not even alive on this machine
    foreign = tmp_path / _dead_writers_name("model.tflite", host="build-host-7")
    foreign.mkdir()  # a folder whose top is old but whose content is being written
    (foreign / "weights.bin").write_bytes(b"x")
    week_ago = time.time() - atomic.FOREIGN_STALE_AFTER - 3600
    os.utime(foreign, (week_ago, week_ago))
    assert remove_stale_entries(tmp_path) == [] and foreign.exists()
    os.utime(foreign / "weights.bin", (week_ago, week_ago))
    assert remove_stale_entries(tmp_path) == [foreign] and not foreign.exists()


def test_a_live_writer_in_another_pid_namespace_keeps_its_partial(tmp_path):
    """A container sharing the volume: its PIDs are not ours to judge."""
    unshare = shutil.which("unshare")
    probe = _python("print(1)", unshare or "unshare", "--pid", "--fork", "--mount-proc")
    if unshare is None or probe.returncode != 0:
        pytest.skip("needs `unshare --pid` (root) to start a process in a new PID namespace")
    # In its namespace the writer gets a PID that no process of ours has (set through
    # ns_last_pid): judged by PID here, its partial would look stale.
    pid = _dead_pid()
    code = (
        "import subprocess, sys\n"
        f"open('/proc/sys/kernel/ns_last_pid', 'w').write('{pid - 1}')\n"
        "child = subprocess.Popen([sys.executable, '-c', '''\n"
        "import sys, time\nfrom nsfw_mobile.atomic import atomic_path\n"
        f"with atomic_path({str(tmp_path / 'model.tflite')!r}) as t:\n"
        "    t.write_bytes(b'half'); print(t.name, flush=True); time.sleep(60)\n"
        "'''])\nchild.wait()\n"
    )
    writer = subprocess.Popen(
        [unshare, "--pid", "--fork", "--kill-child", "--mount-proc", sys.executable, "-c", code],
        stdout=subprocess.PIPE, text=True, cwd=ROOT,
    )  # fmt: skip
    try:
        name = writer.stdout.readline().strip()
        assert atomic.is_temporary(name), name
        _, owner, writer_pid, _ = atomic._parse(name)
        assert owner != atomic._owner() and writer_pid == pid
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)  # no such process here
        with atomic_path(tmp_path / "labels.txt") as temporary:
            temporary.write_text("a\n")
        assert (tmp_path / name).exists(), "a live writer's partial was removed"
    finally:
        writer.kill()
        writer.wait()


def test_interrupted_write_leaves_nothing_under_the_final_name(tmp_path):
    final = tmp_path / "model.tflite"
    with pytest.raises(KeyboardInterrupt), atomic_path(final) as temporary:
        temporary.write_bytes(b"half")
        raise KeyboardInterrupt
    assert list(tmp_path.iterdir()) == []
    final.write_bytes(b"old")
    with pytest.raises(RuntimeError), atomic_path(final) as temporary:
        temporary.write_bytes(b"new, half")
        raise RuntimeError("converter failed")
    assert list(tmp_path.iterdir()) == [final] and final.read_bytes() == b"old"


def test_the_name_check_is_not_fooled_by_a_changed_name():
    name = atomic.temporary_name("model.tflite")
    assert atomic.final_name(name) == "model.tflite"
    assert not atomic.is_temporary(name.replace("model", "other"))
    assert not atomic.is_temporary(name[:-1])
    assert not atomic.is_temporary(".partial-draft.txt")
