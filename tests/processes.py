"""This process's children, read from /proc (psutil is not a dependency)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest


def child_processes(command: str | None = None) -> set[int]:
    """PIDs of the processes whose parent is this one, zombies included (a child nobody
    waited for), optionally only those whose command name is ``command``."""
    if not Path("/proc/self/stat").exists():
        pytest.skip("needs /proc")
    me, found = os.getpid(), set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:  # ended meanwhile
            continue
        name = stat[stat.index("(") + 1 : stat.rindex(")")]
        parent = int(stat[stat.rindex(")") + 2 :].split()[1])
        if parent == me and (command is None or name == command):
            found.add(int(entry.name))
    return found
