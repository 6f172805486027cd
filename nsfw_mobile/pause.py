"""A test hook: stop a command at a named phase until a signal ends it.

Interrupt tests must not race a running command (a short phase ends before the signal
lands). With ``NSFW_MOBILE_TEST_PAUSE_AT`` set to a phase name or a glob of names, the
first phase that matches writes its name to the file ``NSFW_MOBILE_TEST_PAUSE_MARKER``
names (written whole: it appears complete or not at all) and then waits: the test sees
the file, sends SIGINT or SIGTERM, and the signal lands exactly there. Unset (always,
outside tests), ``phase`` returns at once and does nothing else.

Phases (``NAME`` is a file or folder's final name, such as ``acme_int8.tflite``):

- ``write:NAME``: an atomic write has made its temporary entry, before the rename;
- ``renamed:NAME``: the entry is under its final name;
- ``validating:NAME`` / ``benchmarking:NAME``: before a candidate is checked or timed;
- ``exit``: the command is over, its exit code chosen, the process about to end.
"""

from __future__ import annotations

import fnmatch
import os
import time
from pathlib import Path

PAUSE_AT = "NSFW_MOBILE_TEST_PAUSE_AT"
PAUSE_MARKER = "NSFW_MOBILE_TEST_PAUSE_MARKER"
WAIT_S = 120.0
"""A paused command that no signal ends goes on after this long (a test that forgot it)."""

_paused = False


def phase(name: str) -> None:
    """Mark phase ``name``; under the test hook, stop here once and wait for a signal."""
    global _paused
    pattern = os.environ.get(PAUSE_AT)
    if not pattern or _paused or not fnmatch.fnmatchcase(name, pattern):
        return
    _paused = True
    marker = os.environ.get(PAUSE_MARKER)
    if marker:
        partial = Path(f"{marker}.{os.getpid()}.tmp")
        partial.write_text(f"{name}\n")
        os.replace(partial, marker)
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        time.sleep(0.01)
