"""Other libraries' chatter (TensorFlow, coremltools, LiteRT), hushed only when asked.

The library never silences anything by itself: it leaves its caller's process
as it found it. The command line owns its process, so it wraps each command in
``cli_output(verbose)``. While that is active, ``native_output()`` around a noisy
call (importing TensorFlow, creating a LiteRT interpreter, a converter run)
sends what the call writes to stdout and stderr, C++ output included, to a
temporary file that is thrown away; with ``verbose`` the same output goes to
stderr, so that stdout stays clean for ``--json``.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import sys
import tempfile
import threading
import warnings
from collections.abc import Iterator

HUSH, SHOW = "hush", "show"
_mode: str | None = None
"""None: library use, nothing is redirected. HUSH or SHOW: set by the CLI."""
_lock = threading.RLock()

LOGGERS = ("coremltools", "tensorflow", "absl", "h5py", "PIL")
ENVIRONMENT = {
    "TF_CPP_MIN_LOG_LEVEL": "3",  # TensorFlow's C++ logs below FATAL
    "TQDM_DISABLE": "1",  # coremltools' progress bars
    "GRPC_VERBOSITY": "ERROR",
}


@contextlib.contextmanager
def cli_output(verbose: bool) -> Iterator[None]:
    """For the command line only: hush (or show on stderr) other libraries' output."""
    global _mode
    saved_environment = {key: os.environ.get(key) for key in ENVIRONMENT}
    saved_levels = {name: logging.getLogger(name).level for name in LOGGERS}
    previous = _mode
    with warnings.catch_warnings():
        if not verbose:
            os.environ.update(ENVIRONMENT)
            for name in LOGGERS:
                logging.getLogger(name).setLevel(logging.ERROR)
            warnings.simplefilter("ignore")
        _mode = SHOW if verbose else HUSH
        try:
            yield
        finally:
            _mode = previous
            for name, level in saved_levels.items():
                logging.getLogger(name).setLevel(level)
            for key, value in saved_environment.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value


def verbose() -> bool:
    """Whether the command line runs with --verbose (False in library use)."""
    return _mode == SHOW


def _flush() -> None:
    for stream in (sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__):
        with contextlib.suppress(Exception):
            stream.flush()


@contextlib.contextmanager
def native_output() -> Iterator[None]:
    """Around a noisy third-party call: nothing in library use; see the module doc."""
    if _mode is None:
        yield
        return
    with _lock, tempfile.TemporaryFile() as sink:
        _flush()
        target = sink.fileno() if _mode == HUSH else os.dup(2)
        saved_out, saved_err = os.dup(1), os.dup(2)
        python_sink = io.StringIO() if _mode == HUSH else sys.stderr
        try:
            os.dup2(target, 1)
            if _mode == HUSH:
                os.dup2(target, 2)
            with contextlib.redirect_stdout(python_sink):
                if _mode == HUSH:
                    with contextlib.redirect_stderr(python_sink):
                        yield
                else:
                    yield
        finally:
            _flush()
            os.dup2(saved_out, 1)
            os.dup2(saved_err, 2)
            os.close(saved_out)
            os.close(saved_err)
            if _mode == SHOW:
                os.close(target)
